//! The filtering proxy between a confined worker and xenstore: what a worker in
//! scope can do through it, what it is refused (with nothing changed upstream),
//! and how the proxy ends.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pvusb_testkit::wait::{events_until, next_event};
use pvusb_testkit::xenstore::value_at;
use pvusb_testkit::{wait_for, Xenstore, LIVENESS};
use pvusb_xenstore::proxy::{Proxy, ProxyHandle};
use pvusb_xenstore::wire::{read_message, Message, MsgType, RawHeader};
use pvusb_xenstore::{Access, Perm, Tx, XsClient, XsError};

mod worker_scope;

use worker_scope::{scope, server, BACK, FRONT, RECORDS};

struct Rig {
    proxy: ProxyHandle,
    /// The worker's side: a client over the proxy's socket.
    worker: XsClient,
    /// A dom0 connection that bypasses the proxy, to check what happened.
    direct: XsClient,
    fx: Xenstore,
}

/// A server with a guest's frontend directory and a host device record, and a
/// proxy whose worker side is a raw socket.
fn raw_rig() -> (Xenstore, XsClient, ProxyHandle, UnixStream) {
    let (fx, direct) = server();
    let (worker_end, proxy_end) = UnixStream::pair().unwrap();
    let proxy = Proxy::spawn(fx.path(), proxy_end, Arc::new(scope()), "test".into()).unwrap();
    worker_end.set_read_timeout(Some(LIVENESS)).unwrap();
    (fx, direct, proxy, worker_end)
}

fn rig() -> Rig {
    let (fx, direct, proxy, worker_end) = raw_rig();
    worker_end.set_read_timeout(None).unwrap();
    Rig {
        proxy,
        worker: XsClient::from_stream(worker_end).unwrap(),
        direct,
        fx,
    }
}

/// Reads until the proxy closes the connection; returns what came before.
fn until_closed(s: &mut UnixStream) -> Vec<u8> {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => {}
        // Closing with unread input resets the connection.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the proxy did not close the connection: {e}"),
    }
    rest
}

fn is_access(r: Result<impl std::fmt::Debug, XsError>) -> bool {
    matches!(r, Err(XsError::Access(_)))
}

#[test]
fn requests_in_scope_pass_through() {
    let r = rig();
    let w = &r.worker;
    let state = format!("{FRONT}/state");
    assert_eq!(value_at(w, &state).as_deref(), Some("1"));
    assert_eq!(w.directory(Tx::NONE, FRONT).unwrap(), vec!["state"]);
    assert_eq!(w.read(Tx::NONE, &format!("{FRONT}/none")).unwrap(), None);
    assert!(!w.get_perms(Tx::NONE, &state).unwrap().is_empty());

    w.write(Tx::NONE, &format!("{BACK}/state"), "2").unwrap();
    w.mkdir(Tx::NONE, &format!("{BACK}/port")).unwrap();
    w.write(Tx::NONE, &format!("{BACK}/port/1"), "1-2").unwrap();
    w.rm(Tx::NONE, &format!("{BACK}/port/1")).unwrap();
    assert_eq!(w.directory(Tx::NONE, BACK).unwrap(), vec!["port", "state"]);
    w.write(Tx::NONE, &format!("{RECORDS}/1-2/opened"), "1")
        .unwrap();
    assert_eq!(
        value_at(w, &format!("{RECORDS}/1-2/opened")).as_deref(),
        Some("1")
    );

    let d = &r.direct;
    assert_eq!(value_at(d, &format!("{BACK}/state")).as_deref(), Some("2"));
    assert_eq!(
        d.directory(Tx::NONE, &format!("{BACK}/port"))
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        value_at(d, &format!("{RECORDS}/1-2/opened")).as_deref(),
        Some("1")
    );
    w.rm(Tx::NONE, &format!("{RECORDS}/1-2/opened")).unwrap();
    assert!(!d
        .exists(Tx::NONE, &format!("{RECORDS}/1-2/opened"))
        .unwrap());
    w.rm(Tx::NONE, BACK).unwrap();
    assert!(!d.exists(Tx::NONE, BACK).unwrap());
    assert_eq!(r.proxy.denied(), 0);
    assert!(r.proxy.is_running());
}

