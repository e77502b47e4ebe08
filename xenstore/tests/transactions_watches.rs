//! Transactions (conflict detection, retry) and watches (initial fire, changes,
//! removals, special paths, relative paths, connection loss).

use std::sync::Arc;

use pvusb_testkit::wait::{events_until, next_event};
use pvusb_testkit::xenstore::value_at;
use pvusb_testkit::{Xenstore, LIVENESS};
use pvusb_xenstore::{ServerConfig, Tx, XsError};

#[test]
fn conflicting_commit_fails_with_eagain_and_applies_nothing() {
    let fx = Xenstore::temp(ServerConfig::default());
    let a = fx.dom0();
    let b = fx.dom0();
    a.write(Tx::NONE, "/t/x", "0").unwrap();
    let tx = a.transaction_start().unwrap();
    assert_eq!(a.read(tx, "/t/x").unwrap().as_deref(), Some("0"));
    a.write(tx, "/t/y", "from tx").unwrap();
    assert_eq!(
        a.read(Tx::NONE, "/t/y").unwrap(),
        None,
        "uncommitted writes are invisible outside"
    );
    assert_eq!(a.read(tx, "/t/y").unwrap().as_deref(), Some("from tx"));
    b.write(Tx::NONE, "/t/x", "1").unwrap();
    assert!(
        !a.transaction_end(tx, true).unwrap(),
        "commit must report the conflict"
    );
    assert_eq!(a.read(Tx::NONE, "/t/y").unwrap(), None);
    assert!(
        matches!(a.transaction_end(tx, true), Err(XsError::NotFound(_))),
        "the transaction is gone"
    );

    let tx = a.transaction_start().unwrap();
    a.write(tx, "/t/y", "ok").unwrap();
    a.rm(tx, "/t/x").unwrap();
    b.write(Tx::NONE, "/other", "unrelated").unwrap();
    assert!(
        a.transaction_end(tx, true).unwrap(),
        "unrelated changes do not conflict"
    );
    assert_eq!(value_at(&a, "/t/y").as_deref(), Some("ok"));
    assert_eq!(a.read(Tx::NONE, "/t/x").unwrap(), None);
}

#[test]
fn a_new_sibling_conflicts_with_a_directory_read() {
    let fx = Xenstore::temp(ServerConfig::default());
    let a = fx.dom0();
    let b = fx.dom0();
    a.mkdir(Tx::NONE, "/dir").unwrap();
    let tx = a.transaction_start().unwrap();
    assert!(a.directory(tx, "/dir").unwrap().is_empty());
    a.write(tx, "/dir/mine", "1").unwrap();
    b.write(Tx::NONE, "/dir/theirs", "1").unwrap();
    assert!(!a.transaction_end(tx, true).unwrap());
}

#[test]
fn transaction_helper_retries_after_a_conflict() {
    let fx = Xenstore::temp(ServerConfig::default());
    let a = fx.dom0();
    let b = fx.dom0();
    a.write(Tx::NONE, "/counter", "0").unwrap();
    let mut attempts = 0;
    let result = a
        .transaction(|tx| {
            attempts += 1;
            let v: u32 = a.read(tx, "/counter")?.unwrap_or_default().parse().unwrap();
            if attempts == 1 {
                b.write(Tx::NONE, "/counter", "10").unwrap();
            }
            a.write(tx, "/counter", &(v + 1).to_string())?;
            Ok(v + 1)
        })
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(result, 11);
    assert_eq!(value_at(&a, "/counter").as_deref(), Some("11"));

    let err = a.transaction(|tx| {
        a.write(tx, "/aborted", "1")?;
        Err::<(), _>(XsError::Invalid)
    });
    assert!(matches!(err, Err(XsError::Invalid)));
    assert_eq!(
        a.read(Tx::NONE, "/aborted").unwrap(),
        None,
        "an error aborts"
    );
}

#[test]
fn watches_fire_initially_on_changes_and_on_removal() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = fx.dom0();
    xs.write(Tx::NONE, "/w/a/b", "1").unwrap();
    let top = xs.watch("/w").unwrap();
    let deep = xs.watch("/w/a/b/c").unwrap();
    assert_eq!(next_event(top.receiver()), "/w", "initial fire");
    assert_eq!(
        next_event(deep.receiver()),
        "/w/a/b/c",
        "initial fire even for a missing node"
    );
    xs.write(Tx::NONE, "/w/a/b", "2").unwrap();
    assert_eq!(next_event(top.receiver()), "/w/a/b");
    xs.write(Tx::NONE, "/wx", "not below /w").unwrap();
    xs.set_perms(
        Tx::NONE,
        "/w/a",
        &[pvusb_xenstore::Perm {
            domid: 0,
            access: pvusb_xenstore::Access::Read,
        }],
    )
    .unwrap();
    assert_eq!(
        next_event(top.receiver()),
        "/w/a",
        "perm changes fire; siblings with a common prefix do not"
    );
    xs.rm(Tx::NONE, "/w/a").unwrap();
    assert_eq!(next_event(top.receiver()), "/w/a");
    assert_eq!(
        next_event(deep.receiver()),
        "/w/a/b/c",
        "watches below a removed node fire"
    );

    xs.write(Tx::NONE, "/w/marker", "0").unwrap();
    assert_eq!(next_event(top.receiver()), "/w/marker");
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "/w/in-tx", "1").unwrap();
    // Changing an existing node neither adds a child to /w nor touches what the
    // transaction read, so the commit below does not conflict.
    xs.write(Tx::NONE, "/w/marker", "1").unwrap();
    assert_eq!(
        next_event(top.receiver()),
        "/w/marker",
        "transactional changes fire only at commit"
    );
    assert!(xs.transaction_end(tx, true).unwrap());
    assert_eq!(next_event(top.receiver()), "/w/in-tx");
    drop(deep);
    let rest: Vec<_> = top.receiver().try_iter().collect();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn relative_watches_report_relative_paths_and_hidden_nodes_do_not_fire() {
    let fx = Xenstore::temp(ServerConfig::simulation());
    let dom0 = fx.dom0();
    fx.give_home(5);
    let dom5 = fx.dom(5);
    let rel = dom5.watch("device").unwrap();
    let root = dom5.watch("/").unwrap();
    assert_eq!(next_event(rel.receiver()), "device");
    assert_eq!(next_event(root.receiver()), "/");
    dom0.write(Tx::NONE, "/secret", "dom0 only").unwrap();
    dom0.write(Tx::NONE, "/local/domain/5/device/x", "1")
        .unwrap();
    assert_eq!(next_event(rel.receiver()), "device/x");
    assert_eq!(
        next_event(root.receiver()),
        "/local/domain/5/device/x",
        "the hidden /secret did not fire"
    );
}

