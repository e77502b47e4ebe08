//! Host USB device and interface names (spec 5.2): busids `<bus>-<port>[.<port>...]`,
//! interfaces `<busid>:<config>.<intf>`, and libxl's xenstore key encoding.
//!
//! Busids come from xenstore (`port/N`), i.e. from the toolstack or a hostile
//! writer, and end up in sysfs paths; parsing is therefore strict: decimal,
//! no leading zeros, no signs or whitespace, bus and ports 1..=255, at most 7
//! port levels (the USB tier limit). Parse and format are exact inverses.
//!
//! A [`BusId`] crosses process boundaries (the backend's monitor and its
//! workers) in its text form: deserializing parses it, so a peer cannot build
//! one the parser would refuse.

use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Maximum hub depth of a port path (USB 2.0 allows 7 tiers below the root).
pub const MAX_PORT_DEPTH: usize = 7;

/// A host USB device name such as `3-1.5`.
///
/// Serialized as its text form; deserialization goes through [`FromStr`], so
/// it refuses everything the parser refuses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BusId {
    bus: u8,
    depth: u8,
    ports: [u8; MAX_PORT_DEPTH],
}

/// An interface of a host device such as `3-1.5:1.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterfaceId {
    /// The device.
    pub busid: BusId,
    /// `bConfigurationValue`.
    pub config: u8,
    /// `bInterfaceNumber`.
    pub interface: u8,
}

/// A malformed busid or interface name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BusIdError {
    /// The bus or a port number is 0, above 255, or not canonical decimal.
    #[error("{what} {text:?} is not a decimal number in 1..=255 without leading zeros")]
    BadNumber {
        /// Which component.
        what: &'static str,
        /// The offending text (truncated to 32 characters).
        text: String,
    },
    /// A config or interface number that is not canonical decimal 0..=255.
    #[error("{what} {text:?} is not a decimal number in 0..=255 without leading zeros")]
    BadIndex {
        /// Which component.
        what: &'static str,
        /// The offending text (truncated to 32 characters).
        text: String,
    },
    /// Missing `-` between bus and ports.
    #[error("busid {0:?} has no '-' between bus and port path")]
    NoPortPath(String),
    /// More than seven port levels.
    #[error("busid has {0} port levels, USB allows at most 7")]
    TooDeep(usize),
    /// Missing `:` or `.` in an interface name.
    #[error("interface name {0:?} is not <busid>:<config>.<interface>")]
    BadInterface(String),
}