#[test]
fn watch_events_come_through_the_proxy() {
    let r = rig();
    let front = r.worker.watch(FRONT).unwrap();
    assert_eq!(next_event(front.receiver()), FRONT, "initial fire");
    let back = r.worker.watch(BACK).unwrap();
    assert_eq!(next_event(back.receiver()), BACK);
    r.direct
        .write(Tx::NONE, &format!("{FRONT}/state"), "3")
        .unwrap();
    events_until(front.receiver(), &format!("{FRONT}/state"));
    r.worker
        .write(Tx::NONE, &format!("{BACK}/state"), "4")
        .unwrap();
    events_until(back.receiver(), &format!("{BACK}/state"));
    // Unwatching goes through too: no more events for the dropped watch.
    drop(front);
    r.direct
        .write(Tx::NONE, &format!("{FRONT}/other"), "x")
        .unwrap();
    r.worker
        .write(Tx::NONE, &format!("{BACK}/state"), "5")
        .unwrap();
    events_until(back.receiver(), &format!("{BACK}/state"));
    assert_eq!(r.proxy.denied(), 0);
}

#[test]
fn a_transaction_through_the_proxy_commits() {
    let r = rig();
    let value = r
        .worker
        .transaction(|tx| {
            let fe = r.worker.read(tx, &format!("{FRONT}/state"))?;
            r.worker
                .write(tx, &format!("{BACK}/frontend-state"), "seen")?;
            r.worker.write(tx, &format!("{BACK}/state"), "4")?;
            Ok(fe)
        })
        .unwrap();
    assert_eq!(value.as_deref(), Some("1"));
    assert_eq!(
        value_at(&r.direct, &format!("{BACK}/state")).as_deref(),
        Some("4")
    );
    // A refused write inside a transaction aborts it; nothing is applied.
    let err = r.worker.transaction(|tx| {
        r.worker.write(tx, &format!("{BACK}/state"), "5")?;
        r.worker.write(tx, &format!("{FRONT}/state"), "6")
    });
    assert!(is_access(err));
    assert_eq!(
        value_at(&r.direct, &format!("{BACK}/state")).as_deref(),
        Some("4")
    );
}

