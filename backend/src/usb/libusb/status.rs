//! Pure translations between libusb's world and the USB layer's: transfer
//! statuses, library errors, speeds, port paths.
//! Kept free of FFI so they are unit-tested on machines without USB.

use rusb::constants::{
    LIBUSB_TRANSFER_CANCELLED, LIBUSB_TRANSFER_COMPLETED, LIBUSB_TRANSFER_ERROR,
    LIBUSB_TRANSFER_NO_DEVICE, LIBUSB_TRANSFER_OVERFLOW, LIBUSB_TRANSFER_STALL,
    LIBUSB_TRANSFER_TIMED_OUT,
};

use crate::usb::error::{HighSpeedObstacle, UsbError};
use crate::usb::proto::{BusId, Speed, TransferOutcome};

/// A `libusb_transfer_status` (transfer or iso packet) as an outcome.
/// Unknown values are treated as errors.
pub fn transfer_outcome(status: i32) -> TransferOutcome {
    match status {
        LIBUSB_TRANSFER_COMPLETED => TransferOutcome::Completed,
        LIBUSB_TRANSFER_ERROR => TransferOutcome::Error,
        LIBUSB_TRANSFER_TIMED_OUT => TransferOutcome::Timeout,
        LIBUSB_TRANSFER_CANCELLED => TransferOutcome::Cancelled,
        LIBUSB_TRANSFER_STALL => TransferOutcome::Stall,
        LIBUSB_TRANSFER_NO_DEVICE => TransferOutcome::NoDevice,
        LIBUSB_TRANSFER_OVERFLOW => TransferOutcome::Overflow,
        _ => TransferOutcome::Error,
    }
}

/// The outcome for a transfer `libusb_submit_transfer` refused (a negative
/// `libusb_error`).
pub fn submit_error_outcome(error: i32) -> TransferOutcome {
    match rusb_error(error) {
        rusb::Error::NoDevice => TransferOutcome::NoDevice,
        rusb::Error::Pipe => TransferOutcome::Stall,
        rusb::Error::Timeout => TransferOutcome::Timeout,
        rusb::Error::Overflow => TransferOutcome::Overflow,
        _ => TransferOutcome::Error,
    }
}

/// A negative `libusb_error` code as rusb's error.
pub fn rusb_error(code: i32) -> rusb::Error {
    match code {
        -1 => rusb::Error::Io,
        -2 => rusb::Error::InvalidParam,
        -3 => rusb::Error::Access,
        -4 => rusb::Error::NoDevice,
        -5 => rusb::Error::NotFound,
        -6 => rusb::Error::Busy,
        -7 => rusb::Error::Timeout,
        -8 => rusb::Error::Overflow,
        -9 => rusb::Error::Pipe,
        -10 => rusb::Error::Interrupted,
        -11 => rusb::Error::NoMem,
        -12 => rusb::Error::NotSupported,
        _ => rusb::Error::Other,
    }
}

/// A library error during `op` on `busid`, with the fix in the message.
pub fn usb_error(busid: BusId, op: &'static str, error: rusb::Error) -> UsbError {
    match error {
        rusb::Error::Access => UsbError::Access(busid),
        rusb::Error::Busy => UsbError::Busy(busid),
        rusb::Error::NoDevice => UsbError::NoDevice(busid),
        rusb::Error::NotFound if op == "reset" => UsbError::NoDevice(busid),
        other => UsbError::Io {
            busid,
            op,
            detail: other.to_string(),
        },
    }
}

/// The speed to report to the guest, and whether the device really runs at
/// SuperSpeed or faster (the engine decides whether a USB 2 port may take it).
pub fn guest_speed(speed: rusb::Speed) -> (Speed, bool) {
    match speed {
        rusb::Speed::Low => (Speed::Low, false),
        rusb::Speed::Full => (Speed::Full, false),
        rusb::Speed::High => (Speed::High, false),
        rusb::Speed::Super | rusb::Speed::SuperPlus => (Speed::High, true),
        _ => (Speed::None, false),
    }
}

/// The busid of a device at `bus` with port path `ports` (as
/// `libusb_get_port_numbers` reports it), if it is a valid one.
pub fn busid_of(bus: u8, ports: &[u8]) -> Option<BusId> {
    BusId::new(bus, ports).ok()
}

/// Whether a device at `bus` / `ports` is the one `busid` names.
pub fn matches_busid(busid: &BusId, bus: u8, ports: &[u8]) -> bool {
    busid.bus() == bus && busid.ports() == ports
}

