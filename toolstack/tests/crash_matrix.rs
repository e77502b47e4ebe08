//! The kill-at-every-micro-state matrix (the table in the crate doc).
//!
//! Each case runs one command in a child process (this test binary re-executed
//! with a role in the environment) that aborts at an injected crash point —
//! exactly what `kill -9` leaves: no destructor, no rollback. The parent then
//! checks that `list`/`assignable-list` report the state truthfully and that the
//! documented single command brings everything to a consistent end state.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use pvusb_testkit::host::{self, GUEST};
use pvusb_testkit::World;
use pvusb_toolstack::crash::CRASH_ENV;
use pvusb_toolstack::record::{self, Stage};
use pvusb_toolstack::{DeviceSpec, DeviceState, DeviceStatus, Recovered};
use pvusb_xenstore::Tx;

const ROLE: &str = "PVUSB_TS_CHILD";
const DIR: &str = "PVUSB_TS_DIR";

/// Not a test of its own: the child side of the matrix. Without the role variable
/// it returns at once.
#[test]
fn child_entry() {
    let Ok(cmd) = std::env::var(ROLE) else { return };
    let dir = std::env::var(DIR).unwrap();
    let ts = World::attach(dir.as_ref()).toolstack();
    let words: Vec<&str> = cmd.split(' ').collect();
    let result = match words.as_slice() {
        ["dev-attach", b] => ts
            .dev_attach(GUEST, &DeviceSpec::BusId((*b).to_owned()), None, None)
            .map(|_| ()),
        ["dev-detach"] => ts.dev_detach(GUEST, 0, 1).map(|_| ()),
        ["ctrl-attach"] => ts.ctrl_attach(GUEST, 2, 8).map(|_| ()),
        ["ctrl-detach"] => ts.ctrl_detach(GUEST, 0, false).map(|_| ()),
        other => panic!("unknown child command {other:?}"),
    };
    // Reaching here means the crash point was never hit: report it distinctly.
    eprintln!("child finished without crashing: {result:?}");
    std::process::exit(42);
}

/// Run `cmd` in a child that must abort at `step`.
fn crash_at(h: &World, cmd: &str, step: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, cmd)
        .env(DIR, h.dir())
        .env(CRASH_ENV, step)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc_sigabrt()),
        "`{cmd}` did not abort at {step}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn libc_sigabrt() -> i32 {
    6
}

/// After a crash: every port still names a device with a record (the record is
/// written before and removed after the port), never the reverse dangling.
fn assert_ports_have_records(h: &World) {
    for (busid, _) in h.toolstack().assignments().unwrap() {
        assert!(
            record::read(h.xs().as_ref(), Tx::NONE, &busid)
                .unwrap()
                .is_some(),
            "{busid} in a port, no record"
        );
    }
}

fn status_of(h: &World, busid: &str) -> DeviceStatus {
    let ports = h.toolstack().assignments().unwrap();
    h.toolstack().device_status(busid, &ports).unwrap()
}

fn host_drivers() -> DeviceState {
    DeviceState::Host {
        drivers: vec!["usb-storage".to_owned(), "usbhid".to_owned()],
    }
}

