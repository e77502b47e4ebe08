//! Every command and every refusal against the embedded xenstore and a fake sysfs.

use std::time::Duration;

use pvusb_testkit::host::{self, GUEST, OTHER};
use pvusb_testkit::peer::Peer;
use pvusb_toolstack::record::{self, Stage};
use pvusb_toolstack::{DeviceSpec, DeviceState, ToolError};
use pvusb_xenstore::{Access, Tx, XsClient};

fn busid(s: &str) -> DeviceSpec {
    DeviceSpec::BusId(s.to_owned())
}

#[test]
fn ctrl_attach_writes_both_nodes_with_permissions_and_waits() {
    let (h, ts, _peer) = host::with_peer();
    let a = ts.ctrl_attach(GUEST, 2, 8).unwrap();
    assert_eq!(a.devid, 0);
    let be = "/local/domain/0/backend/vusb/3/0";
    let fe = "/local/domain/3/device/vusb/0";
    assert_eq!(h.read(&format!("{be}/frontend")).as_deref(), Some(fe));
    assert_eq!(h.read(&format!("{be}/frontend-id")).as_deref(), Some("3"));
    assert_eq!(h.read(&format!("{be}/online")).as_deref(), Some("1"));
    assert_eq!(h.read(&format!("{be}/type")).as_deref(), Some("pv"));
    assert_eq!(h.read(&format!("{be}/usb-ver")).as_deref(), Some("2"));
    assert_eq!(h.read(&format!("{be}/num-ports")).as_deref(), Some("8"));
    for p in 1..=8 {
        assert_eq!(h.read(&format!("{be}/port/{p}")).as_deref(), Some(""));
    }
    assert_eq!(h.read(&format!("{be}/port/9")), None);
    assert_eq!(h.read(&format!("{fe}/backend")).as_deref(), Some(be));
    assert_eq!(h.read(&format!("{fe}/backend-id")).as_deref(), Some("0"));
    assert_eq!(h.read(&format!("{be}/state")).as_deref(), Some("4"));
    assert_eq!(h.read(&format!("{fe}/state")).as_deref(), Some("4"));

    let c = h.client();
    let bp = c.get_perms(Tx::NONE, &format!("{be}/num-ports")).unwrap();
    assert_eq!((bp[0].domid, bp[0].access), (0, Access::None));
    assert!(bp
        .iter()
        .any(|p| p.domid == GUEST && p.access == Access::Read));
    let fp = c.get_perms(Tx::NONE, fe).unwrap();
    assert_eq!(fp[0].domid, GUEST);
    assert!(fp.iter().any(|p| p.domid == 0 && p.access == Access::Read));
    // The guest can read its backend but not write it.
    let guest = XsClient::connect_as(&h.xs_path(), GUEST).unwrap();
    assert_eq!(
        guest
            .read(Tx::NONE, &format!("{be}/usb-ver"))
            .unwrap()
            .as_deref(),
        Some("2")
    );
    assert!(guest
        .write(Tx::NONE, &format!("{be}/port/1"), "1-2")
        .is_err());
    // Another guest can read neither.
    let other = XsClient::connect_as(&h.xs_path(), OTHER).unwrap();
    assert!(other.read(Tx::NONE, &format!("{be}/usb-ver")).is_err());

    let b = ts.ctrl_attach(GUEST, 1, 4).unwrap();
    assert_eq!(b.devid, 1);
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/3/1/usb-ver")
            .as_deref(),
        Some("1")
    );
}

#[test]
fn ctrl_attach_refusals_and_timeout_message() {
    let h = host::new();
    let mut ts = h.toolstack();
    for (v, p) in [(3, 8), (0, 8), (2, 0), (2, 32)] {
        let e = ts.ctrl_attach(GUEST, v, p).unwrap_err();
        assert!(matches!(e, ToolError::InvalidArgument(_)), "{e}");
    }
    assert!(matches!(
        ts.ctrl_attach(9, 2, 8),
        Err(ToolError::NoSuchDomain(_))
    ));
    ts.timeout = Duration::from_millis(300);
    let e = ts.ctrl_attach(GUEST, 2, 8).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ToolError::Timeout { .. }));
    assert!(
        msg.contains("saw backend Initialising, frontend Initialising"),
        "{msg}"
    );
    assert!(msg.contains("pvusb ctrl-detach 3 0"), "{msg}");
    assert!(!msg.contains('\n'));
    // The controller stays, visibly, and is consistent.
    let l = ts.list(GUEST).unwrap();
    assert_eq!(l.controllers.len(), 1);
    assert_eq!(l.controllers[0].controller.backend_state, Some(1));
    host::assert_consistent(&h);
    ts.ctrl_detach(GUEST, 0, true).unwrap();
    assert!(ts.controllers(GUEST).unwrap().is_empty());
    assert_eq!(h.read("/local/domain/3/device/vusb/0"), None);
}

