//! The demo's steps, in order. Each stage sets [`Demo::stage`] before it starts
//! so that a failure can say where it happened; every wait is bounded by the
//! step timeout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pvusb_support::Chain;
use pvusb_toolstack::sysfs::{Sysfs, SysfsRoot};
use pvusb_toolstack::DeviceSpec;
use pvusb_xenstore::XsClient;
use sha2::{Digest, Sha256};

use super::children::{describe, Children, ProcId};
use super::link::GuestLink;
use super::report::{device_line, heading, line, mib, rate, short_hash};
use super::stack::{self, Emulated, Paths, GUEST_DOMID, GUEST_NAME};
use super::wire::{Reply, Request};

/// What the user chose.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host devices to pass through as well (`BUS.ADDR`).
    pub devices: Vec<String>,
    /// Bound on every step.
    pub step_timeout: Duration,
    /// Bytes written to and read back from the emulated disk.
    pub storage_bytes: usize,
    /// Bytes through the loopback device, half each way.
    pub throughput_bytes: usize,
}

/// The text the emulated keyboard types.
const TYPED: &str = "Hello from dom0, via pvUSB!";
/// Size of the emulated disk.
const DISK_MIB: u64 = 16;
/// The controller the demo creates (the first free index of a new guest).
const DEVID: u32 = 0;
/// How long a process may take to exit after SIGTERM.
const GRACE: Duration = Duration::from_secs(5);

/// Why a stage failed, and which child's output explains it.
#[derive(Debug)]
struct Failure {
    message: String,
    child: Option<ProcId>,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Self {
            message,
            child: None,
        }
    }
}

fn with_child(child: ProcId) -> impl Fn(String) -> Failure {
    move |message| Failure {
        message,
        child: Some(child),
    }
}

/// A host device given with `--device`.
#[derive(Debug, Clone)]
struct RealDevice {
    spec: String,
    busid: String,
    port: u8,
}

/// The state of one run.
struct Demo {
    exe: PathBuf,
    paths: Paths,
    children: Children,
    timeout: Duration,
    stage: &'static str,
    xs: Option<XsClient>,
    guest: Option<GuestLink>,
    guest_id: Option<ProcId>,
    backend_id: Option<ProcId>,
    xenstore_id: Option<ProcId>,
    emulated: Vec<Emulated>,
    real: Vec<RealDevice>,
    opts: Options,
}

/// Runs the demo; `Err` is the one-line reason (details were printed).
pub fn run(opts: Options) -> Result<(), String> {
    let real = check_host_devices(&opts.devices)?;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the pvusb executable: {e}", e = Chain(&e)))?;
    // Short, under /tmp (the simulated transport's socket names must fit in
    // sun_path) and open to the backend's worker processes.
    let dir = pvusb_testkit::dir::create("pvusb-demo-")
        .map_err(|e| format!("cannot create a temp dir in /tmp: {e}", e = Chain(&e)))?;
    let paths = Paths::new(dir.path());
    let children = Children::default();
    watch_signals(children.clone(), paths.dir.clone())?;
    let emulated = stack::emulated_devices(&paths, DISK_MIB, TYPED);
    let mut demo = Demo {
        exe,
        paths,
        children,
        timeout: opts.step_timeout,
        stage: "start",
        xs: None,
        guest: None,
        guest_id: None,
        backend_id: None,
        xenstore_id: None,
        emulated,
        real,
        opts,
    };
    println!("pvusb demo: Xen paravirtual USB (usbif) with both ends in userspace, over the");
    println!(
        "simulated transport (shared memory, eventfds, an embedded xenstore). Work dir {}",
        dir.path().display()
    );
    let result = demo.script();
    let outcome = match result {
        Ok(()) => demo.finish(dir),
        Err(_) if demo.children.interrupted() => {
            // Ctrl-C killed the children under this step: the signal thread
            // is cleaning up and exits with 130; a failure report would mislead.
            loop {
                std::thread::park();
            }
        }
        Err(f) => {
            println!("\nFAILED at step \"{}\": {}", demo.stage, f.message);
            let ids: Vec<ProcId> = match f.child {
                Some(id) => vec![id],
                None => demo
                    .guest_id
                    .into_iter()
                    .chain(demo.backend_id)
                    .chain(demo.xenstore_id)
                    .collect(),
            };
            for id in ids {
                let tail = demo.children.tail(id);
                if !tail.is_empty() {
                    println!("   last lines of the {}:", demo.children.name(id));
                    for l in tail {
                        println!("     | {l}");
                    }
                }
            }
            demo.children.stop_all(Duration::from_secs(2));
            let removed = dir.close().is_ok();
            println!(
                "   cleaned up: processes stopped{}",
                if removed { ", temp dir removed" } else { "" }
            );
            Err(format!(
                "the demo failed at step \"{}\": {}",
                demo.stage, f.message
            ))
        }
    };
    outcome
}

