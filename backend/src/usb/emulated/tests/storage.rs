//! Mass storage: BOT transport and SCSI commands.

use super::*;

struct Bot {
    d: Driver,
    tag: u32,
}

impl Bot {
    fn cbw(&mut self, cdb: &[u8], len: u32, dir_in: bool) -> Vec<u8> {
        self.tag += 1;
        let mut b = Vec::new();
        b.extend_from_slice(&CBW_SIGNATURE.to_le_bytes());
        b.extend_from_slice(&self.tag.to_le_bytes());
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(&[
            if dir_in { 0x80 } else { 0 },
            0,
            u8::try_from(cdb.len()).unwrap(),
        ]);
        let mut padded = cdb.to_vec();
        padded.resize(16, 0);
        b.extend_from_slice(&padded);
        b
    }

    fn csw(&mut self) -> (u32, u8) {
        let c = self.d.bulk(EP_IN, vec![0; 13]);
        assert_eq!(
            (c.outcome, c.actual_length),
            (TransferOutcome::Completed, 13)
        );
        assert_eq!(
            u32::from_le_bytes(c.buffer[0..4].try_into().unwrap()),
            CSW_SIGNATURE
        );
        assert_eq!(
            u32::from_le_bytes(c.buffer[4..8].try_into().unwrap()),
            self.tag,
            "CSW tag"
        );
        (
            u32::from_le_bytes(c.buffer[8..12].try_into().unwrap()),
            c.buffer[12],
        )
    }

