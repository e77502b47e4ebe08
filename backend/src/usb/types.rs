//! The values exchanged between the URB engine and a [`UsbDevice`](super::UsbDevice).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::buffer::TransferBuffer;
use super::proto::{BusId, SetupPacket, Speed, TransferOutcome};

pub use crate::ids::TransferId;

/// One isochronous packet: it occupies `buffer[offset..offset + length]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsoPacket {
    /// Byte offset of the packet inside the transfer buffer.
    pub offset: u32,
    /// Packet length in bytes (OUT: bytes to send; IN: bytes requested).
    pub length: u32,
}

/// The result of one isochronous packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsoPacketResult {
    /// Bytes transferred in this packet.
    pub actual_length: u32,
    /// How the packet ended.
    pub outcome: TransferOutcome,
}

/// What a transfer does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransferKind {
    /// A raw control transfer. The buffer is the OUT data stage (its length is
    /// `wLength`) or the IN buffer (length `wLength`).
    Control {
        /// The setup stage.
        setup: SetupPacket,
    },
    /// A bulk transfer.
    Bulk,
    /// An interrupt transfer.
    Interrupt,
    /// An isochronous transfer made of packets at arbitrary buffer offsets.
    Isochronous {
        /// The packets, in bus order.
        packets: Vec<IsoPacket>,
    },
    /// SET_CONFIGURATION, done through a library call so the host's view of
    /// the device (claimed interfaces) stays in sync (spec 10).
    SetConfiguration(u8),
    /// SET_INTERFACE, done through a library call.
    SetInterface {
        /// bInterfaceNumber.
        interface: u8,
        /// bAlternateSetting.
        alt_setting: u8,
    },
    /// CLEAR_FEATURE(ENDPOINT_HALT), done through a library call.
    ClearHalt {
        /// bEndpointAddress of the halted endpoint.
        endpoint: u8,
    },
}

impl TransferKind {
    /// Whether data flows device to host on endpoint `endpoint`. For
    /// control transfers the setup packet decides, not the endpoint address
    /// (spec 7.3); the intercepted requests have no data stage.
    pub fn is_in(&self, endpoint: u8) -> bool {
        match self {
            TransferKind::Control { setup } => setup.is_in(),
            TransferKind::Bulk | TransferKind::Interrupt | TransferKind::Isochronous { .. } => {
                endpoint & 0x80 != 0
            }
            _ => false,
        }
    }

    /// Whether it moves data (the intercepted standard requests do not:
    /// they are library calls whose wLength is ignored).
    pub fn has_data_stage(&self) -> bool {
        !matches!(
            self,
            TransferKind::SetConfiguration(_)
                | TransferKind::SetInterface { .. }
                | TransferKind::ClearHalt { .. }
        )
    }
}

/// One transfer handed to [`UsbDevice::submit`](super::UsbDevice::submit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// bEndpointAddress (0x80 = IN); 0 for control and intercepted requests.
    pub endpoint: u8,
    /// What to do.
    pub kind: TransferKind,
    /// OUT: the payload; IN: a buffer whose length is the number of bytes
    /// requested. Mapped guest pages only for a device that says
    /// [`DeviceInfo::transfers_guest_pages`].
    pub buffer: TransferBuffer,
    /// Fail a short IN transfer instead of completing it short.
    pub short_not_ok: bool,
}

impl Transfer {
    /// Whether data flows device to host. For control transfers the setup
    /// packet decides, not the endpoint address (spec 7.3).
    pub fn is_in(&self) -> bool {
        self.kind.is_in(self.endpoint)
    }
}

/// The one completion of a submitted transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// How it ended.
    pub outcome: TransferOutcome,
    /// The submitted buffer, given back; IN data is in `buffer[..actual_length]`
    /// (isochronous IN data is at each packet's offset).
    pub buffer: TransferBuffer,
    /// Bytes transferred (isochronous: the sum over packets).
    pub actual_length: usize,
    /// Per-packet results of an isochronous transfer (empty otherwise).
    pub iso: Vec<IsoPacketResult>,
    /// Frame the isochronous transfer started in (0 when unknown).
    pub start_frame: u32,
    /// Isochronous packets that failed.
    pub error_count: u32,
}

impl Completion {
    /// A completion that transferred nothing, e.g. for a failure before submission.
    pub fn failed(outcome: TransferOutcome, buffer: impl Into<TransferBuffer>) -> Self {
        Self {
            outcome,
            buffer: buffer.into(),
            actual_length: 0,
            iso: Vec::new(),
            start_frame: 0,
            error_count: 0,
        }
    }

    /// A non-isochronous completion.
    pub fn done(
        outcome: TransferOutcome,
        buffer: impl Into<TransferBuffer>,
        actual_length: usize,
    ) -> Self {
        Self {
            outcome,
            buffer: buffer.into(),
            actual_length,
            iso: Vec::new(),
            start_frame: 0,
            error_count: 0,
        }
    }
}

