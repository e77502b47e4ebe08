//! A USB mass-storage client over the bulk-only transport (BOT 1.0) with the
//! SCSI commands a block device needs, and BOT error recovery (clear halt
//! after a stall, reset recovery after a phase error or a bad CSW).

use std::time::Duration;

use pvusb_protocol::usb::bot::{
    BULK_ONLY_RESET, CBW_SIGNATURE, CSW_LEN, CSW_SIGNATURE, PROTOCOL_BOT, SUBCLASS_SCSI,
};
use pvusb_protocol::usb::request::class;
use pvusb_protocol::usb::EndpointType;
use pvusb_protocol::{Direction, SetupPacket};
use pvusb_support::Chain;

use crate::device::Device;
use crate::error::{FrontendError, UrbStatus};
use crate::frontend::Frontend;
use crate::urb::Urb;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Direction and size of a command's data phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataPhase {
    None,
    In(usize),
    Out,
}

/// What INQUIRY says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inquiry {
    /// Peripheral device type (0 = direct access).
    pub device_type: u8,
    /// Vendor identification.
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision.
    pub revision: String,
}

/// Sense data from REQUEST SENSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
}

/// A mass-storage (BOT) device on a [`Frontend`].
#[derive(Debug)]
pub struct MassStorage<'a> {
    front: &'a Frontend,
    port: u8,
    address: u8,
    interface: u8,
    ep_in: u8,
    ep_out: u8,
    tag: u32,
    /// Logical block size from READ CAPACITY (512 until read).
    pub block_size: u32,
    /// Number of blocks from READ CAPACITY (0 until read).
    pub blocks: u64,
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

impl<'a> MassStorage<'a> {
    /// Finds the BOT interface of an enumerated device and reads its capacity.
    pub fn open(front: &'a Frontend, dev: &Device) -> Result<Self, FrontendError> {
        let alt = dev
            .config
            .interfaces
            .iter()
            .filter_map(|i| i.alt_settings.first())
            .find(|a| {
                a.class == class::MASS_STORAGE
                    && a.subclass == SUBCLASS_SCSI
                    && a.protocol == PROTOCOL_BOT
            })
            .ok_or_else(|| FrontendError::Device {
                port: dev.port,
                reason: "no bulk-only mass-storage interface".into(),
            })?;
        let find = |dir| {
            alt.endpoints
                .iter()
                .find(|e| e.endpoint_type() == EndpointType::Bulk && e.direction() == dir)
                .map(|e| e.number())
        };
        let (Some(ep_in), Some(ep_out)) = (find(Direction::In), find(Direction::Out)) else {
            return Err(FrontendError::Device {
                port: dev.port,
                reason: "mass storage without bulk endpoints".into(),
            });
        };
        let mut ms = Self {
            front,
            port: dev.port,
            address: dev.address,
            interface: alt.interface_number,
            ep_in,
            ep_out,
            tag: 1,
            block_size: 512,
            blocks: 0,
        };
        // A fresh medium reports "unit attention" once: retry a few times.
        for _ in 0..3 {
            if ms.test_unit_ready().is_ok() {
                break;
            }
            let _ = ms.request_sense();
        }
        ms.read_capacity()?;
        Ok(ms)
    }

    /// INQUIRY (36 bytes).
    pub fn inquiry(&mut self) -> Result<Inquiry, FrontendError> {
        let d = self.command(&[0x12, 0, 0, 0, 36, 0], DataPhase::In(36), &[])?;
        if d.len() < 36 {
            return Err(self.fail(0x12, format!("INQUIRY returned {} bytes", d.len())));
        }
        Ok(Inquiry {
            device_type: d[0] & 0x1f,
            vendor: ascii(&d[8..16]),
            product: ascii(&d[16..32]),
            revision: ascii(&d[32..36]),
        })
    }

    /// TEST UNIT READY.
    pub fn test_unit_ready(&mut self) -> Result<(), FrontendError> {
        self.command(&[0; 6], DataPhase::None, &[]).map(drop)
    }

    /// REQUEST SENSE (fixed format, 18 bytes).
    pub fn request_sense(&mut self) -> Result<Sense, FrontendError> {
        let d = self.command(&[0x03, 0, 0, 0, 18, 0], DataPhase::In(18), &[])?;
        let b = |i: usize| d.get(i).copied().unwrap_or(0);
        Ok(Sense {
            key: b(2) & 0x0f,
            asc: b(12),
            ascq: b(13),
        })
    }

