//! What a child does, by role. Each prepares like a worker (tracing to stderr,
//! only descriptors 0, 1 and 2), confines itself, then acts and prints lines
//! the parent waits for. After confinement it can only write to stdout and
//! read stdin, which is how it talks to the parent.

use std::io::BufRead;
use std::os::fd::{AsFd, AsRawFd};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use pvusb_confine::{confine, Confinement, Outcome, Report};
use pvusb_xen::sim::SimXen;
use pvusb_xen::{EventChannels, GrantMapper, SharedMem};

pub fn run(role: &str) -> ExitCode {
    prepare();
    match role {
        "status" => status(),
        "basics" => basics(),
        "forbidden" => forbidden(),
        "abort" => abort(),
        "landlock_only" => landlock_only(),
        "threads_before" => threads_before(),
        "sim" => sim(),
        other => panic!("no child role {other}"),
    }
    ExitCode::SUCCESS
}

/// Closes whatever the parent's parent let through (a make jobserver, say),
/// so the parent can expect exactly 0, 1 and 2; starts tracing to stderr.
fn prepare() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // The directory's own descriptor is gone already: EBADF, ignored.
        let _ = nix::unistd::close(fd);
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
}

/// Prints the report: a `REPORT` line and a `STEP name=applied|skipped=text` each.
fn report(r: &Report) {
    println!("REPORT {r}");
    for step in r.steps() {
        match &step.outcome {
            Outcome::Applied(what) => println!("STEP {}=applied={what}", step.name),
            Outcome::Skipped(why) => println!("STEP {}=skipped={why}", step.name),
        }
    }
}

fn confined(c: &Confinement) {
    let r = confine(c).unwrap();
    report(&r);
    tracing::info!(fully = r.fully_confined(), "child confined: {r}");
}

/// Waits for the parent to close stdin (or write a line).
fn await_parent() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

fn status() {
    confined(&Confinement::default());
    println!("READY");
    await_parent();
}

/// What the worker does after confinement, each once: a named thread, tracing,
/// a thread that panics, an eventfd passed over a UNIX socketpair (SCM_RIGHTS) and read through the
/// received descriptor, poll, a timerfd, Mutex and Condvar, sleep, and a stray
/// open that must fail with EACCES rather than kill.
fn basics() {
    confined(&Confinement::default());
    tracing::info!("tracing to stderr works under the filter");

    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
    let got = Arc::new((Mutex::new(None), Condvar::new()));
    let got2 = Arc::clone(&got);
    let thread = std::thread::Builder::new()
        .name("confined-worker".into())
        .spawn(move || {
            let mut byte = [0u8; 1];
            let mut iov = [std::io::IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = recvmsg::<()>(
                theirs.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            let Some(ControlMessageOwned::ScmRights(fds)) = msg.cmsgs().unwrap().next() else {
                panic!("no descriptor received")
            };
            // The received descriptor is the same eventfd: block on it.
            let mut value = [0u8; 8];
            assert_eq!(nix::unistd::read(fds[0], &mut value).unwrap(), 8);
            nix::unistd::close(fds[0]).unwrap();
            let (lock, cv) = &*got2;
            *lock.lock().unwrap() = Some(u64::from_ne_bytes(value));
            cv.notify_all();
            nix::unistd::write(&theirs, b"k").unwrap();
        })
        .unwrap();
    let iov = [std::io::IoSlice::new(b"x")];
    let fds = [efd.as_raw_fd()];
    sendmsg::<()>(
        mine.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    efd.write(5).unwrap();
    let mut ready = [PollFd::new(mine.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut ready, PollTimeout::from(10_000u16)).unwrap(), 1);
    let (lock, cv) = &*got;
    let value = cv
        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(10), |v| {
            v.is_none()
        })
        .unwrap()
        .0;
    assert_eq!(*value, Some(5));
    drop(value);
    thread.join().unwrap();

    let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_CLOEXEC).unwrap();
    let in_1ms = TimeSpec::from_duration(Duration::from_millis(1));
    timer
        .set(Expiration::OneShot(in_1ms), TimerSetTimeFlags::empty())
        .unwrap();
    let mut ready = [PollFd::new(timer.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut ready, PollTimeout::from(10_000u16)).unwrap(), 1);
    timer.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1));

    // A panicking thread unwinds and is joined as an error, as the worker
    // catches a controller's panic at the thread boundary.
    let panicked = std::thread::spawn(|| panic!("a planned panic in a confined thread")).join();
    assert!(panicked.is_err());

    let e = std::fs::File::open("/etc/passwd").unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    println!("BASICS ok");
}

fn forbidden() {
    confined(&Confinement::default());
    println!("READY");
    // socket(AF_INET, ...): not on the list, so the kernel kills the process.
    let result = std::net::TcpListener::bind("127.0.0.1:0");
    println!("SURVIVED {result:?}");
}

fn abort() {
    confined(&Confinement::default());
    println!("READY");
    // raise(SIGABRT) is tgkill on this very process, which the list allows.
    std::process::abort();
}

fn landlock_only() {
    confined(&Confinement {
        seccomp: false,
        ..Confinement::default()
    });
    match std::fs::File::open("/etc/passwd") {
        Ok(_) => println!("OPEN opened"),
        Err(e) => println!("OPEN {:?}", e.kind()),
    }
}

fn threads_before() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || rx.recv());
    match confine(&Confinement::default()) {
        Ok(r) => println!("CONFINED {r}"),
        Err(e) => println!("ERROR {e}"),
    }
    drop(tx);
    let _ = other.join();
}

/// The backend of the simulated transport, confined before it first connects.
fn sim() {
    let var = |name| std::env::var(name).unwrap();
    let back = SimXen::new(std::path::Path::new(&var("SIM_DIR")), 0);
    let gref = var("SIM_GREF").parse().unwrap();
    let port = var("SIM_PORT").parse().unwrap();
    confined(&Confinement::default());
    let mapping = back.map(1, &[gref], true).unwrap();
    let mut b = [0u8; 17];
    mapping.read(0, &mut b).unwrap();
    assert_eq!(&b, b"from the frontend");
    mapping.write(64, b"from the backend").unwrap();
    let ch = back.bind_interdomain(1, port).unwrap();
    pvusb_xen::EventChannel::notify(&ch).unwrap();
    await_parent();
    drop(ch);
    drop(mapping);
    println!("SIM ok");
}
