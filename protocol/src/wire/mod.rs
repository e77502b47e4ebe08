//! The usbif wire types, byte-exact with `usbif.h` (spec section 3).
//!
//! All types are `#[repr(C)]` and `bytemuck::Pod`, so the ring engine can copy
//! a slot out of shared memory into an owned value with no `unsafe`. usbif has
//! no byte-order conversion: it is "native", and every Xen platform (x86, Arm)
//! is little-endian. Integer fields are therefore stored as native integers,
//! which *are* the little-endian wire bytes; the crate refuses to build for a
//! big-endian target rather than silently disagreeing with the guest. The
//! 8-byte union `u` is kept as raw bytes and decoded with explicit
//! little-endian reads by the typed accessors ([`UrbRequest::ctrl`],
//! [`UrbRequest::isoc`], ...).

/// Checks at compile time that a wire struct has the size, alignment and field
/// offsets of its C declaration (`usbif.h`, spec Appendix A): a layout that
/// disagrees with the guest's fails the build instead of corrupting a ring.
macro_rules! assert_layout {
    (
        $ty:ty: size $size:literal, align $align:literal
        $(, $field:ident @ $offset:literal)* $(,)?
    ) => {
        const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        const _: () = assert!(core::mem::align_of::<$ty>() == $align);
        $(const _: () = assert!(core::mem::offset_of!($ty, $field) == $offset);)*
    };
}

mod conn;
mod iso;
mod segment;
mod setup;
mod urb_request;
mod urb_response;

pub use conn::{ConnRequest, ConnResponse};
pub use iso::{check_disjoint, IsoPacketDescriptor, IsoPacketError};
pub use segment::RequestSegment;
pub use setup::SetupPacket;
pub use urb_request::{IsoParams, UrbRequest, WireError};
pub use urb_response::UrbResponse;

#[cfg(target_endian = "big")]
compile_error!("usbif is native little-endian; big-endian targets are not supported");