#[test]
fn domain_introduction_and_release_fire_special_watches() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = fx.dom0();
    let intro = xs.watch("@introduceDomain").unwrap();
    let release = xs.watch("@releaseDomain").unwrap();
    assert_eq!(next_event(intro.receiver()), "@introduceDomain");
    assert_eq!(next_event(release.receiver()), "@releaseDomain");
    xs.introduce_domain(3, 77, 1).unwrap();
    assert_eq!(next_event(intro.receiver()), "@introduceDomain");
    xs.write(Tx::NONE, "/unrelated", "x").unwrap();
    xs.release_domain(3).unwrap();
    assert_eq!(next_event(release.receiver()), "@releaseDomain");
    assert!(
        intro.receiver().is_empty(),
        "plain writes do not fire special watches"
    );
}

#[test]
fn concurrent_requests_from_many_threads_share_one_client() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = Arc::new(fx.dom0());
    let watch = xs.watch("/c").unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let xs = Arc::clone(&xs);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let p = format!("/c/t{t}/n{i}");
                    xs.write(Tx::NONE, &p, &format!("{t}-{i}")).unwrap();
                    assert_eq!(xs.read(Tx::NONE, &p).unwrap(), Some(format!("{t}-{i}")));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(xs.directory(Tx::NONE, "/c").unwrap().len(), 8);
    let seen = events_until(watch.receiver(), "/c");
    assert!(seen.is_empty());
    let mut count = 0;
    while watch.receiver().try_recv().is_ok() {
        count += 1;
    }
    assert!(count > 0 && count <= 400, "{count} change events");
}

#[test]
fn losing_the_server_wakes_everyone_with_closed() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = fx.dom0();
    let watch = xs.watch("/x").unwrap();
    assert_eq!(next_event(watch.receiver()), "/x");
    drop(fx);
    assert!(
        watch.receiver().recv_timeout(LIVENESS).is_err(),
        "watch channel disconnects"
    );
    assert!(matches!(xs.read(Tx::NONE, "/x"), Err(XsError::Closed)));
    assert!(matches!(xs.watch("/y"), Err(XsError::Closed)));
}

#[test]
fn concurrent_transactions_cannot_add_up_past_the_node_quota() {
    let fx = Xenstore::temp(ServerConfig {
        max_nodes_per_domain: 3,
        ..ServerConfig::simulation()
    });
    let dom0 = fx.dom0();
    let own5 = [pvusb_xenstore::Perm {
        domid: 5,
        access: pvusb_xenstore::Access::None,
    }];
    for p in ["/local/domain/5/a", "/local/domain/5/b"] {
        dom0.mkdir(Tx::NONE, p).unwrap();
        dom0.set_perms(Tx::NONE, p, &own5).unwrap();
    }
    // dom5 owns a and b (2 of 3). Each transaction alone stays within the quota and
    // they touch disjoint subtrees, so neither conflicts with the other.
    let dom5 = fx.dom(5);
    let t1 = dom5.transaction_start().unwrap();
    let t2 = dom5.transaction_start().unwrap();
    dom5.write(t1, "a/x", "1").unwrap();
    dom5.write(t2, "b/y", "1").unwrap();
    assert!(dom5.transaction_end(t1, true).unwrap());
    assert!(matches!(
        dom5.transaction_end(t2, true),
        Err(XsError::Quota)
    ));
    assert_eq!(dom0.read(Tx::NONE, "/local/domain/5/b/y").unwrap(), None);
    assert_eq!(value_at(&dom0, "/local/domain/5/a/x").as_deref(), Some("1"));
}

/// A notify watch calls its function for each event (on the reader thread)
/// and stops calling it once dropped; it may run next to channel watches.
#[test]
fn notify_watches_call_their_function_until_dropped() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = fx.dom0();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let notify: pvusb_xenstore::WatchNotify = Arc::new(move |p: &str| {
        let _ = tx.send(p.to_owned());
    });
    let w = xs.watch_notify("/n", notify).unwrap();
    let plain = xs.watch("/n").unwrap();
    assert_eq!(next_event(&rx), "/n", "initial fire");
    assert_eq!(next_event(plain.receiver()), "/n");
    xs.write(Tx::NONE, "/n/x", "1").unwrap();
    assert_eq!(next_event(&rx), "/n/x");
    assert_eq!(next_event(plain.receiver()), "/n/x");
    drop(w);
    xs.write(Tx::NONE, "/n/y", "1").unwrap();
    assert_eq!(
        next_event(plain.receiver()),
        "/n/y",
        "the other watch still fires"
    );
    assert!(rx.try_recv().is_err(), "no call after the drop");
}
