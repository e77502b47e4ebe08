//! An isochronous "audio-like" device: iso OUT 0x01 is a sink that counts
//! bytes and packets, iso IN 0x82 a source of deterministic 16-bit samples.
//! Both live in alternate setting 1 of interface 0 (alternate setting 0 has
//! no endpoints, the zero-bandwidth setting audio devices have).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::descriptors::{DeviceSpec, EndpointSpec, EndpointType, InterfaceSpec};
use super::device::{DataKind, DataRequest, EmulatedDevice, Reply};
use crate::usb::proto::{Speed, TransferOutcome};
use crate::usb::types::IsoPacketResult;

/// Iso OUT (sink).
pub const EP_SINK: u8 = 0x01;
/// Iso IN (source).
pub const EP_SOURCE: u8 = 0x82;
/// 48 kHz, 2 channels, 16 bits: 192 bytes per 1 ms frame.
pub const MAX_PACKET: u16 = 192;
/// Product id of the audio-like device.
pub const AUDIO_PRODUCT_ID: u16 = 0x0004;

/// What the device counted, readable while it runs.
#[derive(Debug, Default)]
pub struct AudioStats {
    /// Bytes received on the sink.
    pub out_bytes: AtomicU64,
    /// Packets received on the sink.
    pub out_packets: AtomicU64,
    /// Bytes produced by the source.
    pub in_bytes: AtomicU64,
    /// Packets produced by the source.
    pub in_packets: AtomicU64,
}

/// The audio-like device.
#[derive(Debug)]
pub struct AudioDevice {
    stats: Arc<AudioStats>,
    /// Index of the next sample the source produces.
    next_sample: u64,
}

impl AudioDevice {
    /// A device reporting into `stats`.
    pub fn new(stats: Arc<AudioStats>) -> Self {
        Self {
            stats,
            next_sample: 0,
        }
    }

    /// The source's sample number `n` (a 16-bit sawtooth).
    pub fn sample(n: u64) -> u16 {
        (n.wrapping_mul(257) & 0xffff) as u16
    }
}

impl EmulatedDevice for AudioDevice {
    fn spec(&self) -> DeviceSpec {
        let class = (0xff, 0x01, 0x00);
        let alt = |alt_setting, endpoints| InterfaceSpec {
            number: 0,
            alt_setting,
            class: class.0,
            subclass: class.1,
            protocol: class.2,
            class_descriptors: Vec::new(),
            endpoints,
        };
        let endpoints = vec![
            EndpointSpec::new(EP_SINK, EndpointType::Isochronous, MAX_PACKET, 1),
            EndpointSpec::new(EP_SOURCE, EndpointType::Isochronous, MAX_PACKET, 1),
        ];
        DeviceSpec::single_config(
            Speed::Full,
            AUDIO_PRODUCT_ID,
            "pvusb audio",
            vec![alt(0, Vec::new()), alt(1, endpoints)],
        )
    }

    fn data(&mut self, req: DataRequest<'_>) -> Reply {
        let DataKind::Isochronous(packets) = req.kind else {
            return Reply::Stall;
        };
        let mut total = 0usize;
        for p in packets {
            // The framework checked offset + length against the buffer.
            let start = usize::try_from(p.offset).unwrap_or(usize::MAX);
            let length = u16::try_from(p.length)
                .unwrap_or(MAX_PACKET)
                .min(MAX_PACKET);
            let len = usize::from(length);
            let Some(chunk) = start
                .checked_add(len)
                .and_then(|end| req.buffer.get_mut(start..end))
            else {
                req.iso_results.push(IsoPacketResult {
                    actual_length: 0,
                    outcome: TransferOutcome::Error,
                });
                continue;
            };
            if req.endpoint == EP_SINK {
                self.stats
                    .out_bytes
                    .fetch_add(len as u64, Ordering::Relaxed);
                self.stats.out_packets.fetch_add(1, Ordering::Relaxed);
            } else {
                for pair in chunk.chunks_mut(2) {
                    let s = Self::sample(self.next_sample).to_le_bytes();
                    for (b, v) in pair.iter_mut().zip(s) {
                        *b = v;
                    }
                    self.next_sample = self.next_sample.wrapping_add(1);
                }
                self.stats.in_bytes.fetch_add(len as u64, Ordering::Relaxed);
                self.stats.in_packets.fetch_add(1, Ordering::Relaxed);
            }
            total += len;
            req.iso_results.push(IsoPacketResult {
                actual_length: u32::from(length),
                outcome: TransferOutcome::Completed,
            });
        }
        Reply::Done(total)
    }
}
