//! Standard requests (USB 2.0 section 9.4) answered by the framework from the
//! device's descriptors, so devices only implement their class behaviour.

use pvusb_protocol::usb::request::{
    dt, CLEAR_FEATURE, FEATURE_ENDPOINT_HALT, GET_CONFIGURATION, GET_DESCRIPTOR, GET_INTERFACE,
    GET_STATUS, SET_ADDRESS, SET_CONFIGURATION, SET_FEATURE, SET_INTERFACE,
};

use super::device::Reply;
use super::framework::{queue_index, Core};
use crate::usb::proto::SetupPacket;

/// Whether the framework answered a control request.
pub(super) enum StandardOutcome {
    /// Answered (or refused) here.
    Handled(Reply),
    /// A class/vendor request (or an interface GET_DESCRIPTOR): the device's job.
    NotStandard,
}

/// Copies `src` into the IN buffer, truncated to it (wLength).
fn reply_with(data: &mut [u8], src: &[u8]) -> Reply {
    let n = data.len().min(src.len());
    if let (Some(d), Some(s)) = (data.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
    Reply::Done(n)
}

pub(super) fn standard_request(
    core: &mut Core,
    setup: SetupPacket,
    data: &mut [u8],
) -> StandardOutcome {
    use StandardOutcome::{Handled, NotStandard};
    // Type bits 5-6: 0 = standard.
    if setup.bm_request_type & 0x60 != 0 {
        return NotStandard;
    }
    // Interface numbers, endpoint addresses and configuration values are
    // bytes: a non-zero high byte makes the request malformed (USB 2.0 9.4),
    // so it stalls (0xffff here) instead of being truncated into a valid one.
    let index = u8::try_from(setup.w_index).unwrap_or(0xff);
    let value = u8::try_from(setup.w_value).ok();
    let reply = match (setup.bm_request_type, setup.b_request) {
        (0x80, GET_DESCRIPTOR) => get_descriptor(core, setup, data),
        // Interface/endpoint descriptors (HID report, ...) belong to the device.
        (0x81, GET_DESCRIPTOR) | (0x82, GET_DESCRIPTOR) => return NotStandard,
        (0x80, GET_STATUS) => {
            let self_powered = core
                .spec
                .config(core.configuration)
                .map(|c| c.attributes & 0x40 != 0)
                .unwrap_or(false);
            reply_with(data, &[u8::from(self_powered), 0])
        }
        (0x81, GET_STATUS) => reply_with(data, &[0, 0]),
        (0x82, GET_STATUS) => {
            let ep = index;
            if setup.w_index > 0xff || !core.endpoint_exists(ep) {
                Reply::Stall
            } else {
                let halted = core.halted.get(queue_index(ep)).copied().unwrap_or(false);
                reply_with(data, &[u8::from(halted), 0])
            }
        }
        (0x80, GET_CONFIGURATION) => reply_with(data, &[core.configuration]),
        (0x00, SET_CONFIGURATION) => match value {
            Some(v) => core.set_configuration(v),
            None => Reply::Stall,
        },
        (0x81, GET_INTERFACE) if setup.w_index <= 0xff => match core.alt_setting(index) {
            Some(alt) => reply_with(data, &[alt]),
            None => Reply::Stall,
        },
        (0x01, SET_INTERFACE) => match value {
            Some(v) if setup.w_index <= 0xff => core.set_interface(index, v),
            _ => Reply::Stall,
        },
        (0x02, CLEAR_FEATURE) if setup.w_value == FEATURE_ENDPOINT_HALT => {
            if setup.w_index > 0xff {
                Reply::Stall
            } else {
                core.clear_halt(index)
            }
        }
        (0x02, SET_FEATURE) if setup.w_value == FEATURE_ENDPOINT_HALT => {
            let ep = index;
            if setup.w_index <= 0xff && ep & 0x0f != 0 && core.endpoint_exists(ep) {
                if let Some(h) = core.halted.get_mut(queue_index(ep)) {
                    *h = true;
                }
                Reply::Done(0)
            } else {
                Reply::Stall
            }
        }
        // The engine virtualises addresses; a SET_ADDRESS reaching the device is harmless.
        (0x00, SET_ADDRESS) => Reply::Done(0),
        // Remote wakeup / test mode: accepted, nothing to do.
        (0x00, CLEAR_FEATURE) | (0x00, SET_FEATURE) => Reply::Done(0),
        _ => Reply::Stall,
    };
    Handled(reply)
}

fn get_descriptor(core: &Core, setup: SetupPacket, data: &mut [u8]) -> Reply {
    let [index, kind] = setup.w_value.to_le_bytes();
    let descriptor = match kind {
        dt::DEVICE => Some(core.spec.device_descriptor()),
        dt::CONFIG => core.spec.config_descriptor(usize::from(index)),
        dt::STRING => core.spec.string_descriptor(index),
        dt::DEVICE_QUALIFIER => core.spec.device_qualifier(),
        _ => None,
    };
    match descriptor {
        Some(d) => reply_with(data, &d),
        None => Reply::Stall,
    }
}
