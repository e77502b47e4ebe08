//! The xenbus side of the life-cycle (spec 6.1, xen-hcd): where the controller
//! lives in xenstore, what the backend advertises, and the key writes of the
//! handshake.

use std::time::{Duration, Instant};

use pvusb_protocol::xenstore::{self, keys, parse_num_ports, parse_u16, parse_u32};
use pvusb_protocol::{UsbVer, XenbusState};
use pvusb_xenstore::{Tx, XsClient, XsError};

use crate::connection::Connection;
use crate::error::FrontendError;

/// What the toolstack and the backend told us about the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// Our domain id.
    pub domid: u16,
    /// Device id of the controller.
    pub devid: u32,
    /// `/local/domain/<domid>/device/vusb/<devid>`.
    pub frontend_dir: String,
    /// The backend directory, as read from `backend`.
    pub backend_dir: String,
    /// The backend's domain id.
    pub backend_domid: u16,
    /// Ports of the root hub (1..=31).
    pub num_ports: u8,
    /// USB version of the controller.
    pub usb_ver: UsbVer,
}

fn read_required(xs: &XsClient, path: &str) -> Result<String, FrontendError> {
    xs.read(Tx::NONE, path)?
        .ok_or_else(|| FrontendError::Xenstore(XsError::NotFound(path.to_owned())))
}