#[test]
fn domains_resolve_by_id_and_name() {
    let h = host::new();
    let ts = h.toolstack();
    assert_eq!(ts.resolve_domain("3").unwrap(), 3);
    assert_eq!(ts.resolve_domain("guest4").unwrap(), 4);
    assert!(matches!(
        ts.resolve_domain("nope"),
        Err(ToolError::NoSuchDomain(_))
    ));
    assert!(matches!(
        ts.resolve_domain("17"),
        Err(ToolError::NoSuchDomain(_))
    ));
    ts.store
        .write(Tx::NONE, "/local/domain/4/name", "guest3")
        .unwrap();
    assert!(matches!(
        ts.resolve_domain("guest3"),
        Err(ToolError::AmbiguousDomain(_))
    ));
}

#[test]
fn default_placement_rules() {
    let (h, ts, _peer) = host::with_peer();
    // No controller at all: one is created with defaults, port 1.
    let a = ts
        .dev_attach(GUEST, &DeviceSpec::BusAddr(1, 6), None, None)
        .unwrap();
    assert_eq!(
        (a.busid.as_str(), a.ctrl, a.port, a.created_controller),
        ("1-2", 0, 1, true)
    );
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/3/0/num-ports")
            .as_deref(),
        Some("8")
    );
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/3/0/port/1").as_deref(),
        Some("1-2")
    );
    assert_eq!(h.drivers("1-2"), vec![None, None]);
    // Next one: first free port of the existing controller.
    let b = ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    assert_eq!((b.ctrl, b.port, b.created_controller), (0, 2, false));
    host::assert_consistent(&h);
    // Controller given, port given: must be free.
    ts.dev_detach(GUEST, 0, 2).unwrap();
    let e = ts
        .dev_attach(GUEST, &busid("1-3"), Some(0), Some(1))
        .unwrap_err();
    assert!(
        matches!(&e, ToolError::PortBusy { busid, .. } if busid == "1-2"),
        "{e}"
    );
    let e = ts
        .dev_attach(GUEST, &busid("1-3"), Some(0), Some(9))
        .unwrap_err();
    assert!(
        matches!(e, ToolError::NoSuchPort { num_ports: 8, .. }),
        "{e}"
    );
    let c = ts
        .dev_attach(GUEST, &busid("1-3"), Some(0), Some(5))
        .unwrap();
    assert_eq!((c.ctrl, c.port), (0, 5));
    ts.dev_detach(GUEST, 0, 5).unwrap();
    // Controller given without port: its first free port.
    ts.ctrl_attach(GUEST, 2, 2).unwrap();
    let d = ts.dev_attach(GUEST, &busid("1-3"), Some(1), None).unwrap();
    assert_eq!((d.ctrl, d.port), (1, 1));
    ts.dev_detach(GUEST, 1, 1).unwrap();
    // port without controller is refused.
    assert!(matches!(
        ts.dev_attach(GUEST, &busid("1-3"), None, Some(1)),
        Err(ToolError::InvalidArgument(_))
    ));
    // No such controller.
    assert!(matches!(
        ts.dev_attach(GUEST, &busid("1-3"), Some(7), None),
        Err(ToolError::NoSuchController { ctrl: 7, .. })
    ));
    host::assert_consistent(&h);
}

#[test]
fn full_controllers_get_a_new_one_and_full_given_controller_is_refused() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 2, 1).unwrap();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    let e = ts
        .dev_attach(GUEST, &busid("1-3"), Some(0), None)
        .unwrap_err();
    assert!(matches!(e, ToolError::NoFreePort { ctrl: 0, .. }), "{e}");
    let a = ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    assert_eq!((a.ctrl, a.port, a.created_controller), (1, 1, true));
    host::assert_consistent(&h);
}

