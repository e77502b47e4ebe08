//! The rules file the Debian package installs (packaging/default/rules.conf)
//! parses, and allows every device for every guest, so that installing the
//! package changes nothing until the operator writes rules.

use pvusb_policy::{DeviceFacts, Guest, Policy};

#[test]
fn the_shipped_rules_parse_and_allow_everything() {
    let text = include_str!("../../packaging/default/rules.conf");
    let policy = Policy::from_text("/etc/pvusb/rules.conf", text).expect("parses");
    let facts = DeviceFacts {
        vendor: 0x46f4,
        product: 0x0001,
        name: Some("QEMU USB HARDDRIVE".into()),
        serial: None,
        port: "2-1".into(),
        interfaces: Vec::new(),
        guest: Some(Guest {
            domid: 3,
            name: Some("web".into()),
        }),
    };
    assert!(
        policy.check(&facts).is_none(),
        "refused: {:?}",
        policy.check(&facts)
    );
}