/// Ctrl-C (or SIGTERM): stop the children, remove the directory, exit 130.
fn watch_signals(children: Children, dir: PathBuf) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot handle signals: {e}", e = Chain(&e)))?;
    std::thread::Builder::new()
        .name("demo-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                children.interrupt();
                eprintln!(
                    "\npvusb demo: interrupted; stopping the processes and removing {}",
                    dir.display()
                );
                children.stop_all(Duration::from_secs(2));
                let _ = std::fs::remove_dir_all(&dir);
                std::process::exit(130);
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the signal thread: {e}", e = Chain(&e)))
}

/// `--device` needs host USB; without it, one clear line says what to do.
fn check_host_devices(specs: &[String]) -> Result<Vec<RealDevice>, String> {
    let Some(first) = specs.first() else {
        return Ok(Vec::new());
    };
    if let Err(e) = pvusb_backend::usb::libusb::LibusbHost::new() {
        return Err(format!(
            "--device {first}: {e}. Run `pvusb demo` without --device, or on a machine \
             with USB devices and read/write access to /dev/bus/usb"
        ));
    }
    let sysfs = SysfsRoot::new("/sys");
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let (bus, addr) = match DeviceSpec::parse(spec) {
            Ok(DeviceSpec::BusAddr(b, a)) => (b, a),
            _ => {
                return Err(format!(
                    "--device {spec}: give BUS.ADDR as lsusb shows them, e.g. 1.6"
                ))
            }
        };
        let busids = sysfs
            .busids()
            .map_err(|e| format!("--device {spec}: cannot read /sys: {e}", e = Chain(&e)))?;
        let busid = busids
            .into_iter()
            .find(|b| {
                sysfs
                    .device(b)
                    .is_ok_and(|d| d.busnum == bus && d.devnum == addr)
            })
            .ok_or_else(|| {
                format!("--device {spec}: no such device; `lsusb` lists BUS.ADDR numbers")
            })?;
        let port = u8::try_from(4 + i).map_err(|_| "too many --device options".to_owned())?;
        out.push(RealDevice {
            spec: spec.clone(),
            busid,
            port,
        });
    }
    if out.len() > 27 {
        return Err("at most 27 --device options (31 controller ports)".into());
    }
    Ok(out)
}

