//! `dev-attach` against the device rules (USBGuard's rule language) on the
//! fake sysfs tree: allowed, blocked, rejected, the implicit block, the
//! `domain` extension, no rules file, a rules file that does not parse.

use pvusb_testkit::host::{self, GUEST, OTHER};
use pvusb_testkit::peer::Peer;
use pvusb_testkit::{Ts, World};
use pvusb_toolstack::record;
use pvusb_toolstack::sysfs::FAKE_TREE_RULES;
use pvusb_toolstack::{DeviceSpec, ToolError};

fn busid(s: &str) -> DeviceSpec {
    DeviceSpec::BusId(s.to_owned())
}

/// A harness with a connected controller for GUEST and OTHER.
fn harness(rules: Option<&str>) -> World {
    let h = host::new();
    h.sysfs().set_rules(rules).unwrap();
    h
}

fn refused(h: &World, ts: &Ts, dom: u16, dev: &str) -> (String, String) {
    let drivers = h.drivers(dev);
    let e = ts.dev_attach(dom, &busid(dev), None, None).unwrap_err();
    let ToolError::PolicyRefused { what, why, .. } = &e else {
        panic!("expected a policy refusal, got {e}");
    };
    // Refused before any write: no record, drivers untouched.
    assert!(record::read(h.xs().as_ref(), pvusb_xenstore::Tx::NONE, dev)
        .unwrap()
        .is_none());
    assert_eq!(h.drivers(dev), drivers);
    assert!(!e.to_string().contains('\n'), "one line: {e}");
    ((*what).to_owned(), why.clone())
}

#[test]
fn no_rules_file_keeps_todays_behaviour() {
    let h = harness(None);
    let ts = h.toolstack();
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    assert!(matches!(
        ts.dev_attach(GUEST, &busid("1-1"), None, None),
        Err(ToolError::IsHub(_))
    ));
}

#[test]
fn allowed_devices_attach() {
    let h = harness(Some(
        "# sticks and bluetooth only\n\
         allow id 0781:5567 serial \"4C530001\" name \"Cruzer Blade\" via-port one-of { \"1-2\" \"1-3\" }\n",
    ));
    let ts = h.toolstack();
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    // 2-1 is on another port: no rule matches, so the implicit block applies.
    let (what, why) = refused(&h, &ts, GUEST, "2-1");
    assert_eq!(what, "blocked");
    assert!(
        why.ends_with(&format!(
            "{FAKE_TREE_RULES}: no rule matches it and unmatched devices are blocked"
        )),
        "{why}"
    );
    host::assert_consistent(&h);
}

#[test]
fn blocked_names_the_file_line_and_rule() {
    let h = harness(Some(
        "allow id 1234:*\n\nblock via-port \"1-3\"   # no bluetooth\nallow\n",
    ));
    let ts = h.toolstack();
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    let e = ts
        .dev_attach(GUEST, &busid("1-3"), None, None)
        .unwrap_err()
        .to_string();
    let rules = h.sysfs().root().join(FAKE_TREE_RULES);
    assert_eq!(
        e,
        format!(
            "device 1-3 is blocked for domain {GUEST} by {}:3 `block via-port \"1-3\"`: \
             change the rules file (--rules, PVUSB_RULES) or assign another device",
            rules.display()
        )
    );
    refused(&h, &ts, GUEST, "1-3");
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
}

#[test]
fn rejected_by_interface_combination() {
    // 1-2 is a storage stick with a keyboard interface.
    let h = harness(Some(
        "reject with-interface all-of { 08:*:* 03:01:* }\n\
         allow with-interface one-of { 08:*:* e0:*:* }\n",
    ));
    let ts = h.toolstack();
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    let (what, why) = refused(&h, &ts, GUEST, "1-2");
    assert_eq!(what, "rejected");
    assert!(
        why.ends_with(":1 `reject with-interface all-of { 08:*:* 03:01:* }`"),
        "{why}"
    );
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
}

#[test]
fn domain_extension_by_name_and_domid() {
    let h = harness(Some(&format!(
        "allow via-port \"2-1\" domain one-of {{ \"{OTHER}\" }}\n\
         block via-port \"2-1\"\n\
         allow id 0781:* domain \"guest3\"\n"
    )));
    let ts = h.toolstack();
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    ts.ctrl_attach(OTHER, 2, 8).unwrap();
    refused(&h, &ts, OTHER, "1-3");
    ts.dev_attach(GUEST, &busid("1-3"), None, None).unwrap();
    refused(&h, &ts, GUEST, "2-1");
    ts.dev_attach(OTHER, &busid("2-1"), None, None).unwrap();
}

#[test]
fn unparsable_rules_fail_with_the_parse_error_and_rules_can_move() {
    let h = harness(Some("allow\nallow hash \"abc\"\n"));
    let mut ts = h.toolstack();
    let e = ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap_err();
    assert!(matches!(e, ToolError::Rules(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("{FAKE_TREE_RULES}:2:7: hash is not supported")),
        "{msg}"
    );
    assert!(!msg.contains('\n'));
    // --rules / PVUSB_RULES point elsewhere: that file decides.
    let other = h.dir().join("other.conf");
    std::fs::write(&other, "block id 0781:5567\n").unwrap();
    ts.sysfs = h.sysfs().sysfs().with_rules(&other);
    let _peer = Peer::start(&h);
    ts.ctrl_attach(GUEST, 2, 8).unwrap();
    let (_, why) = refused(&h, &ts, GUEST, "1-2");
    assert_eq!(why, format!("{}:1 `block id 0781:5567`", other.display()));
    // A --rules file that does not exist is no policy, like the default one.
    ts.sysfs = h.sysfs().sysfs().with_rules(h.dir().join("absent.conf"));
    ts.dev_attach(GUEST, &busid("1-2"), None, None).unwrap();
}
