//! The SCSI commands the emulated disk understands (SPC/SBC subset that Linux
//! `usb-storage` + `sd` use), turned into a data-phase plan for the transport.

use super::store::{BlockStore, BLOCK_SIZE};

/// [`BLOCK_SIZE`] as READ CAPACITY(10)'s 32-bit block length; a separate
/// constant (checked equal at build time) so no cast is needed.
const BLOCK_LEN_U32: u32 = 512;
const _: () = assert!(BLOCK_LEN_U32 as u64 == BLOCK_SIZE);

/// Sense data of the last failed command (SPC fixed format fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

impl Sense {
    const NONE: Sense = Sense {
        key: 0,
        asc: 0,
        ascq: 0,
    };
    const INVALID_OPCODE: Sense = Sense {
        key: 0x05,
        asc: 0x20,
        ascq: 0,
    };
    const INVALID_FIELD: Sense = Sense {
        key: 0x05,
        asc: 0x24,
        ascq: 0,
    };
    const LBA_OUT_OF_RANGE: Sense = Sense {
        key: 0x05,
        asc: 0x21,
        ascq: 0,
    };
    const NO_MEDIUM: Sense = Sense {
        key: 0x02,
        asc: 0x3a,
        ascq: 0,
    };
    /// Unrecovered read error.
    pub const READ_ERROR: Sense = Sense {
        key: 0x03,
        asc: 0x11,
        ascq: 0,
    };
    /// Write error.
    pub const WRITE_ERROR: Sense = Sense {
        key: 0x03,
        asc: 0x0c,
        ascq: 0,
    };
}

/// What the transport has to do for a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// No data phase; the command succeeded.
    Good,
    /// No data phase; the command failed with this sense.
    Fail(Sense),
    /// Send these bytes (already cut to the allocation length).
    DataIn(Vec<u8>),
    /// Send `len` bytes read from the disk at `offset`.
    ReadDisk {
        /// Byte offset on the disk.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
    /// Receive `len` bytes and write them at `offset`.
    WriteDisk {
        /// Byte offset on the disk.
        offset: u64,
        /// Bytes to receive.
        len: u64,
    },
}

impl Plan {
    /// Bytes the device wants to move, and whether device-to-host.
    pub fn data_len(&self) -> (u64, bool) {
        match self {
            Plan::Good | Plan::Fail(_) => (0, false),
            Plan::DataIn(d) => (d.len() as u64, true),
            Plan::ReadDisk { len, .. } => (*len, true),
            Plan::WriteDisk { len, .. } => (*len, false),
        }
    }
}

/// SCSI-level state of the logical unit.
#[derive(Debug, Default)]
pub struct ScsiState {
    /// Reported (and cleared) by REQUEST SENSE.
    pub sense: Sense,
}

fn byte(cdb: &[u8], i: usize) -> u8 {
    cdb.get(i).copied().unwrap_or(0)
}

fn be16(cdb: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([byte(cdb, i), byte(cdb, i + 1)])
}

fn be32(cdb: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([
        byte(cdb, i),
        byte(cdb, i + 1),
        byte(cdb, i + 2),
        byte(cdb, i + 3),
    ])
}

/// CDB length implied by the opcode's group code (SPC 4.2.5.1).
fn cdb_len(opcode: u8) -> usize {
    match opcode >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ => 6,
    }
}

fn truncated(mut data: Vec<u8>, alloc: usize) -> Plan {
    data.truncate(alloc);
    Plan::DataIn(data)
}

/// Plans the command in `cdb`; records the outcome in `state.sense`.
pub fn plan(cdb: &[u8], store: &dyn BlockStore, state: &mut ScsiState) -> Plan {
    let plan = plan_inner(cdb, store, state);
    match &plan {
        Plan::Fail(sense) => state.sense = *sense,
        // REQUEST SENSE reports and clears; everything else that works clears too.
        _ => state.sense = Sense::NONE,
    }
    plan
}

fn plan_inner(cdb: &[u8], store: &dyn BlockStore, state: &ScsiState) -> Plan {
    let opcode = byte(cdb, 0);
    if cdb.len() < cdb_len(opcode) {
        return Plan::Fail(Sense::INVALID_FIELD);
    }
    let blocks = store.len() / BLOCK_SIZE;
    match opcode {
        // TEST UNIT READY
        0x00 if blocks == 0 => Plan::Fail(Sense::NO_MEDIUM),
        0x00 => Plan::Good,
        // REQUEST SENSE (fixed format)
        0x03 => {
            let s = state.sense;
            let data = vec![
                0x70, 0, s.key, 0, 0, 0, 0, 10, 0, 0, 0, 0, s.asc, s.ascq, 0, 0, 0, 0,
            ];
            truncated(data, usize::from(byte(cdb, 4)))
        }
        // INQUIRY
        0x12 => inquiry(cdb),
        // MODE SENSE(6): header only, not write protected, no block descriptors.
        0x1a => truncated(vec![3, 0, 0, 0], usize::from(byte(cdb, 4))),
        // MODE SENSE(10)
        0x5a => truncated(vec![0, 6, 0, 0, 0, 0, 0, 0], usize::from(be16(cdb, 7))),
        // START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, VERIFY(10) without byte check
        0x1b | 0x1e => Plan::Good,
        0x2f if byte(cdb, 1) & 0x02 == 0 => Plan::Good,
        // SYNCHRONIZE CACHE(10)
        0x35 => match store.flush() {
            Ok(()) => Plan::Good,
            Err(_) => Plan::Fail(Sense::WRITE_ERROR),
        },
        // READ CAPACITY(10)
        0x25 if blocks == 0 => Plan::Fail(Sense::NO_MEDIUM),
        0x25 => {
            let last = u32::try_from(blocks - 1).unwrap_or(u32::MAX);
            let mut data = last.to_be_bytes().to_vec();
            data.extend_from_slice(&BLOCK_LEN_U32.to_be_bytes());
            Plan::DataIn(data)
        }
        // READ(10) / WRITE(10)
        0x28 | 0x2a => {
            let lba = u64::from(be32(cdb, 2));
            let count = u64::from(be16(cdb, 7));
            if lba.saturating_add(count) > blocks {
                return Plan::Fail(Sense::LBA_OUT_OF_RANGE);
            }
            if count == 0 {
                return Plan::Good;
            }
            let (offset, len) = (lba * BLOCK_SIZE, count * BLOCK_SIZE);
            if opcode == 0x28 {
                Plan::ReadDisk { offset, len }
            } else {
                Plan::WriteDisk { offset, len }
            }
        }
        _ => Plan::Fail(Sense::INVALID_OPCODE),
    }
}

fn inquiry(cdb: &[u8]) -> Plan {
    let alloc = usize::from(be16(cdb, 3));
    if byte(cdb, 1) & 0x01 != 0 {
        // EVPD: only the list of supported pages.
        return match byte(cdb, 2) {
            0x00 => truncated(vec![0, 0x00, 0, 1, 0x00], alloc),
            _ => Plan::Fail(Sense::INVALID_FIELD),
        };
    }
    if byte(cdb, 2) != 0 {
        return Plan::Fail(Sense::INVALID_FIELD);
    }
    // Direct-access, removable, SPC-2, response format 2, 36 bytes.
    let mut data = vec![0x00, 0x80, 0x04, 0x02, 31, 0, 0, 0];
    data.extend_from_slice(b"pvusb   ");
    data.extend_from_slice(b"Emulated Disk   ");
    data.extend_from_slice(b"0001");
    truncated(data, alloc)
}
