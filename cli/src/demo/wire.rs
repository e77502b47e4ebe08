//! The line protocol between the demo (the "toolstack and user" side, dom0) and
//! its guest process (the frontend, dom1): one JSON object per line on the
//! guest's stdin (requests) and stdout (replies). The guest's stderr carries its
//! logs, which the demo keeps to show when a step fails.

use serde::{Deserialize, Serialize};

/// What the demo asks the guest to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Connect to controller `devid` as soon as the toolstack has created it.
    Connect {
        /// Controller index.
        devid: u32,
    },
    /// Wait for a device on each port, then enumerate it.
    Enumerate {
        /// Root-hub ports.
        ports: Vec<u8>,
    },
    /// Write `bytes` of random data to the mass-storage device at block 0 and
    /// read them back.
    Storage {
        /// Port of the device.
        port: u8,
        /// How much to write (rounded down to whole blocks).
        bytes: usize,
    },
    /// Read HID reports until `chars` characters were typed.
    Keyboard {
        /// Port of the keyboard.
        port: u8,
        /// Characters expected.
        chars: usize,
    },
    /// An echo check and `bytes` of bulk OUT then bulk IN through the loopback.
    Loopback {
        /// Port of the loopback device.
        port: u8,
        /// Bytes in each direction.
        bytes: usize,
    },
    /// Wait until every port is empty (after `dev-detach`).
    WaitGone {
        /// Root-hub ports.
        ports: Vec<u8>,
    },
    /// Wait until the toolstack removed the controller, then release it.
    Close,
}

/// One enumerated device, as `lsusb` would show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceSummary {
    /// Root-hub port.
    pub port: u8,
    /// Address the guest gave it.
    pub address: u8,
    /// Port speed in Mbit/s as text (1.5, 12, 480).
    pub speed: String,
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product: u16,
    /// Manufacturer string.
    pub manufacturer: Option<String>,
    /// Product string.
    pub product_name: Option<String>,
    /// The interfaces' classes, e.g. `08/06/50`.
    pub interfaces: Vec<String>,
    /// Endpoints, e.g. `0x81 bulk-in 512`.
    pub endpoints: Vec<String>,
}

/// Result of [`Request::Storage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StorageReport {
    /// INQUIRY vendor and product.
    pub inquiry: String,
    /// Medium size in blocks.
    pub blocks: u64,
    /// Block size.
    pub block_size: u32,
    /// Bytes written then read.
    pub bytes: usize,
    /// SHA-256 of the data written (hex).
    pub written_sha256: String,
    /// SHA-256 of the data read back (hex).
    pub read_sha256: String,
    /// Seconds spent writing.
    pub write_secs: f64,
    /// Seconds spent reading.
    pub read_secs: f64,
}

/// Result of [`Request::Keyboard`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyboardReport {
    /// The text decoded from the reports.
    pub text: String,
    /// HID reports received.
    pub reports: usize,
    /// The first reports, hex.
    pub sample: Vec<String>,
}

/// Result of [`Request::Loopback`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopbackReport {
    /// Bytes of the echo check, which came back identical.
    pub echo_bytes: usize,
    /// Bytes sent with bulk OUT.
    pub out_bytes: usize,
    /// Seconds for them.
    pub out_secs: f64,
    /// Bytes received with bulk IN (pattern verified).
    pub in_bytes: usize,
    /// Seconds for them.
    pub in_secs: f64,
    /// The device's own counters after the run: consumed, produced.
    pub device_counters: (u64, u64),
}

/// The guest's answer to one request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// Connected to the controller.
    Connected {
        /// Root-hub ports.
        num_ports: u8,
        /// USB version of the controller ("1.1" or "2.0").
        usb_ver: String,
    },
    /// Enumerated devices.
    Devices {
        /// One per requested port.
        devices: Vec<DeviceSummary>,
    },
    /// Storage round trip.
    Storage(StorageReport),
    /// Keyboard text.
    Keyboard(KeyboardReport),
    /// Loopback throughput.
    Loopback(LoopbackReport),
    /// Every port is empty.
    Gone,
    /// The controller is released.
    Closed {
        /// Grants, URBs and threads released; nothing was left to the peer.
        clean: bool,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}
