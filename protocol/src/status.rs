//! usbif response status codes (spec 2.5) and the per-transfer outcome they
//! are computed from (spec 10).
//!
//! Only seven values are defined; xen-hcd turns anything else into
//! `-ESHUTDOWN`, which many guest drivers treat as fatal. [`Status`] can hold
//! nothing else, and [`TransferOutcome::status`] is the only mapping a backend
//! needs, so no raw errno can leak onto the ring.

/// One of the seven usbif response statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Status {
    /// `USBIF_STATUS_OK`.
    Ok = 0,
    /// `USBIF_STATUS_NODEV` (-ENODEV).
    NoDev = -19,
    /// `USBIF_STATUS_INVAL` (-EINVAL).
    Inval = -22,
    /// `USBIF_STATUS_STALL` (-EPIPE).
    Stall = -32,
    /// `USBIF_STATUS_IOERROR` (-EPROTO).
    IoError = -71,
    /// `USBIF_STATUS_BABBLE` (-EOVERFLOW).
    Babble = -75,
    /// `USBIF_STATUS_SHUTDOWN` (-ESHUTDOWN).
    Shutdown = -108,
}

impl Status {
    /// Every defined status.
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::NoDev,
        Status::Inval,
        Status::Stall,
        Status::IoError,
        Status::Babble,
        Status::Shutdown,
    ];

    /// The wire value.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The status for a wire value, `None` if it is not one of the seven.
    pub const fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Ok,
            -19 => Self::NoDev,
            -22 => Self::Inval,
            -32 => Self::Stall,
            -71 => Self::IoError,
            -75 => Self::Babble,
            -108 => Self::Shutdown,
            _ => return None,
        })
    }

    /// What xen-hcd makes of a wire value (`xenhcd_translate_status`):
    /// anything undefined becomes [`Status::Shutdown`].
    pub const fn translate(v: i32) -> Self {
        match Self::from_i32(v) {
            Some(s) => s,
            None => Self::Shutdown,
        }
    }
}

/// How a transfer ended, in backend terms (libusb's transfer statuses plus
/// the backend's own reasons). Map it with [`TransferOutcome::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferOutcome {
    /// Completed, possibly short (libusb COMPLETED). Short IN transfers are
    /// reported as 0 with the short length: xen-hcd has no "short" status.
    Completed,
    /// Generic transfer error (libusb ERROR).
    Error,
    /// Timed out (libusb TIMED_OUT).
    Timeout,
    /// Cancelled, e.g. by an unlink or a device drain (libusb CANCELLED).
    Cancelled,
    /// Endpoint halted (libusb STALL).
    Stall,
    /// Device gone, or no device at that address/port (libusb NO_DEVICE).
    NoDevice,
    /// Device sent more than asked for (libusb OVERFLOW).
    Overflow,
    /// The request itself was invalid (validation or address-0 rules).
    Invalid,
    /// The backend cannot perform it (e.g. shutting down, unsupported).
    Shutdown,
}

impl TransferOutcome {
    /// Every outcome.
    pub const ALL: [TransferOutcome; 9] = [
        TransferOutcome::Completed,
        TransferOutcome::Error,
        TransferOutcome::Timeout,
        TransferOutcome::Cancelled,
        TransferOutcome::Stall,
        TransferOutcome::NoDevice,
        TransferOutcome::Overflow,
        TransferOutcome::Invalid,
        TransferOutcome::Shutdown,
    ];

    /// The usbif status to answer with; the libusb rows are QEMU's mapping
    /// (spec 10): COMPLETED 0, ERROR/TIMED_OUT/CANCELLED -71, STALL -32,
    /// NO_DEVICE -19, OVERFLOW -75.
    pub const fn status(self) -> Status {
        match self {
            Self::Completed => Status::Ok,
            Self::Error | Self::Timeout | Self::Cancelled => Status::IoError,
            Self::Stall => Status::Stall,
            Self::NoDevice => Status::NoDev,
            Self::Overflow => Status::Babble,
            Self::Invalid => Status::Inval,
            Self::Shutdown => Status::Shutdown,
        }
    }
}

impl From<TransferOutcome> for Status {
    fn from(o: TransferOutcome) -> Self {
        o.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFINED: [i32; 7] = [0, -19, -22, -32, -71, -75, -108];

    #[test]
    fn values_match_the_header() {
        let values: Vec<i32> = Status::ALL.iter().map(|s| s.as_i32()).collect();
        assert_eq!(values, DEFINED);
        for s in Status::ALL {
            assert_eq!(Status::from_i32(s.as_i32()), Some(s));
        }
    }

    #[test]
    fn unknown_values_are_rejected_or_folded() {
        for v in [-104, -121, -2, 1, -1, i32::MIN, i32::MAX, 19] {
            assert_eq!(Status::from_i32(v), None);
            assert_eq!(Status::translate(v), Status::Shutdown);
        }
        assert_eq!(Status::translate(-32), Status::Stall);
    }

    #[test]
    fn outcomes_follow_the_qemu_table() {
        use TransferOutcome as O;
        let expect = [
            (O::Completed, 0),
            (O::Error, -71),
            (O::Timeout, -71),
            (O::Cancelled, -71),
            (O::Stall, -32),
            (O::NoDevice, -19),
            (O::Overflow, -75),
            (O::Invalid, -22),
            (O::Shutdown, -108),
        ];
        assert_eq!(expect.len(), O::ALL.len());
        for (o, v) in expect {
            assert_eq!(o.status().as_i32(), v, "{o:?}");
        }
        for o in O::ALL {
            assert!(
                DEFINED.contains(&Status::from(o).as_i32()),
                "{o:?} leaves the seven"
            );
        }
    }
}
