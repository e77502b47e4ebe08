//! Bulk loopback / source-sink device: what the throughput benchmark measures.
//!
//! Bulk OUT 0x01 consumes data (loopback mode keeps the last bytes written);
//! bulk IN 0x81 returns them (loopback) or a deterministic pattern (source).
//! Every transfer completes synchronously inside `submit`, filling the
//! caller's buffer: no thread hop and no allocation per transfer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::descriptors::{DeviceSpec, EndpointSpec};
use super::device::{ControlRequest, DataRequest, EmulatedDevice, Reply};

/// Vendor OUT request (bmRequestType 0x40): wValue selects the [`LoopbackMode`].
pub const VENDOR_SET_MODE: u8 = 0x01;
/// Vendor IN request (bmRequestType 0xC0): 16 bytes, bytes consumed and
/// produced so far (two little-endian u64).
pub const VENDOR_GET_COUNTERS: u8 = 0x02;

/// What bulk IN returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoopbackMode {
    /// The bytes most recently written to bulk OUT.
    Loopback = 0,
    /// The pattern `byte[i] = (stream position + i) mod 251` (OUT is a sink).
    SourceSink = 1,
}

/// Byte counters, readable while the device runs.
#[derive(Debug, Default)]
pub struct LoopbackCounters {
    /// Bytes consumed on bulk OUT.
    pub consumed: AtomicU64,
    /// Bytes produced on bulk IN.
    pub produced: AtomicU64,
}

/// The loopback / source-sink device.
#[derive(Debug)]
pub struct LoopbackDevice {
    mode: LoopbackMode,
    /// The last OUT data (up to its capacity), for loopback mode.
    stored: Vec<u8>,
    stored_len: usize,
    /// Position in the source pattern.
    source_pos: u64,
    /// The pattern from position 0, one period longer than the largest
    /// transfer, so any stretch of it is one memcpy (not a `%` per byte).
    pattern: Vec<u8>,
    counters: Arc<LoopbackCounters>,
}

/// The pattern's period in bytes.
const PERIOD_BYTES: usize = 251;
/// The pattern's period, as the stream positions count it (widening).
const PATTERN_PERIOD: u64 = PERIOD_BYTES as u64;
/// Length of the precomputed pattern: a whole URB buffer from any phase.
const PATTERN_LEN: usize = 65536 + PERIOD_BYTES;

/// The product id of the loopback device.
pub const LOOPBACK_PRODUCT_ID: u16 = 0x0001;

impl LoopbackDevice {
    /// A device in loopback mode remembering up to `capacity` bytes of OUT data.
    pub fn new(capacity: usize) -> Self {
        Self::with_counters(capacity, Arc::new(LoopbackCounters::default()))
    }

    /// Same, with externally visible counters.
    pub fn with_counters(capacity: usize, counters: Arc<LoopbackCounters>) -> Self {
        Self {
            mode: LoopbackMode::Loopback,
            stored: vec![0; capacity],
            stored_len: 0,
            source_pos: 0,
            pattern: (0..PATTERN_LEN as u64).map(Self::pattern_byte).collect(),
            counters,
        }
    }

    /// The counters.
    pub fn counters(&self) -> Arc<LoopbackCounters> {
        self.counters.clone()
    }

    /// The pattern byte at stream position `pos`.
    pub fn pattern_byte(pos: u64) -> u8 {
        (pos % PATTERN_PERIOD) as u8
    }

    fn consume(&mut self, data: &[u8]) -> usize {
        if self.mode == LoopbackMode::Loopback {
            // Keep the tail of what was written.
            let keep = data.len().min(self.stored.len());
            let tail = data.get(data.len() - keep..).unwrap_or_default();
            if let Some(dst) = self.stored.get_mut(..keep) {
                dst.copy_from_slice(tail);
            }
            self.stored_len = keep;
        }
        self.counters
            .consumed
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        data.len()
    }

    fn produce(&mut self, buf: &mut [u8]) -> usize {
        let n = match self.mode {
            LoopbackMode::Loopback => {
                let n = buf.len().min(self.stored_len);
                if let (Some(d), Some(s)) = (buf.get_mut(..n), self.stored.get(..n)) {
                    d.copy_from_slice(s);
                }
                n
            }
            LoopbackMode::SourceSink => {
                let start = self.source_pos;
                // phase < 251, so the slice exists for any buffer up to 64 KiB;
                // larger ones (never from usbif) are filled in pieces.
                let mut done = 0;
                while done < buf.len() {
                    let phase = (start.wrapping_add(done as u64) % PATTERN_PERIOD) as usize;
                    let n = (buf.len() - done).min(PATTERN_LEN - phase);
                    if let (Some(d), Some(p)) = (
                        buf.get_mut(done..done + n),
                        self.pattern.get(phase..phase + n),
                    ) {
                        d.copy_from_slice(p);
                    }
                    done += n;
                }
                self.source_pos = start.wrapping_add(buf.len() as u64);
                buf.len()
            }
        };
        self.counters
            .produced
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}

impl EmulatedDevice for LoopbackDevice {
    fn spec(&self) -> DeviceSpec {
        let endpoints = vec![
            EndpointSpec::high_speed_bulk(0x01),
            EndpointSpec::high_speed_bulk(0x81),
        ];
        DeviceSpec::vendor_specific(LOOPBACK_PRODUCT_ID, "pvusb loopback", endpoints)
    }

    fn control(&mut self, req: ControlRequest<'_>) -> Reply {
        match (req.setup.bm_request_type, req.setup.b_request) {
            (0x40, VENDOR_SET_MODE) => {
                self.mode = match req.setup.w_value {
                    0 => LoopbackMode::Loopback,
                    1 => LoopbackMode::SourceSink,
                    _ => return Reply::Stall,
                };
                self.stored_len = 0;
                self.source_pos = 0;
                Reply::Done(0)
            }
            (0xc0, VENDOR_GET_COUNTERS) => {
                let mut out = [0u8; 16];
                out[..8]
                    .copy_from_slice(&self.counters.consumed.load(Ordering::Relaxed).to_le_bytes());
                out[8..]
                    .copy_from_slice(&self.counters.produced.load(Ordering::Relaxed).to_le_bytes());
                let n = req.data.len().min(16);
                if let (Some(d), Some(s)) = (req.data.get_mut(..n), out.get(..n)) {
                    d.copy_from_slice(s);
                }
                Reply::Done(n)
            }
            _ => Reply::Stall,
        }
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        match req.endpoint {
            0x01 => Reply::Done(self.consume(req.buffer)),
            0x81 => Reply::Done(self.produce(req.buffer)),
            _ => Reply::Stall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The precomputed pattern continues across transfers of any size,
    /// including larger ones than one period of the table.
    #[test]
    fn source_pattern_is_continuous_across_transfers() {
        let mut dev = LoopbackDevice::new(16);
        dev.mode = LoopbackMode::SourceSink;
        let mut pos = 0u64;
        for len in [1usize, 250, 251, 252, 4096, 65535, 65536, 70_000, 3] {
            let mut buf = vec![0u8; len];
            assert_eq!(dev.produce(&mut buf), len);
            for (i, &b) in buf.iter().enumerate() {
                assert_eq!(
                    b,
                    LoopbackDevice::pattern_byte(pos + i as u64),
                    "len {len} at {i}"
                );
            }
            pos += len as u64;
        }
    }
}
