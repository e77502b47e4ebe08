//! XenStore layout of a `vusb` controller (spec 5.1) and strict parsers for
//! the decimal values peers write there.
//!
//! Every value read from xenstore is written by someone we do not trust (the
//! guest owns the frontend directory). The parsers accept exactly what the
//! honest writers produce (`"%u"`): ASCII digits only. A sign, whitespace, an
//! empty value or an overflow is an error, never a silent default.

use thiserror::Error;

use crate::busid::{BusId, InterfaceId};
use crate::consts::MAX_PORTNR;

/// The frontend device kind: always `vusb`, whatever the backend type.
pub const DEVICE_KIND: &str = "vusb";
/// Backend type directory of a kernel-style ("pv") backend, ours.
pub const BACKEND_TYPE_VUSB: &str = "vusb";
/// Backend type directory of QEMU's backend.
pub const BACKEND_TYPE_QUSB: &str = "qusb";
/// libxl's driver-record prefix (`/libxl/usbback`).
pub const LIBXL_USBBACK_PREFIX: &str = "/libxl/usbback";

/// Key names inside the frontend and backend directories.
pub mod keys {
    /// XenbusState of the directory's owner.
    pub const STATE: &str = "state";
    /// Backend: `1` while the device should exist, `0` on removal.
    pub const ONLINE: &str = "online";
    /// Backend: path of the frontend directory.
    pub const FRONTEND: &str = "frontend";
    /// Backend: frontend domid.
    pub const FRONTEND_ID: &str = "frontend-id";
    /// Frontend: path of the backend directory.
    pub const BACKEND: &str = "backend";
    /// Frontend: backend domid.
    pub const BACKEND_ID: &str = "backend-id";
    /// Backend: `1` or `2`.
    pub const USB_VER: &str = "usb-ver";
    /// Backend: 1..=31.
    pub const NUM_PORTS: &str = "num-ports";
    /// Backend: libxl's controller type (`pv`/`qusb`), informational.
    pub const TYPE: &str = "type";
    /// Backend: directory holding `port/1` .. `port/<num-ports>`.
    pub const PORT: &str = "port";
    /// Frontend: grant of the URB ring page.
    pub const URB_RING_REF: &str = "urb-ring-ref";
    /// Frontend: grant of the conn ring page.
    pub const CONN_RING_REF: &str = "conn-ring-ref";
    /// Frontend: event channel port.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Frontend (optional, xen-hcd never writes it): ABI name.
    pub const PROTOCOL: &str = "protocol";
    /// Backend: hotplug script status.
    pub const HOTPLUG_STATUS: &str = "hotplug-status";
    /// Leaf of a driver record.
    pub const DRIVER_PATH: &str = "driver_path";
}

/// `/local/domain/<backend_domid>/backend/vusb/<frontend_domid>/<devid>`.
pub fn backend_dir(backend_domid: u16, frontend_domid: u16, devid: u32) -> String {
    backend_dir_of_type(BACKEND_TYPE_VUSB, backend_domid, frontend_domid, devid)
}

/// Like [`backend_dir`] for another backend type (e.g. `qusb`).
pub fn backend_dir_of_type(
    backend_type: &str,
    backend_domid: u16,
    frontend_domid: u16,
    devid: u32,
) -> String {
    format!("/local/domain/{backend_domid}/backend/{backend_type}/{frontend_domid}/{devid}")
}

/// `/local/domain/<frontend_domid>/device/vusb/<devid>`.
pub fn frontend_dir(frontend_domid: u16, devid: u32) -> String {
    format!("/local/domain/{frontend_domid}/device/{DEVICE_KIND}/{devid}")
}

/// libxl's private copy: `/libxl/<domid>/device/vusb/<devid>`.
pub fn libxl_private_dir(frontend_domid: u16, devid: u32) -> String {
    format!("/libxl/{frontend_domid}/device/{DEVICE_KIND}/{devid}")
}

/// `<dir>/<key>`.
pub fn join(dir: &str, key: &str) -> String {
    format!("{dir}/{key}")
}

/// The key of port `n` relative to the backend directory: `port/<n>`.
pub fn port_key(n: u8) -> String {
    format!("{}/{n}", keys::PORT)
}

/// `<prefix>/<busid-enc>/<intf-enc>/driver_path`: where the toolstack records
/// the original host driver of an interface before rebinding it. libxl uses
/// [`LIBXL_USBBACK_PREFIX`]; pvusb may pass its own prefix.
pub fn driver_record_path(prefix: &str, busid: &BusId, intf: &InterfaceId) -> String {
    format!(
        "{}/{}/{}/{}",
        prefix.trim_end_matches('/'),
        busid.to_key(),
        intf.to_key(),
        keys::DRIVER_PATH
    )
}

