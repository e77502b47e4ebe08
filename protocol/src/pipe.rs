//! The `pipe` word of a URB request: Linux's internal pipe encoding with the
//! root-hub port OR-ed into bits 0-4 (spec 2.3).

use thiserror::Error;

use crate::consts::{
    PIPE_DEV_MASK, PIPE_DEV_SHIFT, PIPE_DIR, PIPE_EP_MASK, PIPE_EP_SHIFT, PIPE_PORT_MASK,
    PIPE_TYPE_MASK, PIPE_TYPE_SHIFT, PIPE_UNDEFINED_BITS, PIPE_UNLINK,
};

/// USB transfer type as encoded in pipe bits 30-31.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferType {
    /// `USBIF_PIPE_TYPE_ISOC`.
    Isochronous = 0,
    /// `USBIF_PIPE_TYPE_INT`.
    Interrupt = 1,
    /// `USBIF_PIPE_TYPE_CTRL`.
    Control = 2,
    /// `USBIF_PIPE_TYPE_BULK`.
    Bulk = 3,
}

impl TransferType {
    /// Decodes the two type bits (every value is defined).
    pub const fn from_bits(bits: u32) -> Self {
        match bits & PIPE_TYPE_MASK {
            0 => Self::Isochronous,
            1 => Self::Interrupt,
            2 => Self::Control,
            _ => Self::Bulk,
        }
    }
}

/// Transfer direction (pipe bit 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host to device.
    Out,
    /// Device to host.
    In,
}

/// The pipe word. Construction from a raw value never fails (every bit
/// pattern decodes); the undefined bits 6 and 19-29 are ignored by every
/// accessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pipe(u32);

/// The decoded fields of a pipe, also the input of [`Pipe::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PipeFields {
    /// Root-hub port, 0..=31 (1..=num-ports is valid on the wire).
    pub port: u8,
    /// Unlink (cancel) request.
    pub unlink: bool,
    /// Direction.
    pub direction: Direction,
    /// USB device address, 0..=127.
    pub device: u8,
    /// Endpoint number, 0..=15.
    pub endpoint: u8,
    /// Transfer type.
    pub transfer_type: TransferType,
}

/// A field value that does not fit its pipe bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PipeError {
    /// Device addresses are 7 bits.
    #[error("device address {0} does not fit in 7 bits")]
    Device(u8),
    /// Endpoint numbers are 4 bits.
    #[error("endpoint number {0} does not fit in 4 bits")]
    Endpoint(u8),
    /// Port numbers are 5 bits.
    #[error("port number {0} does not fit in 5 bits")]
    Port(u8),
}

impl Pipe {
    /// Wraps a raw pipe word as found in a request.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw word.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Root-hub port (bits 0-4).
    pub const fn port(self) -> u8 {
        (self.0 & PIPE_PORT_MASK) as u8
    }

    /// Whether this is an unlink request (bit 5).
    pub const fn is_unlink(self) -> bool {
        self.0 & PIPE_UNLINK != 0
    }

    /// Direction (bit 7).
    pub const fn direction(self) -> Direction {
        if self.0 & PIPE_DIR != 0 {
            Direction::In
        } else {
            Direction::Out
        }
    }

    /// USB device address (bits 8-14).
    pub const fn device(self) -> u8 {
        ((self.0 >> PIPE_DEV_SHIFT) & PIPE_DEV_MASK) as u8
    }

    /// Endpoint number (bits 15-18).
    pub const fn endpoint(self) -> u8 {
        ((self.0 >> PIPE_EP_SHIFT) & PIPE_EP_MASK) as u8
    }

    /// Transfer type (bits 30-31).
    pub const fn transfer_type(self) -> TransferType {
        TransferType::from_bits(self.0 >> PIPE_TYPE_SHIFT)
    }

    /// USB endpoint address: number, plus 0x80 for IN.
    pub const fn endpoint_address(self) -> u8 {
        match self.direction() {
            Direction::In => self.endpoint() | 0x80,
            Direction::Out => self.endpoint(),
        }
    }

    /// The undefined bits (6, 19-29) as sent; informational only.
    pub const fn undefined_bits(self) -> u32 {
        self.0 & PIPE_UNDEFINED_BITS
    }

    /// The same pipe with the unlink bit set or cleared.
    pub const fn with_unlink(self, unlink: bool) -> Self {
        if unlink {
            Self(self.0 | PIPE_UNLINK)
        } else {
            Self(self.0 & !PIPE_UNLINK)
        }
    }

    /// All defined fields.
    pub const fn fields(self) -> PipeFields {
        PipeFields {
            port: self.port(),
            unlink: self.is_unlink(),
            direction: self.direction(),
            device: self.device(),
            endpoint: self.endpoint(),
            transfer_type: self.transfer_type(),
        }
    }