#[test]
fn requests_out_of_scope_are_refused_and_change_nothing() {
    let r = rig();
    let (w, d) = (&r.worker, &r.direct);
    r.direct
        .write(Tx::NONE, &format!("{BACK}/state"), "1")
        .unwrap();
    let back_perms = d.get_perms(Tx::NONE, BACK).unwrap();
    let refused: Vec<(&str, bool)> = vec![
        (
            "write elsewhere",
            is_access(w.write(Tx::NONE, "/local/domain/2/x", "1")),
        ),
        (
            "read elsewhere",
            is_access(w.read(Tx::NONE, "/local/domain/2/x")),
        ),
        ("directory of /", is_access(w.directory(Tx::NONE, "/"))),
        (
            "sibling backend",
            is_access(w.write(Tx::NONE, &format!("{BACK}1/x"), "1")),
        ),
        (
            "frontend write",
            is_access(w.write(Tx::NONE, &format!("{FRONT}/state"), "6")),
        ),
        (
            "frontend mkdir",
            is_access(w.mkdir(Tx::NONE, &format!("{FRONT}/new"))),
        ),
        ("frontend rm", is_access(w.rm(Tx::NONE, FRONT))),
        (
            "record rm",
            is_access(w.rm(Tx::NONE, &format!("{RECORDS}/1-2"))),
        ),
        (
            "record field",
            is_access(w.write(Tx::NONE, &format!("{RECORDS}/1-2/driver"), "x")),
        ),
        (
            "relative read",
            is_access(w.read(Tx::NONE, "backend/vusb/1/0/state")),
        ),
        (
            "relative write",
            is_access(w.write(Tx::NONE, "device/vusb/0/state", "1")),
        ),
        (
            "double slash",
            is_access(w.read(Tx::NONE, "//local/domain/1/device/vusb/0")),
        ),
        (
            "double slash write",
            is_access(w.write(Tx::NONE, &format!("/{BACK}/x"), "1")),
        ),
        (
            "trailing slash",
            is_access(w.write(Tx::NONE, &format!("{BACK}/"), "1")),
        ),
        ("special watch", is_access(w.watch("@releaseDomain"))),
        ("watch elsewhere", is_access(w.watch("/local/domain"))),
        (
            "set_perms",
            is_access(w.set_perms(
                Tx::NONE,
                BACK,
                &[Perm {
                    domid: 2,
                    access: Access::Both,
                }],
            )),
        ),
        ("introduce", is_access(w.introduce_domain(7, 1, 1))),
        ("release", is_access(w.release_domain(1))),
        ("get_domain_path", is_access(w.get_domain_path(1))),
        ("is_domain_introduced", is_access(w.is_domain_introduced(1))),
        ("write in a transaction", {
            let tx = w.transaction_start().unwrap();
            let refused = is_access(w.write(tx, "/local/domain/2/x", "1"));
            w.transaction_end(tx, false).unwrap();
            refused
        }),
    ];
    for (what, ok) in &refused {
        assert!(ok, "{what} was not refused");
    }
    assert_eq!(r.proxy.denied(), u64::try_from(refused.len()).unwrap());

    assert!(!d.exists(Tx::NONE, "/local/domain/2").unwrap());
    assert!(!d.exists(Tx::NONE, &format!("{BACK}1")).unwrap());
    assert_eq!(value_at(d, &format!("{FRONT}/state")).as_deref(), Some("1"));
    assert_eq!(d.directory(Tx::NONE, FRONT).unwrap(), vec!["state"]);
    assert_eq!(
        value_at(d, &format!("{RECORDS}/1-2/driver")).as_deref(),
        Some("usbfs")
    );
    assert_eq!(value_at(d, &format!("{BACK}/state")).as_deref(), Some("1"));
    assert_eq!(d.get_perms(Tx::NONE, BACK).unwrap(), back_perms);
    assert!(
        !d.exists(Tx::NONE, "/local/domain/0/device").unwrap(),
        "a relative path would have landed in dom0's home"
    );
    assert!(!d.is_domain_introduced(7).unwrap());
    // The worker's connection is still usable after its refusals.
    assert!(r.proxy.is_running());
    assert_eq!(value_at(w, &format!("{BACK}/state")).as_deref(), Some("1"));
}

fn send_raw(s: &mut UnixStream, msg_type: u32, req_id: u32, len: u32, payload: &[u8]) {
    let header = RawHeader {
        msg_type,
        req_id,
        tx_id: 0,
        len,
    };
    s.write_all(&header.encode()).unwrap();
    s.write_all(payload).unwrap();
}

