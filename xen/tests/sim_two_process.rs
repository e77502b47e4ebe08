//! The simulated transport across two processes: the test re-executes its own
//! binary to run the other domain (`--exact <child test> --ignored`), with the
//! rendezvous directory and the child's role in environment variables. Refs and
//! ports travel through small files in that directory, standing in for xenstore.
//!
//! The `child_*` tests are `#[ignore]`d and return at once unless started by a
//! parent, so `cargo test -- --ignored` stays harmless.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod after_death;

use after_death::copies_after_death;
use pvusb_testkit::wait::within;
use pvusb_xen::sim::{SimEventChannel, SimGrantedPages, SimXen, NR_REFS};
use pvusb_xen::{
    CopySeg, EventChannel, EventChannels, EvtchnError, GrantAllocator, GrantError, GrantMapper,
    GrantedPages, SharedMem, PAGE_SIZE,
};

const ENV_DIR: &str = "PVUSB_SIM_TEST_DIR";
const ENV_ROLE: &str = "PVUSB_SIM_TEST_ROLE";
/// Bound for every cross-process wait: generous because the machine is shared; a
/// wait that hits it fails the test instead of hanging it.
const LONG: Option<Duration> = Some(Duration::from_secs(60));

fn seg(gref: u32, offset: u16, len: u16) -> CopySeg {
    CopySeg { gref, offset, len }
}

fn spawn_child(test: &str, dir: &Path, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_ROLE, role)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The directory and role when running as a child, `None` otherwise.
fn child_env() -> Option<(PathBuf, String)> {
    let dir = std::env::var_os(ENV_DIR)?;
    Some((
        PathBuf::from(dir),
        std::env::var(ENV_ROLE).unwrap_or_default(),
    ))
}