    /// Command with an IN data phase of `len`; returns data, residue, status.
    fn read(&mut self, cdb: &[u8], len: u32) -> (Vec<u8>, u32, u8) {
        let cbw = self.cbw(cdb, len, true);
        assert_eq!(self.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
        let data = if len > 0 {
            let c = self.d.bulk(EP_IN, vec![0; len as usize]);
            if c.outcome == TransferOutcome::Stall {
                self.clear_halt(EP_IN);
            }
            Driver::data_in(&c).to_vec()
        } else {
            Vec::new()
        };
        let (residue, status) = self.csw();
        (data, residue, status)
    }

    fn write(&mut self, cdb: &[u8], data: Vec<u8>) -> (u32, u8) {
        let cbw = self.cbw(cdb, u32::try_from(data.len()).unwrap(), false);
        assert_eq!(self.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
        let c = self.d.bulk(EP_OUT, data);
        assert_eq!(c.outcome, TransferOutcome::Completed);
        self.csw()
    }

    fn clear_halt(&mut self, endpoint: u8) {
        let c = self
            .d
            .transfer(0, TransferKind::ClearHalt { endpoint }, 0, false);
        assert_eq!(c.outcome, TransferOutcome::Completed);
    }
}

fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    [op, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn storage_round_trip(store: Arc<dyn BlockStore>) {
    let blocks = u32::try_from(store.len() / 512).unwrap();
    let (_host, _busid, dev, sink) = plug(factory(move || {
        Box::new(MassStorageDevice::new(store.clone()))
    }));
    let mut bot = Bot {
        d: Driver::new(dev, sink),
        tag: 0,
    };
    assert_eq!(
        Driver::data_in(&bot.d.control_in(0xa1, 0xfe, 0, 0, 1)),
        &[0],
        "Get Max LUN"
    );
    let (inq, residue, status) = bot.read(&[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!((inq.len(), residue, status), (36, 0, 0));
    assert_eq!(&inq[8..13], b"pvusb");
    assert_eq!(bot.read(&[0, 0, 0, 0, 0, 0], 0).2, 0, "TEST UNIT READY");
    let (cap, _, status) = bot.read(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(status, 0);
    assert_eq!(
        u32::from_be_bytes(cap[0..4].try_into().unwrap()),
        blocks - 1
    );
    assert_eq!(u32::from_be_bytes(cap[4..8].try_into().unwrap()), 512);
    let (mode, _, status) = bot.read(&[0x1a, 0, 0x3f, 0, 192, 0], 192);
    assert_eq!((mode.len(), status), (4, 0));
    let (mode10, _, status) = bot.read(&[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 255, 0], 255);
    assert_eq!((mode10.len(), status), (8, 0));
    assert_eq!(
        bot.read(&[0x1e, 0, 0, 0, 1, 0], 0).2,
        0,
        "PREVENT ALLOW MEDIUM REMOVAL"
    );

    // 256 KiB of pseudo-random data in 32 KiB commands, read back in 64 KiB ones.
    let mut seed = 0x1234_5678u32;
    let data: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed.to_le_bytes()[0]
        })
        .collect();
    for (i, chunk) in (0u32..).zip(data.chunks(32 * 1024)) {
        assert_eq!(
            bot.write(&rw10(0x2a, 8 + i * 64, 64), chunk.to_vec()),
            (0, 0)
        );
    }
    let mut back = Vec::new();
    for i in 0..4u32 {
        let (chunk, residue, status) = bot.read(&rw10(0x28, 8 + i * 128, 128), 64 * 1024);
        assert_eq!((residue, status), (0, 0));
        back.extend_from_slice(&chunk);
    }
    assert_eq!(checksum(&back), checksum(&data));
    assert_eq!(back, data);

    // Out of range: failed CSW, data phase stalled, sense LBA OUT OF RANGE.
    let (_, residue, status) = bot.read(&rw10(0x28, blocks, 1), 512);
    assert_eq!((residue, status), (512, 1));
    let (sense, _, status) = bot.read(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!((status, sense[2], sense[12]), (0, 0x05, 0x21));
    // Unknown opcode: ILLEGAL REQUEST / invalid command operation code.
    assert_eq!(bot.read(&[0xee, 0, 0, 0, 0, 0], 0).2, 1);
    let (sense, _, _) = bot.read(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!((sense[2], sense[12]), (0x05, 0x20));
    // Host expects less than the command moves: phase error (BOT case 7).
    let (short, residue, status) = bot.read(&rw10(0x28, 0, 2), 512);
    assert_eq!((short.len(), residue, status), (512, 0, 2));
    // Host expects more: short data, residue, passed (case 5).
    let (inq, residue, status) = bot.read(&[0x12, 0, 0, 0, 36, 0], 100);
    assert_eq!((inq.len(), residue, status), (36, 64, 0));
}

#[test]
fn storage_round_trip_in_memory() {
    storage_round_trip(Arc::new(MemoryStore::new(2048)));
}

#[test]
fn storage_round_trip_file_backed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::create(&dir.path().join("disk.img"), 2048).unwrap();
    storage_round_trip(Arc::new(store));
}

#[test]
fn invalid_cbw_stalls_until_reset_recovery() {
    let (_host, _busid, dev, sink) = plug(factory(|| {
        Box::new(MassStorageDevice::new(Arc::new(MemoryStore::new(16))))
    }));
    let mut bot = Bot {
        d: Driver::new(dev, sink),
        tag: 0,
    };
    for garbage in [vec![0u8; 31], vec![0x55; 7], {
        let mut wrong_lun = bot.cbw(&[0, 0, 0, 0, 0, 0], 0, false);
        wrong_lun[13] = 3;
        wrong_lun
    }] {
        assert_eq!(bot.d.bulk(EP_OUT, garbage).outcome, TransferOutcome::Stall);
        // Clearing the halts is not enough: BOT 6.6.1 wants a reset recovery.
        bot.clear_halt(EP_OUT);
        bot.clear_halt(EP_IN);
        let cbw = bot.cbw(&[0, 0, 0, 0, 0, 0], 0, false);
        assert_eq!(bot.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Stall);
        bot.clear_halt(EP_OUT);
        assert_eq!(
            bot.d.bulk(EP_IN, vec![0; 13]).outcome,
            TransferOutcome::Stall
        );
        bot.clear_halt(EP_IN);
        assert_eq!(
            bot.d.control_out(0x21, 0xff, 0, 0, vec![]).outcome,
            TransferOutcome::Completed
        );
        assert_eq!(bot.read(&[0, 0, 0, 0, 0, 0], 0).2, 0);
    }
    // Direction disagreement (host OUT, device IN): stall, then phase error.
    let cbw = bot.cbw(&[0x12, 0, 0, 0, 36, 0], 36, false);
    assert_eq!(bot.d.bulk(EP_OUT, cbw).outcome, TransferOutcome::Completed);
    assert_eq!(
        bot.d.bulk(EP_OUT, vec![0; 36]).outcome,
        TransferOutcome::Stall
    );
    bot.clear_halt(EP_OUT);
    assert_eq!(bot.csw(), (36, 2));
}
