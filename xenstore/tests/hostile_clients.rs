//! Malformed and hostile clients over a raw socket: each gets an error or a closed
//! connection, and the server keeps serving everyone else.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use proptest::prelude::*;
use pvusb_testkit::wait::next_event;
use pvusb_testkit::xenstore::value_at;
use pvusb_testkit::{Xenstore, LIVENESS};
use pvusb_xenstore::wire::{read_message, Message, MsgType, RawHeader};
use pvusb_xenstore::{ServerConfig, Tx};

fn raw(path: &std::path::Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(LIVENESS)).unwrap();
    s
}

/// Writes a header announcing `len` payload bytes, whatever follows it.
fn send_header(s: &mut UnixStream, msg_type: u32, req_id: u32, tx_id: u32, len: u32) {
    let header = RawHeader {
        msg_type,
        req_id,
        tx_id,
        len,
    };
    s.write_all(&header.encode()).unwrap();
}

fn send_raw(s: &mut UnixStream, msg_type: u32, req_id: u32, tx_id: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap();
    send_header(s, msg_type, req_id, tx_id, len);
    s.write_all(payload).unwrap();
}

fn error_of(reply: &Message) -> &str {
    assert_eq!(reply.msg_type, MsgType::Error, "{reply:?}");
    reply.one_arg().unwrap()
}

#[test]
fn malformed_requests_get_errors_and_the_connection_survives() {
    let fx = Xenstore::temp(ServerConfig::default());
    let mut s = raw(fx.path());
    let cases: [(u32, &[u8], &str); 9] = [
        (99, b"whatever", "EINVAL"),
        (MsgType::Read as u32, b"/no-nul", "EINVAL"),
        (MsgType::Read as u32, b"/a\0/b\0", "EINVAL"),
        (MsgType::Read as u32, b"\xff\xfe\0", "EINVAL"),
        (MsgType::Write as u32, b"no nul at all", "EINVAL"),
        (MsgType::Watch as u32, b"/p\0", "EINVAL"),
        (MsgType::TransactionEnd as u32, b"T\0", "ENOENT"),
        (MsgType::Error as u32, b"EINVAL\0", "EINVAL"),
        (MsgType::DirectoryPart as u32, b"/\0", "ENOSYS"),
    ];
    for (i, (ty, payload, want)) in cases.iter().enumerate() {
        let req_id = 100 + u32::try_from(i).unwrap();
        send_raw(&mut s, *ty, req_id, 0, payload);
        let reply = read_message(&mut s).unwrap();
        assert_eq!(reply.req_id, req_id);
        assert_eq!(error_of(&reply), *want, "case {i}");
    }
    send_raw(&mut s, MsgType::Read as u32, 7, 0, b"/\0");
    let ok = read_message(&mut s).unwrap();
    assert_eq!((ok.msg_type, ok.req_id), (MsgType::Read, 7));
}

#[test]
fn an_oversized_header_is_answered_then_disconnected() {
    let fx = Xenstore::temp(ServerConfig::default());
    let other = fx.dom0();
    let mut s = raw(fx.path());
    send_header(&mut s, MsgType::Write as u32, 42, 0, 4097);
    let reply = read_message(&mut s).unwrap();
    assert_eq!((reply.req_id, error_of(&reply)), (42, "EINVAL"));
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap(), 0, "connection closed");
    other.write(Tx::NONE, "/still", "serving").unwrap();
}

#[test]
fn a_half_sent_message_blocks_only_its_sender() {
    let fx = Xenstore::temp(ServerConfig::default());
    let mut s = raw(fx.path());
    send_header(&mut s, MsgType::Write as u32, 1, 0, 100);
    s.write_all(b"/partial").unwrap();
    let xs = fx.dom0();
    xs.write(Tx::NONE, "/ok", "1").unwrap();
    assert_eq!(value_at(&xs, "/ok").as_deref(), Some("1"));
}

#[test]
fn a_client_that_never_reads_is_disconnected_without_stalling_others() {
    let fx = Xenstore::temp(ServerConfig {
        max_queued_messages: 4,
        ..ServerConfig::default()
    });
    let mut slow = raw(fx.path());
    send_raw(&mut slow, MsgType::Watch as u32, 1, 0, b"/\0tok\0");
    let xs = fx.dom0();
    let watch = xs.watch("/flood").unwrap();
    assert_eq!(next_event(watch.receiver()), "/flood");
    // Far more events than the slow client's socket buffer and queue can hold.
    let value = "v".repeat(1000);
    for i in 0..4000 {
        xs.write(Tx::NONE, &format!("/flood/n{}", i % 50), &value)
            .unwrap();
        while watch.receiver().try_recv().is_ok() {}
    }
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf).unwrap();
    assert!(
        buf.len() < 4000 * 20,
        "the slow client was cut off after {} bytes",
        buf.len()
    );
    xs.write(Tx::NONE, "/after", "fine").unwrap();
}

#[test]
fn garbage_clients_never_take_the_server_down() {
    let fx = Xenstore::temp(ServerConfig::simulation());
    let xs = fx.dom0();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                0u32..30,
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..300),
            ),
            |(ty, tx, payload)| {
                let mut s = raw(fx.path());
                send_raw(&mut s, ty, 5, tx % 4, &payload);
                // Every well-framed request gets exactly one reply (maybe an initial
                // watch event after it).
                let reply = read_message(&mut s).unwrap();
                prop_assert_eq!(reply.req_id, 5);
                Ok(())
            },
        )
        .unwrap();
    xs.write(Tx::NONE, "/alive", "yes").unwrap();
    assert_eq!(value_at(&xs, "/alive").as_deref(), Some("yes"));
}
