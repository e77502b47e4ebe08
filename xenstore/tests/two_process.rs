//! Two processes: the parent runs the server and watches; a child process (this
//! test binary re-executed to run only `child_role`) connects as domain 5, writes,
//! and checks it is refused outside its own tree.

use std::path::Path;
use std::process::Command;

use pvusb_testkit::wait::events_until;
use pvusb_testkit::xenstore::{owner_of, value_at};
use pvusb_testkit::Xenstore;
use pvusb_xenstore::{ServerConfig, Tx, XsClient, XsError};

const SOCKET_ENV: &str = "PVUSB_XS_CHILD_SOCKET";

#[test]
fn a_child_process_writes_as_another_domain_and_the_parent_sees_it() {
    let fx = Xenstore::temp(ServerConfig::simulation());
    let dom0 = fx.dom0();
    fx.give_home(5);
    let watch = dom0.watch("/local/domain/5/data").unwrap();

    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_role",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SOCKET_ENV, fx.path())
        .status()
        .unwrap();
    assert!(status.success(), "child failed: {status}");

    events_until(watch.receiver(), "/local/domain/5/data/hello");
    assert_eq!(
        value_at(&dom0, "/local/domain/5/data/hello").as_deref(),
        Some("from the child")
    );
    assert_eq!(owner_of(&dom0, "/local/domain/5/data/hello"), 5);
    assert_eq!(dom0.read(Tx::NONE, "/local/domain/0/stolen").unwrap(), None);
}

/// The child half; does nothing useful unless started by the test above.
#[test]
#[ignore = "run by a_child_process_writes_as_another_domain_and_the_parent_sees_it"]
fn child_role() {
    let socket =
        std::env::var_os(SOCKET_ENV).expect("started by the parent test with the socket path");
    let xs = XsClient::connect_as(Path::new(&socket), 5).unwrap();
    xs.write(Tx::NONE, "data/hello", "from the child").unwrap();
    assert!(matches!(
        xs.write(Tx::NONE, "/local/domain/0/stolen", "x"),
        Err(XsError::Access(_))
    ));
    assert!(matches!(
        xs.read(Tx::NONE, "/local/domain/0"),
        Err(XsError::Access(_))
    ));
}