#[test]
fn refusals_hub_assigned_foreign_backend_unknown_device() {
    let (_h, ts, _peer) = host::with_peer();
    let e = ts
        .dev_attach(GUEST, &DeviceSpec::BusAddr(1, 2), None, None)
        .unwrap_err();
    assert!(matches!(e, ToolError::IsHub(ref b) if b == "1-1"), "{e}");
    assert!(e.to_string().contains("hubs cannot be assigned"));
    assert!(matches!(
        ts.dev_attach(GUEST, &busid("5-5"), None, None),
        Err(ToolError::NoSuchDevice(_))
    ));
    assert!(matches!(
        ts.dev_attach(GUEST, &DeviceSpec::BusAddr(9, 9), None, None),
        Err(ToolError::NoSuchDevice(_))
    ));
    assert!(matches!(
        ts.dev_attach(17, &busid("1-2"), None, None),
        Err(ToolError::NoSuchDomain(_))
    ));

    // Assigned to another domain through pvusb.
    ts.dev_attach(OTHER, &busid("1-2"), None, None).unwrap();
    let e = ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap_err();
    assert!(
        matches!(
            e,
            ToolError::AlreadyAssigned {
                domid: OTHER,
                ctrl: 0,
                port: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("pvusb dev-detach 4 0 1"));
    // Re-attaching to the same place is a no-op, not an error.
    let again = ts.dev_attach(OTHER, &busid("1-2"), None, None).unwrap();
    assert!(again.already);

    // Assigned by another backend (a qusb controller of domain 7's device model).
    ts.store
        .write(Tx::NONE, "/local/domain/7/backend/qusb/3/0/port/1", "1-3")
        .unwrap();
    ts.store.write(Tx::NONE, "/local/domain/7", "").unwrap();
    let e = ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap_err();
    assert!(
        matches!(
            e,
            ToolError::AlreadyAssigned {
                domid: GUEST,
                ctrl: 0,
                port: 1,
                ..
            }
        ),
        "{e}"
    );
    ts.store.rm(Tx::NONE, "/local/domain/7").unwrap();

    // A controller whose backend is another domain.
    ts.store
        .write(Tx::NONE, "/local/domain/3/device/vusb/5/backend-id", "2")
        .unwrap();
    ts.store
        .write(Tx::NONE, "/local/domain/3/device/vusb/5/state", "1")
        .unwrap();
    let e = ts
        .dev_attach(GUEST, &busid("1-3"), Some(5), None)
        .unwrap_err();
    assert!(
        matches!(
            e,
            ToolError::ForeignBackend {
                ctrl: 5,
                ours: 0,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("--backend-domid 2"));
    // Default placement skips it and creates a controller of ours (devid 0 is free for 3).
    let a = ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    assert_eq!((a.ctrl, a.created_controller), (0, true));
    let l = ts.list(GUEST).unwrap();
    assert!(l
        .controllers
        .iter()
        .any(|c| c.controller.devid == 5 && !c.controller.ours));
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn detach_restores_every_interface_and_reports_failures() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    assert_eq!(
        h.read("/pvusb/usbback/1-2/1-2@1_0/driver_path").as_deref(),
        Some("/sys/bus/usb/drivers/usb-storage")
    );
    // Simulate the backend daemon's claim (usbfs) and an unloaded driver.
    h.sysfs().add_driver("usbfs").unwrap();
    pvusb_toolstack::Sysfs::bind(&ts.sysfs, "1-2:1.1", "usbfs").unwrap();
    h.sysfs().remove_driver("usb-storage").unwrap();
    let e = ts.dev_detach(GUEST, 0, 1).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ToolError::Rebind { .. }), "{msg}");
    assert!(msg.contains("1-2:1.0 (usb-storage"), "{msg}");
    assert!(msg.contains("modprobe usb-storage"), "{msg}");
    assert!(msg.contains("pvusb recover 1-2"), "{msg}");
    // The other interface was still given back, from usbfs to usbhid.
    assert_eq!(h.drivers("1-2"), vec![None, Some("usbhid".to_owned())]);
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/3/0/port/1").as_deref(),
        Some("")
    );
    let st = ts.assignable_list().unwrap();
    let d = st.iter().find(|s| s.busid == "1-2").unwrap();
    assert_eq!(d.stage, Some(Stage::DetachRebinding));
    assert!(d.hint.as_deref().unwrap().contains("recover"));
    // Load the driver again; recover finishes.
    h.sysfs().add_driver("usb-storage").unwrap();
    assert_eq!(
        ts.recover_device("1-2").unwrap(),
        pvusb_toolstack::Recovered::DetachFinished
    );
    host::assert_consistent(&h);
    assert!(record::read(&ts.store, Tx::NONE, "1-2").unwrap().is_none());
}

#[test]
fn detach_by_busid_and_refusals() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    assert!(matches!(
        ts.dev_detach(GUEST, 0, 2),
        Err(ToolError::PortEmpty { .. })
    ));
    assert!(matches!(
        ts.dev_detach(GUEST, 3, 1),
        Err(ToolError::NoSuchController { .. })
    ));
    assert!(matches!(
        ts.dev_detach_busid(OTHER, "1-3"),
        Err(ToolError::InvalidArgument(_))
    ));
    let d = ts.dev_detach_busid(GUEST, "1-3").unwrap();
    assert_eq!(d.rebound, vec!["1-3:1.0".to_owned()]);
    host::assert_consistent(&h);
}

