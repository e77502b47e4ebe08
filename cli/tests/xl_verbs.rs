//! xl's verbs on the `pvusb` binary: argument forms and refusals (before any
//! xenstore access), and `usb-list` / `usbctrl-attach` against an embedded xenstore
//! and a fake sysfs.

use std::path::Path;
use std::process::Command;

use pvusb_testkit::run::output;
use pvusb_testkit::{Controller, World};
use pvusb_toolstack::sysfs::fake::FakeDevice;
use pvusb_xenstore::{Tx, XsClient};

/// Runs `pvusb ARGS` with xenstore at `xs` (a socket path) and sysfs at `sys`.
fn pvusb(args: &[&str], xs: &Path, sys: &Path) -> (i32, String, String) {
    output(
        Command::new(env!("CARGO_BIN_EXE_pvusb"))
            .args(args)
            .env("XENSTORED_PATH", xs)
            .env("PVUSB_SYSFS_ROOT", sys)
            .env("PVUSB_SYSFS_SIMULATED", "1")
            .env_remove("RUST_LOG"),
    )
}

/// A refusal: exit status 1 and one line on stderr containing `want`.
fn refused(args: &[&str], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("no-xenstore.sock");
    let (code, stdout, stderr) = pvusb(args, &none, dir.path());
    assert_eq!(code, 1, "{args:?}: {stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
    assert!(stderr.contains(want), "{args:?}: {stderr:?} lacks {want:?}");
}

#[test]
fn refusals_come_before_xenstore_and_name_the_fix() {
    refused(
        &["usbctrl-attach", "3", "type=qusb"],
        "pvusb: type=qusb is not served by pvusb, which serves type=pv only",
    );
    refused(
        &["usbctrl-attach", "3", "type=devicemodel", "version=2"],
        "use `xl usbctrl-attach` for qusb and devicemodel",
    );
    refused(
        &["usbctrl-attach", "3", "type=bogus"],
        "use type=pv (or auto)",
    );
    refused(
        &["usbctrl-attach", "3", "backend=1"],
        "unknown \"backend=1\" in usbctrl spec: use type=pv, version=1|2, ports=N",
    );
    refused(&["usbctrl-attach", "3", "ports=many"], "not a number");
    refused(
        &["usbctrl-detach", "3", "zero"],
        "devid \"zero\" is not a number",
    );
    refused(
        &["usbdev-attach", "3", "hostbus=1"],
        "needs hostbus=B hostaddr=A",
    );
    refused(
        &["usbdev-attach", "3", "1.6"],
        "unknown \"1.6\" in usbdev spec: use hostbus=B hostaddr=A [controller=C [port=P]]",
    );
    refused(
        &["usbdev-attach", "3", "hostbus=1", "hostaddr=6", "type=vusb"],
        "use type=hostdev",
    );
    refused(
        &["usbdev-detach", "3", "0", "p1"],
        "port \"p1\" is not a number",
    );
    // Well-formed arguments get as far as xenstore.
    refused(
        &["usbctrl-attach", "3", "type=pv", "version=1", "ports=2"],
        "cannot connect to xenstore",
    );
    refused(
        &[
            "usbdev-attach",
            "3",
            "hostbus=0x1",
            "hostaddr=06",
            "controller=0",
            "port=1",
        ],
        "cannot connect to xenstore",
    );
}

#[test]
fn xls_arities_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let none = dir.path().join("none.sock");
    for args in [
        &["usbctrl-attach"][..],
        &["usbctrl-detach", "3"],
        &["usbctrl-detach", "3", "0", "1"],
        &["usbdev-attach", "3"],
        &["usbdev-detach", "3", "0"],
        &["usbdev-detach", "3", "0", "1", "2"],
        &["usb-list"],
        &["usb-list", "3", "4"],
    ] {
        let (code, _, stderr) = pvusb(args, &none, dir.path());
        assert_eq!(code, 2, "{args:?} must be a usage error: {stderr}");
    }
}

/// xenstore with guest 3 ("web"), and devices 1-2 (1.6) and 3-1 (3.17) in
/// a fake sysfs.
struct Bed {
    w: World,
}

