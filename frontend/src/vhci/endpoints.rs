//! Which transfer type each endpoint of the bridged device has.
//!
//! WHY the bridge needs this: a USB/IP `CMD_SUBMIT` names an endpoint number
//! and a direction but not the transfer type (vhci keeps it in the URB's
//! pipe and never sends it), while usbif needs it in every request. The
//! device's configuration descriptor, which the frontend read when it
//! enumerated the device, is the one trustworthy source.

use pvusb_protocol::usb::{ConfigDescriptor, EndpointType};
use pvusb_protocol::usbip::IsoEndpoints;
use pvusb_protocol::Direction;

/// Transfer type per (direction, endpoint number) of one configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointTypes {
    /// `[OUT, IN][endpoint number]`.
    types: [[Option<EndpointType>; 16]; 2],
}

fn dir_index(direction: Direction) -> usize {
    match direction {
        Direction::Out => 0,
        Direction::In => 1,
    }
}

impl EndpointTypes {
    /// Every endpoint of every alternate setting of `config`.
    ///
    /// WHY every alternate setting: the guest's driver switches settings
    /// with SET_INTERFACE behind the bridge's back (an audio or video
    /// interface has its iso endpoint only in alternate 1+). If two settings
    /// disagree on an endpoint's type (the USB spec does not forbid it, no
    /// device seen does it), the first declaration wins.
    pub fn from_config(config: &ConfigDescriptor) -> Self {
        let mut table = Self::default();
        let endpoints = config
            .interfaces
            .iter()
            .flat_map(|i| i.alt_settings.iter())
            .flat_map(|a| a.endpoints.iter());
        for ep in endpoints {
            let slot = &mut table.types[dir_index(ep.direction())][usize::from(ep.number())];
            if slot.is_none() && ep.number() != 0 {
                *slot = Some(ep.endpoint_type());
            }
        }
        table
    }

    /// The type of endpoint `ep` in `direction`; endpoint 0 is control.
    /// `None` for an endpoint the configuration does not have.
    pub fn get(&self, direction: Direction, ep: u8) -> Option<EndpointType> {
        if ep == 0 {
            return Some(EndpointType::Control);
        }
        self.types[dir_index(direction)]
            .get(usize::from(ep))
            .copied()
            .flatten()
    }

    /// The isochronous endpoints, for [`pvusb_protocol::usbip::DeviceSide`]:
    /// the decoder then refuses iso descriptors announced for any other
    /// endpoint instead of buffering them.
    pub fn iso_endpoints(&self) -> IsoEndpoints {
        let mut iso = IsoEndpoints::default();
        for direction in [Direction::Out, Direction::In] {
            for ep in 1..16u8 {
                if self.get(direction, ep) == Some(EndpointType::Isochronous) {
                    iso = iso.with(direction, ep);
                }
            }
        }
        iso
    }
}
