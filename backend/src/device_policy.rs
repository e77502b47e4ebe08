//! The device policy in the daemon: each time a port's device is opened
//! (toolstack attach, daemon restart, host re-plug), its facts — ids and
//! strings from [`DeviceInfo`], interface classes from its configuration
//! descriptors, the guest — are matched against the rules
//! ([`pvusb_policy`]). A refused device is closed again before the guest
//! sees it: a stick that re-enumerates as a keyboard after it was assigned
//! is not served.
//!
//! The rules come with the daemon's configuration
//! ([`crate::DaemonConfig::policy`], shared by every controller's context);
//! none is no policy (every device but hubs).

use std::time::{Duration, Instant};

use pvusb_policy::descriptors::config_interfaces;
use pvusb_policy::matching::{needs_guest, needs_interfaces};
use pvusb_policy::{DeviceFacts, Guest, InterfaceClass, Policy};
use pvusb_protocol::{SetupPacket, TransferOutcome};
use pvusb_support::Chain;
use pvusb_xenstore::{Tx, XsClient};

use crate::ids::TransferIds;
use crate::mailbox::Mailbox;
use crate::usb::{Completion, DeviceInfo, Transfer, TransferId, TransferKind, UsbDevice};

/// How long one descriptor read may take before the device is refused.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Configurations read at most (bNumConfigurations is a byte; real devices
/// have one or two).
const MAX_CONFIGS: u8 = 8;

/// The facts of an opened device going to `guest`.
pub fn facts(info: &DeviceInfo, interfaces: Vec<InterfaceClass>, guest: Guest) -> DeviceFacts {
    DeviceFacts {
        vendor: info.vendor_id,
        product: info.product_id,
        name: info.product.clone(),
        serial: info.serial.clone(),
        port: info.busid.to_string(),
        interfaces,
        guest: Some(guest),
    }
}

/// Reads every configuration descriptor of the just-opened `dev` (nothing
/// else is in flight on it) and returns its interfaces. Completions of
/// other devices met while waiting go to `foreign`, in arrival order.
pub fn probe_interfaces(
    dev: &mut dyn UsbDevice,
    mailbox: &Mailbox,
    foreign: &mut dyn FnMut(TransferId, Completion),
) -> Result<Vec<InterfaceClass>, String> {
    let configs = dev.info().num_configurations.clamp(1, MAX_CONFIGS);
    let mut out = Vec::new();
    // Disjoint from the engine's ids: a late completion of a timed-out read
    // is a stale one for the engine (see `read_config`).
    let mut ids = TransferIds::for_probes();
    for index in 0..configs {
        let head = read_config(dev, mailbox, foreign, ids.next(), index, 9)?;
        let total = match head.get(2..4) {
            Some(t) => u16::from_le_bytes([t[0], t[1]]).max(9),
            None => return Err(format!("configuration {index} is shorter than its header")),
        };
        let full = read_config(dev, mailbox, foreign, ids.next(), index, total)?;
        out.extend(
            config_interfaces(&full)
                .map_err(|e| format!("configuration {index}: {e}", e = Chain(&e)))?,
        );
    }
    Ok(out)
}

fn read_config(
    dev: &mut dyn UsbDevice,
    mailbox: &Mailbox,
    foreign: &mut dyn FnMut(TransferId, Completion),
    tid: TransferId,
    index: u8,
    len: u16,
) -> Result<Vec<u8>, String> {
    let setup = SetupPacket::new(0x80, 6, 0x0200 | u16::from(index), 0, len);
    dev.submit(
        tid,
        Transfer {
            endpoint: 0,
            kind: TransferKind::Control { setup },
            buffer: vec![0; usize::from(len)].into(),
            short_not_ok: false,
        },
    );
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut batch = Vec::new();
    loop {
        mailbox.take_completions(&mut batch);
        let mut mine = None;
        for (t, c) in batch.drain(..) {
            if t == tid {
                mine = Some(c);
            } else {
                foreign(t, c);
            }
        }
        if let Some(c) = mine {
            if c.outcome != TransferOutcome::Completed {
                return Err(format!(
                    "reading configuration {index} failed: {:?}",
                    c.outcome
                ));
            }
            let mut data = c.buffer.into_data();
            data.truncate(c.actual_length);
            return Ok(data);
        }
        if Instant::now() >= deadline {
            // Its completion, when it comes, is a stale one for the engine.
            dev.cancel(tid);
            return Err(format!("reading configuration {index} timed out"));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Matches the device just opened on a port of guest `domid`'s controller:
/// `None` to serve it, else the line to log (naming the rule).
pub fn check(
    policy: &Policy,
    dev: &mut dyn UsbDevice,
    mailbox: &Mailbox,
    xs: &XsClient,
    domid: u16,
    foreign: &mut dyn FnMut(TransferId, Completion),
) -> Option<String> {
    let busid = dev.info().busid;
    let interfaces = if needs_interfaces(&policy.rules) {
        match probe_interfaces(dev, mailbox, foreign) {
            Ok(i) => i,
            Err(e) => {
                return Some(format!(
                    "device {busid} not served: its interfaces cannot be read ({e}) and the rules in {} look at interfaces",
                    policy.path.display()
                ))
            }
        }
    } else {
        Vec::new()
    };
    let name = if needs_guest(&policy.rules) {
        xs.read(Tx::NONE, &format!("/local/domain/{domid}/name"))
            .ok()
            .flatten()
    } else {
        None
    };
    let facts = facts(dev.info(), interfaces, Guest { domid, name });
    policy.check(&facts).map(|r| {
        let ids = format!("{:04x}:{:04x}", facts.vendor, facts.product);
        let classes: Vec<String> = facts.interfaces.iter().map(ToString::to_string).collect();
        format!(
            "device {busid} ({ids}, interfaces {}) not served: {} by {}",
            if classes.is_empty() {
                "not read".to_owned()
            } else {
                classes.join(" ")
            },
            r.what,
            r.why
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::emulated::keyboard::KeyboardHandle;
    use crate::usb::emulated::EmulatedHost;
    use crate::usb::CompletionSink;
    use std::sync::Arc;

    #[test]
    fn probes_the_interfaces_of_an_opened_device() {
        let emu = EmulatedHost::new();
        let kb = KeyboardHandle::new();
        let busid = emu
            .add_next(Arc::new(move || Box::new(kb.device())))
            .unwrap();
        let mailbox = Arc::new(Mailbox::new().unwrap());
        let sink: Arc<dyn CompletionSink> = mailbox.clone();
        let mut dev = emu.open(&busid, sink).unwrap();
        // Someone else's completion waiting in the mailbox is handed on.
        let other = TransferId::for_tests(7);
        mailbox.complete(
            other,
            Completion::failed(TransferOutcome::Cancelled, Vec::new()),
        );
        let mut others = Vec::new();
        let got = probe_interfaces(dev.as_mut(), &mailbox, &mut |t, _| others.push(t)).unwrap();
        assert_eq!(others, vec![other]);
        assert_eq!(
            got.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec!["03:01:01"]
        );
        let policy = Policy::from_text("rules.conf", "reject with-interface 03:*:*").unwrap();
        let f = facts(
            dev.info(),
            got,
            Guest {
                domid: 3,
                name: None,
            },
        );
        assert_eq!(
            policy.check(&f).unwrap().why,
            "rules.conf:1 `reject with-interface 03:*:*`"
        );
        dev.shutdown();
    }
}
