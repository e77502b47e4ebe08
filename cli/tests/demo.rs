//! `pvusb demo` end to end: the built binary starts xenstore, backend and guest
//! as separate processes, and must pass every step, print what it checked and
//! leave nothing behind.

use std::path::PathBuf;
use std::process::Command;

use pvusb_testkit::run::output;

fn demo(args: &[&str]) -> (i32, String, String) {
    output(
        Command::new(env!("CARGO_BIN_EXE_pvusb"))
            .arg("demo")
            .args(args)
            .env_remove("XENSTORED_PATH"),
    )
}

/// The work directory the demo announces on its second line.
fn work_dir(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find(|l| l.contains("Work dir "))
        .expect("the work dir is announced");
    PathBuf::from(line.rsplit("Work dir ").next().expect("a path").trim())
}

#[test]
fn the_demo_passes_every_step_and_leaves_nothing_behind() {
    let (code, stdout, stderr) = demo(&["--storage-mib", "2", "--throughput-mib", "4"]);
    assert_eq!(code, 0, "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for expected in [
        "controller 0 of domain 1 connected",
        "USB 2.0 root hub with 3 ports, xenbus Connected",
        "device 200-1 assigned to domain 1 controller 0 port 1",
        "device 200-2 assigned to domain 1 controller 0 port 2",
        "device 200-3 assigned to domain 1 controller 0 port 3",
        "ID 1209:0002 pvusb pvusb disk",
        "ID 1209:0003 pvusb pvusb keyboard",
        "ID 1209:0001 pvusb pvusb loopback",
        "guest wrote 2.0 MiB of random data",
        "all three checksums match",
        "echo of 4096 bytes came back identical",
        "bulk OUT 2.0 MiB",
        "device 200-3 given back to the host",
        "controller 0 of domain 1 removed",
        "guest: controller released",
        "SIGTERM: guest exited 0, backend exited 0, xenstore exited 0",
        "no leftovers",
        "pvusb demo: every step passed.",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    let typed = "\"Hello from dom0, via pvUSB!\"";
    assert_eq!(
        stdout.matches(typed).count(),
        2,
        "typed and decoded text:\n{stdout}"
    );
    let dir = work_dir(&stdout);
    assert!(dir.starts_with("/tmp"), "{}", dir.display());
    assert!(!dir.exists(), "{} is left over", dir.display());
}

#[test]
fn a_host_device_without_host_usb_is_one_clear_error() {
    if std::path::Path::new("/dev/bus/usb").exists() {
        eprintln!("skipped: this machine has host USB");
        return;
    }
    let (code, stdout, stderr) = demo(&["--device", "1.6"]);
    assert_ne!(code, 0);
    assert!(stdout.is_empty(), "nothing was started:\n{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    let line = lines.first().copied().unwrap_or_default();
    assert!(
        line.contains("--device 1.6") && line.contains("without --device"),
        "{line}"
    );
}

#[test]
fn the_guest_role_needs_its_paths() {
    let (code, _, stderr) = demo(&["--role", "guest"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--role guest needs --xenstore and --sim-dir"),
        "{stderr}"
    );
}
