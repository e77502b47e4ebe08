//! Emulated USB devices plugged into a [`World`]'s bus, each described in
//! the fake sysfs as the kernel would show it.
//!
//! Why the sysfs description: the toolstack finds, unbinds and gives back
//! host devices through sysfs. With every plugged device described there,
//! `dev-attach` and `dev-detach` run their real code paths on emulated
//! devices (the binding is simulated: the tree's `driver` links move).

use std::sync::Arc;

use pvusb_backend::usb::emulated::audio::{AudioDevice, AudioStats};
use pvusb_backend::usb::emulated::keyboard::KeyboardHandle;
use pvusb_backend::usb::emulated::loopback::LoopbackDevice;
use pvusb_backend::usb::emulated::mass_storage::store::MemoryStore;
use pvusb_backend::usb::emulated::mass_storage::MassStorageDevice;
use pvusb_backend::usb::emulated::{DeviceFactory, EMULATED_BUS};
use pvusb_backend::usb::BusId;
use pvusb_toolstack::sysfs::fake::FakeDevice;

use crate::world::World;

/// An emulated device a world can plug.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Device {
    /// Bulk loopback keeping this many bytes of OUT data.
    Loopback(usize),
    /// Mass storage on this many 512-byte blocks in memory.
    Disk(u32),
    /// HID keyboard (the world's keyboard handle).
    Keyboard,
    /// UAC1 audio (the world's audio counters).
    Audio,
}

impl Device {
    /// What creates the device at every (re)plug.
    pub(crate) fn factory(
        self,
        keyboard: &KeyboardHandle,
        audio: &Arc<AudioStats>,
    ) -> DeviceFactory {
        match self {
            Device::Loopback(capacity) => Arc::new(move || Box::new(LoopbackDevice::new(capacity))),
            Device::Disk(blocks) => {
                let store = Arc::new(MemoryStore::new(blocks));
                Arc::new(move || Box::new(MassStorageDevice::new(Arc::clone(&store) as _)))
            }
            Device::Keyboard => {
                let keyboard = keyboard.clone();
                Arc::new(move || Box::new(keyboard.device()))
            }
            Device::Audio => {
                let audio = Arc::clone(audio);
                Arc::new(move || Box::new(AudioDevice::new(Arc::clone(&audio))))
            }
        }
    }

    /// Its sysfs view at `busid`: device number port + 1 (the root hub is
    /// 1), one interface bound to the driver Linux would bind.
    pub(crate) fn sysfs(self, busid: &BusId) -> FakeDevice {
        let driver = match self {
            Device::Disk(_) => Some("usb-storage"),
            Device::Keyboard => Some("usbhid"),
            Device::Loopback(_) | Device::Audio => None,
        };
        let port = busid.ports().first().copied().unwrap_or(0);
        FakeDevice::new(
            &busid.to_string(),
            u16::from(EMULATED_BUS),
            u16::from(port) + 1,
            &[driver],
        )
    }
}

impl World {
    /// Plugs a loopback device keeping `capacity` bytes of OUT data.
    pub fn plug_loopback(&self, capacity: usize) -> BusId {
        self.plug(Device::Loopback(capacity))
    }

    /// Plugs a disk of `blocks` 512-byte blocks in memory.
    pub fn plug_disk(&self, blocks: u32) -> BusId {
        self.plug(Device::Disk(blocks))
    }

    /// Plugs a keyboard typing what [`World::keyboard`] is given.
    pub fn plug_keyboard(&self) -> BusId {
        self.plug(Device::Keyboard)
    }

    /// Plugs an audio device counting into [`World::audio`].
    pub fn plug_audio(&self) -> BusId {
        self.plug(Device::Audio)
    }
}
