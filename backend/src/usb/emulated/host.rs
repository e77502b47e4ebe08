//! The emulated bus: devices registered at busids, opened through [`UsbHost`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pvusb_support::lock_unpoisoned;

use super::device::EmulatedDevice;
use super::framework::{EmulatedUsbDevice, Shared};
use crate::usb::error::UsbError;
use crate::usb::proto::BusId;
use crate::usb::traits::{CompletionSink, DeviceIo, IoFd, UsbDevice, UsbHost};
use crate::usb::types::{DeviceInfo, HotplugEvent, HotplugHandler};

/// Makes a fresh instance of an emulated device each time it is opened.
/// State that must survive a close or a replug (a disk's contents, a
/// keyboard's handle) is shared through what the closure captures.
pub type DeviceFactory = Arc<dyn Fn() -> Box<dyn EmulatedDevice> + Send + Sync>;

/// The bus number of the emulated bus: far above real buses, so emulated and
/// libusb busids never collide.
pub const EMULATED_BUS: u8 = 200;

struct Slot {
    factory: DeviceFactory,
    info: DeviceInfo,
    open: Weak<Shared>,
}

struct HostInner {
    devices: Mutex<HashMap<BusId, Slot>>,
    handler: Mutex<Option<HotplugHandler>>,
    next_address: Mutex<u8>,
}

/// A fake USB bus of emulated devices, implementing [`UsbHost`].
#[derive(Clone)]
pub struct EmulatedHost {
    inner: Arc<HostInner>,
}

impl std::fmt::Debug for EmulatedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut busids: Vec<String> = self
            .inner
            .devices()
            .keys()
            .map(ToString::to_string)
            .collect();
        busids.sort();
        f.debug_struct("EmulatedHost")
            .field("devices", &busids)
            .finish()
    }
}

impl Default for EmulatedHost {
    fn default() -> Self {
        Self::new()
    }
}

impl HostInner {
    fn devices(&self) -> MutexGuard<'_, HashMap<BusId, Slot>> {
        lock_unpoisoned(&self.devices)
    }

    fn notify(&self, event: HotplugEvent) {
        let handler = lock_unpoisoned(&self.handler).clone();
        if let Some(h) = handler {
            h(event);
        }
    }

    fn remove(&self, busid: &BusId) -> bool {
        let slot = self.devices().remove(busid);
        let Some(slot) = slot else { return false };
        if let Some(open) = slot.open.upgrade() {
            open.unplug();
        }
        self.notify(HotplugEvent::Left(*busid));
        true
    }
}

