//! Keyboard, audio, faulty devices and the emulated bus.

use super::*;

#[test]
fn stall_device_stalls_and_halts() {
    let (_host, _busid, dev, sink) = plug(factory(|| Box::new(StallDevice)));
    let mut d = Driver::new(dev, sink);
    assert_eq!(
        d.control_in(0x80, 6, 0x0100, 0, 18).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.control_in(0xc0, 1, 0, 0, 4).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(
        d.control_out(0x21, 1, 0, 0, vec![1]).outcome,
        TransferOutcome::Stall
    );
    assert_eq!(d.bulk(0x01, vec![1; 8]).outcome, TransferOutcome::Stall);
    assert_eq!(
        Driver::data_in(&d.control_in(0x82, 0, 0, 0x01, 2)),
        &[1, 0],
        "halted"
    );
    assert_eq!(
        d.control_out(0x02, 1, 0, 0x01, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0x82, 0, 0, 0x01, 2)), &[0, 0]);
    assert_eq!(d.bulk(0x01, vec![1; 8]).outcome, TransferOutcome::Stall);
}

fn keyboard_plug() -> (
    KeyboardHandle,
    EmulatedHost,
    BusId,
    Box<dyn UsbDevice>,
    Arc<Collect>,
) {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let (host, busid, dev, sink) = plug(factory(move || Box::new(k.device())));
    (kb, host, busid, dev, sink)
}

fn interrupt_in() -> Transfer {
    Transfer {
        endpoint: EP_REPORTS,
        kind: TransferKind::Interrupt,
        buffer: vec![0; 8].into(),
        short_not_ok: false,
    }
}

/// HID GET_IDLE (1 byte): a control transfer, so it goes through the control
/// queue and does not wait behind pending interrupt transfers.
fn get_idle() -> Transfer {
    let setup = SetupPacket::new(0xa1, 0x02, 0, 0, 1);
    Transfer {
        endpoint: 0x80,
        kind: TransferKind::Control { setup },
        buffer: vec![0].into(),
        short_not_ok: false,
    }
}

