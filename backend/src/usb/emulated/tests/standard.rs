//! Descriptors, standard requests and the loopback device.

use super::*;

/// Walks a configuration descriptor; returns (interfaces, endpoints) seen.
fn parse_config(d: &[u8]) -> (usize, usize) {
    assert_eq!(d[1], 2);
    assert_eq!(
        u16::from_le_bytes([d[2], d[3]]) as usize,
        d.len(),
        "wTotalLength"
    );
    let (mut interfaces, mut endpoints, mut pos) = (0, 0, 0);
    while pos < d.len() {
        let len = d[pos] as usize;
        assert!(
            len >= 2 && pos + len <= d.len(),
            "descriptor at {pos} overruns"
        );
        match d[pos + 1] {
            4 => interfaces += 1,
            5 => endpoints += 1,
            _ => {}
        }
        pos += len;
    }
    (interfaces, endpoints)
}

fn all_factories() -> Vec<(DeviceFactory, Speed, (usize, usize))> {
    let kb = KeyboardHandle::new();
    vec![
        (
            factory(|| Box::new(LoopbackDevice::new(4096))),
            Speed::High,
            (1, 2),
        ),
        (
            factory(|| Box::new(MassStorageDevice::new(Arc::new(MemoryStore::new(64))))),
            Speed::High,
            (1, 2),
        ),
        (factory(move || Box::new(kb.device())), Speed::Full, (1, 1)),
        (
            factory(|| Box::new(AudioDevice::new(Arc::default()))),
            Speed::Full,
            (2, 2),
        ),
        (factory(|| Box::new(StallDevice)), Speed::High, (1, 3)),
    ]
}

#[test]
fn descriptors_parse_back() {
    for (f, speed, (ifaces, eps)) in all_factories() {
        let (host, busid, dev, sink) = plug(f);
        let info = host
            .list()
            .unwrap()
            .into_iter()
            .find(|i| i.busid == busid)
            .unwrap();
        assert_eq!(info.speed, speed);
        assert!(!info.is_hub);
        let mut d = Driver::new(dev, sink);
        let dd = d.control_in(0x80, 6, 0x0100, 0, 18);
        assert_eq!(dd.outcome, TransferOutcome::Completed);
        assert_eq!(Driver::data_in(&dd), &info.device_descriptor[..]);
        assert_eq!(&dd.buffer[..2], &[18, 1]);
        // Truncated to wLength, then the whole configuration.
        let head = d.control_in(0x80, 6, 0x0200, 0, 9);
        assert_eq!(head.actual_length, 9);
        let total = u16::from_le_bytes([head.buffer[2], head.buffer[3]]);
        let full = d.control_in(0x80, 6, 0x0200, 0, total);
        assert_eq!(parse_config(Driver::data_in(&full)), (ifaces, eps));
        // Strings: language list, then the product name in UTF-16LE.
        let langs = d.control_in(0x80, 6, 0x0300, 0, 255);
        assert_eq!(Driver::data_in(&langs), &[4, 3, 0x09, 0x04]);
        let product = d.control_in(0x80, 6, 0x0302, 0x0409, 255);
        let units: Vec<u16> = Driver::data_in(&product)[2..]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(Some(String::from_utf16(&units).unwrap()), info.product);
        // Unknown descriptors stall; GET_CONFIGURATION reports the active one.
        assert_eq!(
            d.control_in(0x80, 6, 0x0309, 0, 255).outcome,
            TransferOutcome::Stall
        );
        assert_eq!(Driver::data_in(&d.control_in(0x80, 8, 0, 0, 1)), &[1]);
    }
}

