//! Client <-> embedded server: every operation, permissions and quotas.

use pvusb_testkit::xenstore::{owner_of, value_at};
use pvusb_testkit::Xenstore;
use pvusb_xenstore::{Access, Perm, ServerConfig, Tx, XsClient, XsError, XsServer};

fn perm(domid: u16, access: Access) -> Perm {
    Perm { domid, access }
}

#[test]
fn every_operation_round_trips() {
    let fx = Xenstore::temp(ServerConfig::default());
    let xs = fx.dom0();
    assert_eq!(xs.read(Tx::NONE, "/a/b").unwrap(), None);
    xs.write(Tx::NONE, "/a/b/c", "value one").unwrap();
    assert_eq!(value_at(&xs, "/a/b/c").as_deref(), Some("value one"));
    assert_eq!(
        value_at(&xs, "/a/b").as_deref(),
        Some(""),
        "parents are created empty"
    );
    xs.mkdir(Tx::NONE, "/a/d").unwrap();
    xs.mkdir(Tx::NONE, "/a/d").unwrap();
    xs.write(Tx::NONE, "/a/e", "").unwrap();
    assert_eq!(xs.directory(Tx::NONE, "/a").unwrap(), vec!["b", "d", "e"]);
    assert_eq!(
        xs.directory(Tx::NONE, "/nope").unwrap(),
        Vec::<String>::new()
    );
    assert!(xs.exists(Tx::NONE, "/a/d").unwrap());
    assert!(!xs.exists(Tx::NONE, "/a/zz").unwrap());

    assert_eq!(
        xs.get_perms(Tx::NONE, "/a").unwrap(),
        vec![perm(0, Access::None)]
    );
    let perms = [perm(3, Access::Read), perm(4, Access::Both)];
    xs.set_perms(Tx::NONE, "/a/d", &perms).unwrap();
    assert_eq!(xs.get_perms(Tx::NONE, "/a/d").unwrap(), perms);
    xs.write(Tx::NONE, "/a/d/child", "x").unwrap();
    assert_eq!(
        xs.get_perms(Tx::NONE, "/a/d/child").unwrap(),
        perms,
        "children inherit their parent's perms"
    );
    assert!(
        matches!(xs.set_perms(Tx::NONE, "/a/missing", &perms), Err(XsError::NotFound(p)) if p == "/a/missing")
    );

    xs.rm(Tx::NONE, "/a/b").unwrap();
    assert_eq!(
        xs.read(Tx::NONE, "/a/b/c").unwrap(),
        None,
        "rm is recursive"
    );
    xs.rm(Tx::NONE, "/a/b").unwrap();
    xs.rm(Tx::NONE, "/not/there/at/all").unwrap();
    assert!(matches!(xs.rm(Tx::NONE, "/"), Err(XsError::Invalid)));
    assert!(matches!(
        xs.write(Tx::NONE, "/bad//path", "x"),
        Err(XsError::Invalid)
    ));
    assert!(matches!(
        xs.read(Tx::NONE, "/bad.char"),
        Err(XsError::Invalid)
    ));

    assert_eq!(xs.get_domain_path(7).unwrap(), "/local/domain/7");
    assert!(xs.is_domain_introduced(0).unwrap());
    assert!(!xs.is_domain_introduced(7).unwrap());
    xs.introduce_domain(7, 0x1234, 5).unwrap();
    assert!(xs.is_domain_introduced(7).unwrap());
    xs.release_domain(7).unwrap();
    assert!(!xs.is_domain_introduced(7).unwrap());
    assert!(matches!(xs.release_domain(7), Err(XsError::NotFound(_))));
}

