//! String descriptors: UTF-16LE text (index ≥ 1) and the language-id list
//! (index 0).

use thiserror::Error;

use super::request::dt;

/// US English, the language id emulated devices offer.
pub const LANG_ID_EN_US: u16 = 0x0409;

/// Most UTF-16 code units a string descriptor holds: (255 - 2) / 2.
pub const MAX_STRING_UNITS: usize = 126;

/// A string descriptor that cannot be built or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StringError {
    /// Too long for a one-byte `bLength`.
    #[error("string of {0} UTF-16 code units exceeds the 126 a descriptor can hold")]
    TooLong(usize),
    /// Shorter than its 2-byte header or than its own `bLength`.
    #[error("string descriptor truncated: bLength {b_length}, {got} bytes present")]
    Truncated {
        /// Declared length.
        b_length: u8,
        /// Bytes present.
        got: usize,
    },
    /// `bLength` below 2.
    #[error("string descriptor bLength {0} is below 2")]
    BadLength(u8),
    /// Not type STRING.
    #[error("descriptor type {0} is not STRING (3)")]
    WrongType(u8),
}

fn header(data: &[u8]) -> Result<&[u8], StringError> {
    let (&b_length, &desc_type) = match data {
        [l, t, ..] => (l, t),
        _ => {
            return Err(StringError::Truncated {
                b_length: data.first().copied().unwrap_or(0),
                got: data.len(),
            })
        }
    };
    if b_length < 2 {
        return Err(StringError::BadLength(b_length));
    }
    if desc_type != dt::STRING {
        return Err(StringError::WrongType(desc_type));
    }
    data.get(2..usize::from(b_length))
        .ok_or(StringError::Truncated {
            b_length,
            got: data.len(),
        })
}

fn units(payload: &[u8]) -> impl Iterator<Item = u16> + '_ {
    // An odd trailing byte (seen on broken devices) is ignored.
    payload
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
}

/// `bLength` of a string descriptor of `units` UTF-16 units: 2 + 2 × units,
/// at most 254 within [`MAX_STRING_UNITS`].
fn b_length(units: usize) -> Result<u8, StringError> {
    if units > MAX_STRING_UNITS {
        return Err(StringError::TooLong(units));
    }
    u8::try_from(2 + 2 * units).map_err(|_| StringError::TooLong(units))
}

/// Encodes `s` as a string descriptor.
pub fn encode_string(s: &str) -> Result<Vec<u8>, StringError> {
    let u: Vec<u16> = s.encode_utf16().collect();
    let b_length = b_length(u.len())?;
    let mut out = Vec::with_capacity(usize::from(b_length));
    out.push(b_length);
    out.push(dt::STRING);
    for unit in u {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    Ok(out)
}

/// Decodes a string descriptor; invalid UTF-16 becomes U+FFFD.
pub fn decode_string(data: &[u8]) -> Result<String, StringError> {
    let payload = header(data)?;
    Ok(char::decode_utf16(units(payload))
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect())
}

/// Encodes string descriptor 0, the supported language ids.
pub fn encode_language_ids(ids: &[u16]) -> Result<Vec<u8>, StringError> {
    let mut out = vec![b_length(ids.len())?, dt::STRING];
    for id in ids {
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// Decodes string descriptor 0.
pub fn decode_language_ids(data: &[u8]) -> Result<Vec<u16>, StringError> {
    Ok(units(header(data)?).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        assert_eq!(encode_string("Hi").unwrap(), vec![6, 3, b'H', 0, b'i', 0]);
        assert_eq!(
            decode_string(&[6, 3, b'H', 0, b'i', 0, 0xff]).unwrap(),
            "Hi"
        );
        assert_eq!(
            encode_language_ids(&[LANG_ID_EN_US]).unwrap(),
            vec![4, 3, 0x09, 0x04]
        );
        assert_eq!(
            decode_language_ids(&[4, 3, 0x09, 0x04]).unwrap(),
            vec![0x0409]
        );
        assert_eq!(encode_string("").unwrap(), vec![2, 3]);
    }

    #[test]
    fn limits_and_garbage() {
        assert!(encode_string(&"x".repeat(126)).is_ok());
        assert_eq!(
            encode_string(&"x".repeat(127)),
            Err(StringError::TooLong(127))
        );
        assert_eq!(
            decode_string(&[]),
            Err(StringError::Truncated {
                b_length: 0,
                got: 0
            })
        );
        assert_eq!(decode_string(&[0, 3]), Err(StringError::BadLength(0)));
        assert_eq!(decode_string(&[4, 2, 0, 0]), Err(StringError::WrongType(2)));
        assert_eq!(
            decode_string(&[10, 3, 0, 0]),
            Err(StringError::Truncated {
                b_length: 10,
                got: 4
            })
        );
        assert_eq!(decode_string(&[5, 3, b'a', 0, b'b']).unwrap(), "a");
        assert_eq!(decode_string(&[4, 3, 0x00, 0xd8]).unwrap(), "\u{fffd}"); // lone surrogate
    }

    proptest! {
        #[test]
        fn round_trip(s in "\\PC{0,60}") {
            match encode_string(&s) {
                Ok(b) => prop_assert_eq!(decode_string(&b).unwrap(), s),
                Err(StringError::TooLong(n)) => prop_assert!(n > MAX_STRING_UNITS),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_string(&b);
            let _ = decode_language_ids(&b);
        }
    }
}
