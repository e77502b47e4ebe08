//! `XenbusState` (spec 2.6) and its decimal xenstore form.

use core::fmt;
use core::str::FromStr;

use thiserror::Error;

/// A xenbus device state as written to the `state` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XenbusState {
    /// 0.
    Unknown = 0,
    /// 1.
    Initialising = 1,
    /// 2.
    InitWait = 2,
    /// 3.
    Initialised = 3,
    /// 4.
    Connected = 4,
    /// 5.
    Closing = 5,
    /// 6.
    Closed = 6,
    /// 7.
    Reconfiguring = 7,
    /// 8.
    Reconfigured = 8,
}

/// A `state` value that is not a XenbusState.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XenbusStateError {
    /// Not a plain decimal number (the text is truncated to 32 characters).
    #[error("xenbus state {0:?} is not a decimal number")]
    NotANumber(String),
    /// A number outside 0..=8.
    #[error("xenbus state {0} is outside 0..=8")]
    OutOfRange(u32),
}

impl XenbusState {
    /// Every state, in numeric order.
    pub const ALL: [XenbusState; 9] = [
        Self::Unknown,
        Self::Initialising,
        Self::InitWait,
        Self::Initialised,
        Self::Connected,
        Self::Closing,
        Self::Closed,
        Self::Reconfiguring,
        Self::Reconfigured,
    ];

    /// The numeric value.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The state for a number, `None` above 8.
    pub const fn from_u32(v: u32) -> Option<Self> {
        // Widening (u32 fits usize on every supported target); `From` is not const.
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

impl TryFrom<u32> for XenbusState {
    type Error = XenbusStateError;
    fn try_from(v: u32) -> Result<Self, XenbusStateError> {
        Self::from_u32(v).ok_or(XenbusStateError::OutOfRange(v))
    }
}

impl FromStr for XenbusState {
    type Err = XenbusStateError;

    /// Parses the xenstore form. Surrounding ASCII whitespace is tolerated
    /// (Linux reads it with `%d`, which skips it); signs, empty strings and
    /// anything else non-decimal are rejected.
    fn from_str(s: &str) -> Result<Self, XenbusStateError> {
        let t = s.trim_ascii();
        let bad = || XenbusStateError::NotANumber(s.chars().take(32).collect());
        if t.is_empty() || t.len() > 10 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let v: u32 = t.parse().map_err(|_| bad())?;
        Self::try_from(v)
    }
}

impl fmt::Display for XenbusState {
    /// The xenstore form: the decimal number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_states() {
        for (i, s) in XenbusState::ALL.iter().enumerate() {
            assert_eq!(s.as_u32() as usize, i);
            assert_eq!(s.to_string().parse::<XenbusState>(), Ok(*s));
        }
        assert_eq!(XenbusState::Connected.to_string(), "4");
        assert_eq!(XenbusState::Reconfigured.as_u32(), 8);
    }

    #[test]
    fn parse_tolerates_whitespace_only() {
        assert_eq!(" 4\n".parse::<XenbusState>(), Ok(XenbusState::Connected));
        assert_eq!(
            "9".parse::<XenbusState>(),
            Err(XenbusStateError::OutOfRange(9))
        );
        assert_eq!(
            "4294967295".parse::<XenbusState>(),
            Err(XenbusStateError::OutOfRange(u32::MAX))
        );
        for bad in [
            "",
            "  ",
            "+4",
            "-1",
            "4x",
            "0x4",
            "four",
            "99999999999",
            "4 4",
        ] {
            assert!(
                matches!(
                    bad.parse::<XenbusState>(),
                    Err(XenbusStateError::NotANumber(_))
                ),
                "{bad:?}"
            );
        }
        let long = "x".repeat(1000);
        match long.parse::<XenbusState>() {
            Err(XenbusStateError::NotANumber(t)) => assert_eq!(t.len(), 32),
            other => panic!("{other:?}"),
        }
    }
}
