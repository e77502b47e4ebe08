//! Xenstore paths of controllers and of pvusb's own device records, and the
//! validation of busids and interface names.
//!
//! WHY validate here: busids come from the user, from sysfs and from xenstore (a
//! port node, a record); every one is checked before it becomes part of a path or
//! a sysfs write, so a hostile value can never escape its directory.

/// Root of pvusb's records (owned by the backend domain, surviving every crash
/// because xenstored outlives all pvusb processes).
pub const RECORD_ROOT: &str = "/pvusb/usbback";

/// Longest busid accepted (Linux allows 7 tiers: `NNN-` plus 6 `.N` levels).
const MAX_BUSID_LEN: usize = 32;

/// Whether `s` is a sysfs USB device name: `<bus>-<port>[.<port>]*` (root hubs
/// `usbN` are devices too, but never assignable, so they are rejected here).
pub fn is_busid(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_BUSID_LEN {
        return false;
    }
    let Some((bus, ports)) = s.split_once('-') else {
        return false;
    };
    all_digits(bus)
        && !ports.is_empty()
        && ports.split('.').all(all_digits)
        // and what the protocol crate (and so the backend) accepts as a busid
        && s.parse::<pvusb_protocol::BusId>().is_ok()
}

/// Whether `s` is an interface name `<busid>:<config>.<interface>` of `busid`.
pub fn is_interface_of(s: &str, busid: &str) -> bool {
    let Some(rest) = s.strip_prefix(busid).and_then(|r| r.strip_prefix(':')) else {
        return false;
    };
    let Some((config, intf)) = rest.split_once('.') else {
        return false;
    };
    all_digits(config) && all_digits(intf) && config.len() <= 3 && intf.len() <= 3
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Encode a busid or interface name as a xenstore key (`.`→`_`, `:`→`@`), as libxl does.
pub use pvusb_protocol::busid::{decode_key, encode_key};

/// `/local/domain/<domid>`.
pub fn domain_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// Backend directory of one controller.
pub fn backend_dir(backdom: u16, domid: u16, devid: u32) -> String {
    pvusb_protocol::xenstore::backend_dir(backdom, domid, devid)
}

/// Backend directory of all of one guest's controllers served by `backdom`.
pub fn backend_guest_dir(backdom: u16, domid: u16) -> String {
    format!("/local/domain/{backdom}/backend/vusb/{domid}")
}

/// Frontend directory of one controller.
pub fn frontend_dir(domid: u16, devid: u32) -> String {
    pvusb_protocol::xenstore::frontend_dir(domid, devid)
}

/// Frontend directory of all of one guest's controllers.
pub fn frontend_guest_dir(domid: u16) -> String {
    format!("/local/domain/{domid}/device/vusb")
}

/// libxl's own bookkeeping directory of a domain (`/libxl/<domid>`), which
/// `xl create` makes and `xl destroy` removes.
pub fn libxl_domain_dir(domid: u16) -> String {
    format!("/libxl/{domid}")
}

/// libxl's bookkeeping of one controller (`libxl__device_libxl_path` of a vusb
/// device): what `xl usb-list` and `xl destroy` read, so pvusb writes it too.
pub fn libxl_dir(domid: u16, devid: u32) -> String {
    format!("{}/device/vusb/{devid}", libxl_domain_dir(domid))
}

/// libxl's bookkeeping of all of one guest's controllers.
pub fn libxl_guest_dir(domid: u16) -> String {
    format!("{}/device/vusb", libxl_domain_dir(domid))
}

/// pvusb's record of one device.
pub fn record_dir(busid: &str) -> String {
    format!("{RECORD_ROOT}/{}", encode_key(busid))
}

/// The original driver of one interface, libxl's `driver_path` shape.
pub fn driver_path_key(busid: &str, interface: &str) -> String {
    format!(
        "{}/{}/driver_path",
        record_dir(busid),
        encode_key(interface)
    )
}

/// The canonical driver path recorded for a driver name (independent of the sysfs
/// root the command runs against, so a record written in a test reads the same).
pub fn driver_path_of(name: &str) -> String {
    format!("/sys/bus/usb/drivers/{name}")
}

/// Driver name out of a recorded `driver_path`, refusing anything that is not a
/// plain name under the USB drivers directory.
pub fn driver_name_of(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/sys/bus/usb/drivers/")?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busids_and_interfaces() {
        assert!(is_busid("3-11"));
        assert!(is_busid("2-1.6.4"));
        assert!(!is_busid("usb1"));
        assert!(!is_busid("3-"));
        assert!(!is_busid("3-1..2"));
        assert!(!is_busid("../3-1"));
        assert!(!is_busid("3-1:1.0"));
        assert!(is_interface_of("3-11:1.0", "3-11"));
        assert!(!is_interface_of("3-11:1.0", "3-1"));
        assert!(!is_interface_of("3-11:1", "3-11"));
        assert!(!is_interface_of("3-11:1.0/x", "3-11"));
    }

    #[test]
    fn keys_round_trip() {
        assert_eq!(encode_key("2-1.6:1.0"), "2-1_6@1_0");
        assert_eq!(decode_key("2-1_6@1_0"), "2-1.6:1.0");
        assert_eq!(
            driver_path_key("3-11", "3-11:1.0"),
            "/pvusb/usbback/3-11/3-11@1_0/driver_path"
        );
    }

    #[test]
    fn driver_names_are_confined() {
        assert_eq!(driver_name_of("/sys/bus/usb/drivers/btusb"), Some("btusb"));
        assert_eq!(driver_name_of("/sys/bus/usb/drivers/../../x"), None);
        assert_eq!(driver_name_of("/sys/bus/usb/drivers/.."), None);
        assert_eq!(driver_name_of("/etc/passwd"), None);
    }
}
