//! A controller's xenstore nodes in libxl's layout.
//!
//! Why: what `xl usbctrl-attach type=pv` leaves for the backend and the
//! frontend is the contract between the toolstack and both ends. The tests
//! that drive the backend or the frontend without the toolstack, and
//! `pvusb bench`, write exactly that (as `xs_ctrl_attach` in
//! `tests/xen/guest/lib.sh` does on Xen), from this one description.
//! libxl's own bookkeeping under `/libxl` belongs to the toolstack
//! (`pvusb_toolstack`), which writes it when it creates a controller.

use pvusb_protocol::xenstore::{backend_dir, frontend_dir};
use pvusb_xenstore::{Access, Perm, XsClient, XsError};

/// The backend domain of every simulated controller.
pub(crate) const BACKEND_DOMID: u16 = 0;

/// One controller of a guest.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The guest.
    pub(crate) domid: u16,
    /// The controller's index in the guest.
    devid: u32,
    /// `usb-ver` (1 or 2; anything else to see it refused).
    usb_ver: u8,
    /// `num-ports` (1 to 31; anything else to see it refused).
    num_ports: u8,
    /// Busids in ports at creation, `(port, busid)`.
    ports: Vec<(u8, String)>,
}

impl Controller {
    /// Controller `devid` of `domid`, USB `usb_ver`, `num_ports` empty ports.
    pub fn new(domid: u16, devid: u32, usb_ver: u8, num_ports: u8) -> Self {
        Self {
            domid,
            devid,
            usb_ver,
            num_ports,
            ports: Vec::new(),
        }
    }

    /// With `busid` in `port` from the start.
    pub fn port(mut self, port: u8, busid: &str) -> Self {
        self.ports.push((port, busid.to_owned()));
        self
    }

    /// Its backend directory.
    pub fn backend_dir(&self) -> String {
        backend_dir(BACKEND_DOMID, self.domid, self.devid)
    }

    /// Its frontend directory.
    pub fn frontend_dir(&self) -> String {
        frontend_dir(self.domid, self.devid)
    }

    /// Writes both directories in one transaction, both ends Initialising.
    /// The backend directory is owned by the backend domain and readable by
    /// the guest, the frontend directory the other way round. The backend's
    /// `state` is written last: it is the node the daemon reacts to.
    pub fn write(&self, xs: &XsClient) -> Result<(), XsError> {
        let (be, fe) = (self.backend_dir(), self.frontend_dir());
        let mut back: Vec<(String, String)> = [
            ("", ""),
            ("/frontend", fe.as_str()),
            ("/frontend-id", self.domid.to_string().as_str()),
            ("/online", "1"),
            ("/type", "pv"),
            ("/usb-ver", self.usb_ver.to_string().as_str()),
            ("/num-ports", self.num_ports.to_string().as_str()),
            ("/port", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for p in 1..=self.num_ports.min(31) {
            back.push((format!("/port/{p}"), self.busid_in(p).to_owned()));
        }
        let backend_id = BACKEND_DOMID.to_string();
        let front = [
            ("", ""),
            ("/backend", be.as_str()),
            ("/backend-id", backend_id.as_str()),
            ("/state", "1"),
        ];
        let back_perms = perms(BACKEND_DOMID, self.domid);
        let front_perms = perms(self.domid, BACKEND_DOMID);
        xs.transaction(|tx| {
            for (key, value) in &back {
                let path = format!("{be}{key}");
                xs.write(tx, &path, value)?;
                xs.set_perms(tx, &path, &back_perms)?;
            }
            for (key, value) in &front {
                let path = format!("{fe}{key}");
                xs.write(tx, &path, value)?;
                xs.set_perms(tx, &path, &front_perms)?;
            }
            let state = format!("{be}/state");
            xs.write(tx, &state, "1")?;
            xs.set_perms(tx, &state, &back_perms)
        })
    }

    /// The busid given for `port` (the last one given), or none.
    fn busid_in(&self, port: u8) -> &str {
        self.ports
            .iter()
            .rev()
            .find(|(p, _)| *p == port)
            .map_or("", |(_, b)| b.as_str())
    }
}

/// Owned by `owner`, readable by `reader`, nothing for anyone else.
fn perms(owner: u16, reader: u16) -> [Perm; 2] {
    [
        Perm {
            domid: owner,
            access: Access::None,
        },
        Perm {
            domid: reader,
            access: Access::Read,
        },
    ]
}