/// Publish numbers under `name` atomically (write + rename), like a xenstore write.
fn publish(dir: &Path, name: &str, values: &[u32]) {
    let text: Vec<String> = values.iter().map(u32::to_string).collect();
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, text.join(" ")).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// Wait (bounded) for `name` to be published; fail early if `child` exits first.
fn await_published(dir: &Path, name: &str, mut child: Option<&mut Child>) -> Vec<u32> {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            return text
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
        }
        if let Some(c) = child.as_deref_mut() {
            if let Some(status) = c.try_wait().unwrap() {
                panic!("child exited ({status}) before publishing {name}");
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} never published"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn assert_child_ok(mut c: Child) {
    let status = c.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

// ---- grant, map, copy, refusals, ping-pong, StillMapped -------------------------

#[test]
fn frontend_and_backend_in_two_processes() {
    let dir = pvusb_testkit::dir::create("pvs").unwrap();
    let mut child = spawn_child("child_frontend", dir.path(), "frontend");
    let v = await_published(dir.path(), "front", Some(&mut child));
    let [g0, g1, ro, other, port] = v[..] else {
        panic!("bad publication {v:?}")
    };

    let back = SimXen::new(dir.path(), 0);
    let m = back.map(1, &[g0, g1], true).unwrap();
    let mut b = [0u8; 23];
    m.read(0, &mut b).unwrap();
    assert_eq!(&b, b"hello from the frontend");
    let mut across = [0u8; 8];
    back.copy_from_guest(1, &[seg(g0, 4092, 4), seg(g1, 0, 4)], &mut across)
        .unwrap();
    assert_eq!(&across, b"endsnext");

    // Refusals, decided against the frontend's table from this other process.
    let mut buf = [0u8; 4];
    assert!(matches!(
        back.copy_from_guest(1, &[seg(other, 0, 4)], &mut buf),
        Err(GrantError::NotGranted { domid: 0, .. })
    ));
    assert!(matches!(
        back.map(1, &[other], false),
        Err(GrantError::NotGranted { .. })
    ));
    back.copy_from_guest(1, &[seg(ro, 0, 4)], &mut buf).unwrap();
    assert_eq!(&buf, b"read");
    assert!(matches!(
        back.copy_to_guest(1, &[seg(ro, 0, 4)], &buf),
        Err(GrantError::ReadOnly { .. })
    ));
    assert!(matches!(
        back.map(1, &[ro], true),
        Err(GrantError::ReadOnly { .. })
    ));
    for bad in [0, NR_REFS, NR_REFS + 7, u32::MAX] {
        assert!(matches!(
            back.copy_from_guest(1, &[seg(bad, 0, 4)], &mut buf),
            Err(GrantError::BadRef { .. })
        ));
        assert!(matches!(
            back.map(1, &[g0, bad], true),
            Err(GrantError::BadRef { .. })
        ));
    }
    assert!(matches!(
        back.copy_to_guest(1, &[seg(g1, 4094, 4)], &buf),
        Err(GrantError::BadSegment(_))
    ));

    // Events: 1000 round trips, each a notify answered by the frontend.
    let ch = back.bind_interdomain(1, port).unwrap();
    assert!(matches!(
        back.bind_interdomain(1, port),
        Err(EvtchnError::BadPort { .. })
    ));
    for _ in 0..1000 {
        ch.notify().unwrap();
        assert!(ch.wait(LONG).unwrap());
    }

    back.copy_to_guest(1, &[seg(g1, 100, 12)], b"backend copy")
        .unwrap();
    m.write(8, b"mapped write").unwrap();
    ch.notify().unwrap();
    assert!(
        ch.wait(LONG).unwrap(),
        "frontend checked the data and saw StillMapped"
    );
    drop(m);
    ch.notify().unwrap();
    assert!(ch.wait(LONG).unwrap(), "frontend ended access");
    assert!(matches!(
        back.copy_from_guest(1, &[seg(g0, 0, 4)], &mut buf),
        Err(GrantError::BadRef { .. })
    ));
    drop(ch);
    assert_child_ok(child);
    // The frontend process is gone: errors, not hangs. A copy does not notice
    // the death itself (no syscall per copy) and is decided by the grant words
    // as the frontend left them (g0's access was ended); a map notices it, and
    // copies after that map fail as unavailable.
    assert!(matches!(
        back.copy_from_guest(1, &[seg(g0, 0, 4)], &mut buf),
        Err(GrantError::BadRef { .. })
    ));
    assert!(matches!(
        back.map(1, &[g1], false),
        Err(GrantError::Unavailable(_))
    ));
    assert!(matches!(
        back.copy_from_guest(1, &[seg(g1, 0, 4)], &mut buf),
        Err(GrantError::Unavailable(_))
    ));
}

#[test]
#[ignore = "child process of frontend_and_backend_in_two_processes"]
fn child_frontend() {
    let Some((dir, _)) = child_env() else { return };
    let front = SimXen::new(&dir, 1);
    let pages = front.alloc(0, 2, true).unwrap();
    let ro = front.alloc(0, 1, false).unwrap();
    let other = front.alloc(7, 1, true).unwrap();
    let ch = front.alloc_unbound(0).unwrap();
    pages.write(0, b"hello from the frontend").unwrap();
    pages.write(PAGE_SIZE - 4, b"endsnext").unwrap();
    ro.write(0, b"read only").unwrap();
    let r = pages.refs();
    publish(
        &dir,
        "front",
        &[r[0], r[1], ro.refs()[0], other.refs()[0], ch.port()],
    );

    for _ in 0..1000 {
        assert!(ch.wait(LONG).unwrap());
        ch.notify().unwrap();
    }

    assert!(ch.wait(LONG).unwrap());
    let mut b = [0u8; 12];
    pages.read(PAGE_SIZE + 100, &mut b).unwrap();
    assert_eq!(&b, b"backend copy");
    pages.read(8, &mut b).unwrap();
    assert_eq!(&b, b"mapped write");
    assert!(matches!(
        pages.try_end_access(),
        Err(GrantError::StillMapped { .. })
    ));
    ch.notify().unwrap();

    assert!(ch.wait(LONG).unwrap());
    pages.try_end_access().unwrap();
    ch.notify().unwrap();
    // The backend closes its end when done.
    assert!(matches!(ch.wait(LONG), Err(EvtchnError::PeerGone)));
}

// ---- a backend that dies, and one that restarts -----------------------------------

/// One life of `child_backend`: it maps the page, writes `word` and notifies;
/// while it holds the mapping the grant cannot be ended; once notified it
/// exits, which closes its end of `ch`.
fn backend_wrote_and_left(
    ch: &SimEventChannel,
    pages: &SimGrantedPages,
    word: &[u8; 5],
    child: Child,
) {
    assert!(ch.wait(LONG).unwrap());
    let mut b = [0u8; 5];
    pages.read(0, &mut b).unwrap();
    assert_eq!(&b, word);
    assert!(matches!(
        pages.try_end_access(),
        Err(GrantError::StillMapped { .. })
    ));
    ch.notify().unwrap();
    assert!(matches!(ch.wait(LONG), Err(EvtchnError::PeerGone)));
    assert_child_ok(child);
}

#[test]
fn a_dead_backend_releases_its_mappings_and_a_new_one_maps_again() {
    let dir = pvusb_testkit::dir::create("pvs").unwrap();
    let front = SimXen::new(dir.path(), 1);
    let pages = front.alloc(0, 1, true).unwrap();
    let gref = pages.refs()[0];
    let ch = front.alloc_unbound(0).unwrap();
    publish(dir.path(), "front", &[gref, ch.port()]);

    let first = spawn_child("child_backend", dir.path(), "dies");
    backend_wrote_and_left(&ch, &pages, b"alive", first);

    // Reconnect as a frontend does: a fresh port, the same grant.
    let ch = front.alloc_unbound(0).unwrap();
    publish(dir.path(), "front2", &[gref, ch.port()]);
    let second = spawn_child("child_backend", dir.path(), "restarts");
    backend_wrote_and_left(&ch, &pages, b"again", second);

    // The second backend unmapped; the first never did, its connection closing
    // releases its count. That release runs on the server thread, so allow it a
    // bounded moment (this is a liveness bound, not a timing assertion).
    let start = Instant::now();
    loop {
        match pages.try_end_access() {
            Ok(()) => break,
            Err(GrantError::StillMapped { .. }) if start.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("the dead backend's mapping was never released: {e}"),
        }
    }
}

#[test]
#[ignore = "child process of a_dead_backend_releases_its_mappings_and_a_new_one_maps_again"]
fn child_backend() {
    let Some((dir, role)) = child_env() else {
        return;
    };
    let name = if role == "dies" { "front" } else { "front2" };
    let v = await_published(&dir, name, None);
    let [gref, port] = v[..] else {
        panic!("bad publication {v:?}")
    };
    let back = SimXen::new(&dir, 0);
    let m = back.map(1, &[gref], true).unwrap();
    let ch = back.bind_interdomain(1, port).unwrap();
    if role == "dies" {
        m.write(0, b"alive").unwrap();
        ch.notify().unwrap();
        assert!(ch.wait(LONG).unwrap());
        // Crash: no destructor runs, the mapping is never unmapped explicitly.
        std::process::exit(0);
    }
    let mut b = [0u8; 5];
    back.copy_from_guest(1, &[seg(gref, 0, 5)], &mut b).unwrap();
    assert_eq!(&b, b"alive");
    back.copy_to_guest(1, &[seg(gref, 0, 5)], b"again").unwrap();
    ch.notify().unwrap();
    assert!(ch.wait(LONG).unwrap());
    drop(m);
    drop(ch);
}

// ---- a frontend that dies ----------------------------------------------------------

#[test]
fn a_dead_frontend_is_an_error_for_the_backend_not_a_hang() {
    let dir = pvusb_testkit::dir::create("pvs").unwrap();
    let mut child = spawn_child("child_frontend_dies", dir.path(), "dies");
    let v = await_published(dir.path(), "front", Some(&mut child));
    let [gref, port] = v[..] else {
        panic!("bad publication {v:?}")
    };
    let back = SimXen::new(dir.path(), 0);
    let m = back.map(1, &[gref], true).unwrap();
    let ch = back.bind_interdomain(1, port).unwrap();
    let mut b = [0u8; 4];
    back.copy_from_guest(1, &[seg(gref, 0, 4)], &mut b).unwrap();
    assert_eq!(&b, b"soon");
    ch.notify().unwrap();

    // No timeout reached: the death itself ends the wait.
    assert!(matches!(ch.wait(LONG), Err(EvtchnError::PeerGone)));
    assert!(matches!(ch.ack(), Err(EvtchnError::PeerGone)));
    assert_child_ok(child);
    // Copies make no syscall, so they do not notice the death (module docs of
    // `sim`, "Copies and a granter's death"): they neither hang nor panic and
    // work on the dead granter's pages as it left them.
    let (copied, written) = copies_after_death(&back, gref);
    assert_eq!(copied.unwrap(), *b"soon");
    written.unwrap();
    // Map and bind report the death; after that map, copies fail too.
    let back2 = back.clone();
    let (mapped, bound, copied_after) = within(move || {
        let mapped = back2.map(1, &[gref], false).map(drop);
        let bound = back2.bind_interdomain(1, port).map(drop);
        let copied_after = back2.copy_to_guest(1, &[seg(gref, 0, 4)], b"more");
        (mapped, bound, copied_after)
    });
    assert!(matches!(mapped, Err(GrantError::Unavailable(_))));
    assert!(matches!(bound, Err(EvtchnError::Unavailable(_))));
    assert!(matches!(copied_after, Err(GrantError::Unavailable(_))));
    // The orphaned mapping is still ordinary memory: using and dropping it is safe.
    m.read(0, &mut b).unwrap();
    assert_eq!(
        &b, b"late",
        "the copy after the death went to the same pages"
    );
    m.write(0, b"safe").unwrap();
    drop(m);
}

#[test]
#[ignore = "child process of a_dead_frontend_is_an_error_for_the_backend_not_a_hang"]
fn child_frontend_dies() {
    let Some((dir, _)) = child_env() else { return };
    let front = SimXen::new(&dir, 1);
    let pages = front.alloc(0, 1, true).unwrap();
    pages.write(0, b"soon").unwrap();
    let ch = front.alloc_unbound(0).unwrap();
    publish(&dir, "front", &[pages.refs()[0], ch.port()]);
    assert!(ch.wait(LONG).unwrap());
    // Crash without cleaning up: the socket file stays behind, the server is gone.
    std::process::exit(0);
}