    /// READ CAPACITY(10): sets and returns (blocks, block size).
    pub fn read_capacity(&mut self) -> Result<(u64, u32), FrontendError> {
        let d = self.command(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], DataPhase::In(8), &[])?;
        let (Some(last), Some(size)) = (d.get(0..4), d.get(4..8)) else {
            return Err(self.fail(0x25, format!("READ CAPACITY returned {} bytes", d.len())));
        };
        let last = u32::from_be_bytes([last[0], last[1], last[2], last[3]]);
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]);
        if size == 0 || size > 65536 {
            return Err(self.fail(0x25, format!("block size {size}")));
        }
        self.blocks = u64::from(last) + 1;
        self.block_size = size;
        Ok((self.blocks, size))
    }

    fn rw_cdb(op: u8, lba: u32, count: u16) -> [u8; 10] {
        let l = lba.to_be_bytes();
        let c = count.to_be_bytes();
        [op, 0, l[0], l[1], l[2], l[3], 0, c[0], c[1], 0]
    }

    /// Checks `count` blocks at `lba` against the medium; the returned pair fits
    /// a READ(10)/WRITE(10) CDB when `count` ≤ 65535 (callers split larger ranges).
    fn check_range(&self, op: u8, lba: u64, count: u64) -> Result<(u32, u16), FrontendError> {
        let end = lba.checked_add(count);
        match (u32::try_from(lba), end) {
            (Ok(l), Some(e)) if e <= self.blocks => {
                Ok((l, u16::try_from(count).unwrap_or(u16::MAX)))
            }
            _ => Err(self.fail(
                op,
                format!(
                    "blocks {lba}+{count} outside the {}-block medium",
                    self.blocks
                ),
            )),
        }
    }

    /// Blocks per READ(10)/WRITE(10) command: the CDB's 16-bit count, and at
    /// most 1 MiB per data phase so a long transfer keeps its memory and its
    /// per-command timeout modest (data phases above the URB limit are split by
    /// the bulk layer).
    fn blocks_per_command(&self) -> u64 {
        let per_mib = (1u64 << 20) / u64::from(self.block_size.max(1));
        per_mib.clamp(1, u64::from(u16::MAX))
    }

    /// Reads `count` blocks at `lba`, as one or more READ(10) commands.
    pub fn read_blocks(&mut self, lba: u64, count: u32) -> Result<Vec<u8>, FrontendError> {
        self.check_range(0x28, lba, u64::from(count))?;
        let bs = self.block_size as usize;
        let mut out = Vec::with_capacity((count as usize).saturating_mul(bs));
        let (mut at, end) = (lba, lba + u64::from(count));
        while at < end {
            let n = (end - at).min(self.blocks_per_command());
            let (l, c) = self.check_range(0x28, at, n)?;
            let len = usize::from(c) * bs;
            out.extend(self.command(&Self::rw_cdb(0x28, l, c), DataPhase::In(len), &[])?);
            at += n;
        }
        Ok(out)
    }

    /// Writes `data` (a whole number of blocks) at `lba`, as one or more
    /// WRITE(10) commands.
    pub fn write_blocks(&mut self, lba: u64, data: &[u8]) -> Result<(), FrontendError> {
        let bs = self.block_size as usize;
        if data.len() % bs != 0 {
            return Err(self.fail(
                0x2a,
                format!("{} bytes are not whole {bs}-byte blocks", data.len()),
            ));
        }
        self.check_range(0x2a, lba, (data.len() / bs) as u64)?;
        let per = usize::try_from(self.blocks_per_command()).unwrap_or(1) * bs;
        let mut at = lba;
        for chunk in data.chunks(per) {
            let n = (chunk.len() / bs) as u64;
            let (l, c) = self.check_range(0x2a, at, n)?;
            self.command(&Self::rw_cdb(0x2a, l, c), DataPhase::Out, chunk)?;
            at += n;
        }
        Ok(())
    }

    fn fail(&self, command: u8, reason: String) -> FrontendError {
        FrontendError::MassStorage { command, reason }
    }

    /// One BOT command: CBW, data phase, CSW, with recovery.
    fn command(
        &mut self,
        cdb: &[u8],
        phase: DataPhase,
        out: &[u8],
    ) -> Result<Vec<u8>, FrontendError> {
        let op = cdb.first().copied().unwrap_or(0);
        let tag = self.tag;
        self.tag = self.tag.wrapping_add(1);
        let (len, flags) = match phase {
            DataPhase::None => (0, 0),
            DataPhase::In(n) => (n, 0x80),
            DataPhase::Out => (out.len(), 0),
        };
        let mut cbw = Vec::with_capacity(31);
        cbw.extend_from_slice(&CBW_SIGNATURE.to_le_bytes());
        cbw.extend_from_slice(&tag.to_le_bytes());
        cbw.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
        cbw.push(flags);
        cbw.push(0); // LUN
                     // bCBWCBLength: at most the 16 bytes the CBW carries (our CDBs are ≤ 10).
        cbw.push(u8::try_from(cdb.len()).unwrap_or(u8::MAX).min(16));
        let mut cb = [0u8; 16];
        for (d, s) in cb.iter_mut().zip(cdb) {
            *d = *s;
        }
        cbw.extend_from_slice(&cb);
        let (port, addr) = (self.port, self.address);
        if let Err(e) = self.front.bulk_out(port, addr, self.ep_out, &cbw, TIMEOUT) {
            self.reset_recovery();
            return Err(self.fail(op, format!("sending the CBW failed: {e}", e = Chain(&e))));
        }
        let data = match phase {
            DataPhase::None => Ok(Vec::new()),
            DataPhase::In(n) => self.front.bulk_in(port, addr, self.ep_in, n, TIMEOUT),
            DataPhase::Out => self
                .front
                .bulk_out(port, addr, self.ep_out, out, TIMEOUT)
                .map(|_| Vec::new()),
        };
        let data = match data {
            Ok(d) => d,
            Err(FrontendError::Transfer(UrbStatus::Stall)) => {
                let ep = if matches!(phase, DataPhase::In(_)) {
                    self.ep_in | 0x80
                } else {
                    self.ep_out
                };
                self.clear_halt(ep);
                Vec::new()
            }
            Err(e) => {
                self.reset_recovery();
                return Err(self.fail(op, format!("data phase failed: {e}", e = Chain(&e))));
            }
        };
        let csw = match self.read_csw() {
            Ok(c) => c,
            Err(FrontendError::Transfer(UrbStatus::Stall)) => {
                self.clear_halt(self.ep_in | 0x80);
                self.read_csw().inspect_err(|_| self.reset_recovery())?
            }
            Err(e) => {
                self.reset_recovery();
                return Err(e);
            }
        };
        let field = |i: usize| u32::from_le_bytes([csw[i], csw[i + 1], csw[i + 2], csw[i + 3]]);
        if csw.len() != CSW_LEN || field(0) != CSW_SIGNATURE || field(4) != tag {
            self.reset_recovery();
            return Err(self.fail(op, "invalid CSW".into()));
        }
        match csw[12] {
            0 => Ok(data),
            1 => Err(self.fail(op, format!("command failed (residue {})", field(8)))),
            _ => {
                self.reset_recovery();
                Err(self.fail(op, "phase error".into()))
            }
        }
    }

    fn read_csw(&mut self) -> Result<Vec<u8>, FrontendError> {
        let c = self.front.transfer(
            Urb::bulk_in(self.port, self.address, self.ep_in, CSW_LEN),
            TIMEOUT,
        )?;
        if !c.status.is_ok() {
            return Err(FrontendError::Transfer(c.status));
        }
        Ok(c.data().to_vec())
    }

    fn clear_halt(&self, endpoint_address: u8) {
        let setup = SetupPacket::clear_halt(endpoint_address);
        let _ = self
            .front
            .control_out(self.port, self.address, setup, &[], TIMEOUT);
    }

    /// BOT 5.3.4 reset recovery: mass-storage reset, clear halt on both pipes.
    pub fn reset_recovery(&self) {
        let setup = SetupPacket::new(0x21, BULK_ONLY_RESET, 0, u16::from(self.interface), 0);
        let _ = self
            .front
            .control_out(self.port, self.address, setup, &[], TIMEOUT);
        self.clear_halt(self.ep_in | 0x80);
        self.clear_halt(self.ep_out);
    }
}
