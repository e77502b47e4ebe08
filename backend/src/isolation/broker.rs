//! What the monitor does for a worker that asks: open a device node, open an
//! event-channel device — each only after checks of its own, because the
//! asking worker may be compromised.
//!
//! A device is opened only if the toolstack put it in one of the
//! controller's ports (`<backend>/port/N`, which the worker's xenstore scope
//! cannot write) and its record, if any, gives it to the backend. The device
//! rules are checked by the worker after opening (the controller's code, as
//! with threads) and by the toolstack when it assigned the device.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use pvusb_protocol::xenstore as xsp;
use pvusb_xenstore::XsClient;

use super::error::BrokerError;

use crate::usb::NodeOpener;
use crate::usb::{BusId, DeviceInfo};
use crate::xenbus;

/// Most event-channel devices one worker may ask for in its life (one per
/// connect; a worker asking for more is broken or hostile).
const EVTCHN_BUDGET: u32 = 256;

/// The monitor's side of one worker's requests.
pub struct Broker {
    xs: Arc<XsClient>,
    be: String,
    nodes: Option<Arc<dyn NodeOpener>>,
    evtchn: Option<PathBuf>,
    evtchn_left: u32,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("be", &self.be)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// For the controller at `be`; `nodes`: the host's devices (none
    /// without host USB); `evtchn`: the event-channel device (Xen only).
    pub fn new(
        xs: Arc<XsClient>,
        be: String,
        nodes: Option<Arc<dyn NodeOpener>>,
        evtchn: Option<PathBuf>,
    ) -> Self {
        Self {
            xs,
            be,
            nodes,
            evtchn,
            evtchn_left: EVTCHN_BUDGET,
        }
    }

    /// Opens the device at `busid` (as the worker wrote it) for the worker.
    pub fn open_device(&self, busid: &str) -> Result<(DeviceInfo, OwnedFd), BrokerError> {
        let busid: BusId = busid.parse().map_err(BrokerError::NotABusid)?;
        let nodes = self.nodes.as_ref().ok_or(BrokerError::NoHostUsb)?;
        if !self.in_a_port(&busid)? {
            return Err(BrokerError::NotInAPort(busid));
        }
        let verdict = xenbus::read_record(&self.xs, &busid).map_err(BrokerError::Xenstore)?;
        if !verdict.permits_open() {
            return Err(BrokerError::Withheld { busid, verdict });
        }
        let node = nodes.open_node(&busid).map_err(BrokerError::Open)?;
        Ok((node.info, node.fd))
    }

    fn in_a_port(&self, busid: &BusId) -> Result<bool, BrokerError> {
        let config = xenbus::read_config(&self.xs, &self.be).map_err(BrokerError::Xenstore)?;
        for port in 1..=config.num_ports {
            if let Ok(Some(b)) = xenbus::read_port(&self.xs, &self.be, port) {
                if b == *busid {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Opens an event-channel device for the worker's next channel.
    pub fn open_evtchn(&mut self) -> Result<File, BrokerError> {
        let path = self.evtchn.as_ref().ok_or(BrokerError::NoEvtchnDevice)?;
        if self.evtchn_left == 0 {
            return Err(BrokerError::EvtchnBudget(EVTCHN_BUDGET));
        }
        self.evtchn_left -= 1;
        File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| BrokerError::OpenEvtchn {
                path: path.clone(),
                source,
            })
    }

    /// The backend directory's keys the worker may write: its state and the
    /// saved address table. Everything else there (ports, configuration)
    /// is the toolstack's, and [`Self::open_device`] trusts the ports.
    pub fn writable_keys(be: &str) -> [String; 2] {
        [
            xsp::join(be, xsp::keys::STATE),
            xsp::join(be, crate::controller::ADDRESS_MAP_KEY),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::{OpenedNode, UsbError};
    use pvusb_xenstore::{ServerConfig, Tx, XsServer};

    /// Opens anything asked: the broker's own checks are what is tested.
    struct Anything;
    impl NodeOpener for Anything {
        fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
            let fd = File::open("/dev/null").map_err(|_| UsbError::NotFound(*busid))?;
            Ok(OpenedNode {
                info: DeviceInfo {
                    busid: *busid,
                    bus: busid.bus(),
                    ..crate::engine::test_support::info(true, false)
                },
                fd: fd.into(),
            })
        }
    }

    #[test]
    fn a_worker_gets_only_devices_of_its_own_ports_that_the_toolstack_gave() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("xs");
        let _server = XsServer::start_with(&sock, ServerConfig::simulation()).unwrap();
        let xs = Arc::new(XsClient::connect(&sock).unwrap());
        let be = "/local/domain/0/backend/vusb/3/0";
        for (k, v) in [
            ("usb-ver", "2"),
            ("num-ports", "2"),
            ("port/1", "1-2"),
            ("port/2", ""),
        ] {
            xs.write(Tx::NONE, &format!("{be}/{k}"), v).unwrap();
        }
        let broker = Broker::new(Arc::clone(&xs), be.into(), Some(Arc::new(Anything)), None);
        assert!(broker.open_device("1-2").is_ok(), "in port 1, no record");
        let refused = broker.open_device("1-3").unwrap_err();
        assert!(matches!(refused, BrokerError::NotInAPort(_)), "{refused}");
        assert!(
            matches!(broker.open_device("../x"), Err(BrokerError::NotABusid(_))),
            "not a busid"
        );
        xs.write(Tx::NONE, &format!("{RECORD}/1-2/state"), "detach-releasing")
            .unwrap();
        let withheld = broker.open_device("1-2").unwrap_err();
        assert!(
            matches!(withheld, BrokerError::Withheld { .. }),
            "{withheld}"
        );
        xs.write(Tx::NONE, &format!("{RECORD}/1-2/state"), "assigned")
            .unwrap();
        assert!(broker.open_device("1-2").is_ok(), "assigned");

        let no_usb = Broker::new(Arc::clone(&xs), be.into(), None, None);
        assert!(
            matches!(no_usb.open_device("1-2"), Err(BrokerError::NoHostUsb)),
            "no host USB"
        );
    }

    #[test]
    fn event_channel_devices_are_rationed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("xs");
        let _server = XsServer::start_with(&sock, ServerConfig::simulation()).unwrap();
        let xs = Arc::new(XsClient::connect(&sock).unwrap());
        let mut none = Broker::new(Arc::clone(&xs), "/x".into(), None, None);
        assert!(none.open_evtchn().is_err(), "no evtchn device with sim");
        let mut b = Broker::new(xs, "/x".into(), None, Some("/dev/null".into()));
        for _ in 0..EVTCHN_BUDGET {
            assert!(b.open_evtchn().is_ok());
        }
        assert!(matches!(
            b.open_evtchn(),
            Err(BrokerError::EvtchnBudget(EVTCHN_BUDGET))
        ));
    }

    const RECORD: &str = xenbus::RECORD_ROOT;
}
