//! `struct usbif_urb_request` (148 bytes) with typed views of its union and
//! builders for the frontend side.

use bytemuck::{Pod, Zeroable};
use thiserror::Error;

use super::{RequestSegment, SetupPacket};
use crate::consts::{MAX_SEGMENTS_PER_REQUEST, SHORT_NOT_OK};
use crate::Pipe;

/// One URB request slot (148 bytes, align 4). Plain wire data: nothing in it
/// is trusted until it went through [`crate::validate()`]. The union `u` is
/// kept as bytes; read it through [`UrbRequest::ctrl`], [`UrbRequest::isoc`],
/// [`UrbRequest::intr_interval`] or [`UrbRequest::unlink_id`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct UrbRequest {
    /// Frontend-chosen request id, echoed in the response.
    pub id: u16,
    /// Data segments in `seg[]` (iso descriptor segments follow them).
    pub nr_buffer_segs: u16,
    /// Raw pipe word, see [`Pipe`].
    pub pipe: u32,
    /// Only [`SHORT_NOT_OK`] is defined.
    pub transfer_flags: u16,
    /// Transfer length truncated to u16 (65536 arrives as 0); informational.
    pub buffer_length: u16,
    /// The union: setup packet, isoc/intr parameters or unlink id.
    pub u: [u8; 8],
    /// Segments; entries past the used ones hold stale data.
    pub seg: [RequestSegment; MAX_SEGMENTS_PER_REQUEST],
}

assert_layout!(
    UrbRequest: size 148, align 4,
    id @ 0, nr_buffer_segs @ 2, pipe @ 4, transfer_flags @ 8, buffer_length @ 10, u @ 12, seg @ 20
);

impl Default for UrbRequest {
    fn default() -> Self {
        Self::zeroed()
    }
}

/// The `u.isoc` view of an isochronous request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IsoParams {
    /// `urb->interval`.
    pub interval: u16,
    /// `urb->start_frame` truncated to u16.
    pub start_frame: u16,
    /// Number of 16-byte packet descriptors.
    pub number_of_packets: u16,
    /// Segments after the data segments that hold the descriptors.
    pub nr_frame_desc_segs: u16,
}

/// Building a request that the wire format cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WireError {
    /// More than 16 segments (data and descriptor segments together).
    #[error("{count} segments requested but a request holds at most 16")]
    TooManySegments {
        /// Segments the caller asked for.
        count: usize,
    },
}