fn excerpt(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Canonical decimal u8: digits only, no leading zero unless the value is 0.
fn canonical_u8(s: &str) -> Option<u8> {
    let ok = !s.is_empty()
        && s.len() <= 3
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

fn nonzero_u8(s: &str, what: &'static str) -> Result<u8, BusIdError> {
    match canonical_u8(s) {
        Some(v) if v != 0 => Ok(v),
        _ => Err(BusIdError::BadNumber {
            what,
            text: excerpt(s),
        }),
    }
}

fn index_u8(s: &str, what: &'static str) -> Result<u8, BusIdError> {
    canonical_u8(s).ok_or_else(|| BusIdError::BadIndex {
        what,
        text: excerpt(s),
    })
}

impl BusId {
    /// A busid from its components (ports outermost first).
    pub fn new(bus: u8, ports: &[u8]) -> Result<Self, BusIdError> {
        if bus == 0 {
            return Err(BusIdError::BadNumber {
                what: "bus",
                text: "0".into(),
            });
        }
        if ports.is_empty() {
            return Err(BusIdError::NoPortPath(bus.to_string()));
        }
        let depth = u8::try_from(ports.len())
            .ok()
            .filter(|&d| usize::from(d) <= MAX_PORT_DEPTH)
            .ok_or(BusIdError::TooDeep(ports.len()))?;
        if ports.contains(&0) {
            return Err(BusIdError::BadNumber {
                what: "port",
                text: "0".into(),
            });
        }
        let mut p = [0u8; MAX_PORT_DEPTH];
        p[..ports.len()].copy_from_slice(ports);
        Ok(Self {
            bus,
            depth,
            ports: p,
        })
    }

    /// Bus number (1..=255).
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// Port path, outermost first (1 to 7 entries, each 1..=255).
    pub fn ports(&self) -> &[u8] {
        self.ports.get(..usize::from(self.depth)).unwrap_or(&[])
    }

    /// The xenstore key form (`.` → `_`).
    pub fn to_key(&self) -> String {
        encode_key(&self.to_string())
    }

    /// Parses the xenstore key form.
    pub fn from_key(key: &str) -> Result<Self, BusIdError> {
        decode_key(key).parse()
    }
}

impl FromStr for BusId {
    type Err = BusIdError;
    fn from_str(s: &str) -> Result<Self, BusIdError> {
        let (bus, path) = s
            .split_once('-')
            .ok_or_else(|| BusIdError::NoPortPath(excerpt(s)))?;
        let bus = nonzero_u8(bus, "bus")?;
        let mut ports = [0u8; MAX_PORT_DEPTH];
        let mut depth = 0u8;
        for part in path.split('.') {
            let slot = ports
                .get_mut(usize::from(depth))
                .ok_or(BusIdError::TooDeep(usize::from(depth) + 1))?;
            *slot = nonzero_u8(part, "port")?;
            // Cannot overflow: `get_mut` refused every index past MAX_PORT_DEPTH.
            depth += 1;
        }
        Ok(Self { bus, depth, ports })
    }
}

impl fmt::Display for BusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-", self.bus)?;
        for (i, p) in self.ports().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl TryFrom<String> for BusId {
    type Error = BusIdError;
    fn try_from(s: String) -> Result<Self, BusIdError> {
        s.parse()
    }
}

impl From<BusId> for String {
    fn from(b: BusId) -> String {
        b.to_string()
    }
}

impl fmt::Debug for BusId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BusId({self})")
    }
}

impl InterfaceId {
    /// The xenstore key form (`.` → `_`, `:` → `@`).
    pub fn to_key(&self) -> String {
        encode_key(&self.to_string())
    }

    /// Parses the xenstore key form.
    pub fn from_key(key: &str) -> Result<Self, BusIdError> {
        decode_key(key).parse()
    }
}

impl FromStr for InterfaceId {
    type Err = BusIdError;
    fn from_str(s: &str) -> Result<Self, BusIdError> {
        let bad = || BusIdError::BadInterface(excerpt(s));
        let (busid, rest) = s.split_once(':').ok_or_else(bad)?;
        let (config, interface) = rest.split_once('.').ok_or_else(bad)?;
        Ok(Self {
            busid: busid.parse()?,
            config: index_u8(config, "configuration")?,
            interface: index_u8(interface, "interface")?,
        })
    }
}

impl fmt::Display for InterfaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}.{}", self.busid, self.config, self.interface)
    }
}

/// libxl's xenstore key encoding: `.` → `_`, `:` → `@` (both are special in
/// xenstore-ish tooling). Inverse of [`decode_key`] for strings without `_`
/// and `@`, which busids and interface names never contain.
pub fn encode_key(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '.' => '_',
            ':' => '@',
            c => c,
        })
        .collect()
}