#[test]
fn declared_domains_are_confined_by_permissions() {
    let fx = Xenstore::temp(ServerConfig::simulation());
    let dom0 = fx.dom0();
    fx.give_home(5);
    dom0.write(Tx::NONE, "/private", "dom0 only").unwrap();
    dom0.write(Tx::NONE, "/shared", "readable").unwrap();
    dom0.set_perms(
        Tx::NONE,
        "/shared",
        &[perm(0, Access::None), perm(5, Access::Read)],
    )
    .unwrap();

    let dom5 = fx.dom(5);
    dom5.write(Tx::NONE, "device/vusb/0/state", "1").unwrap();
    assert_eq!(
        value_at(&dom0, "/local/domain/5/device/vusb/0/state").as_deref(),
        Some("1")
    );
    assert_eq!(
        owner_of(&dom0, "/local/domain/5/device/vusb/0"),
        5,
        "creator owns new nodes"
    );
    assert!(matches!(dom5.read(Tx::NONE, "/private"), Err(XsError::Access(p)) if p == "/private"));
    assert_eq!(value_at(&dom5, "/shared").as_deref(), Some("readable"));
    assert!(matches!(
        dom5.write(Tx::NONE, "/shared", "no"),
        Err(XsError::Access(_))
    ));
    assert!(matches!(
        dom5.write(Tx::NONE, "/local/domain/6/x", "no"),
        Err(XsError::Access(_))
    ));
    assert!(
        matches!(
            dom5.read(Tx::NONE, "/hidden/missing"),
            Err(XsError::Access(_))
        ),
        "missing under a hidden parent is EACCES"
    );
    assert!(matches!(
        dom5.set_perms(Tx::NONE, "/local/domain/5/device", &[perm(6, Access::Both)]),
        Err(XsError::Access(_))
    ));
    assert!(matches!(
        dom5.introduce_domain(9, 1, 1),
        Err(XsError::Access(_))
    ));
    assert!(matches!(dom5.release_domain(5), Err(XsError::Access(_))));

    let dom6 = fx.dom(6);
    assert!(matches!(
        dom6.read(Tx::NONE, "/local/domain/5/device/vusb/0/state"),
        Err(XsError::Access(_))
    ));
    assert!(matches!(
        dom6.rm(Tx::NONE, "/local/domain/5/device"),
        Err(XsError::Access(_))
    ));
    dom5.set_perms(Tx::NONE, "/local/domain/5/device", &[perm(5, Access::Read)])
        .unwrap();
    assert_eq!(
        dom6.directory(Tx::NONE, "/local/domain/5/device").unwrap(),
        vec!["vusb"]
    );
}

#[test]
fn declarations_are_refused_unless_trusted() {
    let fx = Xenstore::temp(ServerConfig::default());
    assert!(matches!(
        XsClient::connect_as(fx.path(), 5),
        Err(XsError::Access(_))
    ));
}

#[test]
fn quotas_are_enforced() {
    let config = ServerConfig {
        max_nodes_per_domain: 4,
        max_watches_per_connection: 2,
        max_transactions_per_connection: 2,
        ..ServerConfig::simulation()
    };
    let fx = Xenstore::temp(config);
    let dom0 = fx.dom0();
    assert!(matches!(
        dom0.write(Tx::NONE, "/big", &"x".repeat(2049)),
        Err(XsError::TooBig)
    ));
    dom0.write(Tx::NONE, "/big", &"x".repeat(2048)).unwrap();
    assert!(
        matches!(
            dom0.write(Tx::NONE, "/huge", &"x".repeat(5000)),
            Err(XsError::Wire(_))
        ),
        "over the payload max never leaves the client"
    );

    fx.give_home(5);
    let dom5 = fx.dom(5);
    for i in 0..3 {
        dom5.write(Tx::NONE, &format!("n{i}"), "v").unwrap();
    }
    // /local/domain/5 itself counts: it is owned by dom5.
    assert!(matches!(
        dom5.write(Tx::NONE, "n3", "v"),
        Err(XsError::Quota)
    ));
    dom5.rm(Tx::NONE, "n0").unwrap();
    dom5.write(Tx::NONE, "n3", "v").unwrap();

    let _w1 = dom5.watch("n1").unwrap();
    let _w2 = dom5.watch("n2").unwrap();
    assert!(matches!(dom5.watch("n3"), Err(XsError::Quota)));

    let t1 = dom0.transaction_start().unwrap();
    let _t2 = dom0.transaction_start().unwrap();
    assert!(matches!(dom0.transaction_start(), Err(XsError::Quota)));
    assert!(dom0.transaction_end(t1, false).unwrap());
    dom0.transaction_start().unwrap();
}

#[test]
fn a_second_server_on_a_live_socket_is_refused_and_stale_sockets_are_replaced() {
    let fx = Xenstore::temp(ServerConfig::default());
    assert!(XsServer::start(fx.path()).is_err());
    let path = fx.path().to_owned();
    let dir = path.parent().unwrap().to_owned();
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let again = XsServer::start(&stale).unwrap();
    XsClient::connect(&stale)
        .unwrap()
        .write(Tx::NONE, "/x", "1")
        .unwrap();
    drop(again);
    assert!(!stale.exists(), "the socket is removed on stop");
}

#[test]
fn a_client_over_a_handed_over_socket_works_and_has_no_endpoint() {
    let fx = Xenstore::temp(ServerConfig::default());
    let by_path = fx.dom0();
    assert_eq!(by_path.endpoint(), Some(fx.path()));
    let stream = std::os::unix::net::UnixStream::connect(fx.path()).unwrap();
    // A socket that arrives non-blocking must still work.
    stream.set_nonblocking(true).unwrap();
    let by_fd = XsClient::from_stream(stream).unwrap();
    assert_eq!(by_fd.endpoint(), None);
    by_fd.write(Tx::NONE, "/handed/over", "yes").unwrap();
    assert_eq!(value_at(&by_path, "/handed/over").as_deref(), Some("yes"));
    drop(fx);
    assert!(by_fd.read(Tx::NONE, "/handed/over").is_err());
}
