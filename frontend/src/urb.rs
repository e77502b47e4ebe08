//! What a caller submits ([`Urb`]) and what it gets back ([`Completion`]).
//!
//! Buffers are owned `Vec<u8>`s that travel with the URB and come back in the
//! completion, so a caller that resubmits the returned buffer allocates
//! nothing in steady state.

use pvusb_protocol::consts::{MAX_SEGMENTS_PER_REQUEST, PAGE_SIZE};
use pvusb_protocol::{Direction, SetupPacket};

use crate::error::UrbStatus;

/// Largest data buffer of one URB. usbif's `buffer_length` is a u16, so the
/// library keeps every URB below 65536 bytes and splits larger bulk transfers.
pub const MAX_URB_DATA: usize = 65535;

/// Bulk transfers larger than [`MAX_URB_DATA`] are split into pieces of this
/// size: 63 KiB is a multiple of every legal max packet size (8..=1024), so
/// no piece but the last ends in a short packet.
pub const BULK_CHUNK: usize = 63 * 1024;

/// Isochronous packets per URB: the descriptors of one URB live in one
/// granted page (256 descriptors of 16 bytes).
pub const MAX_ISO_PACKETS: usize = PAGE_SIZE / pvusb_protocol::consts::ISO_PACKET_DESCRIPTOR_SIZE;

/// The transfer type with its type-specific parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrbKind {
    /// A control transfer on endpoint 0; the data stage direction comes from
    /// the setup packet, its length is `wLength`.
    Control(SetupPacket),
    /// A bulk transfer.
    Bulk,
    /// An interrupt transfer polled every `interval` (frames or micro-frames).
    Interrupt {
        /// `urb->interval`.
        interval: u16,
    },
    /// An isochronous transfer of `packet_lengths.len()` packets laid out
    /// back to back in the buffer.
    Isochronous {
        /// `urb->interval`.
        interval: u16,
        /// Length of each packet.
        packet_lengths: Vec<u32>,
    },
}

/// One transfer request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urb {
    /// Root-hub port, 1..=num-ports.
    pub port: u8,
    /// USB device address, 0..=127.
    pub device: u8,
    /// Endpoint number, 0..=15 (0 for control).
    pub endpoint: u8,
    /// Direction of the data stage.
    pub direction: Direction,
    /// Type and type-specific parameters.
    pub kind: UrbKind,
    /// OUT: the data to send. IN: its length is the number of bytes asked for
    /// (the contents are overwritten).
    pub buffer: Vec<u8>,
    /// `USBIF_SHORT_NOT_OK`: a short IN transfer is an error.
    pub short_not_ok: bool,
}

impl Urb {
    /// A control transfer: for IN, a buffer of `wLength` zeroes is prepared;
    /// for OUT, `data` must be `wLength` bytes.
    pub fn control(port: u8, device: u8, setup: SetupPacket, data: Vec<u8>) -> Self {
        let direction = if setup.is_in() {
            Direction::In
        } else {
            Direction::Out
        };
        let buffer = match direction {
            Direction::In => vec![0; usize::from(setup.w_length)],
            Direction::Out => data,
        };
        Self {
            port,
            device,
            endpoint: 0,
            direction,
            kind: UrbKind::Control(setup),
            buffer,
            short_not_ok: false,
        }
    }

    /// A bulk IN of `len` bytes.
    pub fn bulk_in(port: u8, device: u8, endpoint: u8, len: usize) -> Self {
        Self::data(
            port,
            device,
            endpoint,
            Direction::In,
            UrbKind::Bulk,
            vec![0; len],
        )
    }

    /// A bulk OUT of `data`.
    pub fn bulk_out(port: u8, device: u8, endpoint: u8, data: Vec<u8>) -> Self {
        Self::data(port, device, endpoint, Direction::Out, UrbKind::Bulk, data)
    }

    /// An interrupt IN of up to `len` bytes.
    pub fn interrupt_in(port: u8, device: u8, endpoint: u8, len: usize, interval: u16) -> Self {
        Self::data(
            port,
            device,
            endpoint,
            Direction::In,
            UrbKind::Interrupt { interval },
            vec![0; len],
        )
    }

    /// An interrupt OUT of `data`.
    pub fn interrupt_out(port: u8, device: u8, endpoint: u8, data: Vec<u8>, interval: u16) -> Self {
        Self::data(
            port,
            device,
            endpoint,
            Direction::Out,
            UrbKind::Interrupt { interval },
            data,
        )
    }

    /// An isochronous transfer; for IN `buffer` is resized to Σ packet lengths.
    pub fn isochronous(
        port: u8,
        device: u8,
        endpoint: u8,
        direction: Direction,
        interval: u16,
        packet_lengths: Vec<u32>,
        mut buffer: Vec<u8>,
    ) -> Self {
        if direction == Direction::In {
            let total: u64 = packet_lengths.iter().map(|&l| u64::from(l)).sum();
            buffer.resize(
                usize::try_from(total)
                    .unwrap_or(usize::MAX)
                    .min(MAX_URB_DATA + 1),
                0,
            );
        }
        let kind = UrbKind::Isochronous {
            interval,
            packet_lengths,
        };
        Self::data(port, device, endpoint, direction, kind, buffer)
    }

