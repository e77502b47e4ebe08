//! `pvusb front serve` as a process (this crate's binary) over the simulated
//! transport, with vhci-hcd's sysfs files played by a plain directory: it
//! serves the controller's device, logs what it holds on SIGUSR1 and keeps
//! serving, and exits cleanly on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pvusb_protocol::xenstore::frontend_dir;
use pvusb_testkit::machine::{self, DISK, DOM};
use pvusb_testkit::LIVENESS;
use pvusb_toolstack::DeviceSpec;
use pvusb_xenstore::Tx;

/// vhci-hcd's `status` with four free high-speed and four super-speed
/// ports, as `status_show` prints it.
fn free_ports() -> String {
    let mut text = String::from("hub port sta spd dev      sockfd local_busid\n");
    for port in 0..8 {
        let hub = if port < 4 { "hs" } else { "ss" };
        text.push_str(&format!("{hub}  {port:04} 004 000 00000000 000000 0-0\n"));
    }
    text
}

/// A child killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: Signal) {
    let pid = i32::try_from(child.id()).expect("pid");
    kill(Pid::from_raw(pid), sig).expect("signal");
}

#[test]
fn sigusr1_logs_each_controller_and_bridge_and_serving_goes_on() {
    let m = machine::new();
    let daemon = m.daemon();
    let ts = m.toolstack();
    let vhci = tempfile::tempdir().expect("vhci dir");
    for (name, text) in [
        ("status", free_ports()),
        ("attach", String::new()),
        ("detach", String::new()),
    ] {
        std::fs::write(vhci.path().join(name), text).expect("vhci file");
    }
    let log = vhci.path().join("front-serve.log");
    // The bridge starts once the toolstack made the controller's nodes, as
    // pvusb-front@0 does after the domain's configuration created them.
    let spawn = {
        let (dir, xs, vhci_dir, log) = (
            m.dir().to_owned(),
            m.xs_path(),
            vhci.path().to_owned(),
            log.clone(),
        );
        let xs_client = m.client();
        std::thread::spawn(move || {
            let state = format!("{}/state", frontend_dir(DOM, 0));
            wait_until("the frontend node", || {
                xs_client.exists(Tx::NONE, &state).unwrap_or(false)
            });
            Command::new(env!("CARGO_BIN_EXE_pvusb"))
                .args(["front", "--transport", "sim", "--domid", &DOM.to_string()])
                .arg("--sim-dir")
                .arg(dir)
                .args(["serve", "--vhci-dir"])
                .arg(vhci_dir)
                .env("XENSTORED_PATH", xs)
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("pvusb front serve starts")
        })
    };
    let attached = ts.ctrl_attach(DOM, 2, 2);
    let mut front = Running(spawn.join().expect("spawned"));
    if let Err(e) = attached {
        panic!(
            "ctrl-attach: {e}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    ts.dev_attach(DOM, &DeviceSpec::BusId(DISK.into()), Some(0), Some(1))
        .expect("dev-attach");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the disk served to vhci", || {
        read_log().contains("serving device to vhci-hcd")
    });

    signal(&front.0, Signal::SIGUSR1);
    wait_until("the report", || read_log().contains("bridge: "));
    let text = read_log();
    let report = text
        .lines()
        .find(|l| l.contains("controller: "))
        .expect("a controller line");
    assert!(
        report.contains("connected; 0 in flight, 0 queued"),
        "{report}"
    );
    assert!(report.contains("urb ring: req_prod_pvt"), "{report}");
    assert!(
        front.0.try_wait().expect("status").is_none(),
        "front serve still runs after SIGUSR1:\n{text}"
    );

    signal(&front.0, Signal::SIGTERM);
    let end = Instant::now() + LIVENESS;
    let status = loop {
        if let Some(s) = front.0.try_wait().expect("status") {
            break s;
        }
        assert!(
            Instant::now() < end,
            "no exit after SIGTERM:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit {status}:\n{}", read_log());
    daemon.shutdown();
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + LIVENESS;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A controller the toolstack never made: one line that names it and the
/// fix, and a failure status (not a bare "xenstore operation failed").
#[test]
fn a_missing_controller_is_refused_with_the_fix() {
    let m = machine::new();
    let out = Command::new(env!("CARGO_BIN_EXE_pvusb"))
        .args(["front", "--transport", "sim", "--domid", &DOM.to_string()])
        .args(["--devid", "3"])
        .arg("--sim-dir")
        .arg(m.dir())
        .arg("list")
        .env("XENSTORED_PATH", m.xs_path())
        .output()
        .expect("pvusb runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("controller 3 of domain 1 does not exist") && line.contains("ctrl-attach"),
        "{stderr}"
    );
}
