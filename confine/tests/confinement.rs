//! `confine()` tested in child processes: the test binary runs itself with
//! [`ROLE`] naming what the child does (`children.rs`), and the parent checks
//! the child from outside (`/proc/PID/status`, its descriptors, how it died).
//!
//! Its own `main` (`harness = false`), because `confine()` wants a process with
//! one thread and libtest runs every test on a thread of its own. It prints
//! libtest's lines, takes a name filter and `--list`.

#[path = "confinement/children.rs"]
mod children;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use pvusb_confine::{status, violation};
use pvusb_xen::sim::SimXen;
use pvusb_xen::{EventChannel, EventChannels, GrantAllocator, GrantedPages, SharedMem};

/// The environment variable naming a child's role.
const ROLE: &str = "PVUSB_CONFINE_TEST_ROLE";
/// Bound for every wait on a child: generous, the machine is shared.
const LONG: Duration = Duration::from_secs(60);

const CASES: &[(&str, fn())] = &[
    (
        "a_confined_child_has_no_privilege_and_three_descriptors",
        confined_status,
    ),
    ("the_worker_basics_work_under_the_filter", basics),
    (
        "a_forbidden_syscall_kills_with_sigsys_and_is_named",
        forbidden,
    ),
    ("an_abort_is_sigabrt_not_a_violation", abort),
    ("landlock_alone_denies_opening_a_file", landlock_only),
    ("a_second_thread_is_refused", threads_before),
    ("the_simulated_transport_works_from_a_confined_backend", sim),
];

fn main() -> ExitCode {
    if let Ok(role) = std::env::var(ROLE) {
        return children::run(&role);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let cases: Vec<_> = CASES
        .iter()
        .filter(|(name, _)| filter.is_none_or(|f| name.contains(f.as_str())))
        .collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in &cases {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    println!("\nrunning {} tests", cases.len());
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let ok = catch_unwind(AssertUnwindSafe(case)).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed.push(*name);
        }
    }
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {} passed; {} failed; 0 ignored; 0 measured; {} filtered out\n",
        cases.len() - failed.len(),
        failed.len(),
        CASES.len() - cases.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A child running one role, its stdout read line by line in a thread.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

fn spawn(role: &str, env: &[(&str, String)]) -> Running {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, role)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stdin = child.stdin.take();
    Running {
        child,
        stdin,
        lines,
    }
}

impl Running {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// The rest of the next line starting with `prefix` (earlier lines are skipped).
    fn line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(e) => panic!("no line {prefix:?} from the child: {e}"),
            }
        }
    }

    /// Closes the child's stdin (its signal to exit) and waits for it.
    fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + LONG;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child.kill().unwrap();
                panic!("the child did not exit");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn step(&self, name: &str) -> Step {
        Step::parse(&self.line(&format!("STEP {name}=")))
    }
}

/// A step of the child's report, as `children::report` prints it.
#[derive(Debug)]
enum Step {
    Applied(String),
    Skipped(String),
}

impl Step {
    fn parse(text: &str) -> Step {
        match text.split_once('=') {
            Some(("applied", what)) => Step::Applied(what.into()),
            Some(("skipped", why)) => Step::Skipped(why.into()),
            _ => panic!("bad step line {text:?}"),
        }
    }

