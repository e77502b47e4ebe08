//! Forwards libusb hotplug callbacks (never polling) as busid events.

use std::sync::{Arc, Mutex};

use pvusb_support::lock_unpoisoned;
use rusb::{Context, Device, Hotplug};

use super::status::busid_of;
use crate::usb::types::{HotplugEvent, HotplugHandler};

pub(super) struct HotplugForwarder {
    handler: Arc<Mutex<Option<HotplugHandler>>>,
}

impl HotplugForwarder {
    pub(super) fn new(handler: Arc<Mutex<Option<HotplugHandler>>>) -> Self {
        Self { handler }
    }

    fn forward(&self, device: &Device<Context>, arrived: bool) {
        // The port path is cached in libusb's device struct, so it is still
        // readable for a device that left.
        let Some(busid) = device
            .port_numbers()
            .ok()
            .and_then(|p| busid_of(device.bus_number(), &p))
        else {
            return;
        };
        let handler = lock_unpoisoned(&self.handler).clone();
        if let Some(h) = handler {
            h(if arrived {
                HotplugEvent::Arrived(busid)
            } else {
                HotplugEvent::Left(busid)
            });
        }
    }
}

impl Hotplug<Context> for HotplugForwarder {
    fn device_arrived(&mut self, device: Device<Context>) {
        self.forward(&device, true);
    }

    fn device_left(&mut self, device: Device<Context>) {
        self.forward(&device, false);
    }
}