#[test]
fn keyboard_pending_reports_and_cancel_exactly_once() {
    let (kb, _host, _busid, mut dev, sink) = keyboard_plug();
    dev.submit(tid(1), interrupt_in());
    dev.submit(tid(2), interrupt_in());
    assert!(sink.ids().is_empty(), "no key pressed yet: pending");
    dev.cancel(tid(1));
    dev.cancel(tid(1));
    dev.cancel(tid(99));
    assert_eq!(sink.count(1), 1);
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Cancelled);
    assert_eq!(kb.press("hI"), 2);
    let first = sink.wait(2);
    assert_eq!(first.outcome, TransferOutcome::Completed);
    assert_eq!(&first.buffer[..], &[0, 0, 0x0b, 0, 0, 0, 0, 0], "'h'");
    for (id, expect) in [
        (3, [0u8; 8]),
        (4, [0x02, 0, 0x0c, 0, 0, 0, 0, 0]),
        (5, [0; 8]),
    ] {
        dev.submit(tid(id), interrupt_in());
        assert_eq!(sink.wait(id).buffer[..], expect);
    }
    assert_eq!(kb.queued(), 0);
    // Class requests.
    let mut d = Driver::new(dev, sink);
    let rd = d.control_in(0x81, 6, 0x2200, 0, 255);
    assert_eq!(Driver::data_in(&rd), &REPORT_DESCRIPTOR[..]);
    assert_eq!(
        d.control_out(0x21, 0x0a, 0x0400, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(Driver::data_in(&d.control_in(0xa1, 0x02, 0, 0, 1)), &[4]);
    assert_eq!(
        d.control_out(0x21, 0x0b, 0, 0, vec![]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(
        d.control_out(0x21, 0x09, 0x0200, 0, vec![0x02]).outcome,
        TransferOutcome::Completed
    );
    assert_eq!(kb.leds(), 0x02);
    assert_eq!(
        Driver::data_in(&d.control_in(0xa1, 0x01, 0x0100, 0, 8)),
        &[0; 8]
    );
}

#[test]
fn shutdown_cancels_pending_and_refuses_later_submits() {
    let (_kb, host, busid, mut dev, sink) = keyboard_plug();
    dev.submit(tid(1), interrupt_in());
    assert!(matches!(
        host.open(&busid, Arc::new(Collect::default())),
        Err(crate::usb::UsbError::Busy(_))
    ));
    dev.shutdown();
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Cancelled);
    dev.submit(tid(2), interrupt_in());
    assert_eq!(sink.wait(2).outcome, TransferOutcome::NoDevice);
    dev.shutdown();
    assert_eq!(sink.ids(), vec![1, 2]);
    // Closed: it can be opened again.
    let (_again, _s) = open(&host, &busid);
}

fn hotplug_log(host: &EmulatedHost) -> Arc<Mutex<Vec<HotplugEvent>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    host.set_hotplug_handler(Arc::new(move |e| l.lock().unwrap().push(e)));
    log
}

#[test]
fn vanishing_device_fails_everything_and_leaves() {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let host = EmulatedHost::new();
    let log = hotplug_log(&host);
    let busid = host
        .add_next(factory(move || {
            Box::new(VanishingDevice::new(k.device(), 3))
        }))
        .unwrap();
    let (mut dev, sink) = open(&host, &busid);
    dev.submit(tid(1), interrupt_in()); // device transfer 1: pending
    dev.submit(tid(2), interrupt_in()); // queued behind it, not attempted yet
    dev.submit(tid(3), get_idle());
    // Control has its own queue: device transfer 2, answered at once.
    assert_eq!(sink.wait(3).outcome, TransferOutcome::Completed);
    assert_eq!(sink.ids(), vec![3]);
    // The key press completes 1; then 2 is the device's 3rd transfer: gone.
    kb.press("a");
    assert_eq!(sink.wait(1).outcome, TransferOutcome::Completed);
    assert_eq!(sink.wait(2).outcome, TransferOutcome::NoDevice);
    dev.submit(tid(4), interrupt_in());
    assert_eq!(sink.wait(4).outcome, TransferOutcome::NoDevice);
    dev.submit(tid(5), interrupt_in());
    assert_eq!(sink.wait(5).outcome, TransferOutcome::NoDevice);
    for id in 1..=5 {
        assert_eq!(sink.count(id), 1);
    }
    assert!(host.list().unwrap().is_empty());
    assert_eq!(
        *log.lock().unwrap(),
        vec![HotplugEvent::Arrived(busid), HotplugEvent::Left(busid)]
    );
    assert!(dev.reset().is_err());
}

#[test]
fn unplug_and_replug_through_the_host() {
    let host = EmulatedHost::new();
    let log = hotplug_log(&host);
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let busid = host
        .add_next(factory(move || Box::new(k.device())))
        .unwrap();
    assert_eq!(busid.to_string(), "200-1");
    assert!(host.add(busid, factory(|| Box::new(StallDevice))).is_err());
    let (mut dev, sink) = open(&host, &busid);
    dev.submit(tid(7), interrupt_in());
    host.replug(&busid).unwrap();
    assert_eq!(sink.wait(7).outcome, TransferOutcome::NoDevice);
    let (mut dev2, sink2) = open(&host, &busid);
    kb.press("z");
    dev2.submit(tid(1), interrupt_in());
    assert_eq!(sink2.wait(1).buffer[2], 0x1d);
    assert!(host.remove(&busid));
    assert!(!host.remove(&busid));
    assert!(matches!(
        host.open(&busid, sink2),
        Err(crate::usb::UsbError::NotFound(_))
    ));
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            HotplugEvent::Arrived(busid),
            HotplugEvent::Left(busid),
            HotplugEvent::Arrived(busid),
            HotplugEvent::Left(busid)
        ]
    );
    dev.shutdown();
}