    fn applied(&self) -> bool {
        matches!(self, Step::Applied(_))
    }
}

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn confined_status() {
    let child = spawn("status", &[]);
    println!("    report: {}", child.line("REPORT "));
    let steps = ["namespaces", "bounding set", "user", "capabilities"];
    let [ns, bounding, user, caps] = steps.map(|s| child.step(s));
    let [nnp, landlock, seccomp] = ["no_new_privs", "landlock", "seccomp"].map(|s| child.step(s));
    assert!(caps.applied() && nnp.applied() && seccomp.applied());
    child.line("READY");
    let s = status::of(child.pid()).unwrap();
    assert_eq!((s.cap_eff, s.cap_prm), (0, 0), "{s:?}");
    assert_eq!((s.no_new_privs, s.seccomp), (1, 2), "{s:?}");
    if root() {
        assert!(
            user.applied() && bounding.applied(),
            "{user:?} {bounding:?}"
        );
        assert!(s.uid.iter().all(|&u| u != 0), "{s:?}");
        assert!(s.gid.iter().all(|&g| g != 0), "{s:?}");
    } else {
        println!("    skipped: the user switch needs root ({user:?})");
    }
    if let Step::Skipped(why) = &landlock {
        println!("    landlock skipped: {why}");
    }
    match &ns {
        Step::Applied(_) => {
            let net = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
            assert_ne!(net(&child.pid().to_string()), net("self"));
        }
        Step::Skipped(why) => println!("    namespaces skipped: {why}"),
    }
    // The child started from 0, 1 and 2 alone (it closed anything inherited),
    // so any other descriptor is one confine() left open.
    let fds = status::open_fds(child.pid()).unwrap();
    let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
    assert_eq!(numbers, [0, 1, 2], "{fds:?}");
    assert!(
        fds[0].1.starts_with("pipe:") && fds[1].1.starts_with("pipe:"),
        "{fds:?}"
    );
    assert!(child.finish().success());
}

fn basics() {
    let child = spawn("basics", &[]);
    assert_eq!(child.line("BASICS"), "ok");
    let status = child.finish();
    assert!(status.success(), "{status}");
}

fn forbidden() {
    let child = spawn("forbidden", &[]);
    child.line("READY");
    let pid = child.pid();
    let status = child.finish();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status}");
    // The audit record may reach the kernel log a moment after the death.
    let deadline = Instant::now() + Duration::from_secs(3);
    let found = loop {
        match violation::seccomp_syscall_of(pid) {
            Some(v) => break Some(v),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    match found {
        Some(v) => {
            println!("    the kernel log names {} ({})", v.name, v.syscall);
            assert_eq!((v.syscall, v.name.as_str()), (libc::SYS_socket, "socket"));
        }
        None => {
            println!("    no seccomp record of pid {pid} in /dev/kmsg (unreadable or not logged)")
        }
    }
}

fn abort() {
    let child = spawn("abort", &[]);
    child.line("READY");
    let status = child.finish();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
}

fn landlock_only() {
    let child = spawn("landlock_only", &[]);
    let landlock = child.step("landlock");
    let opened = child.line("OPEN");
    match landlock {
        Step::Applied(what) => {
            println!("    landlock {what}");
            assert_eq!(opened, "PermissionDenied");
        }
        Step::Skipped(why) => println!("    skipped: landlock {why}"),
    }
    assert!(child.finish().success());
}

fn threads_before() {
    let child = spawn("threads_before", &[]);
    let error = child.line("ERROR");
    assert!(error.contains("one thread, this one has 2"), "{error}");
    assert!(child.finish().success());
}

/// The parent is the frontend (domain 1), the confined child the backend: it
/// connects to the rendezvous, receives memfds and eventfds over `SCM_RIGHTS`,
/// maps the grant and signals the event channel, all after confinement.
fn sim() {
    let dir = tempfile::tempdir().unwrap();
    // The worker's user must reach the rendezvous (a residual risk in the docs).
    let open = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir.path(), 0o755);
    let front = SimXen::new(dir.path(), 1);
    let pages = front.alloc(0, 1, true).unwrap();
    pages.write(0, b"from the frontend").unwrap();
    let ch = front.alloc_unbound(0).unwrap();
    open(&SimXen::socket_path(dir.path(), 1), 0o777);
    let env = [
        ("SIM_DIR", dir.path().display().to_string()),
        ("SIM_GREF", pages.refs()[0].to_string()),
        ("SIM_PORT", ch.port().to_string()),
    ];
    let mut child = spawn("sim", &env);
    assert!(ch.wait(Some(LONG)).unwrap(), "the backend never signalled");
    let mut b = [0u8; 16];
    pages.read(64, &mut b).unwrap();
    assert_eq!(&b, b"from the backend");
    child.stdin.as_mut().unwrap().write_all(b"done\n").unwrap();
    assert_eq!(child.line("SIM"), "ok");
    assert!(child.finish().success());
}