/// Inverse of [`encode_key`]: `_` → `.`, `@` → `:`.
pub fn decode_key(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '_' => '.',
            '@' => ':',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_format() {
        let b: BusId = "3-1.5".parse().unwrap();
        assert_eq!(b.bus(), 3);
        assert_eq!(b.ports(), &[1, 5]);
        assert_eq!(b.to_string(), "3-1.5");
        assert_eq!(b.to_key(), "3-1_5");
        assert_eq!(BusId::from_key("3-1_5"), Ok(b));
        assert_eq!(
            BusId::new(255, &[255; 7]).unwrap().to_string(),
            "255-255.255.255.255.255.255.255"
        );
        let i: InterfaceId = "3-1.5:1.0".parse().unwrap();
        assert_eq!((i.busid, i.config, i.interface), (b, 1, 0));
        assert_eq!(i.to_key(), "3-1_5@1_0");
        assert_eq!(InterfaceId::from_key("3-1_5@1_0"), Ok(i));
        assert_eq!(format!("{b:?}"), "BusId(3-1.5)");
    }

    #[test]
    fn hostile_busids_are_rejected() {
        for bad in [
            "",
            "3",
            "3-",
            "-1",
            "0-1",
            "3-0",
            "03-1",
            "3-01",
            "256-1",
            "3-256",
            "3-1..2",
            "3-1.",
            "+3-1",
            " 3-1",
            "3-1 ",
            "3-1.2.3.4.5.6.7.8",
            "3-1/../../x",
            "3-1:1.0",
            "1-99999999999999999999",
        ] {
            assert!(bad.parse::<BusId>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "3-1.2.3.4.5.6.7.8".parse::<BusId>(),
            Err(BusIdError::TooDeep(8))
        );
        assert!(BusId::new(0, &[1]).is_err());
        assert!(BusId::new(1, &[]).is_err());
        assert!(BusId::new(1, &[1, 0]).is_err());
        assert!(BusId::new(1, &[1; 8]).is_err());
        for bad in [
            "3-1.5",
            "3-1.5:",
            "3-1.5:1",
            "3-1.5:1.",
            "3-1.5:01.0",
            "3-1.5:1.256",
            "3-1.5:1.0.1",
            "3-0:1.0",
        ] {
            assert!(bad.parse::<InterfaceId>().is_err(), "{bad:?} accepted");
        }
        assert!("3-1.5:0.0".parse::<InterfaceId>().is_ok());
    }

    /// What a hostile peer sends cannot become a `BusId`: deserialization
    /// validates exactly like the parser.
    #[test]
    fn serde_validates_like_the_parser() {
        let b: BusId = "3-1.5".parse().unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#""3-1.5""#);
        assert_eq!(serde_json::from_str::<BusId>(&json).unwrap(), b);
        for bad in [
            r#""999-1.2.3.4.5.6.7.8""#,
            r#""3-1.2.3.4.5.6.7.8""#,
            r#""1-""#,
            r#""../x""#,
            r#""0-1""#,
            r#""3-1\u0000""#,
            "\"\"",
            r#"{"bus":3,"depth":9,"ports":[1,1,1,1,1,1,1]}"#,
            r#"[3,1]"#,
            "17",
        ] {
            assert!(
                serde_json::from_str::<BusId>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn key_encoding() {
        assert_eq!(encode_key("1-2.3:1.0"), "1-2_3@1_0");
        assert_eq!(decode_key("1-2_3@1_0"), "1-2.3:1.0");
    }

    fn busid() -> impl Strategy<Value = BusId> {
        (1u8..=255, proptest::collection::vec(1u8..=255, 1..=7))
            .prop_map(|(bus, ports)| BusId::new(bus, &ports).unwrap())
    }

    proptest! {
        #[test]
        fn busid_round_trips(b in busid(), config in any::<u8>(), interface in any::<u8>()) {
            prop_assert_eq!(b.to_string().parse::<BusId>(), Ok(b));
            prop_assert_eq!(BusId::from_key(&b.to_key()), Ok(b));
            let i = InterfaceId { busid: b, config, interface };
            prop_assert_eq!(i.to_string().parse::<InterfaceId>(), Ok(i));
            prop_assert_eq!(InterfaceId::from_key(&i.to_key()), Ok(i));
        }

        #[test]
        fn key_encoding_round_trips(s in "[0-9a-z.:/-]{0,40}") {
            prop_assert_eq!(decode_key(&encode_key(&s)), s.clone());
            prop_assert!(!encode_key(&s).contains(['.', ':']));
        }

        #[test]
        fn serde_round_trips(b in busid()) {
            let json = serde_json::to_string(&b).unwrap();
            prop_assert_eq!(serde_json::from_str::<BusId>(&json).unwrap(), b);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<BusId>();
            let _ = s.parse::<InterfaceId>();
        }
    }
}
