//! XenStore node permissions as they travel on the wire: `"n0\0r1\0"`.
//!
//! The first entry names the owner and the access every domain not listed gets; the
//! following entries grant specific domains specific access.

use crate::wire::{parse_number, WireError};

/// One domain's access to a node: `n`, `r`, `w` or `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: no access.
    None,
    /// `r`: read only.
    Read,
    /// `w`: write only.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The wire letter.
    pub fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }

    /// Whether this access includes reading.
    pub fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether this access includes writing.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }
}

/// One permission entry. In a list, the first entry is the owner and the default
/// for every domain not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain this entry is about (the owner, for the first entry).
    pub domid: u16,
    /// What it may do (for the first entry: what unlisted domains may do).
    pub access: Access,
}

impl Perm {
    /// Parses `"r5"`. The domain id is decimal; leading zeros are accepted, as
    /// both xenstoreds accept them (oxenstored's `int_of_string` reads `"r010"` as
    /// domain 10 like this parser; C xenstored's `strtol(.., 0)` reads it as octal
    /// 8). [`Self::to_wire`] never writes them, so only the value round-trips.
    pub fn parse(s: &str) -> Result<Perm, WireError> {
        let bad = || WireError::BadPerm(s.chars().take(32).collect());
        let mut chars = s.chars();
        let access = match chars.next() {
            Some('n') => Access::None,
            Some('r') => Access::Read,
            Some('w') => Access::Write,
            Some('b') => Access::Both,
            _ => return Err(bad()),
        };
        let domid = parse_number::<u16>(chars.as_str()).map_err(|_| bad())?;
        Ok(Perm { domid, access })
    }

    /// Formats as `"r5"`.
    pub fn to_wire(self) -> String {
        format!("{}{}", self.access.letter(), self.domid)
    }
}

/// Formats a permission list as NUL-terminated entries.
pub fn perms_to_payload(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        out.extend_from_slice(p.to_wire().as_bytes());
        out.push(0);
    }
    out
}

/// What `domid` may do with a node carrying `perms`, following xenstored's
/// `perm_for_conn`: privileged connections and the owner get everything, a listed
/// domain gets its entry, everyone else the owner entry's default.
pub fn access_for(perms: &[Perm], domid: u16, privileged: bool) -> Access {
    let Some(owner) = perms.first() else {
        return if privileged {
            Access::Both
        } else {
            Access::None
        };
    };
    if privileged || owner.domid == domid {
        return Access::Both;
    }
    perms
        .iter()
        .skip(1)
        .find(|p| p.domid == domid)
        .map_or(owner.access, |p| p.access)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(
            Perm::parse("b65535").unwrap(),
            Perm {
                domid: 65535,
                access: Access::Both
            }
        );
        assert_eq!(
            Perm {
                domid: 3,
                access: Access::Read
            }
            .to_wire(),
            "r3"
        );
        for bad in ["", "x1", "r", "r-1", "r65536", "rr1"] {
            assert!(Perm::parse(bad).is_err(), "{bad}");
        }
        let list = [
            Perm {
                domid: 0,
                access: Access::None,
            },
            Perm {
                domid: 1,
                access: Access::Read,
            },
        ];
        assert_eq!(perms_to_payload(&list), b"n0\0r1\0");
    }

    /// Found by the `xenstore_msg` fuzz target: `"r02222"` parses (as xenstored
    /// accepts it) and formats as `"r2222"`; the value, not the spelling,
    /// round-trips.
    #[test]
    fn leading_zeros_parse_and_format_canonically() {
        let p = Perm::parse("r02222").unwrap();
        assert_eq!(
            p,
            Perm {
                domid: 2222,
                access: Access::Read
            }
        );
        assert_eq!(p.to_wire(), "r2222");
        assert_eq!(Perm::parse(&p.to_wire()).unwrap(), p);
        assert_eq!(Perm::parse("n00").unwrap().domid, 0);
        assert_eq!(Perm::parse("b065535").unwrap().domid, 65535);
        assert!(Perm::parse("b065536").is_err());
    }

    #[test]
    fn access_rules() {
        let perms = [
            Perm {
                domid: 5,
                access: Access::Read,
            },
            Perm {
                domid: 7,
                access: Access::Write,
            },
        ];
        assert_eq!(access_for(&perms, 5, false), Access::Both);
        assert_eq!(access_for(&perms, 7, false), Access::Write);
        assert_eq!(access_for(&perms, 9, false), Access::Read);
        assert_eq!(access_for(&perms, 9, true), Access::Both);
        assert_eq!(access_for(&[], 9, false), Access::None);
    }
}
