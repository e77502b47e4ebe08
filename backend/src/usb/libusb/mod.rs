//! Real host USB devices through libusb (vendored, via rusb).
//!
//! Two kinds of libusb context:
//! * one daemon-level context ([`LibusbHost`]) that lists devices and runs
//!   hotplug callbacks on its own thread; no device is ever opened in it;
//! * one context per controller ([`LibusbIo`], without device discovery):
//!   the daemon opens the device's node `/dev/bus/usb/BBB/DDD` and wraps the
//!   descriptor into it (`libusb_wrap_sys_device`), and the controller's
//!   thread polls its descriptors and runs its completion callbacks.
//!
//! Who opens a node is a [`NodeOpener`]: the daemon's own discovery when
//! everything runs in one process, or, when each controller runs in a
//! confined worker ([`BrokeredHost`]), the monitor, which prepares the node
//! with [`LibusbHost::open_node_for_worker`] and passes the descriptor over.
//!
//! Descriptors, open/claim/detach and the intercepted standard requests use
//! rusb's safe API; transfers use libusb's asynchronous API (`ffi`, the
//! crate's only unsafe code) so many can be in flight. Contexts are owned
//! (never rusb's global one): on a machine without `/dev/bus/usb` creating
//! one fails and [`LibusbHost::new`] returns [`UsbError::NoHostUsb`] instead
//! of panicking.

mod brokered;
mod claims;
mod control_worker;
mod device;
mod ffi;
mod handoff;
mod hotplug;
mod hotplug_thread;
mod io;
pub mod iso_layout;
pub mod status;

use std::sync::{Arc, Mutex};

use pvusb_support::{lock_unpoisoned, Chain};
use rusb::{Context, UsbContext};

pub use self::brokered::BrokeredHost;
pub use self::device::LibusbDevice;
use self::hotplug::HotplugForwarder;
use self::hotplug_thread::HotplugThread;
pub use self::io::LibusbIo;
use self::status::{busid_of, device_descriptor_bytes, guest_speed, matches_busid, usb_error};
pub use crate::usb::opener::{NodeOpener, OpenedNode};

use crate::addr::patch_ep0_max_packet;
use crate::usb::error::UsbError;
use crate::usb::proto::BusId;
use crate::usb::traits::{DeviceIo, UsbHost};
use crate::usb::types::{DeviceInfo, HotplugHandler};

/// The host's USB devices through libusb.
pub struct LibusbHost {
    discovery: Arc<Discovery>,
    events: HotplugThread,
    handler: Arc<Mutex<Option<HotplugHandler>>>,
    /// Kept alive to stay registered; `None` without hotplug support.
    registration: Mutex<Option<rusb::Registration<Context>>>,
}

/// The daemon-level context's view of the bus: finds a device by busid and
/// opens its node for a controller's context.
pub(crate) struct Discovery {
    context: Context,
}

impl std::fmt::Debug for LibusbHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibusbHost").finish_non_exhaustive()
    }
}

impl LibusbHost {
    /// Creates the daemon-level libusb context, its hotplug thread and
    /// (where libusb supports it) the hotplug registration.
    pub fn new() -> Result<Self, UsbError> {
        let context = Context::new().map_err(|e| UsbError::NoHostUsb(e.to_string()))?;
        let events = HotplugThread::start(context.clone())
            .map_err(|e| UsbError::NoHostUsb(format!("hotplug thread: {e}", e = Chain(&e))))?;
        let handler = Arc::new(Mutex::new(None));
        let registration = if rusb::has_hotplug() {
            let forwarder = Box::new(HotplugForwarder::new(handler.clone()));
            match rusb::HotplugBuilder::new()
                .enumerate(false)
                .register(&context, forwarder)
            {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %Chain(&e), "libusb hotplug registration failed; unplugs will not be noticed");
                    None
                }
            }
        } else {
            tracing::warn!("libusb has no hotplug support here; unplugs will not be noticed");
            None
        };
        Ok(Self {
            discovery: Arc::new(Discovery { context }),
            events,
            handler,
            registration: Mutex::new(registration),
        })
    }
}

impl Discovery {
    fn find(&self, busid: &BusId) -> Result<rusb::Device<Context>, UsbError> {
        let devices = self
            .context
            .devices()
            .map_err(|e| usb_error(*busid, "list devices", e))?;
        devices
            .iter()
            .find(|d| {
                d.port_numbers()
                    .is_ok_and(|p| matches_busid(busid, d.bus_number(), &p))
            })
            .ok_or(UsbError::NotFound(*busid))
    }

    /// Finds the device at `busid`, applies what can be refused before
    /// opening (hubs, SuperSpeed-only devices) and opens its usbfs node;
    /// returns the device too, for what the caller still wants to ask.
    ///
    /// WHY a node and not a libusb handle: the node's descriptor is what a
    /// controller's own context wraps, so no device is open in the shared
    /// context and the daemon alone needs the right to open nodes.
    fn open(&self, busid: &BusId) -> Result<(rusb::Device<Context>, OpenedNode), UsbError> {
        let device = self.find(busid)?;
        let info = describe(&device).ok_or(UsbError::NotFound(*busid))?;
        if info.is_hub {
            return Err(UsbError::IsHub(*busid));
        }
        if info.max_speed_is_super {
            runs_as_high(&device, *busid, info.num_configurations)?;
        }
        let path = format!("/dev/bus/usb/{:03}/{:03}", info.bus, info.address);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => UsbError::Access(*busid),
                std::io::ErrorKind::NotFound => UsbError::NoDevice(*busid),
                _ => UsbError::Io {
                    busid: *busid,
                    op: "open the device node",
                    detail: format!("{path}: {e}", e = Chain(&e)),
                },
            })?;
        let node = OpenedNode {
            info,
            fd: file.into(),
        };
        Ok((device, node))
    }
}

