//! The host as a confined worker sees it: it drives the devices of one
//! controller, but every device node comes from an opener (the monitor, over
//! a socket), and the monitor alone lists devices and watches hot-plug.

use std::sync::{Arc, Mutex};

use pvusb_support::{lock_unpoisoned, Chain};

use super::io::LibusbIo;
use crate::usb::error::UsbError;
use crate::usb::opener::NodeOpener;
use crate::usb::traits::{DeviceIo, UsbHost};
use crate::usb::types::{DeviceInfo, HotplugHandler};

/// A [`UsbHost`] whose devices are opened by a [`NodeOpener`]: a worker's
/// view of host USB.
pub struct BrokeredHost {
    opener: Arc<dyn NodeOpener>,
    /// The controller's I/O, its context created at construction.
    prepared: Mutex<Option<LibusbIo>>,
}

impl std::fmt::Debug for BrokeredHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokeredHost").finish_non_exhaustive()
    }
}

impl BrokeredHost {
    /// A host whose controllers open devices through `opener`, with the
    /// first controller's libusb context created now.
    ///
    /// WHY now and not at the first open (as in the daemon): libusb looks
    /// for `/dev/bus/usb` whenever a context is created, even one without
    /// device discovery (libusb 1.0.27 `linux_usbfs.c`, `op_init`), which a
    /// worker without file-system access can no longer do. Make it before
    /// the worker confines itself; [`UsbHost::device_io`] hands it out.
    pub fn new(opener: Arc<dyn NodeOpener>) -> Self {
        Self {
            prepared: Mutex::new(Some(prepared(&opener))),
            opener,
        }
    }
}

/// A controller's I/O with its libusb context already created (if it fails
/// here, no host USB, the first open tries again and reports the error).
fn prepared(opener: &Arc<dyn NodeOpener>) -> LibusbIo {
    let mut io = LibusbIo::with_opener(Arc::clone(opener));
    if let Err(e) = io.prepare() {
        tracing::warn!(error = %Chain(&e), "cannot create the controller's libusb context yet");
    }
    io
}

impl UsbHost for BrokeredHost {
    /// Always empty: a worker never lists (it could not: it has no libusb
    /// context with device discovery and no access to `/dev/bus/usb`). The
    /// monitor lists and decides which busids a worker opens.
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        Ok(Vec::new())
    }

    /// The I/O prepared at construction (a worker serves one controller),
    /// else a new one.
    fn device_io(&self) -> Box<dyn DeviceIo> {
        let io = lock_unpoisoned(&self.prepared)
            .take()
            .unwrap_or_else(|| prepared(&self.opener));
        Box::new(io)
    }

    /// Does nothing: the monitor watches hot-plug and forwards the events
    /// to the worker itself.
    fn set_hotplug_handler(&self, _handler: HotplugHandler) {}
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;
    use crate::usb::libusb::OpenedNode;
    use crate::usb::proto::BusId;
    use crate::usb::traits::CompletionSink;
    use crate::usb::types::{Completion, HotplugEvent, TransferId};

    struct NoSink;
    impl CompletionSink for NoSink {
        fn complete(&self, _id: TransferId, _completion: Completion) {}
    }

    /// An opener that answers every busid with what `answer` makes.
    struct Fake(fn(&BusId) -> Result<OpenedNode, UsbError>);
    impl NodeOpener for Fake {
        fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
            (self.0)(busid)
        }
    }

    fn info(busid: BusId) -> DeviceInfo {
        DeviceInfo {
            busid,
            bus: busid.bus(),
            ..crate::engine::test_support::info(true, false)
        }
    }

    fn pipe_node(busid: &BusId) -> Result<OpenedNode, UsbError> {
        let (read, _write) = nix::unistd::pipe().unwrap();
        Ok(OpenedNode {
            info: info(*busid),
            fd: read,
        })
    }

    fn file_node(busid: &BusId) -> Result<OpenedNode, UsbError> {
        let fd: OwnedFd = tempfile::tempfile().unwrap().into();
        Ok(OpenedNode {
            info: info(*busid),
            fd,
        })
    }

    fn open(opener: Fake) -> Result<(), UsbError> {
        let busid: BusId = "1-2".parse().unwrap();
        let mut io = LibusbIo::with_opener(Arc::new(opener));
        io.open(&busid, Arc::new(NoSink)).map(drop)
    }

    /// A descriptor that is not a usbfs node is an error value: no host USB
    /// here (libusb cannot create a context without /dev/bus/usb), or
    /// libusb refusing to wrap it where there is.
    #[test]
    fn a_descriptor_that_is_no_usb_node_is_refused() {
        for opener in [Fake(pipe_node), Fake(file_node)] {
            match open(opener) {
                Err(UsbError::NoHostUsb(_)) => {}
                Err(UsbError::Io { op: "open", .. }) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The opener's errors reach the caller unchanged.
    #[test]
    fn opener_errors_pass_through() {
        let busid: BusId = "1-2".parse().unwrap();
        assert_eq!(
            open(Fake(|b| Err(UsbError::NotFound(*b)))),
            Err(UsbError::NotFound(busid))
        );
        assert_eq!(
            open(Fake(|b| Err(UsbError::Access(*b)))),
            Err(UsbError::Access(busid))
        );
        let host = BrokeredHost::new(Arc::new(Fake(|b| Err(UsbError::IsHub(*b)))));
        let opened = host.device_io().open(&busid, Arc::new(NoSink));
        assert_eq!(opened.err(), Some(UsbError::IsHub(busid)));
    }

    /// A node for another device than the one asked for is refused before
    /// anything touches it.
    #[test]
    fn a_node_for_another_device_is_refused() {
        let wrong = |_: &BusId| {
            let (read, _write) = nix::unistd::pipe().unwrap();
            Ok(OpenedNode {
                info: info("7-7".parse().unwrap()),
                fd: read,
            })
        };
        match open(Fake(wrong)) {
            Err(e @ UsbError::Io { op: "open", .. }) => {
                assert!(e.to_string().contains("returned device 7-7"), "{e}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A worker's host lists nothing and ignores hot-plug handlers.
    #[test]
    fn a_worker_host_never_lists() {
        let host = BrokeredHost::new(Arc::new(Fake(|b| Err(UsbError::NotFound(*b)))));
        assert_eq!(host.list(), Ok(Vec::new()));
        host.set_hotplug_handler(Arc::new(|_: HotplugEvent| panic!("no events here")));
        let io = host.device_io();
        // Prepared where libusb works, lazy (and so idle) where it does not.
        let has_usb = std::path::Path::new("/dev/bus/usb").exists();
        if !has_usb {
            assert!(!io.polls());
        }
    }
}