fn bad(path: &str, value: &str, expected: &'static str) -> FrontendError {
    FrontendError::BadXenstoreValue {
        path: path.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

impl ControllerConfig {
    /// Probe (xen-hcd step 1): the backend path and id from our directory,
    /// `num-ports` and `usb-ver` from the backend's; all validated.
    pub fn read(xs: &XsClient, domid: u16, devid: u32) -> Result<Self, FrontendError> {
        let frontend_dir = xenstore::frontend_dir(domid, devid);
        let backend_path = xenstore::join(&frontend_dir, keys::BACKEND);
        let missing = || FrontendError::NoController {
            domid,
            devid,
            path: backend_path.clone(),
        };
        // Denied, too: xenstored answers EACCES for a node below one that
        // does not exist in a directory this domain may not list.
        let backend_dir = match xs.read(Tx::NONE, &backend_path) {
            Ok(Some(dir)) => dir,
            Ok(None) | Err(XsError::Access(_) | XsError::NotFound(_)) => return Err(missing()),
            Err(e) => return Err(e.into()),
        };
        if !backend_dir.starts_with('/') || backend_dir.len() > 256 {
            return Err(bad(
                &backend_path,
                &backend_dir,
                "an absolute xenstore path",
            ));
        }
        let id_path = xenstore::join(&frontend_dir, keys::BACKEND_ID);
        let id = read_required(xs, &id_path)?;
        let backend_domid = parse_u16(&id).map_err(|_| bad(&id_path, &id, "a domain id"))?;
        let np_path = xenstore::join(&backend_dir, keys::NUM_PORTS);
        let np = read_required(xs, &np_path)?;
        let num_ports =
            parse_num_ports(&np).map_err(|_| bad(&np_path, &np, "a port count 1..=31"))?;
        let ver_path = xenstore::join(&backend_dir, keys::USB_VER);
        let ver = read_required(xs, &ver_path)?;
        let usb_ver: UsbVer = ver.parse().map_err(|_| bad(&ver_path, &ver, "1 or 2"))?;
        Ok(Self {
            domid,
            devid,
            frontend_dir,
            backend_dir,
            backend_domid,
            num_ports,
            usb_ver,
        })
    }

    /// Path of the backend's `state`.
    pub fn backend_state_path(&self) -> String {
        xenstore::join(&self.backend_dir, keys::STATE)
    }

    /// The backend's state; `None` if missing or unparsable (a hostile value
    /// is just "not a state we act on").
    pub fn backend_state(&self, xs: &XsClient) -> Result<Option<XenbusState>, FrontendError> {
        Ok(xs
            .read(Tx::NONE, &self.backend_state_path())?
            .and_then(|v| v.parse().ok()))
    }

    /// Our own state; `None` if missing or unparsable.
    pub fn own_state(&self, xs: &XsClient) -> Result<Option<XenbusState>, FrontendError> {
        let path = xenstore::join(&self.frontend_dir, keys::STATE);
        Ok(xs.read(Tx::NONE, &path)?.and_then(|v| v.parse().ok()))
    }

    /// Writes our own `state`.
    pub fn set_state(&self, xs: &XsClient, state: XenbusState) -> Result<(), FrontendError> {
        let path = xenstore::join(&self.frontend_dir, keys::STATE);
        xs.write(Tx::NONE, &path, &state.as_u32().to_string())?;
        Ok(())
    }

    /// Writes our own `state` only while our directory still holds its
    /// `backend` link; returns whether it wrote.
    ///
    /// WHY: the toolstack removes the directory once the backend is Closed,
    /// and xenstore creates missing parents, so a state change written
    /// after that (the reconnect machine's Closed or Initialising) would
    /// leave a stray `state` node where the controller was.
    pub fn set_state_if_present(
        &self,
        xs: &XsClient,
        state: XenbusState,
    ) -> Result<bool, FrontendError> {
        let link = xenstore::join(&self.frontend_dir, keys::BACKEND);
        let path = xenstore::join(&self.frontend_dir, keys::STATE);
        let value = state.as_u32().to_string();
        Ok(xs.transaction(|tx| {
            if xs.read(tx, &link)?.is_none() {
                return Ok(false);
            }
            xs.write(tx, &path, &value)?;
            Ok(true)
        })?)
    }

    /// Waits until the backend state satisfies `ok`, or `timeout` passes.
    pub fn wait_backend(
        &self,
        xs: &XsClient,
        wanted: &'static str,
        timeout: Duration,
        ok: impl Fn(Option<XenbusState>) -> bool,
    ) -> Result<Option<XenbusState>, FrontendError> {
        let watch = xs.watch(&self.backend_state_path())?;
        let start = Instant::now();
        loop {
            let seen = self.backend_state(xs)?;
            if ok(seen) {
                return Ok(seen);
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(FrontendError::BackendTimeout {
                    wanted,
                    seen,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            // A watch event, or re-read at least every 100 ms in case the
            // connection's watch delivery lags.
            let _ = watch
                .receiver()
                .recv_timeout(left.min(Duration::from_millis(100)));
        }
    }

    /// xen-hcd step 2 after the rings exist: the three keys in one
    /// transaction, all conn requests posted, then straight to Connected.
    pub(crate) fn publish(
        &self,
        xs: &XsClient,
        conn: &mut Connection,
    ) -> Result<(), FrontendError> {
        let (urb_ref, conn_ref) = conn.ring_refs();
        let port = conn.evtchn.port();
        let dir = &self.frontend_dir;
        xs.transaction(|tx| {
            xs.write(
                tx,
                &xenstore::join(dir, keys::URB_RING_REF),
                &urb_ref.to_string(),
            )?;
            xs.write(
                tx,
                &xenstore::join(dir, keys::CONN_RING_REF),
                &conn_ref.to_string(),
            )?;
            xs.write(
                tx,
                &xenstore::join(dir, keys::EVENT_CHANNEL),
                &port.to_string(),
            )
        })?;
        if conn.post_all_conn_requests()? {
            conn.evtchn.notify()?;
        }
        self.set_state(xs, XenbusState::Connected)
    }
}

/// Our own domain id as the guest's xenstore tells it (`domid` key of the
/// connection's home, as `xenstore-read domid` does).
pub fn own_domid(xs: &XsClient) -> Result<u16, FrontendError> {
    let v = read_required(xs, "domid")?;
    parse_u16(&v).map_err(|_| bad("domid", &v, "a domain id"))
}

/// Parses a decimal u32 key the way the backend would (for tests and tools).
pub fn read_u32(xs: &XsClient, path: &str) -> Result<Option<u32>, FrontendError> {
    match xs.read(Tx::NONE, path)? {
        None => Ok(None),
        Some(v) => parse_u32(&v)
            .map(Some)
            .map_err(|_| bad(path, &v, "a decimal u32")),
    }
}
