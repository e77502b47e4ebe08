//! What both proxy test files put a worker in: the scope of the backend
//! worker serving guest 1's controller 0, and a server holding the nodes
//! that worker reads.

use pvusb_testkit::Xenstore;
use pvusb_xenstore::proxy::PrefixScope;
use pvusb_xenstore::{ServerConfig, Tx, XsClient};

/// The guest's frontend directory: the worker may read it.
pub const FRONT: &str = "/local/domain/1/device/vusb/0";
/// The controller's backend directory: the worker may write it.
pub const BACK: &str = "/local/domain/0/backend/vusb/1/0";
/// The host device records: the worker may write only their `opened` leaf.
pub const RECORDS: &str = "/pvusb/usbback";

/// The read and write prefixes the daemon gives that worker.
pub fn scope() -> PrefixScope {
    PrefixScope::new()
        .read(FRONT)
        .write(BACK)
        .write_leaf(RECORDS, "opened")
}

/// A server with the guest's frontend state and the record of host device
/// 1-2, and a dom0 connection to it that bypasses any proxy.
pub fn server() -> (Xenstore, XsClient) {
    let fx = Xenstore::temp(ServerConfig::default());
    let direct = fx.dom0();
    direct
        .write(Tx::NONE, &format!("{FRONT}/state"), "1")
        .unwrap();
    direct
        .write(Tx::NONE, &format!("{RECORDS}/1-2/driver"), "usbfs")
        .unwrap();
    (fx, direct)
}
