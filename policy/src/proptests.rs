//! Property tests: the parser never panics, what it accepts prints back to
//! text that parses to the same rules, and matching agrees with a direct
//! reading of USBGuard's set operators.

use proptest::prelude::*;

use crate::matching::{decide, DeviceFacts, Guest};
use crate::parse::{parse, parse_bytes};
use crate::rule::*;

fn op() -> impl Strategy<Value = SetOp> {
    prop_oneof![
        Just(SetOp::OneOf),
        Just(SetOp::AllOf),
        Just(SetOp::NoneOf),
        Just(SetOp::Equals)
    ]
}

fn attr<T: std::fmt::Debug + Clone>(
    v: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<Attr<T>>> {
    proptest::option::of(
        (op(), proptest::collection::vec(v, 1..4)).prop_map(|(op, values)| Attr { op, values }),
    )
}

fn id() -> impl Strategy<Value = DeviceIdPattern> {
    prop_oneof![
        Just(DeviceIdPattern {
            vendor: None,
            product: None
        }),
        any::<u16>().prop_map(|v| DeviceIdPattern {
            vendor: Some(v),
            product: None
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(v, p)| DeviceIdPattern {
            vendor: Some(v),
            product: Some(p)
        }),
    ]
}

fn iface() -> impl Strategy<Value = InterfacePattern> {
    (
        any::<u8>(),
        proptest::option::of((any::<u8>(), proptest::option::of(any::<u8>()))),
    )
        .prop_map(|(class, rest)| InterfacePattern {
            class,
            subclass: rest.map(|r| r.0),
            protocol: rest.and_then(|r| r.1),
        })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 .-]{0,8}",
        any::<String>(),
        "[\"\\\\#{}\\x00-\\x1f]{0,4}"
    ]
}

/// An `allow` rule with only a `with-interface` attribute.
fn allow_with_interface(op: SetOp, values: Vec<InterfacePattern>) -> Rule {
    let mut rule = Rule::new(Target::Allow);
    rule.with_interface = Some(Attr { op, values });
    rule
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        prop_oneof![
            Just(Target::Allow),
            Just(Target::Block),
            Just(Target::Reject)
        ],
        attr(id()),
        attr(text()),
        attr(text()),
        attr(text()),
        attr(iface()),
        proptest::option::of(prop_oneof![
            text().prop_map(Attr::single),
            (
                prop_oneof![Just(SetOp::OneOf), Just(SetOp::NoneOf)],
                proptest::collection::vec(text(), 1..3)
            )
                .prop_map(|(op, values)| Attr { op, values }),
        ]),
        attr(text()),
    )
        .prop_map(
            |(target, id, name, serial, via_port, with_interface, domain, label)| Rule {
                line: 1,
                target,
                id,
                name,
                serial,
                via_port,
                with_interface,
                domain,
                label,
            },
        )
}

fn facts() -> impl Strategy<Value = DeviceFacts> {
    (
        any::<u16>(),
        any::<u16>(),
        proptest::option::of("[a-c]{0,2}"),
        proptest::option::of("[a-c]{0,2}"),
        "[1-2]-[1-2]",
        proptest::collection::vec((0u8..4, 0u8..3, 0u8..3), 0..4),
        proptest::option::of((0u16..4, proptest::option::of("[a-c]{1,2}"))),
    )
        .prop_map(
            |(vendor, product, name, serial, port, ifs, guest)| DeviceFacts {
                vendor,
                product,
                name,
                serial,
                port,
                interfaces: ifs
                    .into_iter()
                    .map(|(class, subclass, protocol)| InterfaceClass {
                        class,
                        subclass,
                        protocol,
                    })
                    .collect(),
                guest: guest.map(|(domid, name)| Guest { domid, name }),
            },
        )
}

proptest! {
    #[test]
    fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_bytes(&bytes);
    }

    #[test]
    fn never_panics_on_rule_like_text(s in "(allow|block|reject|id|serial|with-interface|domain|one-of|all-of|none-of|equals|[{}\"#: *0-9a-f\\\\x-]|\n){0,40}") {
        if let Ok(rules) = parse(&s) {
            // Accepted text prints back to text that parses to the same rules.
            let printed: Vec<String> = rules.iter().map(ToString::to_string).collect();
            let again = parse(&printed.join("\n")).unwrap();
            prop_assert_eq!(
                rules.iter().map(Rule::without_line).collect::<Vec<_>>(),
                again.iter().map(Rule::without_line).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn display_parse_round_trip(r in rule()) {
        let text = r.to_string();
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back.len(), 1);
        prop_assert_eq!(&back[0], &r, "{}", text);
    }

    #[test]
    fn errors_point_into_the_text(s in "[a-z{}\" :*#0-9-]{0,30}(\n[a-z{}\" :*0-9-]{0,30}){0,3}") {
        if let Err(e) = parse(&s) {
            let lines: Vec<&str> = s.split('\n').collect();
            prop_assert!(e.line >= 1 && e.line <= lines.len());
            prop_assert!(e.col >= 1 && e.col <= lines[e.line - 1].chars().count() + 1);
        }
    }

    #[test]
    fn first_match_decides(rules in proptest::collection::vec(rule(), 0..5), d in facts()) {
        let dec = decide(&rules, &d);
        match rules.iter().position(|r| r.matches(&d)) {
            Some(i) => {
                prop_assert_eq!(dec.rule, Some(&rules[i]));
                prop_assert_eq!(dec.target, rules[i].target);
            }
            None => prop_assert_eq!((dec.rule, dec.target), (None, Target::Block)),
        }
    }

    #[test]
    fn none_of_is_the_negation_of_one_of(values in proptest::collection::vec(iface(), 1..4), d in facts()) {
        let one = allow_with_interface(SetOp::OneOf, values.clone());
        let none = allow_with_interface(SetOp::NoneOf, values);
        prop_assert_ne!(one.matches(&d), none.matches(&d));
    }

    #[test]
    fn equals_implies_all_of(values in proptest::collection::vec(iface(), 1..4), d in facts()) {
        let eq = allow_with_interface(SetOp::Equals, values.clone());
        let all = allow_with_interface(SetOp::AllOf, values);
        prop_assert!(!eq.matches(&d) || all.matches(&d));
    }

    #[test]
    fn descriptor_walkers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let _ = crate::descriptors::sysfs_interfaces(&bytes);
        let _ = crate::descriptors::config_interfaces(&bytes);
    }
}
