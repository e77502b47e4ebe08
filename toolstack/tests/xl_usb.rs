//! libxl's bookkeeping of pvusb's controllers and `usb-list` (xl's output) against
//! the embedded xenstore and a fake sysfs.

use pvusb_testkit::host::{self, GUEST, OTHER};
use pvusb_testkit::World;
use pvusb_toolstack::xl_list::CtrlType;
use pvusb_toolstack::DeviceSpec;
use pvusb_xenstore::{Access, Tx, XsClient};

const HEADER: &str = "Devid  Type         BE  state usb-ver ports\n";

fn busid(s: &str) -> DeviceSpec {
    DeviceSpec::BusId(s.to_owned())
}

fn usb_list(h: &World, dom: u16) -> String {
    h.toolstack().xl_usb_list(dom).unwrap().to_string()
}

#[test]
fn ctrl_attach_writes_libxls_entry_and_ctrl_detach_removes_it() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 1, 3).unwrap();
    let lp = "/libxl/3/device/vusb/0";
    assert_eq!(
        h.read(&format!("{lp}/backend")).as_deref(),
        Some("/local/domain/0/backend/vusb/3/0")
    );
    assert_eq!(
        h.read(&format!("{lp}/frontend")).as_deref(),
        Some("/local/domain/3/device/vusb/0")
    );
    assert_eq!(h.read(&format!("{lp}/type")).as_deref(), Some("pv"));
    assert_eq!(h.read(&format!("{lp}/usb-ver")).as_deref(), Some("1"));
    assert_eq!(h.read(&format!("{lp}/num-ports")).as_deref(), Some("3"));
    // libxl's copy is written once and never follows the backend's state.
    assert_eq!(h.read(&format!("{lp}/state")).as_deref(), Some("1"));
    host::assert_consistent(&h);
    // Owned by the toolstack domain, invisible to the guest (as /libxl/<domid>).
    let perms = h
        .client()
        .get_perms(Tx::NONE, &format!("{lp}/type"))
        .unwrap();
    assert_eq!((perms[0].domid, perms[0].access), (0, Access::None));
    assert_eq!(perms.len(), 1);
    let guest = XsClient::connect_as(&h.xs_path(), GUEST).unwrap();
    assert!(guest.read(Tx::NONE, &format!("{lp}/type")).is_err());

    ts.ctrl_detach(GUEST, 0, false).unwrap();
    host::assert_consistent(&h);
    // Created by pvusb alone, so cleaned up to the domain's libxl dir.
    assert_eq!(h.read("/libxl/3"), None);
}

#[test]
fn ctrl_detach_keeps_what_xl_create_wrote() {
    let (h, ts, _peer) = host::with_peer();
    // What `xl create` leaves in /libxl/<domid> (and a vif of its own).
    for (p, v) in [
        ("/libxl/3/type", "pv"),
        (
            "/libxl/3/device/vif/0/backend",
            "/local/domain/0/backend/vif/3/0",
        ),
    ] {
        ts.store.write(Tx::NONE, p, v).unwrap();
    }
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    ts.ctrl_attach(GUEST, 2, 2).unwrap();
    host::assert_consistent(&h);
    ts.ctrl_detach(GUEST, 0, false).unwrap();
    host::assert_consistent(&h);
    assert!(h.read("/libxl/3/device/vusb/1").is_some());
    ts.ctrl_detach(GUEST, 1, false).unwrap();
    host::assert_consistent(&h);
    assert_eq!(h.read("/libxl/3/device/vusb"), None);
    assert_eq!(h.read("/libxl/3/type").as_deref(), Some("pv"));
    assert!(h.read("/libxl/3/device/vif/0/backend").is_some());
}

#[test]
fn a_devid_libxl_uses_is_not_taken() {
    let (h, ts, _peer) = host::with_peer();
    // An emulated (devicemodel) controller exists only in libxl's bookkeeping.
    for (k, v) in [
        ("type", "devicemodel"),
        ("usb-ver", "2"),
        ("num-ports", "6"),
    ] {
        ts.store
            .write(Tx::NONE, &format!("/libxl/3/device/vusb/0/{k}"), v)
            .unwrap();
    }
    let a = ts.ctrl_attach(GUEST, 2, 4).unwrap();
    assert_eq!(a.devid, 1);
    assert_eq!(
        usb_list(&h, GUEST),
        format!(
            "{HEADER}0      devicemodel  0   0     2       6    \n\
             \x20 Port 1:\n  Port 2:\n  Port 3:\n  Port 4:\n  Port 5:\n  Port 6:\n\
             {HEADER}1      pv           0   4     2       4    \n\
             \x20 Port 1:\n  Port 2:\n  Port 3:\n  Port 4:\n"
        )
    );
}

#[test]
fn dev_attach_creating_a_controller_writes_libxls_entry() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    host::assert_consistent(&h);
    assert_eq!(
        h.read("/libxl/3/device/vusb/0/num-ports").as_deref(),
        Some("8")
    );
    // The device itself lives in the backend's port, as with libxl.
    assert_eq!(h.read("/libxl/3/device/vusb/0/port/1").as_deref(), Some(""));
    ts.dev_detach(GUEST, 0, 1).unwrap();
    ts.ctrl_detach(GUEST, 0, false).unwrap();
    host::assert_consistent(&h);
}

