//! Port speeds of the conn ring (spec 2.4) and the controller's `usb-ver`
//! (spec 2.2), with the policy linking them (spec 8: HIGH only on 2.0).

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::xenstore::{parse_u32, ValueError};

/// `usbif_conn_response.speed`; equal to Linux `enum usb_device_speed` 0..=3.
///
/// Serialized by variant name (`"High"`); nothing else deserializes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Speed {
    /// Nothing connected (`USBIF_SPEED_NONE`).
    None = 0,
    /// 1.5 Mbit/s.
    Low = 1,
    /// 12 Mbit/s.
    Full = 2,
    /// 480 Mbit/s.
    High = 3,
}

/// A speed value outside 0..=3 (e.g. Linux SUPER = 5, a protocol error for
/// xen-hcd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("speed value {0} is not one of none (0), low (1), full (2) or high (3)")]
pub struct SpeedError(pub u8);

impl TryFrom<u8> for Speed {
    type Error = SpeedError;
    fn try_from(v: u8) -> Result<Self, SpeedError> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Low),
            2 => Ok(Self::Full),
            3 => Ok(Self::High),
            _ => Err(SpeedError(v)),
        }
    }
}

impl Speed {
    /// The wire byte.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// `usb-ver` of a controller. Only 1 and 2 exist for pv controllers; every
/// other value is rejected by xen-hcd, QEMU, usbback and libxl alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UsbVer {
    /// `USB_VER_USB11`: a USB 1.1 controller (low and full speed).
    Usb11 = 1,
    /// `USB_VER_USB20`: a USB 2.0 controller (up to high speed).
    Usb20 = 2,
}

/// A `usb-ver` value that no peer accepts.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsbVerError {
    /// Not a decimal number.
    #[error("usb-ver is not a valid number")]
    Value(#[from] ValueError),
    /// `USB_VER_UNKNOWN`.
    #[error("usb-ver 0 (unknown) is not a usable USB version; must be 1 or 2")]
    Unknown,
    /// `USB_VER_USB30`, defined in the header but unsupported everywhere.
    #[error("usb-ver 3 (USB 3.0) is not supported by pvUSB; must be 1 or 2")]
    Usb30,
    /// Anything else.
    #[error("usb-ver {0} is not defined; must be 1 or 2")]
    Undefined(u32),
}

impl TryFrom<u32> for UsbVer {
    type Error = UsbVerError;
    fn try_from(v: u32) -> Result<Self, UsbVerError> {
        match v {
            1 => Ok(Self::Usb11),
            2 => Ok(Self::Usb20),
            0 => Err(UsbVerError::Unknown),
            3 => Err(UsbVerError::Usb30),
            _ => Err(UsbVerError::Undefined(v)),
        }
    }
}

impl FromStr for UsbVer {
    type Err = UsbVerError;
    /// Parses the xenstore form (strict decimal, see [`parse_u32`]).
    fn from_str(s: &str) -> Result<Self, UsbVerError> {
        Self::try_from(parse_u32(s)?)
    }
}

impl fmt::Display for UsbVer {
    /// The xenstore form, `1` or `2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", *self as u32)
    }
}

impl UsbVer {
    /// The fastest speed such a controller can report.
    pub const fn max_speed(self) -> Speed {
        match self {
            Self::Usb11 => Speed::Full,
            Self::Usb20 => Speed::High,
        }
    }

    /// Whether a device of `speed` may be reported on this controller
    /// (NONE always may: it means "disconnected").
    pub const fn can_report(self, speed: Speed) -> bool {
        speed as u8 <= self.max_speed() as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_parse() {
        for (v, s) in [
            (0, Speed::None),
            (1, Speed::Low),
            (2, Speed::Full),
            (3, Speed::High),
        ] {
            assert_eq!(Speed::try_from(v), Ok(s));
            assert_eq!(s.as_u8(), v);
        }
        for v in [4u8, 5, 255] {
            assert_eq!(Speed::try_from(v), Err(SpeedError(v)));
        }
    }

    #[test]
    fn speed_serde_takes_only_the_four_names() {
        assert_eq!(serde_json::to_string(&Speed::High).unwrap(), r#""High""#);
        assert_eq!(
            serde_json::from_str::<Speed>(r#""Low""#).unwrap(),
            Speed::Low
        );
        for bad in [r#""Super""#, "3", r#""high""#] {
            assert!(
                serde_json::from_str::<Speed>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn usb_ver_parse_and_policy() {
        assert_eq!("1".parse::<UsbVer>(), Ok(UsbVer::Usb11));
        assert_eq!("2".parse::<UsbVer>(), Ok(UsbVer::Usb20));
        assert_eq!("0".parse::<UsbVer>(), Err(UsbVerError::Unknown));
        assert_eq!("3".parse::<UsbVer>(), Err(UsbVerError::Usb30));
        assert_eq!("7".parse::<UsbVer>(), Err(UsbVerError::Undefined(7)));
        assert!(matches!(" 2".parse::<UsbVer>(), Err(UsbVerError::Value(_))));
        assert!(matches!("".parse::<UsbVer>(), Err(UsbVerError::Value(_))));
        assert_eq!(UsbVer::Usb20.to_string(), "2");
        assert!(UsbVerError::Usb30.to_string().contains("must be 1 or 2"));

        assert!(UsbVer::Usb11.can_report(Speed::None));
        assert!(UsbVer::Usb11.can_report(Speed::Low));
        assert!(UsbVer::Usb11.can_report(Speed::Full));
        assert!(!UsbVer::Usb11.can_report(Speed::High));
        assert!(UsbVer::Usb20.can_report(Speed::High));
        assert_eq!(UsbVer::Usb11.max_speed(), Speed::Full);
    }
}