impl Bed {
    fn new() -> Bed {
        let w = World::builder()
            .named_guest(3, "web")
            .host_device(FakeDevice::new("1-2", 1, 6, &[None]))
            .host_device(FakeDevice::new("3-1", 3, 17, &[None]))
            .build();
        Bed { w }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        pvusb(args, &self.w.xs_path(), self.w.sysfs().root())
    }

    fn w(&self, path: &str, v: &str) {
        self.w.write(path, v);
    }

    /// What libxl 4.17 leaves for a connected pv controller (as `xl usbctrl-attach`).
    fn controller(&self, devid: u32, ver: u8, ports: u8) {
        let c = Controller::new(3, devid, ver, ports);
        self.w.controller(&c);
        let lp = format!("/libxl/3/device/vusb/{devid}");
        self.w(&format!("{lp}/frontend"), &c.frontend_dir());
        self.w(&format!("{lp}/backend"), &c.backend_dir());
        self.w(&format!("{lp}/type"), "pv");
        self.w(&format!("{}/state", c.backend_dir()), "4");
        self.w(&format!("{}/state", c.frontend_dir()), "4");
    }
}

const HEADER: &str = "Devid  Type         BE  state usb-ver ports\n";

#[test]
fn usb_list_prints_xls_text_and_json() {
    let bed = Bed::new();
    let (code, out, err) = bed.run(&["usb-list", "web"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    bed.controller(0, 2, 2);
    bed.controller(1, 1, 1);
    bed.w("/local/domain/0/backend/vusb/3/0/port/2", "3-1");
    bed.w("/local/domain/0/backend/vusb/3/1/port/1", "1-2");
    let (code, out, err) = bed.run(&["usb-list", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "{HEADER}0      pv           0   4     2       2    \n  Port 1:\n  Port 2: Bus 003 Device 011\n\
             {HEADER}1      pv           0   4     1       1    \n  Port 1: Bus 001 Device 006\n"
        )
    );
    let (code, out, err) = bed.run(&["usb-list", "web", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["domid"], 3);
    assert_eq!(v["controllers"][0]["info"]["type"], "pv");
    assert_eq!(
        v["controllers"][0]["info"]["port_devices"][1]["busid"],
        "3-1"
    );
    assert_eq!(v["controllers"][1]["info"]["version"], 1);
    let (code, _, err) = bed.run(&["usb-list", "nosuchdomain"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn usbctrl_attach_writes_the_controller_and_libxls_entry() {
    let bed = Bed::new();
    // No backend runs here: the controller is written, then the wait times out.
    let (code, _, err) = bed.run(&[
        "usbctrl-attach",
        "--timeout",
        "1",
        "web",
        "type=pv",
        "version=1",
        "ports=2",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Connected"), "{err}");
    let rd = |p: &str| bed.w.read(p);
    assert_eq!(
        rd("/local/domain/0/backend/vusb/3/0/usb-ver").as_deref(),
        Some("1")
    );
    assert_eq!(rd("/libxl/3/device/vusb/0/num-ports").as_deref(), Some("2"));
    let (code, out, _) = bed.run(&["usb-list", "web"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("{HEADER}0      pv           0   1     1       2    \n  Port 1:\n  Port 2:\n")
    );
    // usbctrl-detach removes both; a thread plays the backend reaching Closed.
    let sock = bed.w.xs_path();
    let backend = std::thread::spawn(move || {
        let xs = XsClient::connect(&sock).unwrap();
        let state = "/local/domain/0/backend/vusb/3/0/state";
        for _ in 0..1000 {
            if xs.read(Tx::NONE, state).unwrap().as_deref() == Some("5") {
                xs.write(Tx::NONE, state, "6").unwrap();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    });
    let (code, out, err) = bed.run(&["usbctrl-detach", "web", "0"]);
    assert!(
        backend.join().unwrap(),
        "usbctrl-detach never closed the controller"
    );
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert_eq!(rd("/local/domain/0/backend/vusb/3/0"), None);
    assert_eq!(rd("/libxl/3"), None);
    assert_eq!(bed.run(&["usb-list", "web"]).1, "");
}
