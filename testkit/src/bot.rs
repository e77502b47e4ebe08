//! Bulk-only transport (USB mass storage) through a raw-ring [`Driver`],
//! for the backend's disk tests: the emulated disk's endpoints are 0x01 OUT
//! and 0x82 IN.

use pvusb_protocol::usb::bot::CBW_SIGNATURE;

use crate::driver::Driver;

/// The disk's bulk OUT endpoint.
const EP_OUT: u8 = 0x01;
/// The disk's bulk IN endpoint.
const EP_IN: u8 = 0x82;

/// A command block wrapper.
pub fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> [u8; 31] {
    let mut c = [0u8; 31];
    c[0..4].copy_from_slice(&CBW_SIGNATURE.to_le_bytes());
    c[4..8].copy_from_slice(&tag.to_le_bytes());
    c[8..12].copy_from_slice(&len.to_le_bytes());
    c[12] = if data_in { 0x80 } else { 0 };
    c[14] = cdb.len() as u8;
    c[15..15 + cdb.len()].copy_from_slice(cdb);
    c
}

/// READ(10) (`op` 0x28) or WRITE(10) (0x2a) of `blocks` blocks at `lba`.
pub fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

/// Sends command block wrapper `wrapper` ([`cbw`]) alone, on id `id`, and
/// returns its response (a stalled one included): for tests that leave a
/// command unfinished on purpose.
pub fn send_cbw(
    d: &mut Driver,
    id: u16,
    (dev, port): (u8, u8),
    wrapper: &[u8; 31],
) -> pvusb_protocol::UrbResponse {
    d.write_buf(id as usize, 0, wrapper);
    let req = d.bulk(id, dev, port, EP_OUT, 31);
    d.roundtrip(req)
}

/// One SCSI command: CBW, optional data, CSW, sent as one batch on ids
/// `ids[0..3]`. OUT data is written from `out`; IN data is returned.
/// Panics with the failing stage if any transfer fails.
#[allow(clippy::too_many_arguments)]
pub fn command(
    d: &mut Driver,
    ids: [u16; 3],
    dev: u8,
    port: u8,
    tag: u32,
    cdb: &[u8],
    data_in: bool,
    len: usize,
    out: &[u8],
    extra: &[pvusb_protocol::UrbRequest],
) -> Vec<u8> {
    let c = cbw(tag, len as u32, data_in, cdb);
    d.write_buf(ids[0] as usize, 0, &c);
    let mut reqs = vec![d.bulk(ids[0], dev, port, EP_OUT, 31)];
    if len > 0 {
        if !data_in {
            d.write_buf(ids[1] as usize, 0, out);
        }
        reqs.push(d.bulk(ids[1], dev, port, if data_in { EP_IN } else { EP_OUT }, len));
    }
    reqs.push(d.bulk(ids[2], dev, port, EP_IN, 13));
    reqs.extend_from_slice(extra);
    d.send(&reqs);
    let r = d.response_for(ids[0]);
    assert_eq!((r.status, r.actual_length), (0, 31), "CBW of tag {tag}");
    let mut data = Vec::new();
    if len > 0 {
        let r = d.response_for(ids[1]);
        assert_eq!(
            (r.status, r.actual_length as usize),
            (0, len),
            "data of tag {tag}"
        );
        if data_in {
            data = d.read_buf(ids[1] as usize, 0, len);
        }
    }
    let r = d.response_for(ids[2]);
    assert_eq!((r.status, r.actual_length), (0, 13), "CSW of tag {tag}");
    let csw = d.read_buf(ids[2] as usize, 0, 13);
    assert_eq!(&csw[0..4], b"USBS");
    assert_eq!(
        u32::from_le_bytes([csw[4], csw[5], csw[6], csw[7]]),
        tag,
        "CSW tag"
    );
    assert_eq!(csw[12], 0, "CSW status of tag {tag}");
    data
}

/// WRITE(10) of `data` (whole 512-byte blocks) at `lba` on ids 0 to 2,
/// with `extra` requests in the same batch.
pub fn write10(
    d: &mut Driver,
    dev: u8,
    port: u8,
    tag: u32,
    lba: u32,
    data: &[u8],
    extra: &[pvusb_protocol::UrbRequest],
) {
    let cdb = rw10(0x2a, lba, blocks(data.len()));
    command(
        d,
        [0, 1, 2],
        dev,
        port,
        tag,
        &cdb,
        false,
        data.len(),
        data,
        extra,
    );
}

/// READ(10) of `len` bytes (whole 512-byte blocks) at `lba` on ids 0 to 2,
/// with `extra` requests in the same batch; returns the data.
pub fn read10(
    d: &mut Driver,
    dev: u8,
    port: u8,
    tag: u32,
    lba: u32,
    len: usize,
    extra: &[pvusb_protocol::UrbRequest],
) -> Vec<u8> {
    let cdb = rw10(0x28, lba, blocks(len));
    command(d, [0, 1, 2], dev, port, tag, &cdb, true, len, &[], extra)
}

/// The blocks of a READ(10) or WRITE(10) of `len` bytes.
fn blocks(len: usize) -> u16 {
    assert_eq!(len % 512, 0, "{len} bytes are not whole blocks");
    u16::try_from(len / 512).expect("at most 65535 blocks per command")
}
