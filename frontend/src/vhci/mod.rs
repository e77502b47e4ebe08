//! The vhci-hcd bridge: serves a pvUSB device to the guest kernel's USB/IP
//! virtual host controller (`vhci-hcd`) over one end of a stream socket,
//! translating USB/IP ⇄ usbif.
//!
//! WHY: with it, the guest's own USB stack (usb-storage, HID, audio
//! drivers) drives pvUSB devices through a userspace frontend, without a
//! xen-hcd kernel module.
//!
//! | module | concern |
//! |---|---|
//! | [`attach`] | [`VhciHcd`]: free port from `status`, `attach`, `detach` in sysfs |
//! | [`bridge`] | [`Bridge`]: spawn, stop, join; [`BridgeOptions`], [`BridgeEnd`] |
//! | `reader` | socket → [`StreamDecoder`](pvusb_protocol::usbip::StreamDecoder) → [`crate::Frontend::submit`] / unlink |
//! | `answer` | completions → `RET_SUBMIT`/`RET_UNLINK`, sent on the thread that completes |
//! | `watch` | the bridge thread: port events, the end, answers the socket could not take at once |
//! | [`serve`] | [`Server`]: one bridge per device of a controller, following port events |
//! | `split` | bulk requests above [`crate::MAX_URB_DATA`] as several usbif URBs, all in flight |
//! | `port_reset` | the guest's port reset, recognised by the enumeration after it and passed on |
//! | `table` | the in-flight table and the credits that bound it |
//! | [`translate`] | the pure mapping: `CMD_SUBMIT` → [`crate::Urb`], completion → `RET_SUBMIT`, status → errno |
//! | [`endpoints`] | each endpoint's transfer type, from the configuration descriptor |
//!
//! ## vhci semantics the bridge follows (from `drivers/usb/usbip/`)
//!
//! * vhci completes SET_ADDRESS itself and never sends it; it sends its
//!   enumeration's GET_DESCRIPTORs to address 0. The bridge sends every
//!   request to the usbif address the frontend gave the device
//!   ([`DeviceTarget::address`]) and answers a stray SET_ADDRESS locally.
//! * A `CMD_SUBMIT` does not say the transfer type; [`EndpointTypes`]
//!   derives it from the configuration descriptor.
//! * Unlink: if the cancel took effect the answer is `RET_UNLINK`
//!   `-ECONNRESET` and no `RET_SUBMIT` (vhci gives the URB back on the
//!   `RET_UNLINK`; a later `RET_SUBMIT` for that seqnum would make it drop
//!   the device). If the URB had completed, its `RET_SUBMIT` goes first and
//!   the `RET_UNLINK` carries 0.
//! * vhci never reads a reply's `devid`, `direction` or `ep`; they are 0,
//!   as the kernel's stub sends them.
//! * vhci resets its ports locally too. The enumeration that follows every
//!   port reset starts with GET_DESCRIPTOR(DEVICE) of 64 (or 8) bytes; the
//!   bridge then addresses the device again through usbif, and the backend
//!   resets the real device on that (`port_reset`).
//! * A bulk request above [`crate::MAX_URB_DATA`] is carried as usbif URBs
//!   of [`crate::BULK_CHUNK`] bytes on the same endpoint, all submitted at
//!   once (as Linux puts a scatter list on xen-hcd's ring); an error or a
//!   short IN piece ends it, the `RET_SUBMIT` carries the bytes of the
//!   pieces before it with that status, and the pieces behind it are
//!   unlinked. An unlink cancels every piece. The decoder's
//!   [`pvusb_protocol::usbip::Limits`] bound the total.
//! * Any other request above [`crate::MAX_URB_DATA`] is answered
//!   `-EMSGSIZE`, more iso packets than usbif carries `-EFBIG`: never
//!   truncated.
//! * A malformed reply makes vhci drop the device, so every `RET_SUBMIT` is
//!   checked by the codec and replaced by an `-EPROTO` reply if it fails.
//! * The device leaving, the controller dying, or [`Bridge::stop`] cancels
//!   what is in flight, answers it `-ENODEV`, and shuts the socket down;
//!   vhci then detaches the port.
//!
//! ## Limits
//!
//! * `URB_ZERO_PACKET` is not carried (usbif has no such flag), split or
//!   not.
//! * SET_CONFIGURATION to a configuration other than the one enumerated:
//!   the endpoint table is the first configuration's.
//! * `pvusb front serve` serves one controller; several need one process
//!   each (the systemd unit `pvusb-front@N` is a template for that).
//! * An unlink of a split request with pieces in flight is covered by unit
//!   tests of the split state only; end to end, test-bed scenario 11 kills
//!   readers mid-transfer without knowing which piece runs.
//! * A piece of a split IN request behind one that ended short may already
//!   have taken data from the device before its unlink (xen-hcd's scatter
//!   lists have the same window); bulk data stages that end short are
//!   error paths, after which usb-storage resets the device.
//! * A device whose bridge ended by itself (vhci detached it, protocol
//!   error) stays unserved until replugged.

mod answer;
pub mod attach;
#[cfg(test)]
mod attach_tests;
pub mod bridge;
pub mod endpoints;
mod port_reset;
mod reader;
pub mod serve;
mod split;
mod table;
#[cfg(test)]
mod tests;
pub mod translate;
mod watch;

pub use crate::report::BridgeReport;
pub use attach::{AttachError, VhciHcd, VhciPorts, VhciSpeed};
pub use bridge::{Bridge, BridgeEnd, BridgeError, BridgeOptions, DEFAULT_MAX_IN_FLIGHT};
pub use endpoints::EndpointTypes;
pub use serve::{ServeError, Server};
pub use translate::DeviceTarget;

use crate::device::Device;

impl DeviceTarget {
    /// The target of an enumerated device: its port, its address and its
    /// first configuration's endpoints (what [`crate::Frontend::enumerate`]
    /// selected).
    pub fn of(device: &Device) -> Self {
        Self {
            port: device.port,
            address: device.address,
            endpoints: EndpointTypes::from_config(&device.config),
        }
    }
}
