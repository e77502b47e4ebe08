//! USB mass storage, bulk-only transport (BOT 1.0) over the SCSI subset of
//! [`scsi`]: a 512-byte-block disk backed by a file or memory.
//!
//! The frontend may send anything, so every BOT rule about invalid CBWs and
//! host/device disagreement on the data phase is followed (BOT 6.6, 6.7):
//! invalid CBWs stall both bulk endpoints until a Bulk-Only Mass Storage
//! Reset, disagreements end with a stall and/or a phase-error CSW.

pub mod scsi;
pub mod store;

use std::sync::Arc;

use pvusb_protocol::usb::bot::{BULK_ONLY_RESET, CBW_LEN, CSW_LEN, PROTOCOL_BOT, SUBCLASS_SCSI};
use pvusb_protocol::usb::request::class;

use self::scsi::{Plan, ScsiState, Sense};
use self::store::BlockStore;
use super::descriptors::{interface, DeviceSpec, EndpointSpec};
use super::device::{ControlRequest, DataRequest, EmulatedDevice, Reply};
use crate::usb::proto::Speed;

/// Bulk OUT endpoint (CBWs and write data).
pub const EP_OUT: u8 = 0x01;
/// Bulk IN endpoint (read data and CSWs).
pub const EP_IN: u8 = 0x82;
pub use pvusb_protocol::usb::bot::{CBW_SIGNATURE, CSW_SIGNATURE};
/// Product id of the emulated disk.
pub const MASS_STORAGE_PRODUCT_ID: u16 = 0x0002;

/// bCSWStatus values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CswStatus {
    Passed = 0,
    Failed = 1,
    PhaseError = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Csw {
    tag: u32,
    residue: u32,
    status: CswStatus,
}

/// How much of a `len`-byte transfer a phase with `remaining` bytes left
/// takes (the 64-bit byte counts of a phase may exceed `usize`).
fn at_most(remaining: u64, len: usize) -> usize {
    usize::try_from(remaining).unwrap_or(usize::MAX).min(len)
}

#[derive(Debug)]
enum InSource {
    Bytes { data: Vec<u8>, pos: usize },
    Disk { offset: u64 },
}

#[derive(Debug)]
enum Phase {
    /// Waiting for a CBW on bulk OUT.
    Cbw,
    /// Sending `remaining` bytes on bulk IN, then `csw`.
    DataIn {
        source: InSource,
        remaining: u64,
        csw: Csw,
    },
    /// Receiving `host_remaining` bytes on bulk OUT, writing the first
    /// `write_remaining` of them at `offset`, then `csw`.
    DataOut {
        offset: u64,
        host_remaining: u64,
        write_remaining: u64,
        csw: Csw,
    },
    /// The host expects a data phase the device does not have: stall the
    /// host's next data transfer in that direction, then `csw`.
    DataStall { host_in: bool, csw: Csw },
    /// Sending the CSW on bulk IN.
    Status(Csw),
    /// After an invalid CBW: both bulk endpoints stall until a BOT reset.
    NeedsReset,
}

/// The emulated disk.
#[derive(Debug)]
pub struct MassStorageDevice {
    store: Arc<dyn BlockStore>,
    scsi: ScsiState,
    phase: Phase,
}

impl MassStorageDevice {
    /// A disk over `store` (shared, so its contents survive replugs).
    pub fn new(store: Arc<dyn BlockStore>) -> Self {
        Self {
            store,
            scsi: ScsiState::default(),
            phase: Phase::Cbw,
        }
    }

    fn on_cbw(&mut self, cbw: &[u8]) -> Reply {
        let Some(cbw) = parse_cbw(cbw) else {
            self.phase = Phase::NeedsReset;
            return Reply::Stall;
        };
        let plan = scsi::plan(cbw.cdb, self.store.as_ref(), &mut self.scsi);
        let failed = matches!(plan, Plan::Fail(_));
        let (device_len, device_in) = plan.data_len();
        let host_len = u64::from(cbw.host_len);
        let status = if failed {
            CswStatus::Failed
        } else {
            CswStatus::Passed
        };
        let csw = |residue: u64, status| Csw {
            tag: cbw.tag,
            residue: u32::try_from(residue).unwrap_or(u32::MAX),
            status,
        };
        self.phase = if host_len == 0 {
            // Hn: cases 1-3.
            if device_len == 0 {
                Phase::Status(csw(0, status))
            } else {
                Phase::Status(csw(0, CswStatus::PhaseError))
            }
        } else if device_len == 0 {
            // Hi > Dn / Ho > Dn (cases 4, 9): stall the data phase.
            Phase::DataStall {
                host_in: cbw.host_in,
                csw: csw(host_len, status),
            }
        } else if cbw.host_in != device_in {
            // Hi <> Do / Ho <> Di (cases 8, 10).
            Phase::DataStall {
                host_in: cbw.host_in,
                csw: csw(host_len, CswStatus::PhaseError),
            }
        } else {
            // Cases 5-7 and 11-13: move min(host, device); more device data is a phase error.
            let moved = host_len.min(device_len);
            let status = if device_len > host_len {
                CswStatus::PhaseError
            } else {
                status
            };
            let csw = csw(host_len - moved, status);
            match plan {
                Plan::DataIn(data) => Phase::DataIn {
                    source: InSource::Bytes { data, pos: 0 },
                    remaining: moved,
                    csw,
                },
                Plan::ReadDisk { offset, .. } => Phase::DataIn {
                    source: InSource::Disk { offset },
                    remaining: moved,
                    csw,
                },
                Plan::WriteDisk { offset, .. } => Phase::DataOut {
                    offset,
                    host_remaining: host_len,
                    write_remaining: moved,
                    csw,
                },
                Plan::Good | Plan::Fail(_) => Phase::Status(csw),
            }
        };
        Reply::Done(CBW_LEN)
    }