#[test]
fn list_and_assignable_list() {
    let (_h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    let l = ts.list(GUEST).unwrap();
    assert_eq!(l.controllers.len(), 1);
    let (port, d) = &l.controllers[0].devices[0];
    assert_eq!(*port, 1);
    assert!(matches!(d.state, DeviceState::Assigned(p) if p.domid == GUEST && p.port == 1));
    let dev = d.device.as_ref().unwrap();
    assert_eq!((dev.vendor, dev.product), (0x0781, 0x5567));
    let text = l.to_string();
    assert!(text.contains("port 1: 1-2"), "{text}");
    assert!(text.contains("0781:5567 SanDisk Cruzer Blade"), "{text}");
    assert!(
        text.contains("assigned to domain 3 controller 0 port 1"),
        "{text}"
    );
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(json["controllers"][0]["controller"]["num_ports"], 8);

    let a = ts.assignable_list().unwrap();
    let names: Vec<&str> = a.iter().map(|s| s.busid.as_str()).collect();
    assert_eq!(
        names,
        vec!["1-3", "2-1"],
        "hub and assigned device excluded"
    );
    assert!(
        matches!(&a[0].state, DeviceState::Host { drivers } if drivers == &["btusb".to_owned()])
    );
    assert_eq!(a[1].state, DeviceState::NoDriver);
    assert!(ts.list(OTHER).unwrap().controllers.is_empty());
}

#[test]
fn ctrl_detach_detaches_devices_first() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    let d = ts.ctrl_detach(GUEST, 0, false).unwrap();
    assert_eq!(d.devices, vec!["1-2".to_owned(), "1-3".to_owned()]);
    assert_eq!(h.read("/local/domain/0/backend/vusb/3/0"), None);
    assert_eq!(h.read("/local/domain/3/device/vusb/0"), None);
    host::assert_consistent(&h);
}

#[test]
fn ctrl_detach_times_out_without_backend_and_says_how_to_finish() {
    let h = host::new();
    let mut ts = h.toolstack();
    {
        let _peer = Peer::start(&h);
        ts.ctrl_attach(GUEST, 2, 8).unwrap();
    }
    ts.timeout = Duration::from_millis(300);
    let e = ts.ctrl_detach(GUEST, 0, false).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("Closed not reached") && msg.contains("saw backend Closing"),
        "{msg}"
    );
    assert!(msg.contains("--force"), "{msg}");
    let l = ts.list(GUEST).unwrap();
    assert!(!l.controllers[0].controller.online);
    let _peer = Peer::start(&h);
    ts.ctrl_detach(GUEST, 0, false).unwrap();
    host::assert_consistent(&h);
}