    /// Builds a pipe (undefined bits zero) from its fields.
    pub const fn encode(f: PipeFields) -> Result<Self, PipeError> {
        if f.port as u32 > PIPE_PORT_MASK {
            return Err(PipeError::Port(f.port));
        }
        if f.device as u32 > PIPE_DEV_MASK {
            return Err(PipeError::Device(f.device));
        }
        if f.endpoint as u32 > PIPE_EP_MASK {
            return Err(PipeError::Endpoint(f.endpoint));
        }
        let mut raw = f.port as u32
            | (f.device as u32) << PIPE_DEV_SHIFT
            | (f.endpoint as u32) << PIPE_EP_SHIFT
            | (f.transfer_type as u32) << PIPE_TYPE_SHIFT;
        if f.unlink {
            raw |= PIPE_UNLINK;
        }
        if let Direction::In = f.direction {
            raw |= PIPE_DIR;
        }
        Ok(Self(raw))
    }

    /// Shorthand for a submit pipe.
    pub const fn new(
        transfer_type: TransferType,
        direction: Direction,
        device: u8,
        endpoint: u8,
        port: u8,
    ) -> Result<Self, PipeError> {
        Self::encode(PipeFields {
            port,
            unlink: false,
            direction,
            device,
            endpoint,
            transfer_type,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spec_examples() {
        let p = Pipe::new(TransferType::Control, Direction::In, 5, 0, 3).unwrap();
        assert_eq!(p.raw(), 0x8000_0583);
        let p = Pipe::new(TransferType::Bulk, Direction::Out, 5, 2, 1).unwrap();
        assert_eq!(p.raw(), 0xc001_0501);
        assert_eq!(p.with_unlink(true).raw(), 0xc001_0521);
        let u = Pipe::from_raw(0xc001_0521);
        assert!(u.is_unlink());
        assert_eq!(
            u.fields(),
            PipeFields {
                port: 1,
                unlink: true,
                direction: Direction::Out,
                device: 5,
                endpoint: 2,
                transfer_type: TransferType::Bulk
            }
        );
        assert_eq!(Pipe::from_raw(0x8000_0583).endpoint_address(), 0x80);
        assert_eq!(Pipe::from_raw(0x4000_8181).endpoint_address(), 0x81);
        assert_eq!(Pipe::from_raw(0xc001_0501).endpoint_address(), 0x02);
        assert_eq!(Pipe::from_raw(0).transfer_type(), TransferType::Isochronous);
        assert_eq!(
            Pipe::from_raw(1 << 30).transfer_type(),
            TransferType::Interrupt
        );
    }

    #[test]
    fn encode_rejects_out_of_range_fields() {
        use TransferType::Bulk;
        assert_eq!(
            Pipe::new(Bulk, Direction::In, 128, 0, 1),
            Err(PipeError::Device(128))
        );
        assert_eq!(
            Pipe::new(Bulk, Direction::In, 1, 16, 1),
            Err(PipeError::Endpoint(16))
        );
        assert_eq!(
            Pipe::new(Bulk, Direction::In, 1, 1, 32),
            Err(PipeError::Port(32))
        );
    }

    #[test]
    fn undefined_bits_are_ignored() {
        let p = Pipe::from_raw(0xc001_0501 | PIPE_UNDEFINED_BITS);
        assert_eq!(p.fields(), Pipe::from_raw(0xc001_0501).fields());
        assert_eq!(p.undefined_bits(), PIPE_UNDEFINED_BITS);
    }

    fn fields() -> impl Strategy<Value = PipeFields> {
        (
            0u8..32,
            any::<bool>(),
            any::<bool>(),
            0u8..128,
            0u8..16,
            0u32..4,
        )
            .prop_map(|(port, unlink, dir_in, device, endpoint, t)| PipeFields {
                port,
                unlink,
                direction: if dir_in {
                    Direction::In
                } else {
                    Direction::Out
                },
                device,
                endpoint,
                transfer_type: TransferType::from_bits(t),
            })
    }

    proptest! {
        #[test]
        fn fields_round_trip(f in fields()) {
            let p = Pipe::encode(f).unwrap();
            prop_assert_eq!(p.fields(), f);
            prop_assert_eq!(p.undefined_bits(), 0);
        }

        #[test]
        fn raw_round_trip(raw in any::<u32>()) {
            let p = Pipe::from_raw(raw);
            let back = Pipe::encode(p.fields()).unwrap();
            prop_assert_eq!(back.raw(), raw & !PIPE_UNDEFINED_BITS);
            prop_assert_eq!(p.with_unlink(p.is_unlink()), p);
        }
    }
}