    fn data(
        port: u8,
        device: u8,
        endpoint: u8,
        direction: Direction,
        kind: UrbKind,
        buffer: Vec<u8>,
    ) -> Self {
        Self {
            port,
            device,
            endpoint,
            direction,
            kind,
            buffer,
            short_not_ok: false,
        }
    }

    /// Number of data pages the buffer needs (it starts at offset 0 of the
    /// slot's first page).
    pub(crate) fn data_pages(&self) -> usize {
        self.buffer.len().div_ceil(PAGE_SIZE)
    }

    /// Why usbif cannot carry this URB, if it cannot.
    pub(crate) fn check(&self, num_ports: u8) -> Result<(), Unfit> {
        if self.port == 0 || self.port > num_ports {
            return Err(Unfit::Port {
                port: self.port,
                num_ports,
            });
        }
        if self.device > 127 || self.endpoint > 15 {
            return Err(Unfit::Address {
                device: self.device,
                endpoint: self.endpoint,
            });
        }
        if self.buffer.len() > MAX_URB_DATA {
            return Err(Unfit::TooLong(self.buffer.len()));
        }
        match &self.kind {
            UrbKind::Control(setup) => {
                if self.endpoint != 0 {
                    return Err(Unfit::ControlEndpoint(self.endpoint));
                }
                if usize::from(setup.w_length) != self.buffer.len() {
                    return Err(Unfit::WLength {
                        w_length: setup.w_length,
                        len: self.buffer.len(),
                    });
                }
            }
            UrbKind::Isochronous { packet_lengths, .. } => {
                if packet_lengths.is_empty() || packet_lengths.len() > MAX_ISO_PACKETS {
                    return Err(Unfit::IsoPackets(packet_lengths.len()));
                }
                let total: u64 = packet_lengths.iter().map(|&l| u64::from(l)).sum();
                if total != self.buffer.len() as u64 {
                    return Err(Unfit::IsoTotal {
                        total,
                        len: self.buffer.len(),
                    });
                }
                if self.data_pages() + 1 > MAX_SEGMENTS_PER_REQUEST {
                    return Err(Unfit::IsoSegments);
                }
            }
            UrbKind::Bulk | UrbKind::Interrupt { .. } => {}
        }
        Ok(())
    }
}

/// The result of one isochronous packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoPacketResult {
    /// Bytes transferred (clamped to the packet length).
    pub actual_length: u32,
    /// The packet's status as the backend reported it.
    pub status: UrbStatus,
}

/// How a URB ended, with its buffer handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The outcome.
    pub status: UrbStatus,
    /// Bytes transferred, clamped to [0, buffer length].
    pub actual_length: usize,
    /// The URB's buffer: for IN, `buffer[..actual_length]` holds the data
    /// (isochronous IN: each packet at its own offset).
    pub buffer: Vec<u8>,
    /// Isochronous: the frame the transfer started in.
    pub start_frame: u16,
    /// Isochronous: number of failed packets (as reported, not trusted).
    pub error_count: u32,
    /// Isochronous: per-packet results.
    pub iso_packets: Vec<IsoPacketResult>,
}

impl Completion {
    /// The transferred bytes (IN data).
    pub fn data(&self) -> &[u8] {
        self.buffer
            .get(..self.actual_length)
            .unwrap_or(&self.buffer)
    }

    /// The transferred bytes (IN data), taking the buffer rather than
    /// copying it.
    pub fn into_data(self) -> Vec<u8> {
        let mut buffer = self.buffer;
        buffer.truncate(self.actual_length);
        buffer
    }

    /// A completion decided locally, with nothing transferred.
    pub(crate) fn local(status: UrbStatus, buffer: Vec<u8>) -> Self {
        Self::of_transfer(status, 0, buffer)
    }

    /// The completion of a transfer that is not isochronous.
    pub(crate) fn of_transfer(status: UrbStatus, actual_length: usize, buffer: Vec<u8>) -> Self {
        Self {
            status,
            actual_length,
            buffer,
            start_frame: 0,
            error_count: 0,
            iso_packets: Vec::new(),
        }
    }
}

/// Called exactly once per submitted URB, from the worker thread (or from the
/// submitting/unlinking thread for URBs completed locally). It must not block
/// for long; it may submit new URBs.
pub type Callback = Box<dyn FnOnce(Completion) + Send>;

/// Why usbif cannot carry a URB ([`Urb::check`]); the URB completes with
/// [`crate::UrbStatus::Refused`] without reaching the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Unfit {
    #[error("port {port} is outside 1..={num_ports}")]
    Port { port: u8, num_ports: u8 },
    #[error("address {device} / endpoint {endpoint} out of range")]
    Address { device: u8, endpoint: u8 },
    #[error("{0} bytes exceed the {MAX_URB_DATA}-byte URB limit")]
    TooLong(usize),
    #[error("a control transfer on endpoint {0} (control transfers use endpoint 0)")]
    ControlEndpoint(u8),
    #[error("wLength {w_length} differs from the {len}-byte buffer")]
    WLength { w_length: u16, len: usize },
    #[error("{0} iso packets (1..={MAX_ISO_PACKETS} allowed)")]
    IsoPackets(usize),
    #[error("iso packets total {total} bytes, the buffer has {len}")]
    IsoTotal { total: u64, len: usize },
    #[error("iso data and descriptors need more than 16 segments")]
    IsoSegments,
}
