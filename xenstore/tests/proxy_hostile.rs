//! Random bytes and random requests into the worker side of the proxy: no proxy
//! thread panics, the proxy ends when the worker hangs up, and nothing outside
//! the worker's write scope changes upstream.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Instant;

use proptest::prelude::*;
use pvusb_testkit::{Xenstore, LIVENESS};
use pvusb_xenstore::proxy::{Access, Proxy, Scope};
use pvusb_xenstore::wire::RawHeader;
use pvusb_xenstore::{ServerConfig, Tx, XsClient};

mod worker_scope;

use worker_scope::{scope, server, BACK, FRONT};

/// Panics on the proxy's threads (which a test would not otherwise see).
static PROXY_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_proxy_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("xsproxy-"))
            {
                PROXY_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Every node and its value, walked from `/`.
fn snapshot(xs: &XsClient) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec!["/".to_owned()];
    while let Some(path) = todo.pop() {
        let value = xs.read(Tx::NONE, &path).unwrap().unwrap_or_default();
        for child in xs.directory(Tx::NONE, &path).unwrap() {
            todo.push(if path == "/" {
                format!("/{child}")
            } else {
                format!("{path}/{child}")
            });
        }
        out.insert(path, value);
    }
    out
}

/// Paths in, next to and outside the scope, and spellings a filter could get
/// wrong.
const PATHS: &[&str] = &[
    FRONT,
    BACK,
    "/local/domain/1/device/vusb/0/state",
    "/local/domain/0/backend/vusb/1/0/state",
    "/local/domain/0/backend/vusb/1/01",
    "/pvusb/usbback/1-2/opened",
    "/pvusb/usbback/1-2",
    "/pvusb/usbback/1-2/driver",
    "/local/domain/0",
    "/",
    "@releaseDomain",
    "device/vusb/0",
    "backend/vusb/1/0",
];
const SUFFIXES: &[&str] = &["", "", "/x", "/", "//x", "/.", "/opened", "/\u{e9}"];
const TAILS: &[&str] = &["", "", "tok\0", "value", "b0\0", "T\0", "\0"];

/// One chunk of what the worker writes: a header whose length may lie, then
/// either a request-shaped payload (`path\0` and maybe more) or raw bytes.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let pick = |list: &'static [&'static str]| proptest::sample::select(list.to_vec());
    let payload = prop_oneof![
        3 => (pick(PATHS), pick(SUFFIXES), pick(TAILS))
            .prop_map(|(p, s, t)| format!("{p}{s}\0{t}").into_bytes()),
        1 => proptest::collection::vec(pick(TAILS), 0..3)
            .prop_map(|t| t.concat().into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ];
    // Mostly the types that can pass, whose filtering is the interesting part
    // (writes most, as escaping the scope is the worst outcome), mostly outside
    // transactions (a made-up transaction id only gets
    // ENOENT from xenstored).
    let msg_type = prop_oneof![
        3 => proptest::sample::select(vec![1u32, 2, 3, 4, 5, 6, 7, 11, 11, 11, 12, 12, 13, 13]),
        1 => 0u32..26,
    ];
    let tx_id = prop_oneof![3 => Just(0u32), 1 => 1u32..3];
    let lie = prop_oneof![19 => Just(None), 1 => any::<u32>().prop_map(Some)];
    (msg_type, any::<u32>(), tx_id, payload, lie).prop_map(
        |(msg_type, req_id, tx_id, payload, lie)| {
            let len = lie.unwrap_or(u32::try_from(payload.len()).unwrap_or(u32::MAX));
            let mut out = RawHeader {
                msg_type,
                req_id,
                tx_id,
                len,
            }
            .encode()
            .to_vec();
            out.extend(payload);
            out
        },
    )
}

#[test]
fn hostile_workers_never_escape_their_scope_nor_break_the_proxy() {
    count_proxy_panics();
    let (fx, direct) = server();
    let before = snapshot(&direct);

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                proptest::collection::vec(chunk(), 1..8),
                proptest::collection::vec(any::<u8>(), 0..32),
            ),
            |(chunks, tail)| {
                let (mut worker, proxy_end) = UnixStream::pair().unwrap();
                worker.set_read_timeout(Some(LIVENESS)).unwrap();
                let proxy =
                    Proxy::spawn(fx.path(), proxy_end, Arc::new(scope()), "fuzz".into()).unwrap();
                let mut writer = worker.try_clone().unwrap();
                let bytes: Vec<u8> = chunks.concat().into_iter().chain(tail).collect();
                // Written from another thread, so replies the proxy sends back
                // meanwhile are drained here and cannot block it.
                let feeder = std::thread::spawn(move || {
                    let _ = writer.write_all(&bytes);
                    let _ = writer.shutdown(std::net::Shutdown::Write);
                });
                let mut replies = Vec::new();
                match worker.read_to_end(&mut replies) {
                    Ok(_) => {}
                    Err(e) => prop_assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
                }
                feeder.join().unwrap();
                let deadline = Instant::now() + LIVENESS;
                while proxy.is_running() {
                    prop_assert!(Instant::now() < deadline, "the proxy outlived its worker");
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let escaped = check_unchanged_outside_scope(&before, &snapshot(&direct));
                prop_assert!(escaped.is_ok(), "{:?}", escaped);
                Ok(())
            },
        )
        .unwrap();

    assert_eq!(
        PROXY_PANICS.load(Ordering::SeqCst),
        0,
        "a proxy thread panicked"
    );
    check_unchanged_outside_scope(&before, &snapshot(&direct)).unwrap();
}

/// Every node the worker may not write is as it was `before`, except the empty
/// parents xenstored creates for a write inside the scope.
fn check_unchanged_outside_scope(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Result<(), String> {
    let scope = scope();
    for (path, value) in after {
        if scope.allows(path, Access::Write) {
            continue;
        }
        let parent_of_scope = BACK.starts_with(&format!("{path}/"))
            || scope.allows(&format!("{path}/opened"), Access::Write);
        match before.get(path) {
            Some(old) if old == value => {}
            None if parent_of_scope && value.is_empty() => {}
            old => return Err(format!("{path} is {value:?}, was {old:?}")),
        }
    }
    match before
        .keys()
        .find(|p| !after.contains_key(*p) && !scope.allows(p, Access::Write))
    {
        Some(path) => Err(format!("{path} was removed")),
        None => Ok(()),
    }
}

#[test]
fn random_bytes_never_panic_the_proxy() {
    count_proxy_panics();
    let fx = Xenstore::temp(ServerConfig::default());
    // A deterministic generator (xorshift), so a failure replays.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..64 {
        let (mut worker, proxy_end) = UnixStream::pair().unwrap();
        worker.set_read_timeout(Some(LIVENESS)).unwrap();
        let proxy = Proxy::spawn(fx.path(), proxy_end, Arc::new(scope()), "random".into()).unwrap();
        let len = usize::try_from(next() % 200).unwrap();
        let bytes: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
        let _ = worker.write_all(&bytes);
        let _ = worker.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = worker.read_to_end(&mut sink);
        let deadline = Instant::now() + LIVENESS;
        while proxy.is_running() {
            assert!(Instant::now() < deadline, "the proxy outlived its worker");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    assert_eq!(
        PROXY_PANICS.load(Ordering::SeqCst),
        0,
        "a proxy thread panicked"
    );
    fx.dom0().write(Tx::NONE, "/alive", "yes").unwrap();
}