#[test]
fn attach_matrix() {
    let cases: [(&str, DeviceState, Stage); 4] = [
        ("attach-recorded", host_drivers(), Stage::AttachRecorded),
        (
            "attach-unbound-1",
            DeviceState::Wedged { unbound: 1, of: 2 },
            Stage::AttachRecorded,
        ),
        (
            "attach-unbound",
            DeviceState::NoDriver,
            Stage::AttachRecorded,
        ),
        ("attach-claimed", DeviceState::Claimed, Stage::Claimed),
    ];
    for (step, want, stage) in cases {
        for resolution in ["recover", "rerun"] {
            let (h, ts, _peer) = host::with_peer();
            ts.ctrl_attach(GUEST, 2, 8).unwrap();
            crash_at(&h, "dev-attach 1-2", step);
            assert_ports_have_records(&h);
            // list and assignable-list tell the truth.
            let l = ts.list(GUEST).unwrap();
            assert!(
                l.controllers[0].devices.is_empty(),
                "{step}: nothing in a port yet"
            );
            let pending = l
                .pending
                .iter()
                .find(|d| d.busid == "1-2")
                .unwrap_or_else(|| panic!("{step}: not listed"));
            assert_eq!(pending.state, want, "{step}");
            assert_eq!(pending.stage, Some(stage), "{step}");
            assert!(
                pending
                    .hint
                    .as_deref()
                    .unwrap()
                    .contains("pvusb recover 1-2"),
                "{step}"
            );
            let a = ts.assignable_list().unwrap();
            assert_eq!(
                a.iter().find(|d| d.busid == "1-2").unwrap().state,
                want,
                "{step}"
            );
            // The port is reserved meanwhile: another device goes elsewhere.
            let other = ts
                .dev_attach(GUEST, &DeviceSpec::BusId("1-3".into()), None, None)
                .unwrap();
            assert_eq!(
                (other.ctrl, other.port),
                (0, 2),
                "{step}: reserved port reused"
            );
            match resolution {
                "recover" => {
                    assert_eq!(
                        ts.recover_device("1-2").unwrap(),
                        Recovered::AttachRolledBack,
                        "{step}"
                    );
                    assert!(record::read(&ts.store, Tx::NONE, "1-2").unwrap().is_none());
                    assert_eq!(status_of(&h, "1-2").state, host_drivers());
                }
                _ => {
                    let r = ts
                        .dev_attach(GUEST, &DeviceSpec::BusId("1-2".into()), None, None)
                        .unwrap();
                    assert!(r.resumed, "{step}");
                    assert_eq!((r.ctrl, r.port), (0, 1), "{step}");
                    assert!(
                        matches!(status_of(&h, "1-2").state, DeviceState::Assigned(_)),
                        "{step}"
                    );
                }
            }
            host::assert_consistent(&h);
        }
    }
}

#[test]
fn attach_creating_a_controller_matrix() {
    for resolution in ["rerun", "ctrl-detach"] {
        let (h, ts, _peer) = host::with_peer();
        crash_at(&h, "dev-attach 1-3", "ctrl-attach-written");
        let l = ts.list(GUEST).unwrap();
        assert_eq!(l.controllers.len(), 1);
        assert!(l.controllers[0].devices.is_empty());
        assert_eq!(
            status_of(&h, "1-3").state,
            DeviceState::Host {
                drivers: vec!["btusb".into()]
            }
        );
        host::assert_consistent(&h);
        if resolution == "rerun" {
            let r = ts
                .dev_attach(GUEST, &DeviceSpec::BusId("1-3".into()), None, None)
                .unwrap();
            assert_eq!((r.ctrl, r.port, r.created_controller), (0, 1, false));
        } else {
            ts.ctrl_detach(GUEST, 0, false).unwrap();
            assert!(ts.controllers(GUEST).unwrap().is_empty());
        }
        host::assert_consistent(&h);
    }
}

#[test]
fn ctrl_attach_matrix() {
    let (h, ts, _peer) = host::with_peer();
    crash_at(&h, "ctrl-attach", "ctrl-attach-written");
    let l = ts.list(GUEST).unwrap();
    assert_eq!(l.controllers.len(), 1);
    assert_eq!(l.controllers[0].controller.num_ports, 8);
    host::assert_consistent(&h);
    // Consistent as is: waiting finishes it, ctrl-detach removes it.
    ts.wait_connected(GUEST, 0).unwrap();
    ts.ctrl_detach(GUEST, 0, false).unwrap();
    host::assert_consistent(&h);
}

/// A predicate on the state `list` shows.
type StateCheck = dyn Fn(&DeviceState) -> bool;