#[test]
fn refusals_are_error_replies_with_the_request_ids() {
    let (_fx, _direct, proxy, mut s) = raw_rig();
    let path = format!("{FRONT}/state\0");
    send_raw(
        &mut s,
        MsgType::Write as u32,
        41,
        20,
        &path.as_bytes()[..20],
    );
    let reply = read_message(&mut s).unwrap();
    assert_eq!(
        (reply.msg_type, reply.req_id, reply.payload()),
        (MsgType::Error, 41, &b"EACCES\0"[..])
    );
    let msg = Message::new(
        MsgType::SetPerms,
        42,
        9,
        format!("{BACK}\0b0\0").into_bytes(),
    )
    .unwrap();
    s.write_all(&msg.serialize()).unwrap();
    let reply = read_message(&mut s).unwrap();
    assert_eq!(
        (reply.msg_type, reply.req_id, reply.tx_id, reply.payload()),
        (MsgType::Error, 42, 9, &b"EACCES\0"[..])
    );
    // What `XsClient::connect_as` sends: a worker may not pick its domain.
    let control = Message::new(
        MsgType::Control,
        44,
        0,
        pvusb_xenstore::wire::join_args(&[pvusb_xenstore::DECLARE_DOMID_COMMAND, "1"]),
    )
    .unwrap();
    s.write_all(&control.serialize()).unwrap();
    let reply = read_message(&mut s).unwrap();
    assert_eq!((reply.msg_type, reply.req_id), (MsgType::Error, 44));
    let read = Message::new(MsgType::Read, 43, 0, path.into_bytes()).unwrap();
    s.write_all(&read.serialize()).unwrap();
    let reply = read_message(&mut s).unwrap();
    assert_eq!(
        (reply.msg_type, reply.req_id, reply.payload()),
        (MsgType::Read, 43, &b"1"[..])
    );
    assert_eq!(proxy.denied(), 3);
}

#[test]
fn an_oversized_header_closes_the_worker_connection() {
    let (_fx, direct, proxy, mut s) = raw_rig();
    // A header announcing 4097 bytes of a write into the backend directory,
    // followed by the bytes: nothing of it may reach xenstore.
    let mut payload = format!("{BACK}/state\0").into_bytes();
    payload.resize(4097, b'x');
    send_raw(&mut s, MsgType::Write as u32, 7, 4097, &[]);
    let _ = s.write_all(&payload);
    assert_eq!(until_closed(&mut s), b"", "closed, no reply");
    wait_for("the proxy to stop", || !proxy.is_running());
    assert!(!direct.exists(Tx::NONE, &format!("{BACK}/state")).unwrap());
}

#[test]
fn an_unknown_type_closes_the_worker_connection() {
    let (_fx, _direct, proxy, mut s) = raw_rig();
    send_raw(&mut s, 99, 7, 3, b"/a\0");
    assert_eq!(until_closed(&mut s), b"");
    wait_for("the proxy to stop", || !proxy.is_running());
}

#[test]
fn dropping_the_handle_ends_the_proxy_promptly() {
    let r = rig();
    let watch = r.worker.watch(BACK).unwrap();
    assert_eq!(next_event(watch.receiver()), BACK);
    let started = Instant::now();
    drop(r.proxy);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    assert!(
        watch.receiver().recv_timeout(LIVENESS).is_err(),
        "the worker's connection closes"
    );
    assert!(matches!(
        r.worker.read(Tx::NONE, BACK),
        Err(XsError::Closed)
    ));
    // Everyone else is still served.
    r.direct.write(Tx::NONE, "/still", "served").unwrap();
    drop(r.fx);
}

#[test]
fn a_worker_that_hangs_up_ends_the_proxy() {
    let r = rig();
    r.worker
        .write(Tx::NONE, &format!("{BACK}/state"), "1")
        .unwrap();
    drop(r.worker);
    wait_for("the proxy to stop", || !r.proxy.is_running());
    let started = Instant::now();
    drop(r.proxy);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn losing_xenstore_ends_the_proxy_and_the_worker_sees_it() {
    let r = rig();
    let watch = r.worker.watch(BACK).unwrap();
    assert_eq!(next_event(watch.receiver()), BACK);
    drop(r.fx);
    wait_for("the proxy to stop", || !r.proxy.is_running());
    assert!(watch.receiver().recv_timeout(LIVENESS).is_err());
    assert!(r.worker.read(Tx::NONE, BACK).is_err());
}

#[test]
fn a_missing_upstream_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_w, p) = UnixStream::pair().unwrap();
    let err = Proxy::spawn(
        &dir.path().join("nothing"),
        p,
        Arc::new(scope()),
        "x".into(),
    );
    assert!(matches!(err, Err(XsError::Connect { .. })));
}