impl Demo {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("XENSTORED_PATH", &self.paths.xs)
            .env_remove("PVUSB_CRASH_AT");
        c
    }

    /// A toolstack command over the fake sysfs of the emulated devices.
    fn toolstack(&self, args: &[&str]) -> Command {
        let mut c = self.command(args);
        c.arg("--timeout")
            .arg(self.timeout.as_secs().max(1).to_string())
            .env("PVUSB_SYSFS_ROOT", &self.paths.sysfs)
            .env("PVUSB_SYSFS_SIMULATED", "1");
        c
    }

    /// Runs a toolstack command; returns what it printed.
    fn run_toolstack(&self, name: &str, cmd: Command) -> Result<Vec<String>, Failure> {
        match self.children.run(name, cmd, self.timeout) {
            Ok(id) => Ok(self.children.stdout(id)),
            Err((message, child)) => Err(Failure { message, child }),
        }
    }

    /// Runs a toolstack command that returns only once the guest has done its
    /// part (ctrl-attach waits for the frontend to connect, ctrl-detach for it
    /// to close): starts the command, sends the guest `req` while the command
    /// waits, then waits for the command; returns what it printed. The guest's
    /// reply is left for the caller to read.
    fn run_toolstack_with_guest(
        &mut self,
        name: &str,
        cmd: Command,
        req: &Request,
    ) -> Result<Vec<String>, Failure> {
        let ctrl = self.children.spawn(name, cmd, false)?;
        let (g, _) = self.guest()?;
        g.send(req)?;
        let status = self
            .children
            .wait(ctrl.id, self.timeout)
            .map_err(with_child(ctrl.id))?;
        if !status.success() {
            return Err(with_child(ctrl.id)(format!(
                "`{name}` failed ({})",
                describe(status)
            )));
        }
        Ok(self.children.stdout(ctrl.id))
    }

    fn xs(&self) -> Result<&XsClient, Failure> {
        self.xs
            .as_ref()
            .ok_or_else(|| Failure::from("xenstore is not connected".to_owned()))
    }

    fn guest(&mut self) -> Result<(&mut GuestLink, ProcId), Failure> {
        match (self.guest.as_mut(), self.guest_id) {
            (Some(g), Some(id)) => Ok((g, id)),
            _ => Err("the guest is not running".to_owned().into()),
        }
    }

    fn call(&mut self, req: &Request) -> Result<Reply, Failure> {
        let timeout = self.timeout;
        let (g, id) = self.guest()?;
        g.call(req, timeout).map_err(with_child(id))
    }

    fn script(&mut self) -> Result<(), Failure> {
        self.start_stack()?;
        self.attach()?;
        self.containment()?;
        self.enumerate()?;
        self.storage()?;
        self.keyboard()?;
        self.throughput()?;
        self.shutdown()
    }

    fn start_stack(&mut self) -> Result<(), Failure> {
        heading("Stack: separate processes over the simulated transport");
        self.stage = "start the embedded xenstore";
        let s = self.children.spawn(
            "xenstore",
            stack::xenstored_command(&self.exe, &self.paths),
            false,
        )?;
        self.xenstore_id = Some(s.id);
        let xs = stack::connect_xenstore(&self.paths, self.timeout).map_err(with_child(s.id))?;
        line(format!(
            "xenstore  pid {:>7}  embedded xenstored on {}",
            s.pid,
            self.paths.xs.display()
        ));

        self.stage = "create the guest domain";
        stack::create_guest_domain(&xs)?;
        self.xs = Some(xs);
        line(format!(
            "domain {GUEST_DOMID}  \"{GUEST_NAME}\" created in xenstore and introduced"
        ));

        self.stage = "start the backend daemon";
        stack::fake_sysfs(&self.paths, &self.emulated)
            .map_err(|e| format!("cannot create the fake sysfs: {e}", e = Chain(&e)))?;
        let mut args = vec!["backend", "--transport", "sim", "--domid", "0"];
        let sim_dir = self.paths.dir.display().to_string();
        args.extend(["--sim-dir", &sim_dir]);
        if self.real.is_empty() {
            args.push("--no-host-usb");
        }
        let specs: Vec<String> = self.emulated.iter().map(|d| d.spec.clone()).collect();
        for s in &specs {
            args.extend(["--emulate", s]);
        }
        let b = self.children.spawn("backend", self.command(&args), false)?;
        self.backend_id = Some(b.id);
        self.wait_backend_devices(b.id)?;
        let list: Vec<String> = self
            .emulated
            .iter()
            .map(|d| format!("{} {}", d.busid, d.what))
            .collect();
        line(format!(
            "backend   pid {:>7}  dom0 daemon; emulated bus 200: {}",
            b.pid,
            list.join(", ")
        ));

        self.stage = "start the guest";
        let mut g = self.command(&["demo", "--role", "guest", "--sim-dir", &sim_dir]);
        g.arg("--xenstore")
            .arg(&self.paths.xs)
            .arg("--step-timeout")
            .arg(self.timeout.as_secs().to_string());
        let s = self.children.spawn("guest", g, true)?;
        self.guest_id = Some(s.id);
        let (Some(stdin), Some(stdout)) = (s.stdin, s.stdout) else {
            return Err(with_child(s.id)("the guest's pipes are missing".into()));
        };
        self.guest = Some(GuestLink::new(stdin, stdout));
        line(format!("guest     pid {:>7}  dom{GUEST_DOMID}, the pvUSB frontend (declared to xenstore as domain {GUEST_DOMID})", s.pid));
        Ok(())
    }

    /// The backend prints one line per emulated device once it has created them.
    fn wait_backend_devices(&self, id: ProcId) -> Result<(), Failure> {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let out = self.children.stdout(id);
            let all = self
                .emulated
                .iter()
                .all(|d| out.iter().any(|l| l.ends_with(&format!(" {}", d.busid))));
            if all {
                return Ok(());
            }
            if let Some(st) = self.children.try_status(id) {
                return Err(with_child(id)(format!(
                    "the backend exited ({})",
                    describe(st)
                )));
            }
            if std::time::Instant::now() >= deadline {
                return Err(with_child(id)(format!(
                    "the backend did not create its devices within {:?}",
                    self.timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn attach(&mut self) -> Result<(), Failure> {
        let ports = 3 + self.real.len();
        let ports_arg = format!("ports={ports}");
        heading(&format!(
            "Controller: pvusb ctrl-attach {GUEST_NAME} version=2 {ports_arg}"
        ));
        self.stage = "ctrl-attach";
        // ctrl-attach returns once backend and frontend are both Connected, so
        // the guest connects while it waits, like xen-hcd probing the new device.
        let cmd = self.toolstack(&["ctrl-attach", GUEST_NAME, "version=2", &ports_arg]);
        let printed =
            self.run_toolstack_with_guest("ctrl-attach", cmd, &Request::Connect { devid: DEVID })?;
        for l in printed {
            line(format!("toolstack: {l}"));
        }
        let timeout = self.timeout;
        let (g, gid) = self.guest()?;
        match g.reply(timeout).map_err(with_child(gid))? {
            Reply::Connected { num_ports, usb_ver } => line(format!(
                "guest:     USB {usb_ver} root hub with {num_ports} ports, xenbus Connected (rings granted, 512 conn requests posted)"
            )),
            other => return Err(format!("unexpected reply {other:?}").into()),
        }

        heading("Devices: pvusb dev-attach (crash-safe records, simulated driver unbinding)");
        self.stage = "dev-attach";
        for d in self.emulated.clone() {
            let port = format!("port={}", d.port);
            let out = self.run_toolstack(
                "dev-attach",
                self.toolstack(&["dev-attach", GUEST_NAME, &d.busid, "controller=0", &port]),
            )?;
            for l in out {
                line(format!("{l}  ({})", d.what));
            }
        }
        for d in self.real.clone() {
            let port = format!("port={}", d.port);
            let mut c = self.command(&["dev-attach", GUEST_NAME, &d.spec, "controller=0", &port]);
            c.arg("--timeout")
                .arg(self.timeout.as_secs().to_string())
                .arg("--sysfs-root")
                .arg("/sys");
            for l in self.run_toolstack("dev-attach", c)? {
                line(format!("{l}  (host device {})", d.busid));
            }
        }
        self.stage = "list";
        line(format!("pvusb list {GUEST_NAME}:"));
        for l in self.run_toolstack("list", self.toolstack(&["list", GUEST_NAME]))? {
            line(format!("  {l}"));
        }
        Ok(())
    }

    /// Shows the controller's worker process and proves its confinement
    /// from `/proc` (when the demo runs as root; otherwise says why not).
    fn containment(&mut self) -> Result<(), Failure> {
        heading("Containment: the controller runs in a confined worker process");
        self.stage = "find the worker process";
        let control = self.paths.dir.join("control.sock");
        let answer = crate::cmd_stats::request(&control, "stats\n")?;
        let v: serde_json::Value = serde_json::from_str(&answer)
            .map_err(|e| format!("the daemon's stats are not JSON: {e}"))?;
        let pid = v["controllers"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["domid"] == GUEST_DOMID && c["devid"] == DEVID)
            })
            .and_then(|c| c["worker_pid"].as_u64())
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| {
                Failure::from("the daemon names no worker process for the controller".to_owned())
            })?;
        self.stage = "check the worker's confinement";
        let st = pvusb_confine::status::of(pid)
            .map_err(|e| format!("/proc/{pid}/status: {e}", e = Chain(&e)))?;
        let fds = pvusb_confine::status::open_fds(pid)
            .map_err(|e| format!("/proc/{pid}/fd: {e}", e = Chain(&e)))?;
        line(format!(
            "worker    pid {pid:>7}  controller {DEVID} of domain {GUEST_DOMID}: uid {}, CapEff {:#x}, NoNewPrivs {}, Seccomp {} (2 = filter), {} open descriptors",
            st.uid[1], st.cap_eff, st.no_new_privs, st.seccomp, fds.len()
        ));
        let root = nix::unistd::geteuid().is_root();
        if root && (st.uid[1] == 0 || st.cap_eff != 0 || st.no_new_privs != 1 || st.seccomp != 2) {
            return Err(format!(
                "the worker is not confined: uid {}, CapEff {:#x}, NoNewPrivs {}, Seccomp {}",
                st.uid[1], st.cap_eff, st.no_new_privs, st.seccomp
            )
            .into());
        }
        if !root {
            line("          (not root: the worker keeps this user; run the demo as root to see it switch)");
        }
        Ok(())
    }

    fn busid_of(&self, port: u8) -> String {
        self.emulated
            .iter()
            .map(|d| (d.port, d.busid.clone()))
            .chain(self.real.iter().map(|d| (d.port, d.busid.clone())))
            .find(|(p, _)| *p == port)
            .map_or_else(|| "?".into(), |(_, b)| b)
    }

    fn all_ports(&self) -> Vec<u8> {
        self.emulated
            .iter()
            .map(|d| d.port)
            .chain(self.real.iter().map(|d| d.port))
            .collect()
    }

    fn enumerate(&mut self) -> Result<(), Failure> {
        heading("Enumerated by the guest through pvUSB (lsusb view)");
        self.stage = "enumerate the devices in the guest";
        let ports = self.all_ports();
        let Reply::Devices { devices } = self.call(&Request::Enumerate { ports })? else {
            return Err("unexpected reply to enumerate".to_owned().into());
        };
        for d in &devices {
            for l in device_line(d, &self.busid_of(d.port)) {
                line(l);
            }
        }
        Ok(())
    }

    fn storage(&mut self) -> Result<(), Failure> {
        let port = 1;
        heading(&format!(
            "Mass storage on port {port}: write, read back, compare"
        ));
        self.stage = "mass storage round trip";
        let bytes = self.opts.storage_bytes;
        let Reply::Storage(r) = self.call(&Request::Storage { port, bytes })? else {
            return Err("unexpected reply to storage".to_owned().into());
        };
        let medium = usize::try_from(r.blocks)
            .unwrap_or(usize::MAX)
            .saturating_mul(r.block_size as usize);
        line(format!(
            "INQUIRY \"{}\", {} blocks of {} bytes ({})",
            r.inquiry,
            r.blocks,
            r.block_size,
            mib(medium)
        ));
        let row = |what: String, speed: String, hash: &str| {
            line(format!(
                "{what:<36} {speed:>11}   sha256 {}",
                short_hash(hash)
            ))
        };
        row(
            format!("guest wrote {} of random data", mib(r.bytes)),
            rate(r.bytes, r.write_secs),
            &r.written_sha256,
        );
        row(
            "guest read it back".into(),
            rate(r.bytes, r.read_secs),
            &r.read_sha256,
        );
        let host = hash_file_prefix(&self.paths.disk, r.bytes)?;
        row(
            format!("backing file in dom0 (first {})", mib(r.bytes)),
            String::new(),
            &host,
        );
        if r.written_sha256 != r.read_sha256 || r.written_sha256 != host {
            return Err(format!(
                "checksums differ: written {}, read {}, backing file {host}",
                r.written_sha256, r.read_sha256
            )
            .into());
        }
        line("all three checksums match");
        Ok(())
    }

    fn keyboard(&mut self) -> Result<(), Failure> {
        let port = 2;
        heading(&format!(
            "HID keyboard on port {port}: keys typed in dom0, decoded in the guest"
        ));
        self.stage = "keyboard reports";
        let chars = TYPED.chars().count();
        let Reply::Keyboard(r) = self.call(&Request::Keyboard { port, chars })? else {
            return Err("unexpected reply to keyboard".to_owned().into());
        };
        line(format!(
            "{:<44} {TYPED:?}",
            "typed in dom0 on the emulated keyboard"
        ));
        line(format!(
            "{:<44} {:?}",
            format!("decoded in the guest from {} HID reports", r.reports),
            r.text
        ));
        line(format!("first reports: {}", r.sample.join(" ")));
        if r.text != TYPED {
            return Err(format!("the guest decoded {:?}, expected {TYPED:?}", r.text).into());
        }
        Ok(())
    }

    fn throughput(&mut self) -> Result<(), Failure> {
        let port = 3;
        heading(&format!(
            "Throughput: bulk transfers through the loopback device on port {port}"
        ));
        self.stage = "loopback throughput";
        let bytes = self.opts.throughput_bytes / 2;
        let Reply::Loopback(r) = self.call(&Request::Loopback { port, bytes })? else {
            return Err("unexpected reply to loopback".to_owned().into());
        };
        line(format!(
            "echo of {} bytes came back identical",
            r.echo_bytes
        ));
        line(format!(
            "bulk OUT {}: {}   bulk IN {}: {} (data checked)",
            mib(r.out_bytes),
            rate(r.out_bytes, r.out_secs),
            mib(r.in_bytes),
            rate(r.in_bytes, r.in_secs)
        ));
        let moved = r.out_bytes + r.in_bytes;
        line(format!(
            "{} in {:.2} s = {} overall; the device counted {} in, {} out",
            mib(moved),
            r.out_secs + r.in_secs,
            rate(moved, r.out_secs + r.in_secs),
            r.device_counters.0,
            r.device_counters.1
        ));
        let expect_in = (r.out_bytes + r.echo_bytes) as u64;
        if r.device_counters.0 < expect_in {
            return Err(format!(
                "the device consumed {} bytes, fewer than the {expect_in} sent",
                r.device_counters.0
            )
            .into());
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), Failure> {
        heading("Clean shutdown");
        self.stage = "dev-detach";
        let ports = self.all_ports();
        for p in &ports {
            let port = p.to_string();
            let mut cmd = self.toolstack(&["dev-detach", GUEST_NAME, "0", &port]);
            if self.real.iter().any(|d| d.port == *p) {
                cmd.arg("--sysfs-root")
                    .arg("/sys")
                    .env_remove("PVUSB_SYSFS_SIMULATED")
                    .env_remove("PVUSB_SYSFS_ROOT");
            }
            for l in self.run_toolstack("dev-detach", cmd)? {
                line(l);
            }
        }
        self.call(&Request::WaitGone {
            ports: ports.clone(),
        })?;
        line(format!("guest: ports {ports:?} empty"));

        self.stage = "ctrl-detach";
        let cmd = self.toolstack(&["ctrl-detach", GUEST_NAME, "0"]);
        for l in self.run_toolstack_with_guest("ctrl-detach", cmd, &Request::Close)? {
            line(l);
        }
        let timeout = self.timeout;
        let (g, gid) = self.guest()?;
        match g.reply(timeout).map_err(with_child(gid))? {
            Reply::Closed { clean: true } => {
                line("guest: controller released (grants ended, threads joined)")
            }
            other => {
                return Err(with_child(gid)(format!(
                    "the guest did not release its controller cleanly: {other:?}"
                )))
            }
        }

        self.stage = "stop the processes";
        let mut stopped = Vec::new();
        for id in [self.guest_id, self.backend_id].into_iter().flatten() {
            stopped.push(self.stop(id)?);
        }
        self.guest = None;
        self.stage = "check xenstore";
        let left = stack::leftover_nodes(self.xs()?, DEVID)?;
        if !left.is_empty() {
            return Err(format!("xenstore nodes left over: {}", left.join(", ")).into());
        }
        stack::destroy_guest_domain(self.xs()?)?;
        self.xs = None;
        if let Some(id) = self.xenstore_id {
            self.stage = "stop the processes";
            stopped.push(self.stop(id)?);
        }
        line(format!("SIGTERM: {}", stopped.join(", ")));
        Ok(())
    }

    /// SIGTERM one child; it must exit 0 within the grace period.
    fn stop(&self, id: ProcId) -> Result<String, Failure> {
        let name = self.children.name(id);
        match self.children.stop(id, GRACE) {
            (Some(st), true) if st.success() => Ok(format!("{name} exited 0")),
            (Some(st), true) => Err(with_child(id)(format!(
                "the {name} ended with {}",
                describe(st)
            ))),
            _ => Err(with_child(id)(format!(
                "the {name} did not exit within {GRACE:?} of SIGTERM; killed"
            ))),
        }
    }

    /// After a successful script: remove the directory and prove nothing is left.
    fn finish(self, dir: tempfile::TempDir) -> Result<(), String> {
        let running = self.children.running();
        let path = dir.path().to_owned();
        dir.close()
            .map_err(|e| format!("cannot remove {}: {e}", path.display(), e = Chain(&e)))?;
        if !running.is_empty() || path.exists() {
            return Err(format!(
                "leftovers: processes {running:?}, directory exists: {}",
                path.exists()
            ));
        }
        line(format!(
            "no leftovers: no demo process running, no controller nodes or device records in xenstore, {} removed",
            path.display()
        ));
        println!("\npvusb demo: every step passed.");
        Ok(())
    }
}

/// SHA-256 of the first `len` bytes of a file.
fn hash_file_prefix(path: &Path, len: usize) -> Result<String, Failure> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("cannot read {}: {e}", path.display(), e = Chain(&e)))?;
    Ok(Sha256::digest(&buf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