#[test]
fn detach_matrix() {
    let releasing = |s: &DeviceState| matches!(s, DeviceState::Releasing(p) if p.port == 1);
    let cases: [(&str, &StateCheck, bool); 5] = [
        ("detach-releasing", &releasing, true),
        ("detach-released", &releasing, true),
        (
            "detach-port-cleared",
            &|s| *s == DeviceState::NoDriver,
            false,
        ),
        (
            "detach-rebound-1",
            &|s| *s == DeviceState::Wedged { unbound: 1, of: 2 },
            false,
        ),
        ("detach-rebound", &|s| *s == host_drivers(), false),
    ];
    for (step, want, in_port) in cases {
        for resolution in ["recover", "rerun"] {
            let (h, ts, _peer) = host::with_peer();
            ts.dev_attach(GUEST, &DeviceSpec::BusId("1-2".into()), None, None)
                .unwrap();
            crash_at(&h, "dev-detach", step);
            assert_ports_have_records(&h);
            let l = ts.list(GUEST).unwrap();
            let shown = if in_port {
                l.controllers[0].devices.first().map(|(_, d)| d.clone())
            } else {
                assert!(
                    l.controllers[0].devices.is_empty(),
                    "{step}: port must be empty"
                );
                l.pending.iter().find(|d| d.busid == "1-2").cloned()
            }
            .unwrap_or_else(|| panic!("{step}: device not listed"));
            assert!(want(&shown.state), "{step}: shows {}", shown.state);
            assert!(
                shown.hint.as_deref().unwrap().contains("pvusb recover 1-2"),
                "{step}"
            );
            match resolution {
                "recover" => {
                    assert_eq!(
                        ts.recover_device("1-2").unwrap(),
                        Recovered::DetachFinished,
                        "{step}"
                    );
                }
                _ => {
                    ts.dev_detach(GUEST, 0, 1).unwrap();
                }
            }
            assert!(record::read(&ts.store, Tx::NONE, "1-2").unwrap().is_none());
            assert_eq!(status_of(&h, "1-2").state, host_drivers(), "{step}");
            host::assert_consistent(&h);
        }
    }
}

#[test]
fn ctrl_detach_matrix() {
    for step in [
        "detach-releasing",
        "ctrl-detach-devices-done",
        "ctrl-detach-closing",
        "ctrl-detach-closed",
    ] {
        for resolution in ["rerun", "recover-all-then-rerun"] {
            let (h, ts, _peer) = host::with_peer();
            ts.dev_attach(GUEST, &DeviceSpec::BusId("1-2".into()), None, None)
                .unwrap();
            ts.dev_attach(GUEST, &DeviceSpec::BusId("1-3".into()), None, None)
                .unwrap();
            crash_at(&h, "ctrl-detach", step);
            assert_ports_have_records(&h);
            let l = ts.list(GUEST).unwrap();
            assert_eq!(l.controllers.len(), 1, "{step}: controller still listed");
            if step.starts_with("ctrl-detach-clos") {
                assert!(!l.controllers[0].controller.online, "{step}: shown offline");
            }
            if resolution != "rerun" {
                for (_, r) in ts.recover_all().unwrap() {
                    r.unwrap();
                }
            }
            ts.ctrl_detach(GUEST, 0, false).unwrap();
            assert!(ts.controllers(GUEST).unwrap().is_empty(), "{step}");
            host::assert_consistent(&h);
        }
    }
}

#[test]
fn recover_all_after_guest_died_mid_attach() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    crash_at(&h, "dev-attach 1-2", "attach-claimed");
    h.destroy_guest(GUEST);
    let out = ts.recover_all().unwrap();
    assert!(out.iter().all(|(_, r)| r.is_ok()), "{out:?}");
    assert!(record::read(&ts.store, Tx::NONE, "1-2").unwrap().is_none());
    assert_eq!(h.read("/local/domain/0/backend/vusb/3"), None);
    assert_eq!(status_of(&h, "1-2").state, host_drivers());
}