/// What the backend needs to know about a host device before and after opening it.
///
/// Serializable so the process that opens a device's node can hand it, with
/// the descriptor, to the process that drives it. Only [`BusId`] and
/// [`Speed`] carry invariants, and both validate when deserialized; the other
/// fields are facts the receiver only reports (`device_descriptor` is never
/// indexed by the engine, so any length is harmless).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Where it sits (bus and port path).
    pub busid: BusId,
    /// Bus number.
    pub bus: u8,
    /// Current host address (changes on re-enumeration; informational).
    pub address: u8,
    /// Speed to report to the guest. SuperSpeed devices are reported as High.
    pub speed: Speed,
    /// idVendor.
    pub vendor_id: u16,
    /// idProduct.
    pub product_id: u16,
    /// bDeviceClass.
    pub device_class: u8,
    /// bDeviceClass is 9: hubs cannot be passed through (spec 10).
    pub is_hub: bool,
    /// Manufacturer string, when readable.
    pub manufacturer: Option<String>,
    /// Product string, when readable.
    pub product: Option<String>,
    /// Serial number string, when readable.
    pub serial: Option<String>,
    /// The 18-byte device descriptor as the guest will see it (bMaxPacketSize0
    /// already patched for SuperSpeed devices).
    pub device_descriptor: Vec<u8>,
    /// The device runs at SuperSpeed (or faster) on the host; the engine decides
    /// whether it can be offered to a USB 2 controller.
    pub max_speed_is_super: bool,
    /// bNumConfigurations.
    pub num_configurations: u8,
    /// Runs of small bulk URBs should reach this device as one transfer
    /// (see `crate::coalesce`); the endpoint queues read it, the device only
    /// reports it.
    ///
    /// WHY a fact about the device: coalescing pays off where every transfer
    /// costs a fixed time (libusb, usbfs, the host controller, an interrupt:
    /// ~1 ms each in the Xen test-bed), and costs where it does not: a device
    /// that completes inside `submit` (the emulated ones) gains nothing and
    /// pays for joining and splitting, and serialises the endpoint meanwhile.
    pub gains_from_coalescing: bool,
    /// The device can transfer straight from and to mapped guest pages
    /// ([`TransferBuffer::mapped`]); the engine maps only for such a device.
    ///
    /// WHY a fact about the device: libusb hands any address to the kernel,
    /// so a mapping saves the grant copy; the emulated devices work on
    /// bytes in Rust, where guest memory must never be referenced.
    pub transfers_guest_pages: bool,
}

/// A host device arrived or left (by port path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HotplugEvent {
    /// A device appeared at this busid.
    Arrived(BusId),
    /// The device at this busid disappeared.
    Left(BusId),
}

/// The callback [`UsbHost::set_hotplug_handler`](super::UsbHost::set_hotplug_handler) installs.
pub type HotplugHandler = Arc<dyn Fn(HotplugEvent) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeviceInfo {
        DeviceInfo {
            busid: "3-1.5".parse().unwrap(),
            bus: 3,
            address: 17,
            speed: Speed::High,
            vendor_id: 0x0781,
            product_id: 0x5567,
            device_class: 0,
            is_hub: false,
            manufacturer: Some("SanDisk".into()),
            product: Some("Cruzer \"Blade\"".into()),
            serial: None,
            device_descriptor: vec![
                18, 1, 0, 2, 0, 0, 0, 64, 0x81, 7, 0x67, 0x55, 0, 1, 1, 2, 3, 1,
            ],
            max_speed_is_super: false,
            num_configurations: 1,
            gains_from_coalescing: true,
            transfers_guest_pages: true,
        }
    }

    /// What a monitor sends along with a node arrives unchanged.
    #[test]
    fn device_info_round_trips_through_json() {
        let info = sample();
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains(r#""busid":"3-1.5""#), "{json}");
        assert!(json.contains(r#""speed":"High""#), "{json}");
        assert_eq!(serde_json::from_str::<DeviceInfo>(&json).unwrap(), info);
    }

    /// A peer cannot smuggle in a busid or speed the parsers refuse.
    #[test]
    fn device_info_with_a_hostile_busid_or_speed_is_refused() {
        let json = serde_json::to_string(&sample()).unwrap();
        for bad in ["999-1.2.3.4.5.6.7.8", "1-", "../x", "3-1/../../x"] {
            let hostile = json.replace(r#""3-1.5""#, &format!("{bad:?}"));
            assert!(
                serde_json::from_str::<DeviceInfo>(&hostile).is_err(),
                "{bad} accepted"
            );
        }
        let hostile = json.replace(r#""High""#, r#""Super""#);
        assert!(serde_json::from_str::<DeviceInfo>(&hostile).is_err());
        let hostile = json.replace(r#""busid":"3-1.5","#, "");
        assert!(serde_json::from_str::<DeviceInfo>(&hostile).is_err());
    }
}