fn u16_at(u: &[u8; 8], i: usize) -> u16 {
    match u.get(i..i + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn put_u16(u: &mut [u8; 8], i: usize, v: u16) {
    if let Some(dst) = u.get_mut(i..i + 2) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
}

impl UrbRequest {
    /// The pipe word as a [`Pipe`].
    pub const fn pipe(&self) -> Pipe {
        Pipe::from_raw(self.pipe)
    }

    /// `u.ctrl`: the setup packet of a control request.
    pub const fn ctrl(&self) -> SetupPacket {
        SetupPacket::from_bytes(self.u)
    }

    /// `u.isoc`: the parameters of an isochronous request.
    pub fn isoc(&self) -> IsoParams {
        IsoParams {
            interval: u16_at(&self.u, 0),
            start_frame: u16_at(&self.u, 2),
            number_of_packets: u16_at(&self.u, 4),
            nr_frame_desc_segs: u16_at(&self.u, 6),
        }
    }

    /// `u.intr.interval` of an interrupt request (the pad is stale).
    pub fn intr_interval(&self) -> u16 {
        u16_at(&self.u, 0)
    }

    /// `u.unlink.unlink_id`: the id of the request to cancel.
    pub fn unlink_id(&self) -> u16 {
        u16_at(&self.u, 0)
    }

    /// Whether `USBIF_SHORT_NOT_OK` is set.
    pub const fn short_not_ok(&self) -> bool {
        self.transfer_flags & SHORT_NOT_OK != 0
    }

    /// Writes `u.ctrl`.
    pub fn set_ctrl(&mut self, setup: SetupPacket) {
        self.u = setup.to_bytes();
    }

    /// Writes `u.isoc`.
    pub fn set_isoc(&mut self, p: IsoParams) {
        put_u16(&mut self.u, 0, p.interval);
        put_u16(&mut self.u, 2, p.start_frame);
        put_u16(&mut self.u, 4, p.number_of_packets);
        put_u16(&mut self.u, 6, p.nr_frame_desc_segs);
    }

    /// Writes `u.intr.interval` (leaves the pad alone, like xen-hcd).
    pub fn set_intr_interval(&mut self, interval: u16) {
        put_u16(&mut self.u, 0, interval);
    }

    /// Writes `u.unlink.unlink_id`.
    pub fn set_unlink_id(&mut self, unlink_id: u16) {
        put_u16(&mut self.u, 0, unlink_id);
    }

    /// Sets `SHORT_NOT_OK` (and clears every undefined flag bit).
    pub fn set_short_not_ok(&mut self, on: bool) {
        self.transfer_flags = if on { SHORT_NOT_OK } else { 0 };
    }

    /// Stores the data segments followed by the iso descriptor segments, sets
    /// `nr_buffer_segs` and `buffer_length` (Σ data lengths truncated to u16,
    /// so 65536 becomes 0 exactly as xen-hcd sends it). Unused slots are left
    /// untouched. Does not write `u.isoc.nr_frame_desc_segs`.
    pub fn set_segments(
        &mut self,
        data: &[RequestSegment],
        desc: &[RequestSegment],
    ) -> Result<(), WireError> {
        let count = data.len().saturating_add(desc.len());
        let too_many = WireError::TooManySegments { count };
        if count > MAX_SEGMENTS_PER_REQUEST {
            return Err(too_many);
        }
        let nr_buffer_segs = u16::try_from(data.len()).map_err(|_| too_many)?;
        for (slot, s) in self.seg.iter_mut().zip(data.iter().chain(desc)) {
            *slot = *s;
        }
        let total: u32 = data.iter().map(|s| u32::from(s.length)).sum();
        // CAST: deliberate truncation to the low 16 bits; it is the wire format
        // (16 full pages sum to 65536, which xen-hcd sends as 0).
        #[allow(clippy::cast_possible_truncation)]
        let buffer_length = total as u16;
        self.buffer_length = buffer_length;
        self.nr_buffer_segs = nr_buffer_segs;
        Ok(())
    }

    /// A control request (endpoint 0); `pipe` should have type control.
    pub fn control(
        id: u16,
        pipe: Pipe,
        setup: SetupPacket,
        data: &[RequestSegment],
    ) -> Result<Self, WireError> {
        let mut r = Self {
            id,
            pipe: pipe.raw(),
            ..Self::zeroed()
        };
        r.set_ctrl(setup);
        r.set_segments(data, &[])?;
        Ok(r)
    }

    /// A bulk request.
    pub fn bulk(
        id: u16,
        pipe: Pipe,
        short_not_ok: bool,
        data: &[RequestSegment],
    ) -> Result<Self, WireError> {
        let mut r = Self {
            id,
            pipe: pipe.raw(),
            ..Self::zeroed()
        };
        r.set_short_not_ok(short_not_ok);
        r.set_segments(data, &[])?;
        Ok(r)
    }

    /// An interrupt request.
    pub fn interrupt(
        id: u16,
        pipe: Pipe,
        interval: u16,
        short_not_ok: bool,
        data: &[RequestSegment],
    ) -> Result<Self, WireError> {
        let mut r = Self::bulk(id, pipe, short_not_ok, data)?;
        r.set_intr_interval(interval);
        Ok(r)
    }

    /// An isochronous request; `nr_frame_desc_segs` is taken from `desc`.
    pub fn isochronous(
        id: u16,
        pipe: Pipe,
        interval: u16,
        start_frame: u16,
        number_of_packets: u16,
        data: &[RequestSegment],
        desc: &[RequestSegment],
    ) -> Result<Self, WireError> {
        let mut r = Self {
            id,
            pipe: pipe.raw(),
            ..Self::zeroed()
        };
        r.set_segments(data, desc)?;
        // `set_segments` refused more than 16 segments, so this cannot fail.
        let nr_frame_desc_segs =
            u16::try_from(desc.len()).map_err(|_| WireError::TooManySegments {
                count: data.len().saturating_add(desc.len()),
            })?;
        r.set_isoc(IsoParams {
            interval,
            start_frame,
            number_of_packets,
            nr_frame_desc_segs,
        });
        Ok(r)
    }

    /// An unlink of request `unlink_id`; `pipe` is the original request's
    /// pipe (the unlink bit is set here).
    pub fn unlink(id: u16, pipe: Pipe, unlink_id: u16) -> Self {
        let mut r = Self {
            id,
            pipe: pipe.with_unlink(true).raw(),
            ..Self::zeroed()
        };
        r.set_unlink_id(unlink_id);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_views_sit_at_their_offsets() {
        let mut r = UrbRequest::zeroed();
        r.set_ctrl(SetupPacket::new(0x80, 6, 0x0201, 0x0403, 0x0605));
        assert_eq!(
            &bytemuck::bytes_of(&r)[12..20],
            &[0x80, 6, 1, 2, 3, 4, 5, 6]
        );
        r.set_isoc(IsoParams {
            interval: 0x1211,
            start_frame: 0x1413,
            number_of_packets: 0x1615,
            nr_frame_desc_segs: 0x1817,
        });
        let b = bytemuck::bytes_of(&r);
        assert_eq!(
            &b[12..20],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(r.isoc().number_of_packets, 0x1615);
        r.set_intr_interval(0x2221);
        assert_eq!(&bytemuck::bytes_of(&r)[12..14], &[0x21, 0x22]);
        assert_eq!(r.intr_interval(), 0x2221);
        // The pad is left alone (xen-hcd writes only the interval).
        assert_eq!(
            &bytemuck::bytes_of(&r)[14..20],
            &[0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        r.set_unlink_id(0x0a09);
        assert_eq!(&bytemuck::bytes_of(&r)[12..14], &[9, 10]);
        assert_eq!(r.unlink_id(), 0x0a09);
    }

    #[test]
    fn scalar_fields_are_little_endian_on_the_wire() {
        let r = UrbRequest {
            id: 0x0201,
            nr_buffer_segs: 0x0403,
            pipe: 0x0807_0605,
            transfer_flags: 0x0a09,
            buffer_length: 0x0c0b,
            ..UrbRequest::zeroed()
        };
        assert_eq!(
            &bytemuck::bytes_of(&r)[..12],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
        );
    }

    #[test]
    fn buffer_length_wraps_for_64k() {
        let segs = [RequestSegment::new(1, 0, 4096); 16];
        let r = UrbRequest::bulk(3, Pipe::from_raw(0xc001_0501), false, &segs).unwrap();
        assert_eq!(r.buffer_length, 0);
        assert_eq!(r.nr_buffer_segs, 16);
        let too_many = [RequestSegment::new(1, 0, 1); 17];
        assert_eq!(
            UrbRequest::bulk(3, Pipe::from_raw(0), false, &too_many),
            Err(WireError::TooManySegments { count: 17 })
        );
        assert_eq!(
            UrbRequest::isochronous(0, Pipe::from_raw(0), 1, 0, 1, &segs, &segs[..1]),
            Err(WireError::TooManySegments { count: 17 })
        );
    }

    #[test]
    fn builders_fill_the_right_fields() {
        let data = [
            RequestSegment::new(7, 100, 200),
            RequestSegment::new(8, 0, 10),
        ];
        let desc = [RequestSegment::new(9, 16, 32)];
        let r = UrbRequest::isochronous(4, Pipe::from_raw(0x0001_8583), 1, 77, 2, &data, &desc)
            .unwrap();
        assert_eq!(r.nr_buffer_segs, 2);
        assert_eq!(r.buffer_length, 210);
        assert_eq!(r.seg[2], desc[0]);
        assert_eq!(
            r.isoc(),
            IsoParams {
                interval: 1,
                start_frame: 77,
                number_of_packets: 2,
                nr_frame_desc_segs: 1
            }
        );
        let u = UrbRequest::unlink(5, Pipe::from_raw(0xc001_0501), 4);
        assert_eq!(u.pipe, 0xc001_0521);
        assert_eq!(u.unlink_id(), 4);
        let c = UrbRequest::control(
            1,
            Pipe::from_raw(0x8000_0583),
            SetupPacket::new(0x80, 6, 0x100, 0, 18),
            &data[..1],
        )
        .unwrap();
        assert_eq!(c.ctrl().w_length, 18);
        assert!(!c.short_not_ok());
        let i = UrbRequest::interrupt(2, Pipe::from_raw(0x4000_8181), 8, true, &[]).unwrap();
        assert!(i.short_not_ok());
        assert_eq!(i.intr_interval(), 8);
        assert_eq!(i.nr_buffer_segs, 0);
    }
}