/// A xenstore value that is not what the key requires.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    /// The value is empty.
    #[error("value is empty")]
    Empty,
    /// Something other than ASCII digits (text truncated to 32 characters).
    #[error("value {0:?} is not a plain decimal number")]
    NotDecimal(String),
    /// The number does not fit the type.
    #[error("value {value} is outside {min}..={max}")]
    OutOfRange {
        /// The number as read, saturated to u64.
        value: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

/// Strict decimal parse into `min..=max`.
fn parse_ranged(s: &str, min: u64, max: u64) -> Result<u64, ValueError> {
    if s.is_empty() {
        return Err(ValueError::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::NotDecimal(s.chars().take(32).collect()));
    }
    // Only digits: the only possible failure is overflow.
    let value = s.parse::<u64>().unwrap_or(u64::MAX);
    if value < min || value > max {
        return Err(ValueError::OutOfRange { value, min, max });
    }
    Ok(value)
}

/// Strict decimal parse into `min..=max` of the type `T` of `max`, converted
/// without a cast: `parse_ranged` bounded the value by `max`, so the
/// conversion cannot fail, and if it did it would be the same range error.
fn parse_into<T>(s: &str, min: u64, max: T) -> Result<T, ValueError>
where
    T: Into<u64> + TryFrom<u64>,
{
    let max = max.into();
    let value = parse_ranged(s, min, max)?;
    T::try_from(value).map_err(|_| ValueError::OutOfRange { value, min, max })
}

/// A decimal u32 (grant refs, event channels, devids).
pub fn parse_u32(s: &str) -> Result<u32, ValueError> {
    parse_into(s, 0, u32::MAX)
}

/// A decimal u16 (domids).
pub fn parse_u16(s: &str) -> Result<u16, ValueError> {
    parse_into(s, 0, u16::MAX)
}

/// A decimal u8.
pub fn parse_u8(s: &str) -> Result<u8, ValueError> {
    parse_into(s, 0, u8::MAX)
}

/// `num-ports`: 1..=31.
pub fn parse_num_ports(s: &str) -> Result<u8, ValueError> {
    parse_into(s, 1, MAX_PORTNR)
}

/// A `0`/`1` flag such as `online`.
pub fn parse_flag(s: &str) -> Result<bool, ValueError> {
    parse_ranged(s, 0, 1).map(|v| v == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(backend_dir(0, 5, 0), "/local/domain/0/backend/vusb/5/0");
        assert_eq!(
            backend_dir_of_type(BACKEND_TYPE_QUSB, 1, 2, 3),
            "/local/domain/1/backend/qusb/2/3"
        );
        assert_eq!(frontend_dir(5, 0), "/local/domain/5/device/vusb/0");
        assert_eq!(libxl_private_dir(5, 1), "/libxl/5/device/vusb/1");
        assert_eq!(
            join(&frontend_dir(5, 0), keys::STATE),
            "/local/domain/5/device/vusb/0/state"
        );
        assert_eq!(port_key(1), "port/1");
        assert_eq!(port_key(31), "port/31");
        let b: BusId = "3-1.5".parse().unwrap();
        let i: InterfaceId = "3-1.5:1.0".parse().unwrap();
        assert_eq!(
            driver_record_path(LIBXL_USBBACK_PREFIX, &b, &i),
            "/libxl/usbback/3-1_5/3-1_5@1_0/driver_path"
        );
        assert_eq!(
            driver_record_path("/pvusb/usbback/", &b, &i),
            "/pvusb/usbback/3-1_5/3-1_5@1_0/driver_path"
        );
    }

    #[test]
    fn key_names() {
        let all = [
            keys::STATE,
            keys::ONLINE,
            keys::FRONTEND,
            keys::FRONTEND_ID,
            keys::BACKEND,
            keys::BACKEND_ID,
            keys::USB_VER,
            keys::NUM_PORTS,
            keys::TYPE,
            keys::PORT,
            keys::URB_RING_REF,
            keys::CONN_RING_REF,
            keys::EVENT_CHANNEL,
        ];
        let expect = "state online frontend frontend-id backend backend-id usb-ver num-ports \
                      type port urb-ring-ref conn-ring-ref event-channel";
        assert_eq!(all.join(" "), expect);
    }

    #[test]
    fn strict_numbers() {
        assert_eq!(parse_u32("0"), Ok(0));
        assert_eq!(parse_u32("4294967295"), Ok(u32::MAX));
        assert_eq!(parse_u32("007"), Ok(7));
        assert_eq!(
            parse_u32("4294967296"),
            Err(ValueError::OutOfRange {
                value: 4294967296,
                min: 0,
                max: u32::MAX.into()
            })
        );
        assert!(matches!(
            parse_u32("99999999999999999999999"),
            Err(ValueError::OutOfRange {
                value: u64::MAX,
                ..
            })
        ));
        assert_eq!(parse_u32(""), Err(ValueError::Empty));
        for bad in ["+1", "-1", " 1", "1 ", "1\n", "0x10", "1e3", "١"] {
            assert!(
                matches!(parse_u32(bad), Err(ValueError::NotDecimal(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse_u16("65535"), Ok(u16::MAX));
        assert!(parse_u16("65536").is_err());
        assert_eq!(parse_u8("255"), Ok(255));
        assert!(parse_u8("256").is_err());
        assert_eq!(parse_num_ports("8"), Ok(8));
        assert_eq!(parse_num_ports("31"), Ok(31));
        assert!(parse_num_ports("0").is_err());
        assert!(parse_num_ports("32").is_err());
        assert_eq!(parse_flag("1"), Ok(true));
        assert_eq!(parse_flag("0"), Ok(false));
        assert!(parse_flag("2").is_err());
        let long = "y".repeat(10_000);
        match parse_u32(&long) {
            Err(ValueError::NotDecimal(t)) => assert_eq!(t.len(), 32),
            other => panic!("{other:?}"),
        }
    }
}
