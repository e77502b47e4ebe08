//! The 8-byte USB setup packet carried in `u.ctrl` of control requests.

use bytemuck::{Pod, Zeroable};

/// A USB setup packet (USB 2.0 section 9.3). On the wire (and in `u.ctrl`) it
/// is 8 bytes with little-endian 16-bit fields; this struct stores native
/// integers, use [`SetupPacket::from_bytes`]/[`SetupPacket::to_bytes`] to
/// convert.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SetupPacket {
    /// Direction (bit 7), type (bits 5-6) and recipient (bits 0-4).
    pub bm_request_type: u8,
    /// The request code.
    pub b_request: u8,
    /// Request-specific value.
    pub w_value: u16,
    /// Request-specific index (often an interface or endpoint).
    pub w_index: u16,
    /// Bytes in the data stage.
    pub w_length: u16,
}

assert_layout!(
    SetupPacket: size 8, align 2,
    bm_request_type @ 0, b_request @ 1, w_value @ 2, w_index @ 4, w_length @ 6
);

impl SetupPacket {
    /// A setup packet from its fields.
    pub const fn new(
        bm_request_type: u8,
        b_request: u8,
        w_value: u16,
        w_index: u16,
        w_length: u16,
    ) -> Self {
        Self {
            bm_request_type,
            b_request,
            w_value,
            w_index,
            w_length,
        }
    }

    /// Decodes the wire form (little-endian 16-bit fields).
    pub const fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            bm_request_type: b[0],
            b_request: b[1],
            w_value: u16::from_le_bytes([b[2], b[3]]),
            w_index: u16::from_le_bytes([b[4], b[5]]),
            w_length: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// Encodes the wire form.
    pub const fn to_bytes(&self) -> [u8; 8] {
        let v = self.w_value.to_le_bytes();
        let i = self.w_index.to_le_bytes();
        let l = self.w_length.to_le_bytes();
        [
            self.bm_request_type,
            self.b_request,
            v[0],
            v[1],
            i[0],
            i[1],
            l[0],
            l[1],
        ]
    }

    /// Whether the data stage goes device to host (`bmRequestType` bit 7).
    /// For control transfers this, not the pipe's DIR bit, decides the
    /// transfer direction (spec 7.3).
    pub const fn is_in(&self) -> bool {
        self.bm_request_type & 0x80 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order() {
        // GET_DESCRIPTOR(DEVICE), 18 bytes, as seen on a bus analyser.
        let s = SetupPacket::new(0x80, 6, 0x0100, 0, 18);
        assert_eq!(
            s.to_bytes(),
            [0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00]
        );
        assert_eq!(SetupPacket::from_bytes(s.to_bytes()), s);
        // Native storage equals the wire bytes on little-endian hosts.
        assert_eq!(bytemuck::bytes_of(&s), &s.to_bytes());
        assert!(s.is_in());
        assert!(!SetupPacket::new(0, 5, 3, 0, 0).is_in());
    }
}