#[test]
fn standard_requests_and_intercepted_kinds() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(LoopbackDevice::new(64))));
    let mut d = Driver::new(dev, sink);
    let run = |d: &mut Driver, kind| d.transfer(0, kind, 0, false);
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(7)).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(0)).outcome,
        TransferOutcome::Completed
    );
    // Unconfigured: data endpoints do not exist.
    assert_eq!(d.bulk(0x01, vec![1, 2, 3]).outcome, TransferOutcome::Error);
    assert_eq!(
        run(&mut d, TransferKind::SetConfiguration(1)).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.bulk(0x01, vec![1, 2, 3]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        run(
            &mut d,
            TransferKind::SetInterface {
                interface: 0,
                alt_setting: 1
            }
        )
        .outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        run(
            &mut d,
            TransferKind::SetInterface {
                interface: 0,
                alt_setting: 0
            }
        )
        .outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        run(&mut d, TransferKind::ClearHalt { endpoint: 0x05 }).outcome,
        TransferOutcome::Stall
    );
    // Endpoints that do not exist or have another type.
    assert_eq!(d.bulk(0x02, vec![0; 4]).outcome, TransferOutcome::Error);
    let int = d.transfer(0x81, TransferKind::Interrupt, 8, false);
    assert_eq!(int.outcome, TransferOutcome::Error);
    // SET_FEATURE(HALT) then GET_STATUS shows it; CLEAR_FEATURE clears it.
    assert_eq!(
        d.control_out(0x02, 3, 0, 0x81, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x81, 2)), &[1, 0]);
    assert_eq!(d.bulk(0x81, vec![0; 8]).outcome, TransferOutcome::Stall);
    assert_eq!(
        d.control_out(0x02, 1, 0, 0x81, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x81, 2)), &[0, 0]);
}

#[test]
fn loopback_and_source_modes() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(LoopbackDevice::new(1024))));
    let mut d = Driver::new(dev, sink);
    let payload: Vec<u8> = (0..=u8::MAX)
        .cycle()
        .take(600)
        .map(|i| i.wrapping_mul(7))
        .collect();
    let out = d.bulk(0x01, payload.clone());
    assert_eq!(
        (out.outcome, out.actual_length),
        (TransferOutcome::Completed, 600)
    );
    assert_eq!(out.buffer, payload, "the OUT buffer comes back");
    let back = d.bulk(0x81, vec![0; 1024]);
    assert_eq!(Driver::data_in(&back), &payload[..]);
    // Short IN with short_not_ok is an error.
    let strict = d.transfer(0x81, TransferKind::Bulk, 1024, true);
    assert_eq!(strict.outcome, TransferOutcome::Error);
    // Source mode: a deterministic pattern continuing across transfers.
    assert_eq!(
        d.control_out(0x40, VENDOR_SET_MODE, 1, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    let a = d.bulk(0x81, vec![0; 300]);
    let b = d.bulk(0x81, vec![0; 300]);
    let stream: Vec<u8> = [Driver::data_in(&a), Driver::data_in(&b)].concat();
    assert!(stream
        .iter()
        .enumerate()
        .all(|(i, &x)| x == LoopbackDevice::pattern_byte(i as u64)));
    assert_eq!(
        d.control_out(0x40, VENDOR_SET_MODE, 9, 0, vec![]).outcome,
        TransferOutcome::Stall
    );
    let counters = d.control_in(0xc0, VENDOR_GET_COUNTERS, 0, 0, 16);
    let consumed = u64::from_le_bytes(counters.buffer[..8].try_into().unwrap());
    let produced = u64::from_le_bytes(counters.buffer[8..].try_into().unwrap());
    assert_eq!((consumed, produced), (600, 600 + 600 + 600));
}

/// Hostile wValue/wIndex high bytes stall instead of being truncated into a
/// valid request (SET_CONFIGURATION 0x0101 is not configuration 1, endpoint
/// 0x0181 is not 0x81).
#[test]
fn wide_values_stall_instead_of_truncating() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(LoopbackDevice::new(64))));
    let mut d = Driver::new(dev, sink);
    assert_eq!(
        d.control_out(0x00, 9, 1, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.control_out(0x00, 9, 0x0100, 0, vec![]).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(Driver::data_in(&d.control_in(0x80, 8, 0, 0, 1)), &[1]);
    for (bm, req, value, index) in [(0x82, 0, 0, 0x0181), (0x81, 10, 0, 0x0100)] {
        let r = d.control_in(bm, req, value, index, 2);
        assert_eq!(r.outcome, TransferOutcome::Stall, "{bm:#x}/{req}");
    }
    for (bm, req, value, index) in [
        (0x02, 3, 0, 0x0181),
        (0x02, 1, 0, 0x0181),
        (0x01, 11, 0x0100, 0),
        (0x01, 11, 0, 0x0100),
    ] {
        let r = d.control_out(bm, req, value, index, vec![]);
        assert_eq!(r.outcome, TransferOutcome::Stall, "{bm:#x}/{req}");
    }
    // The endpoint was not halted by the truncated SET_FEATURE.
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x81, 2)), &[0, 0]);
}