#[test]
fn slow_device_completes_in_order_per_endpoint() {
    let (_host, _busid, mut dev, sink) = plug(factory(|| {
        Box::new(SlowDevice::new(
            LoopbackDevice::new(64),
            Duration::from_millis(5),
        ))
    }));
    let mut expected_out = Vec::new();
    let mut expected_in = Vec::new();
    for i in 0..6u64 {
        let (endpoint, list) = if i % 2 == 0 {
            (0x01, &mut expected_out)
        } else {
            (0x81, &mut expected_in)
        };
        dev.submit(
            tid(i),
            Transfer {
                endpoint,
                kind: TransferKind::Bulk,
                buffer: vec![u8::try_from(i).unwrap(); 16].into(),
                short_not_ok: false,
            },
        );
        list.push(i);
    }
    dev.submit(
        tid(100),
        Transfer {
            endpoint: 0x81,
            kind: TransferKind::Bulk,
            buffer: vec![0; 16].into(),
            short_not_ok: false,
        },
    );
    dev.cancel(tid(100));
    for i in 0..6 {
        assert_eq!(sink.wait(i).outcome, TransferOutcome::Completed);
    }
    assert_eq!(sink.wait(100).outcome, TransferOutcome::Cancelled);
    let order = sink.ids();
    let out_order: Vec<u64> = order
        .iter()
        .copied()
        .filter(|i| expected_out.contains(i))
        .collect();
    let in_order: Vec<u64> = order
        .iter()
        .copied()
        .filter(|i| expected_in.contains(i))
        .collect();
    assert_eq!(out_order, expected_out);
    assert_eq!(in_order, expected_in);
    let counts: HashMap<u64, usize> = order.iter().fold(HashMap::new(), |mut m, i| {
        *m.entry(*i).or_default() += 1;
        m
    });
    assert!(counts.values().all(|&c| c == 1));
}

#[test]
fn audio_iso_packets() {
    let stats = Arc::new(AudioStats::default());
    let s = stats.clone();
    let (_host, _busid, dev, sink) = plug(factory(move || Box::new(AudioDevice::new(s.clone()))));
    let mut d = Driver::new(dev, sink);
    let iso = |endpoint, buffer: Vec<u8>, packets| Transfer {
        endpoint,
        kind: TransferKind::Isochronous { packets },
        buffer: buffer.into(),
        short_not_ok: false,
    };
    let packets = vec![
        IsoPacket {
            offset: 0,
            length: 192,
        },
        IsoPacket {
            offset: 256,
            length: 100,
        },
    ];
    // Alternate setting 0 has no endpoints.
    assert_eq!(
        d.run(iso(EP_SOURCE, vec![0; 512], packets.clone())).outcome,
        TransferOutcome::Error
    );
    let alt1 = TransferKind::SetInterface {
        interface: 0,
        alt_setting: 1,
    };
    assert_eq!(
        d.transfer(0, alt1, 0, false).outcome,
        TransferOutcome::Completed
    );
    let c = d.run(iso(EP_SOURCE, vec![0xee; 512], packets.clone()));
    assert_eq!(
        (c.outcome, c.actual_length, c.error_count),
        (TransferOutcome::Completed, 292, 0)
    );
    assert_eq!(
        c.iso.iter().map(|r| r.actual_length).collect::<Vec<_>>(),
        vec![192, 100]
    );
    let sample = |n| AudioDevice::sample(n).to_le_bytes();
    assert_eq!(&c.buffer[0..2], &sample(0));
    assert_eq!(&c.buffer[256..258], &sample(96));
    assert!(
        c.buffer[192..256].iter().all(|&b| b == 0xee),
        "gap untouched"
    );
    let out = d.run(iso(EP_SINK, vec![1; 512], packets));
    assert_eq!(
        (out.outcome, out.iso.len()),
        (TransferOutcome::Completed, 2)
    );
    assert_eq!(
        stats.out_bytes.load(std::sync::atomic::Ordering::Relaxed),
        292
    );
    assert_eq!(
        stats.out_packets.load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // A packet outside the buffer fails the transfer.
    let bad = d.run(iso(
        EP_SINK,
        vec![1; 64],
        vec![IsoPacket {
            offset: 60,
            length: 8,
        }],
    ));
    assert_eq!(bad.outcome, TransferOutcome::Error);
}

#[test]
fn vanishing_mid_transfer_fails_pending_ones() {
    let kb = KeyboardHandle::new();
    let k = kb.clone();
    let (host, _busid, mut dev, sink) = plug(factory(move || {
        Box::new(VanishingDevice::new(k.device(), 2))
    }));
    dev.submit(tid(1), interrupt_in()); // device transfer 1: pending
    dev.submit(tid(2), interrupt_in()); // queued behind it
    dev.submit(tid(3), get_idle());
    for id in 1..=3 {
        assert_eq!(sink.wait(id).outcome, TransferOutcome::NoDevice, "id {id}");
        assert_eq!(sink.count(id), 1);
    }
    assert_eq!(sink.ids(), vec![3, 1, 2]);
    assert!(host.list().unwrap().is_empty());
    kb.press("x"); // nothing left to wake; must not complete anything again
    assert_eq!(sink.ids().len(), 3);
}
