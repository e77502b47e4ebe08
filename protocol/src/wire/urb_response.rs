//! `struct usbif_urb_response`: the backend's answer to one request.

use bytemuck::{Pod, Zeroable};

use crate::Status;

/// One URB response (16 bytes, align 4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct UrbResponse {
    /// Copy of the request id.
    pub id: u16,
    /// Isochronous only: the frame the transfer started in.
    pub start_frame: u16,
    /// A usbif status (only the seven values of [`Status`] may be sent).
    pub status: i32,
    /// Bytes transferred; xen-hcd clamps it to [0, buffer length].
    pub actual_length: i32,
    /// Isochronous only: number of failed packets.
    pub error_count: i32,
}

assert_layout!(
    UrbResponse: size 16, align 4,
    id @ 0, start_frame @ 2, status @ 4, actual_length @ 8, error_count @ 12
);

impl UrbResponse {
    /// A non-isochronous response. `actual_length` is saturated into the
    /// signed wire field (it can never exceed 65536 in practice).
    pub fn new(id: u16, status: Status, actual_length: u32) -> Self {
        Self {
            id,
            start_frame: 0,
            status: status.as_i32(),
            actual_length: i32::try_from(actual_length).unwrap_or(i32::MAX),
            error_count: 0,
        }
    }

    /// The status if it is one of the seven defined values.
    pub fn status(&self) -> Option<Status> {
        Status::from_i32(self.status)
    }

    /// `actual_length` as a frontend must read it: negative means 0.
    pub fn actual_length_clamped(&self) -> u32 {
        u32::try_from(self.actual_length).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_readers() {
        let r = UrbResponse::new(7, Status::Stall, 12);
        assert_eq!(r.status(), Some(Status::Stall));
        assert_eq!(r.actual_length_clamped(), 12);
        assert_eq!(bytemuck::bytes_of(&r)[4..8], (-32i32).to_le_bytes());
        let r = UrbResponse {
            actual_length: -5,
            status: -104,
            ..r
        };
        assert_eq!(r.actual_length_clamped(), 0);
        assert_eq!(r.status(), None);
        assert_eq!(
            UrbResponse::new(0, Status::Ok, u32::MAX).actual_length,
            i32::MAX
        );
    }
}