    fn bulk_in(&mut self, buf: &mut [u8]) -> Reply {
        match &mut self.phase {
            Phase::DataIn {
                source,
                remaining,
                csw,
            } => {
                let n = at_most(*remaining, buf.len());
                let Some(out) = buf.get_mut(..n) else {
                    return Reply::Stall;
                };
                match source {
                    InSource::Bytes { data, pos } => {
                        let src = data.get(*pos..).unwrap_or_default();
                        let k = src.len().min(n);
                        out.fill(0);
                        if let (Some(d), Some(s)) = (out.get_mut(..k), src.get(..k)) {
                            d.copy_from_slice(s);
                        }
                        *pos += n;
                    }
                    InSource::Disk { offset } => {
                        if self.store.read_at(*offset, out).is_err() {
                            out.fill(0);
                            self.scsi.sense = Sense::READ_ERROR;
                            csw.status = CswStatus::Failed;
                        }
                        *offset += n as u64;
                    }
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.phase = Phase::Status(*csw);
                }
                Reply::Done(n)
            }
            Phase::DataStall { host_in: true, csw } => {
                self.phase = Phase::Status(*csw);
                Reply::Stall
            }
            Phase::Status(csw) => {
                if buf.len() < CSW_LEN {
                    return Reply::Stall;
                }
                let bytes = encode_csw(csw);
                if let Some(d) = buf.get_mut(..CSW_LEN) {
                    d.copy_from_slice(&bytes);
                }
                self.phase = Phase::Cbw;
                Reply::Done(CSW_LEN)
            }
            _ => Reply::Stall,
        }
    }

    fn bulk_out(&mut self, data: &[u8]) -> Reply {
        match &mut self.phase {
            Phase::Cbw => self.on_cbw(data),
            Phase::DataOut {
                offset,
                host_remaining,
                write_remaining,
                csw,
            } => {
                let take = at_most(*host_remaining, data.len());
                let write = at_most(*write_remaining, take);
                if let Some(chunk) = data.get(..write) {
                    if self.store.write_at(*offset, chunk).is_err() {
                        self.scsi.sense = Sense::WRITE_ERROR;
                        csw.status = CswStatus::Failed;
                    }
                }
                *offset += write as u64;
                *write_remaining -= write as u64;
                *host_remaining -= take as u64;
                if *host_remaining == 0 {
                    self.phase = Phase::Status(*csw);
                }
                Reply::Done(take)
            }
            Phase::DataStall {
                host_in: false,
                csw,
            } => {
                self.phase = Phase::Status(*csw);
                Reply::Stall
            }
            _ => Reply::Stall,
        }
    }
}

struct Cbw<'a> {
    tag: u32,
    host_len: u32,
    host_in: bool,
    cdb: &'a [u8],
}

/// A valid and meaningful CBW (BOT 6.2), or `None`.
fn parse_cbw(b: &[u8]) -> Option<Cbw<'_>> {
    if b.len() != CBW_LEN {
        return None;
    }
    let le32 =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?)) };
    if le32(0)? != CBW_SIGNATURE {
        return None;
    }
    let flags = *b.get(12)?;
    let lun = *b.get(13)? & 0x0f;
    let cb_len = usize::from(*b.get(14)? & 0x1f);
    if lun != 0 || !(1..=16).contains(&cb_len) {
        return None;
    }
    Some(Cbw {
        tag: le32(4)?,
        host_len: le32(8)?,
        host_in: flags & 0x80 != 0,
        cdb: b.get(15..15 + cb_len)?,
    })
}

fn encode_csw(csw: &Csw) -> [u8; CSW_LEN] {
    let mut b = [0u8; CSW_LEN];
    b[0..4].copy_from_slice(&CSW_SIGNATURE.to_le_bytes());
    b[4..8].copy_from_slice(&csw.tag.to_le_bytes());
    b[8..12].copy_from_slice(&csw.residue.to_le_bytes());
    b[12] = csw.status as u8;
    b
}

impl EmulatedDevice for MassStorageDevice {
    fn spec(&self) -> DeviceSpec {
        let endpoints = vec![
            EndpointSpec::high_speed_bulk(EP_OUT),
            EndpointSpec::high_speed_bulk(EP_IN),
        ];
        let class = (class::MASS_STORAGE, SUBCLASS_SCSI, PROTOCOL_BOT);
        let iface = interface(0, class, endpoints);
        DeviceSpec::single_config(
            Speed::High,
            MASS_STORAGE_PRODUCT_ID,
            "pvusb disk",
            vec![iface],
        )
    }

    fn control(&mut self, req: ControlRequest<'_>) -> Reply {
        let s = req.setup;
        match (s.bm_request_type, s.b_request) {
            // Bulk-Only Mass Storage Reset.
            (0x21, BULK_ONLY_RESET) if s.w_value == 0 && s.w_index == 0 && s.w_length == 0 => {
                self.phase = Phase::Cbw;
                Reply::Done(0)
            }
            // Get Max LUN: one LUN.
            (0xa1, 0xfe) if s.w_value == 0 && s.w_index == 0 && s.w_length == 1 => {
                match req.data.first_mut() {
                    Some(b) => {
                        *b = 0;
                        Reply::Done(1)
                    }
                    None => Reply::Stall,
                }
            }
            _ => Reply::Stall,
        }
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        match req.endpoint {
            EP_OUT => self.bulk_out(req.buffer),
            EP_IN => self.bulk_in(req.buffer),
            _ => Reply::Stall,
        }
    }

    fn reset(&mut self) {
        self.phase = Phase::Cbw;
    }
}
