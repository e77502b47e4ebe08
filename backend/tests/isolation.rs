//! A panic inside one controller's worker (here: a device that panics when
//! asked for vendor request 0xee) stops that controller only.

use std::sync::Arc;

use pvusb_backend::usb::emulated::EmulatedHost;
use pvusb_backend::usb::{
    BusId, CompletionSink, DeviceInfo, DeviceIo, HotplugHandler, IoFd, Transfer, TransferId,
    TransferKind, UsbDevice, UsbError, UsbHost,
};
use pvusb_protocol::SetupPacket;
use pvusb_testkit::{wait_for, Controller, Driver, World};

struct Panicky(Box<dyn UsbDevice>);

impl UsbDevice for Panicky {
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn submit(&mut self, id: TransferId, transfer: Transfer) {
        if let TransferKind::Control { setup } = &transfer.kind {
            assert!(setup.b_request != 0xee, "device bug triggered on purpose");
        }
        self.0.submit(id, transfer)
    }
    fn cancel(&mut self, id: TransferId) {
        self.0.cancel(id)
    }
    fn reset(&mut self) -> Result<(), UsbError> {
        self.0.reset()
    }
    fn shutdown(&mut self) {
        self.0.shutdown()
    }
}

struct PanickyHost(EmulatedHost);

struct PanickyIo(EmulatedHost);

impl DeviceIo for PanickyIo {
    fn open(
        &mut self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        Ok(Box::new(Panicky(self.0.open(busid, sink)?)))
    }
    fn poll_fds<'a>(&'a self, _out: &mut Vec<IoFd<'a>>) {}
    fn polls(&self) -> bool {
        false
    }
    fn run_ready(&mut self, _wait: std::time::Duration) {}
}

impl UsbHost for PanickyHost {
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        self.0.list()
    }
    fn device_io(&self) -> Box<dyn DeviceIo> {
        Box::new(PanickyIo(self.0.clone()))
    }
    fn set_hotplug_handler(&self, handler: HotplugHandler) {
        self.0.set_hotplug_handler(handler)
    }
}

#[test]
fn a_panicking_worker_stops_only_its_controller() {
    let w = World::new();
    let a = w.plug_loopback(64);
    let b = w.plug_loopback(64);
    let d = w
        .daemon_builder()
        .host(Arc::new(PanickyHost(w.bus().clone())))
        .start();
    w.controller(&Controller::new(60, 0, 2, 1));
    w.controller(&Controller::new(61, 0, 2, 1));
    w.set_port(60, 0, 1, &a.to_string());
    w.set_port(61, 0, 1, &b.to_string());
    let mut da = Driver::connect(&w, 60, 0);
    let mut db = Driver::connect(&w, 61, 0);
    da.conn_event();
    db.conn_event();
    da.enumerate(1, 1);
    db.enumerate(1, 1);
    let pipe = pvusb_protocol::Pipe::new(
        pvusb_protocol::TransferType::Control,
        pvusb_protocol::Direction::In,
        1,
        0,
        1,
    )
    .expect("pipe");
    let boom =
        pvusb_protocol::UrbRequest::control(5, pipe, SetupPacket::new(0xc0, 0xee, 0, 0, 0), &[])
            .expect("req");
    da.send(&[boom]);
    wait_for("the panicking worker to stop", || !d.is_running(60, 0));
    assert!(d.is_running(61, 0));
    let (r, _) = db.control_in(0, 1, 1, SetupPacket::new(0x80, 6, 0x0100, 0, 18));
    assert_eq!(r.status, 0, "the other controller is unaffected");
}