#[test]
fn dead_domains_are_reaped() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    ts.dev_attach(OTHER, &busid("1-3"), None, None).unwrap();
    h.destroy_guest(GUEST);
    let r = ts.reap_dead_domains().unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, GUEST);
    assert_eq!(r[0].1.as_ref().unwrap(), &vec!["1-2".to_owned()]);
    assert_eq!(h.read("/local/domain/0/backend/vusb/3"), None);
    assert_eq!(
        h.drivers("1-2"),
        vec![Some("usb-storage".to_owned()), Some("usbhid".to_owned())]
    );
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/4/0/port/1").as_deref(),
        Some("1-3")
    );
    assert!(ts.reap_dead_domains().unwrap().is_empty());
    host::assert_consistent(&h);
}

#[test]
fn unplugged_device_is_shown_absent_and_detach_still_completes() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    h.sysfs().unplug("1-3").unwrap();
    let l = ts.list(GUEST).unwrap();
    assert_eq!(l.controllers[0].devices[0].1.state, DeviceState::Absent);
    ts.dev_detach(GUEST, 0, 1).unwrap();
    assert!(record::read(&ts.store, Tx::NONE, "1-3").unwrap().is_none());
}

#[test]
fn config_apply_creates_controllers_and_devices_idempotently() {
    let (h, ts, _peer) = host::with_peer();
    let cfg = "name = 'guest3'\nusbctrl = [ 'version=2, ports=4', \"version=1, ports=2\" ]\n\
               usbdev = [ 'hostbus=1, hostaddr=6, controller=1, port=2',\n  'hostbus=1, hostaddr=7' ]\n";
    let a = ts.config_apply(GUEST, "g.cfg", cfg).unwrap();
    assert_eq!(a.created_controllers, vec![0, 1]);
    assert_eq!(
        a.devices,
        vec![("1-2".to_owned(), 1, 2), ("1-3".to_owned(), 0, 1)]
    );
    assert_eq!(
        h.read("/local/domain/0/backend/vusb/3/1/usb-ver")
            .as_deref(),
        Some("1")
    );
    // Re-running it finds everything in place.
    let b = ts.config_apply(GUEST, "g.cfg", cfg).unwrap();
    assert!(b.created_controllers.is_empty());
    assert_eq!(b.devices, a.devices);
    host::assert_consistent(&h);
    let e = ts
        .config_apply(GUEST, "g.cfg", "usbctrl = [ 'version=2, ports=5' ]")
        .unwrap_err();
    assert!(e.to_string().contains("ctrl-detach 3 0"), "{e}");
}

#[test]
fn reaper_thread_reaps_on_release_domain() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let stop = stop.clone();
        let ts = h.toolstack();
        std::thread::spawn(move || {
            ts.run_reaper(Duration::from_millis(20), || !stop.load(Ordering::SeqCst))
        })
    };
    h.destroy_guest(GUEST);
    h.client().release_domain(GUEST).unwrap_or(());
    // Wait (bounded) for the reaper's effect, then check it completely.
    let watch = h.client().watch("/local/domain/0/backend/vusb").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.read("/local/domain/0/backend/vusb/3").is_some() && std::time::Instant::now() < deadline
    {
        let _ = watch.receiver().recv_timeout(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    reaper.join().unwrap().unwrap();
    assert_eq!(h.read("/local/domain/0/backend/vusb/3"), None);
    assert_eq!(
        h.drivers("1-2"),
        vec![Some("usb-storage".to_owned()), Some("usbhid".to_owned())]
    );
    host::assert_consistent(&h);
}

#[test]
fn config_apply_never_writes_over_stale_nodes_of_the_same_controller_index() {
    let h = host::new();
    let ts = h.toolstack();
    // A leftover frontend node for devid 0 (no state, so not a live controller).
    ts.store
        .write(Tx::NONE, "/local/domain/3/device/vusb/0/backend-id", "7")
        .unwrap();
    let cfg = "usbctrl = [ 'version=2, ports=4' ]\n";
    let e = ts.config_apply(GUEST, "g.cfg", cfg).unwrap_err();
    assert!(
        matches!(
            e,
            ToolError::ControllerIndexInUse {
                domid: GUEST,
                ctrl: 0
            }
        ),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'));
    // Untouched: nothing was overwritten and no backend node was created.
    assert_eq!(
        h.read("/local/domain/3/device/vusb/0/backend-id")
            .as_deref(),
        Some("7")
    );
    assert_eq!(h.read("/local/domain/3/device/vusb/0/state"), None);
    assert_eq!(h.read("/local/domain/0/backend/vusb/3/0"), None);
}