impl EmulatedHost {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(HostInner {
                devices: Mutex::new(HashMap::new()),
                handler: Mutex::new(None),
                next_address: Mutex::new(1),
            }),
        }
    }

    /// The busid of root port `port` (1..=255) on the emulated bus (`200-<port>`).
    pub fn busid(port: u8) -> Option<BusId> {
        BusId::new(EMULATED_BUS, &[port]).ok()
    }

    /// Plugs a device in at `busid` and reports it arrived.
    pub fn add(&self, busid: BusId, factory: DeviceFactory) -> Result<(), UsbError> {
        {
            let mut devices = self.inner.devices();
            if devices.contains_key(&busid) {
                return Err(UsbError::AlreadyPresent(busid));
            }
            let address = {
                let mut next = lock_unpoisoned(&self.inner.next_address);
                let a = *next;
                *next = if *next >= 127 { 1 } else { *next + 1 };
                a
            };
            let info = Self::info(&busid, address, factory().as_ref());
            devices.insert(
                busid,
                Slot {
                    factory,
                    info,
                    open: Weak::new(),
                },
            );
        }
        self.inner.notify(HotplugEvent::Arrived(busid));
        Ok(())
    }

    /// Plugs a device into the first free root port and returns its busid.
    pub fn add_next(&self, factory: DeviceFactory) -> Result<BusId, UsbError> {
        let mut last = None;
        for busid in (1..=u8::MAX).filter_map(Self::busid) {
            if !self.inner.devices().contains_key(&busid) {
                self.add(busid, factory)?;
                return Ok(busid);
            }
            last = Some(busid);
        }
        match last {
            Some(busid) => Err(UsbError::AlreadyPresent(busid)),
            None => Err(UsbError::NoHostUsb(
                "the emulated bus has no ports".to_owned(),
            )),
        }
    }

    /// Unplugs the device: an open instance fails everything in flight with
    /// `NoDevice`, then the hotplug handler sees `Left`. Returns whether there was one.
    pub fn remove(&self, busid: &BusId) -> bool {
        self.inner.remove(busid)
    }

    /// Unplugs and plugs the same device back in (a fresh instance from its factory).
    pub fn replug(&self, busid: &BusId) -> Result<(), UsbError> {
        let factory = self.inner.devices().get(busid).map(|s| s.factory.clone());
        let factory = factory.ok_or(UsbError::NotFound(*busid))?;
        self.remove(busid);
        self.add(*busid, factory)
    }

    fn info(busid: &BusId, address: u8, device: &dyn EmulatedDevice) -> DeviceInfo {
        let spec = device.spec();
        DeviceInfo {
            busid: *busid,
            bus: busid.bus(),
            address,
            speed: spec.speed,
            vendor_id: spec.vendor_id,
            product_id: spec.product_id,
            device_class: spec.class,
            is_hub: spec.class == 9,
            manufacturer: spec.manufacturer.clone(),
            product: spec.product.clone(),
            serial: spec.serial.clone(),
            device_descriptor: spec.device_descriptor(),
            max_speed_is_super: false,
            num_configurations: u8::try_from(spec.configs.len()).unwrap_or(u8::MAX),
            // Emulated devices answer inside `submit` (or on a timer that
            // models the device, not a per-transfer host cost).
            gains_from_coalescing: false,
            transfers_guest_pages: false,
        }
    }
}

impl EmulatedHost {
    /// Opens the device at `busid` (a fresh instance from its factory);
    /// refused while another instance is open, and for hubs.
    pub fn open(
        &self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        let mut devices = self.inner.devices();
        let slot = devices.get_mut(busid).ok_or(UsbError::NotFound(*busid))?;
        if slot.open.upgrade().is_some_and(|s| !s.is_closed()) {
            return Err(UsbError::Busy(*busid));
        }
        let info = slot.info.clone();
        if info.is_hub {
            return Err(UsbError::IsHub(*busid));
        }
        let host = Arc::downgrade(&self.inner);
        let gone_busid = *busid;
        let hook = Box::new(move || {
            if let Some(host) = host.upgrade() {
                host.remove(&gone_busid);
            }
        });
        let opened = EmulatedUsbDevice::new(info, (slot.factory)(), sink, Some(hook));
        slot.open = Arc::downgrade(opened.shared());
        Ok(Box::new(opened))
    }
}

/// A controller's I/O on the emulated bus: emulated devices complete inside
/// `submit`/`cancel` (or from the thread that unplugs them), so there is
/// nothing to poll and nothing to run.
#[derive(Debug, Clone)]
pub struct EmulatedIo(EmulatedHost);

impl DeviceIo for EmulatedIo {
    fn open(
        &mut self,
        busid: &BusId,
        sink: Arc<dyn CompletionSink>,
    ) -> Result<Box<dyn UsbDevice>, UsbError> {
        self.0.open(busid, sink)
    }

    fn poll_fds<'a>(&'a self, _out: &mut Vec<IoFd<'a>>) {}

    fn polls(&self) -> bool {
        false
    }

    fn run_ready(&mut self, _wait: Duration) {}
}

impl UsbHost for EmulatedHost {
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        let devices = self.inner.devices();
        let mut infos: Vec<DeviceInfo> = devices.values().map(|slot| slot.info.clone()).collect();
        infos.sort_by(|a, b| (a.bus, a.busid.ports()).cmp(&(b.bus, b.busid.ports())));
        Ok(infos)
    }

    fn device_io(&self) -> Box<dyn DeviceIo> {
        Box::new(EmulatedIo(self.clone()))
    }

    fn set_hotplug_handler(&self, handler: HotplugHandler) {
        *lock_unpoisoned(&self.inner.handler) = Some(handler);
    }
}