impl NodeOpener for Discovery {
    fn open_node(&self, busid: &BusId) -> Result<OpenedNode, UsbError> {
        self.open(busid).map(|(_, node)| node)
    }
}

/// What can be learnt about a device without opening it.
fn describe(device: &rusb::Device<Context>) -> Option<DeviceInfo> {
    let ports = device.port_numbers().ok()?;
    let busid = busid_of(device.bus_number(), &ports)?;
    let desc = device.device_descriptor().ok()?;
    let (speed, max_speed_is_super) = guest_speed(device.speed());
    let mut device_descriptor = device_descriptor_bytes(&desc);
    if max_speed_is_super {
        patch_ep0_max_packet(&mut device_descriptor);
    }
    Some(DeviceInfo {
        busid,
        bus: device.bus_number(),
        address: device.address(),
        speed,
        vendor_id: desc.vendor_id(),
        product_id: desc.product_id(),
        device_class: desc.class_code(),
        is_hub: desc.class_code() == rusb::constants::LIBUSB_CLASS_HUB,
        manufacturer: None,
        product: None,
        serial: None,
        device_descriptor,
        max_speed_is_super,
        num_configurations: desc.num_configurations(),
        // Every libusb transfer pays usbfs and an interrupt (crate::coalesce).
        gains_from_coalescing: true,
        transfers_guest_pages: true,
    })
}

/// Whether every configuration of a SuperSpeed device can run on a
/// high-speed port (see [`status::superspeed_runs_as_high`]).
fn runs_as_high(
    device: &rusb::Device<Context>,
    busid: BusId,
    configurations: u8,
) -> Result<(), UsbError> {
    for index in 0..configurations {
        let config = device.config_descriptor(index).map_err(|e| {
            tracing::debug!(%busid, index, error = %Chain(&e), "configuration descriptor unreadable");
            UsbError::BadDescriptors {
                busid,
                configuration: index,
            }
        })?;
        let alts: Vec<_> = config.interfaces().flat_map(|i| i.descriptors()).collect();
        let endpoints: Vec<_> = alts.iter().flat_map(|a| a.endpoint_descriptors()).collect();
        status::superspeed_runs_as_high(endpoints.iter().map(|e| {
            (
                e.address(),
                status::EndpointFacts {
                    transfer_type: match e.transfer_type() {
                        rusb::TransferType::Control => 0,
                        rusb::TransferType::Isochronous => 1,
                        rusb::TransferType::Bulk => 2,
                        rusb::TransferType::Interrupt => 3,
                    },
                    max_packet_size: e.max_packet_size(),
                    extra: e.extra().unwrap_or_default(),
                },
            )
        }))
        .map_err(|why| UsbError::NeedsSuperSpeed(busid, why))?;
    }
    Ok(())
}

impl UsbHost for LibusbHost {
    fn list(&self) -> Result<Vec<DeviceInfo>, UsbError> {
        let devices = self
            .discovery
            .context
            .devices()
            .map_err(|e| UsbError::NoHostUsb(e.to_string()))?;
        // Root hubs have no port path and are skipped by `describe`.
        Ok(devices.iter().filter_map(|d| describe(&d)).collect())
    }

    fn device_io(&self) -> Box<dyn DeviceIo> {
        let opener: Arc<dyn NodeOpener> = Arc::clone(&self.discovery) as _;
        Box::new(LibusbIo::with_opener(opener))
    }

    fn set_hotplug_handler(&self, handler: HotplugHandler) {
        *lock_unpoisoned(&self.handler) = Some(handler);
    }
}

impl Drop for LibusbHost {
    fn drop(&mut self) {
        // From now on a callback still running forwards nothing.
        lock_unpoisoned(&self.handler).take();
        let registration = lock_unpoisoned(&self.registration).take();
        if self.events.is_current() {
            // Dropped from a hotplug callback: the registration's box may be
            // the one running. Leak it (the handler is gone, so it forwards
            // nothing) rather than free it under our own feet.
            std::mem::forget(registration);
            self.events.stop();
            return;
        }
        // libusb 1.0.27 (hotplug.c) releases its hotplug lock around a
        // callback, so deregistering could return while the callback still
        // runs, and rusb frees the callback's box right after: stop the only
        // thread that runs callbacks first, then deregister.
        self.events.stop();
        drop(registration);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Machines without /dev/bus/usb (this project's CI) must get an error
    /// value, not a panic; where USB exists, the host must list.
    #[test]
    fn no_host_usb_is_an_error_value() {
        let has_usb = std::path::Path::new("/dev/bus/usb").exists();
        match LibusbHost::new() {
            Err(UsbError::NoHostUsb(detail)) => {
                let msg = UsbError::NoHostUsb(detail).to_string();
                assert!(msg.starts_with("no host USB"), "{msg}");
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(host) => {
                assert!(has_usb, "libusb initialised without /dev/bus/usb");
                let listed = host.list().expect("listing works when the context exists");
                assert!(listed.iter().all(|d| !d.busid.ports().is_empty()));
            }
        }
    }
}
