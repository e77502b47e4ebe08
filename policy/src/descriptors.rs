//! A device's interface class triples from its raw descriptors, the one
//! source both enforcement points share: the toolstack reads sysfs's
//! `descriptors` file (the device descriptor, then every configuration as
//! the device sent it), the daemon asks the opened device for each
//! configuration.
//!
//! Which interfaces count: alternate setting 0 of every interface of every
//! configuration, in descriptor order, duplicates kept (so `with-interface
//! equals { ... }` compares counts as USBGuard does). Every configuration,
//! not just the active one, because the guest may select another one once it
//! has the device: a stick whose second configuration is a keyboard is a
//! keyboard.

use crate::rule::InterfaceClass;

const DEVICE: u8 = 1;
const CONFIG: u8 = 2;
const INTERFACE: u8 = 4;

/// Malformed descriptors (refused rather than guessed at: a policy that
/// looks at interfaces cannot decide without them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorsError {
    /// A descriptor's length field is below 2 or runs past the data.
    #[error("descriptor at byte {0} has a bad length")]
    BadLength(usize),
    /// Something other than a configuration where one should start.
    #[error("no configuration descriptor at byte {0}")]
    NotConfig(usize),
    /// The blob does not start with an 18-byte device descriptor.
    #[error("no device descriptor at the start")]
    NoDevice,
}

/// The interfaces of one configuration descriptor (`wTotalLength` bytes;
/// a shorter blob is read as far as it goes).
pub fn config_interfaces(config: &[u8]) -> Result<Vec<InterfaceClass>, DescriptorsError> {
    let mut out = Vec::new();
    walk(config, 0, &mut out)?;
    Ok(out)
}

/// The interfaces of sysfs's `descriptors` file: the device descriptor
/// followed by the configurations.
pub fn sysfs_interfaces(blob: &[u8]) -> Result<Vec<InterfaceClass>, DescriptorsError> {
    if blob.len() < 18 || blob[0] != 18 || blob[1] != DEVICE {
        return Err(DescriptorsError::NoDevice);
    }
    let mut out = Vec::new();
    let mut at = 18;
    while at < blob.len() {
        at = walk(blob, at, &mut out)?;
    }
    Ok(out)
}

/// Walks the configuration starting at `blob[start]`, collecting its
/// interfaces; returns where the next configuration starts.
fn walk(
    blob: &[u8],
    start: usize,
    out: &mut Vec<InterfaceClass>,
) -> Result<usize, DescriptorsError> {
    let head = blob
        .get(start..start + 4)
        .ok_or(DescriptorsError::NotConfig(start))?;
    if head[1] != CONFIG || head[0] < 9 {
        return Err(DescriptorsError::NotConfig(start));
    }
    let total = usize::from(u16::from_le_bytes([head[2], head[3]])).max(usize::from(head[0]));
    let end = blob.len().min(start + total);
    let mut at = start;
    // Each step advances by a length of at least 2, so this ends.
    while at < end {
        let len = usize::from(blob[at]);
        if len < 2 || at + len > end {
            return Err(DescriptorsError::BadLength(at));
        }
        let d = &blob[at..at + len];
        if d[1] == INTERFACE && len >= 9 && d[3] == 0 {
            out.push(InterfaceClass {
                class: d[5],
                subclass: d[6],
                protocol: d[7],
            });
        }
        at += len;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvusb_protocol::usb::{ConfigBuilder, InterfaceSpec};

    fn config(value: u8, classes: &[(u8, u8, u8, u8)]) -> Vec<u8> {
        let mut b = ConfigBuilder::new(value);
        for &(n, class, subclass, protocol) in classes {
            b = b.interface(InterfaceSpec {
                number: n,
                class,
                subclass,
                protocol,
                ..Default::default()
            });
        }
        b.build().unwrap()
    }

    fn triple(class: u8, subclass: u8, protocol: u8) -> InterfaceClass {
        InterfaceClass {
            class,
            subclass,
            protocol,
        }
    }

    #[test]
    fn every_configuration_counts_alt_setting_zero_only() {
        let mut alt = config(1, &[(0, 8, 6, 0x50)]);
        // An alternate setting 1 of interface 0 with another class.
        let mut extra = vec![9, 4, 0, 1, 0, 0xff, 0, 0, 0];
        alt.append(&mut extra);
        let total = alt.len() as u16;
        alt[2..4].copy_from_slice(&total.to_le_bytes());
        assert_eq!(config_interfaces(&alt).unwrap(), vec![triple(8, 6, 0x50)]);

        let mut blob = vec![0u8; 18];
        blob[0] = 18;
        blob[1] = 1;
        blob.extend(alt);
        blob.extend(config(2, &[(0, 3, 1, 1), (1, 3, 1, 2)]));
        assert_eq!(
            sysfs_interfaces(&blob).unwrap(),
            vec![triple(8, 6, 0x50), triple(3, 1, 1), triple(3, 1, 2)]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(
            sysfs_interfaces(&[1, 2, 3]),
            Err(DescriptorsError::NoDevice)
        );
        let mut c = config(1, &[(0, 8, 6, 0x50)]);
        c[9] = 1;
        assert_eq!(config_interfaces(&c), Err(DescriptorsError::BadLength(9)));
        assert_eq!(
            config_interfaces(&[9, 4, 0, 0]),
            Err(DescriptorsError::NotConfig(0))
        );
        // Truncated after the header: read as far as it goes.
        assert_eq!(config_interfaces(&c[..9]).unwrap(), vec![]);
    }
}
