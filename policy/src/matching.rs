//! Matching a device against the rules: pure, [`DeviceFacts`] in, a
//! [`Decision`] (the target and the rule that chose it) out.
//!
//! The set operators follow USBGuard's `Rule::Attribute::appliesTo`
//! (`setSolveOneOf`, `setSolveAllOf`, `setSolveNoneOf`, `setSolveEquals` in
//! `src/Library/public/usbguard/Rule.hpp`): rule values are compared with the
//! device's values of that attribute, a rule value with wildcards matching
//! every device value it covers. Single-valued device attributes (id, name,
//! serial, via-port, the guest) are a set of one; a missing name or serial is
//! the empty string, as USBGuard has it, so `serial ""` matches a device
//! without one.

use crate::rule::{Attr, InterfaceClass, Rule, SetOp, Target};

/// The guest a device is to be given to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Guest {
    /// Its domid.
    pub domid: u16,
    /// Its name (xenstore `/local/domain/<domid>/name`), if it has one.
    pub name: Option<String>,
}

/// What matching needs to know about a device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceFacts {
    /// idVendor.
    pub vendor: u16,
    /// idProduct.
    pub product: u16,
    /// The product string (USBGuard's `name`).
    pub name: Option<String>,
    /// The serial number string.
    pub serial: Option<String>,
    /// The busid (`1-2.3`; USBGuard's `via-port` port id).
    pub port: String,
    /// The class triple of each interface (see [`crate::descriptors`]).
    pub interfaces: Vec<InterfaceClass>,
    /// The guest; `None` when not known (then `domain` and `domain one-of`
    /// do not match, `domain none-of` does).
    pub guest: Option<Guest>,
}

/// The outcome of matching: what to do and which rule said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// What to do.
    pub target: Target,
    /// The first rule that matched; `None` when none did and the implicit
    /// target applies.
    pub rule: Option<&'a Rule>,
}

impl Decision<'_> {
    /// Whether the device may be given to the guest.
    pub fn allowed(&self) -> bool {
        self.target == Target::Allow
    }
}

/// What applies when no rule matches a device: `block`, USBGuard's default
/// `ImplicitPolicyTarget` (usbguard-daemon.conf(5)). A rules file exists
/// to narrow what may be passed through; allowing whatever it forgot would
/// turn every omission into an opening.
pub const IMPLICIT_TARGET: Target = Target::Block;

/// USBGuard's set operators over rule values `rule` and device values
/// `device`, with `matches(rule_value, device_value)`.
fn solve<R, D>(op: SetOp, rule: &[R], device: &[D], matches: impl Fn(&R, &D) -> bool) -> bool {
    let hit = |r: &R| device.iter().any(|d| matches(r, d));
    match op {
        SetOp::OneOf => rule.iter().any(hit),
        SetOp::AllOf => rule.iter().all(hit),
        SetOp::NoneOf => !rule.iter().any(hit),
        SetOp::Equals => rule.len() == device.len() && rule.iter().all(hit),
    }
}

fn applies<R, D>(attr: &Option<Attr<R>>, device: &[D], matches: impl Fn(&R, &D) -> bool) -> bool {
    attr.as_ref()
        .is_none_or(|a| solve(a.op, &a.values, device, matches))
}

fn text(s: &Option<String>) -> [&str; 1] {
    [s.as_deref().unwrap_or("")]
}

impl Rule {
    /// Whether every attribute of the rule applies to the device.
    pub fn matches(&self, d: &DeviceFacts) -> bool {
        let same = |r: &String, v: &&str| r == v;
        applies(&self.id, &[(d.vendor, d.product)], |r, (v, p)| {
            r.matches(*v, *p)
        }) && applies(&self.name, &text(&d.name), same)
            && applies(&self.serial, &text(&d.serial), same)
            && applies(&self.via_port, &[d.port.as_str()], same)
            && applies(&self.with_interface, &d.interfaces, |r, i| r.matches(i))
            && applies(&self.domain, d.guest.as_slice(), |r, g| {
                g.name.as_deref() == Some(r.as_str()) || *r == g.domid.to_string()
            })
    }
}

/// The first rule that matches `device`, or the implicit target.
pub fn decide<'a>(rules: &'a [Rule], device: &DeviceFacts) -> Decision<'a> {
    match rules.iter().find(|r| r.matches(device)) {
        Some(rule) => Decision {
            target: rule.target,
            rule: Some(rule),
        },
        None => Decision {
            target: IMPLICIT_TARGET,
            rule: None,
        },
    }
}

/// Whether any rule looks at interfaces (so a caller that must ask the
/// device for its configuration descriptors can skip that otherwise).
pub fn needs_interfaces(rules: &[Rule]) -> bool {
    rules.iter().any(|r| r.with_interface.is_some())
}