#[test]
fn reaping_a_dead_domain_removes_libxls_entries() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    ts.ctrl_attach(GUEST, 2, 2).unwrap();
    h.destroy_guest(GUEST);
    for (_, r) in ts.reap_dead_domains().unwrap() {
        r.unwrap();
    }
    assert_eq!(h.read("/libxl/3"), None);
    host::assert_consistent(&h);
}

/// What `xl destroy` does to a guest with pvusb's bookkeeping (libxl's
/// `libxl__devices_destroy`): every port emptied, controller nodes, libxl's entry,
/// `/libxl/<domid>` and the domain's directory removed. The reaper then finds only
/// the pvusb records and gives the devices back to their drivers.
#[test]
fn reaper_after_libxl_destroyed_the_controllers() {
    let (h, ts, _peer) = host::with_peer();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    let st = &ts.store;
    st.write(Tx::NONE, "/local/domain/0/backend/vusb/3/0/port/1", "")
        .unwrap();
    for p in [
        "/local/domain/0/backend/vusb/3",
        "/local/domain/3/device/vusb/0",
        "/libxl/3",
    ] {
        st.rm(Tx::NONE, p).unwrap();
    }
    h.destroy_guest(GUEST);
    let reaped = ts.reap_dead_domains().unwrap();
    assert_eq!(reaped.len(), 1, "{reaped:?}");
    assert_eq!(reaped[0].1.as_ref().unwrap(), &vec!["1-2".to_owned()]);
    assert_eq!(h.read("/libxl/3"), None);
    assert_eq!(h.read("/local/domain/0/backend/vusb/3"), None);
    host::assert_consistent(&h);
}

#[test]
fn usb_list_empty_prints_nothing() {
    let h = host::new();
    let ts = h.toolstack();
    assert_eq!(usb_list(&h, GUEST), "");
    let l = ts.xl_usb_list(GUEST).unwrap();
    assert!(l.controllers.is_empty());
}

#[test]
fn usb_list_one_controller_then_devices_in_ports() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 2, 4).unwrap();
    assert_eq!(
        usb_list(&h, GUEST),
        format!(
            "{HEADER}0      pv           0   4     2       4    \n\
             \x20 Port 1:\n  Port 2:\n  Port 3:\n  Port 4:\n"
        )
    );
    // 1-2 is Bus 1 Device 6, 1-3 is Bus 1 Device 7.
    ts.dev_attach(GUEST, &busid("1-3"), Some(0), Some(3))
        .unwrap();
    ts.dev_attach(GUEST, &busid("1-2"), Some(0), Some(1))
        .unwrap();
    assert_eq!(
        usb_list(&h, GUEST),
        format!(
            "{HEADER}0      pv           0   4     2       4    \n\
             \x20 Port 1: Bus 001 Device 006\n  Port 2:\n  Port 3: Bus 001 Device 007\n  Port 4:\n"
        )
    );
    let l = ts.xl_usb_list(GUEST).unwrap();
    let info = l.controllers[0].info.as_ref().unwrap();
    assert_eq!(info.kind, CtrlType::Pv);
    assert_eq!(info.port_devices[0].busid.as_deref(), Some("1-2"));
    assert_eq!(info.port_devices[0].hostdev, Some((1, 6)));
    // Other guests see nothing of it.
    assert_eq!(usb_list(&h, OTHER), "");
    ts.dev_detach(GUEST, 0, 3).unwrap();
    assert!(usb_list(&h, GUEST).contains("  Port 3:\n  Port 4:\n"));
}

#[test]
fn usb_list_two_controllers_in_xenstores_order() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 2, 2).unwrap();
    ts.ctrl_attach(GUEST, 1, 1).unwrap();
    ts.dev_attach(GUEST, &busid("2-1"), Some(1), None).unwrap();
    assert_eq!(
        usb_list(&h, GUEST),
        format!(
            "{HEADER}0      pv           0   4     2       2    \n  Port 1:\n  Port 2:\n\
             {HEADER}1      pv           0   4     1       1    \n  Port 1: Bus 002 Device 003\n"
        )
    );
}

#[test]
fn usb_list_follows_libxls_failures() {
    let (h, ts, _peer) = host::with_peer();
    ts.ctrl_attach(GUEST, 2, 1).unwrap();
    // A device unplugged from the host: libxl cannot read its numbers.
    ts.dev_attach(GUEST, &busid("1-3"), Some(0), Some(1))
        .unwrap();
    h.sysfs().unplug("1-3").unwrap();
    assert_eq!(
        usb_list(&h, GUEST),
        format!("{HEADER}0      pv           0   4     2       1    \n  Port 1:\n")
    );
    // An entry without `type`: the header, no values (getinfo fails).
    ts.store
        .write(
            Tx::NONE,
            "/libxl/3/device/vusb/5/backend",
            "/local/domain/0/backend/vusb/3/5",
        )
        .unwrap();
    assert!(usb_list(&h, GUEST).ends_with(&format!("  Port 1:\n{HEADER}")));
    // An entry whose backend path does not parse: libxl lists nothing at all.
    ts.store
        .write(
            Tx::NONE,
            "/libxl/3/device/vusb/6/backend",
            "backend/vusb/3/6",
        )
        .unwrap();
    assert_eq!(usb_list(&h, GUEST), "");
}
