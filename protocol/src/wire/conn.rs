//! Conn-ring messages: the frontend pre-posts requests, the backend answers
//! each with "port N now has speed S".

use bytemuck::{Pod, Zeroable};

/// `struct usbif_conn_request` (2 bytes): a pre-posted slot; the id only needs
/// echoing back ("no need for being unique").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ConnRequest {
    /// Echoed in the response.
    pub id: u16,
}

/// `struct usbif_conn_response` (4 bytes): a port's new speed (0 = nothing
/// connected). `portnum` must be 1..=num-ports and `speed` 0..=3, anything
/// else kills xen-hcd's controller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct ConnResponse {
    /// Copy of the request id.
    pub id: u16,
    /// Root-hub port, 1..=num-ports.
    pub portnum: u8,
    /// A [`crate::Speed`] value.
    pub speed: u8,
}

assert_layout!(ConnRequest: size 2, align 2, id @ 0);
assert_layout!(ConnResponse: size 4, align 2, id @ 0, portnum @ 2, speed @ 3);

impl ConnResponse {
    /// A response answering `request` with `speed` on `portnum`.
    pub const fn new(request: ConnRequest, portnum: u8, speed: crate::Speed) -> Self {
        Self {
            id: request.id,
            portnum,
            speed: speed as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_bytes_are_in_appendix_a_order() {
        let r = ConnResponse::new(ConnRequest { id: 0x0201 }, 3, crate::Speed::High);
        assert_eq!(bytemuck::bytes_of(&r), &[1, 2, 3, 3]);
    }
}