/// Whether any rule names guests (so a caller can skip looking up the
/// guest's name otherwise).
pub fn needs_guest(rules: &[Rule]) -> bool {
    rules.iter().any(|r| r.domain.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn stick() -> DeviceFacts {
        DeviceFacts {
            vendor: 0x0781,
            product: 0x5567,
            name: Some("Cruzer Blade".into()),
            serial: Some("4C530001".into()),
            port: "1-2".into(),
            interfaces: vec![InterfaceClass {
                class: 8,
                subclass: 6,
                protocol: 0x50,
            }],
            guest: Some(Guest {
                domid: 3,
                name: Some("web".into()),
            }),
        }
    }

    fn target(rules: &str, d: &DeviceFacts) -> (Target, usize) {
        let rules = parse(rules).unwrap();
        let dec = decide(&rules, d);
        (dec.target, dec.rule.map_or(0, |r| r.line))
    }

    #[test]
    fn first_match_wins_and_the_implicit_target_is_block() {
        let d = stick();
        assert_eq!(target("block id 0781:*\nallow", &d), (Target::Block, 1));
        assert_eq!(target("allow id 1234:*\nreject", &d), (Target::Reject, 2));
        assert_eq!(target("allow id 1234:*", &d), (Target::Block, 0));
        assert_eq!(target("", &d), (Target::Block, 0));
    }

    #[test]
    fn string_attributes() {
        let d = stick();
        assert_eq!(
            target(
                r#"allow name "Cruzer Blade" serial "4C530001" via-port "1-2""#,
                &d
            )
            .0,
            Target::Allow
        );
        assert_eq!(
            target(r#"allow via-port one-of { "1-3" "1-2" }"#, &d).0,
            Target::Allow
        );
        assert_eq!(
            target(r#"allow via-port none-of { "1-2" }"#, &d).0,
            Target::Block
        );
        assert_eq!(target(r#"allow serial "other""#, &d).0, Target::Block);
        let mut anon = d.clone();
        anon.serial = None;
        assert_eq!(target(r#"allow serial """#, &anon).0, Target::Allow);
    }

    #[test]
    fn interface_set_operators_follow_usbguard() {
        let d = stick();
        let mut combo = d.clone();
        combo.interfaces.push(InterfaceClass {
            class: 3,
            subclass: 1,
            protocol: 1,
        });
        let only_storage = "allow with-interface equals { 08:*:* }";
        let bad = "reject with-interface all-of { 08:*:* 03:*:* }\nallow";
        let none_of_hid = "allow with-interface none-of { 03:*:* }";
        let cases = [
            (only_storage, &d, Target::Allow),
            (only_storage, &combo, Target::Block),
            ("allow with-interface 08:*:*", &combo, Target::Block),
            (bad, &combo, Target::Reject),
            (bad, &d, Target::Allow),
            (
                "allow with-interface one-of { 03:01:01 e0:*:* }",
                &combo,
                Target::Allow,
            ),
            (none_of_hid, &combo, Target::Block),
            (none_of_hid, &d, Target::Allow),
        ];
        for (policy, device, want) in cases {
            let interfaces = &device.interfaces;
            assert_eq!(target(policy, device).0, want, "{policy} on {interfaces:?}");
        }
    }

    #[test]
    fn domain_by_name_or_domid() {
        let d = stick();
        assert_eq!(target(r#"allow domain "web""#, &d).0, Target::Allow);
        assert_eq!(target(r#"allow domain "3""#, &d).0, Target::Allow);
        assert_eq!(
            target(r#"allow domain one-of { "db" "4" }"#, &d).0,
            Target::Block
        );
        assert_eq!(
            target(r#"allow domain none-of { "db" }"#, &d).0,
            Target::Allow
        );
        let mut unknown = d.clone();
        unknown.guest = None;
        assert_eq!(target(r#"allow domain "web""#, &unknown).0, Target::Block);
        assert_eq!(
            target(r#"allow domain none-of { "web" }"#, &unknown).0,
            Target::Allow
        );
    }

    #[test]
    fn id_wildcards() {
        let d = stick();
        assert_eq!(target("allow *:*", &d).0, Target::Allow);
        assert_eq!(
            target("allow id one-of { 1234:5678 0781:5567 }", &d).0,
            Target::Allow
        );
        assert_eq!(target("allow id 0781:5568", &d).0, Target::Block);
        assert!(needs_interfaces(
            &parse("allow\nallow with-interface 03:*:*").unwrap()
        ));
        assert!(!needs_guest(&parse("allow id *:*").unwrap()));
    }
}