/// One endpoint as the SuperSpeed compatibility check sees it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointFacts<'a> {
    /// bmAttributes bits 0-1 (0 control, 1 iso, 2 bulk, 3 interrupt).
    pub transfer_type: u8,
    /// wMaxPacketSize as in the descriptor.
    pub max_packet_size: u16,
    /// The descriptors libusb kept after the endpoint (the SuperSpeed
    /// endpoint companion, type 0x30, is among them).
    pub extra: &'a [u8],
}

/// bDescriptorType of the SuperSpeed endpoint companion descriptor.
const SS_ENDPOINT_COMPANION: u8 = 0x30;

/// bmAttributes of the SuperSpeed companion in `extra`, if there is one. The
/// walk is bounded by `extra` and stops at a zero or overlong bLength.
fn companion_attributes(extra: &[u8]) -> Option<u8> {
    let mut rest = extra;
    while let [len, kind, ..] = *rest {
        let len = usize::from(len);
        if len < 2 || len > rest.len() {
            return None;
        }
        if kind == SS_ENDPOINT_COMPANION && len >= 4 {
            return rest.get(3).copied();
        }
        rest = rest.get(len..)?;
    }
    None
}

/// Whether a SuperSpeed device may be shown on a high-speed port (spec 10,
/// 12.16; QEMU `usb_host_speed_compat`): no isochronous endpoint, no bulk
/// streams, no interrupt endpoint with wMaxPacketSize above 1024. `Err` says
/// which endpoint is in the way.
pub fn superspeed_runs_as_high<'a>(
    endpoints: impl IntoIterator<Item = (u8, EndpointFacts<'a>)>,
) -> Result<(), HighSpeedObstacle> {
    for (address, e) in endpoints {
        match e.transfer_type & 0x03 {
            1 => return Err(HighSpeedObstacle::Isochronous(address)),
            2 if companion_attributes(e.extra).is_some_and(|a| a & 0x1f != 0) => {
                return Err(HighSpeedObstacle::BulkStreams(address))
            }
            3 if e.max_packet_size > 1024 => {
                return Err(HighSpeedObstacle::LargeInterrupt {
                    address,
                    max_packet_size: e.max_packet_size,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// bcdUSB from rusb's decoded version (the inverse of `Version::from_bcd`).
pub fn version_to_bcd(v: rusb::Version) -> u16 {
    let major = u16::from(v.major());
    ((major / 10) << 12)
        | ((major % 10) << 8)
        | (u16::from(v.minor() & 0xf) << 4)
        | u16::from(v.sub_minor() & 0xf)
}

/// The 18-byte device descriptor rebuilt from rusb's decoded one.
pub fn device_descriptor_bytes(d: &rusb::DeviceDescriptor) -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.extend_from_slice(&[18, 1]);
    b.extend_from_slice(&version_to_bcd(d.usb_version()).to_le_bytes());
    b.extend_from_slice(&[
        d.class_code(),
        d.sub_class_code(),
        d.protocol_code(),
        d.max_packet_size(),
    ]);
    b.extend_from_slice(&d.vendor_id().to_le_bytes());
    b.extend_from_slice(&d.product_id().to_le_bytes());
    b.extend_from_slice(&version_to_bcd(d.device_version()).to_le_bytes());
    b.push(d.manufacturer_string_index().unwrap_or(0));
    b.push(d.product_string_index().unwrap_or(0));
    b.push(d.serial_number_string_index().unwrap_or(0));
    b.push(d.num_configurations());
    b
}

#[cfg(test)]
mod tests {
    fn ep(transfer_type: u8, max_packet_size: u16, extra: &[u8]) -> EndpointFacts<'_> {
        EndpointFacts {
            transfer_type,
            max_packet_size,
            extra,
        }
    }

    /// Spec 12.16: a SuperSpeed device runs as HIGH only if compatible.
    #[test]
    fn superspeed_compatibility_follows_qemu() {
        let plain_companion = [6, 0x30, 15, 0, 0, 0];
        let streams_companion = [6, 0x30, 15, 4, 0, 0];
        // A USB 3 stick: two bulk endpoints with plain companions.
        assert_eq!(
            superspeed_runs_as_high([
                (0x81, ep(2, 1024, &plain_companion)),
                (0x02, ep(2, 1024, &plain_companion)),
                (0x83, ep(3, 1024, &[])),
            ]),
            Ok(())
        );
        assert_eq!(
            superspeed_runs_as_high([(0x81, ep(1, 1024, &[]))]),
            Err(HighSpeedObstacle::Isochronous(0x81))
        );
        // UAS: streams in the companion, found behind another descriptor.
        let uas = [4, 0x24, 1, 0, 6, 0x30, 15, 4, 0, 0];
        assert_eq!(
            superspeed_runs_as_high([(0x02, ep(2, 1024, &uas))]),
            Err(HighSpeedObstacle::BulkStreams(0x02))
        );
        assert_eq!(
            superspeed_runs_as_high([(0x02, ep(2, 1024, &streams_companion))]),
            Err(HighSpeedObstacle::BulkStreams(0x02))
        );
        assert_eq!(
            superspeed_runs_as_high([(0x83, ep(3, 2048, &[]))]),
            Err(HighSpeedObstacle::LargeInterrupt {
                address: 0x83,
                max_packet_size: 2048
            })
        );
        // Hostile extra bytes: zero or overlong lengths end the walk.
        for extra in [&[0u8, 0x30, 0, 4][..], &[200, 0x30, 0, 4], &[3], &[]] {
            assert_eq!(companion_attributes(extra), None);
        }
    }

    use super::*;

    #[test]
    fn status_table_matches_spec_section_10() {
        let table = [
            (LIBUSB_TRANSFER_COMPLETED, TransferOutcome::Completed),
            (LIBUSB_TRANSFER_ERROR, TransferOutcome::Error),
            (LIBUSB_TRANSFER_TIMED_OUT, TransferOutcome::Timeout),
            (LIBUSB_TRANSFER_CANCELLED, TransferOutcome::Cancelled),
            (LIBUSB_TRANSFER_STALL, TransferOutcome::Stall),
            (LIBUSB_TRANSFER_NO_DEVICE, TransferOutcome::NoDevice),
            (LIBUSB_TRANSFER_OVERFLOW, TransferOutcome::Overflow),
        ];
        for (status, outcome) in table {
            assert_eq!(transfer_outcome(status), outcome, "status {status}");
        }
        assert_eq!(transfer_outcome(7), TransferOutcome::Error);
        assert_eq!(transfer_outcome(-1), TransferOutcome::Error);
    }

    #[test]
    fn submit_errors() {
        assert_eq!(submit_error_outcome(-4), TransferOutcome::NoDevice);
        assert_eq!(submit_error_outcome(-9), TransferOutcome::Stall);
        assert_eq!(submit_error_outcome(-1), TransferOutcome::Error);
        assert_eq!(submit_error_outcome(-99), TransferOutcome::Error);
    }

    #[test]
    fn errors_name_the_device_and_fix() {
        let b: BusId = "3-1.5".parse().unwrap();
        let busy = usb_error(b, "claim", rusb::Error::Busy);
        assert_eq!(busy, UsbError::Busy(b));
        assert!(busy.to_string().contains("3-1.5 is busy"));
        assert!(usb_error(b, "open", rusb::Error::Access)
            .to_string()
            .contains("root"));
        assert_eq!(
            usb_error(b, "reset", rusb::Error::NotFound),
            UsbError::NoDevice(b)
        );
        assert!(matches!(
            usb_error(b, "open", rusb::Error::Io),
            UsbError::Io { op: "open", .. }
        ));
    }

    #[test]
    fn speeds() {
        assert_eq!(guest_speed(rusb::Speed::Super), (Speed::High, true));
        assert_eq!(guest_speed(rusb::Speed::SuperPlus), (Speed::High, true));
        assert_eq!(guest_speed(rusb::Speed::High), (Speed::High, false));
        assert_eq!(guest_speed(rusb::Speed::Full), (Speed::Full, false));
        assert_eq!(guest_speed(rusb::Speed::Low), (Speed::Low, false));
        assert_eq!(guest_speed(rusb::Speed::Unknown), (Speed::None, false));
    }

    #[test]
    fn busid_path_matching() {
        let b: BusId = "3-1.5".parse().unwrap();
        assert!(matches_busid(&b, 3, &[1, 5]));
        assert!(!matches_busid(&b, 3, &[1]));
        assert!(!matches_busid(&b, 3, &[1, 5, 2]));
        assert!(!matches_busid(&b, 4, &[1, 5]));
        assert!(!matches_busid(&b, 3, &[5, 1]));
        assert_eq!(busid_of(3, &[1, 5]), Some(b));
        // Root hubs have no port path; they are never a passthrough candidate.
        assert_eq!(busid_of(3, &[]), None);
        assert_eq!(busid_of(0, &[1]), None);
    }

    #[test]
    fn bcd_round_trip() {
        for bcd in [0x0100u16, 0x0110, 0x0200, 0x0210, 0x0300, 0x0320, 0x1234] {
            assert_eq!(version_to_bcd(rusb::Version::from_bcd(bcd)), bcd);
        }
    }
}
