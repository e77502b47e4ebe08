//! Target `policy_rules`: the device rules parser (`pvusb_policy::parse`,
//! USBGuard's rule language: targets, attributes, set operators, strings
//! with escapes, comments), the matcher, and the interface walkers over raw
//! descriptors (`pvusb_policy::descriptors`).
//!
//! Input layout: the whole input is the rules file (bytes, UTF-8 checked by
//! the parser) and also the descriptor blob.
//! Oracles: no panic; an error names a line of the text and a column within
//! it (or one past its end); accepted rules print back to text that parses
//! to the same rules; matching a few fixed devices agrees with "first rule
//! whose `matches` is true, else block".

use pvusb_policy::descriptors::{config_interfaces, sysfs_interfaces};
use pvusb_policy::{decide, parse, parse_bytes, DeviceFacts, Guest, InterfaceClass, Rule, Target};

/// Run one input. Panics only when an oracle fails.
pub fn run(data: &[u8]) {
    let _ = sysfs_interfaces(data);
    let _ = config_interfaces(data);
    match parse_bytes(data) {
        Ok(rules) => {
            let printed: Vec<String> = rules.iter().map(ToString::to_string).collect();
            let text = printed.join("\n");
            let again =
                parse(&text).unwrap_or_else(|e| panic!("printed rules {text:?} refused: {e}"));
            let strip = |r: &[Rule]| r.iter().map(Rule::without_line).collect::<Vec<_>>();
            assert_eq!(strip(&again), strip(&rules), "printed as {text:?}");
            for d in devices() {
                let dec = decide(&rules, &d);
                match rules.iter().find(|r| r.matches(&d)) {
                    Some(r) => assert_eq!((dec.target, dec.rule), (r.target, Some(r))),
                    None => assert_eq!((dec.target, dec.rule), (Target::Block, None)),
                }
            }
        }
        Err(e) => {
            let text = String::from_utf8_lossy(data);
            let lines: Vec<&str> = text.split('\n').collect();
            assert!((1..=lines.len()).contains(&e.line), "{e}");
            let len = lines[e.line - 1].chars().count();
            assert!((1..=len + 1).contains(&e.col), "{e}");
        }
    }
}

fn devices() -> Vec<DeviceFacts> {
    let i = |class, subclass, protocol| InterfaceClass {
        class,
        subclass,
        protocol,
    };
    vec![
        DeviceFacts::default(),
        DeviceFacts {
            vendor: 0x0781,
            product: 0x5567,
            name: Some("Cruzer Blade".into()),
            serial: Some("4C530001".into()),
            port: "1-2".into(),
            interfaces: vec![i(8, 6, 0x50), i(3, 1, 1)],
            guest: Some(Guest {
                domid: 3,
                name: Some("web".into()),
            }),
        },
    ]
}

/// Inputs reaching every construct of the language and each refusal.
pub fn seeds() -> Vec<Vec<u8>> {
    [
        "# policy\n\nallow id 0781:5567 serial \"4C530001\" name \"Cruzer Blade\" via-port \"1-2\"\n",
        "allow 1050:0011 name \"Yubico Yubikey II\" via-port \"1-2\"\nreject via-port \"1-2\"\n",
        "allow with-interface equals { 08:*:* }\nreject with-interface all-of { 08:*:* 03:00:* }\n",
        "block with-interface one-of { 03:01:* e0:*:* } # hid\nallow with-interface none-of { 02:*:* }\n",
        "allow id one-of { 1234:* *:* } domain one-of { \"web\" \"3\" }\nblock domain none-of { \"db\" }\n",
        "allow serial \"a\\\"b\\\\c\\x41\\65\\n\" label \"x\"\r\nallow serial \"\"\n",
        "allow hash \"044b5e168d40ee0245478416caf3d998\"\n",
        "allow id equals-ordered { 1234:* }\nmatch\nallow if true\nallow id *:12\n",
        "allow with-interface 08:*:50\nallow id { }\nallow id { 1234:*\nallow serial \"\\xff\"\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([b"allow name \"\xff\"\n".to_vec()])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::clean_run_tests!();

    /// Noise drawn from the language's own characters, which gets past the
    /// lexer far more often than arbitrary bytes.
    #[test]
    fn keyword_noise_runs_clean() {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for len in 0..200 {
            let noise: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    b"allow block id 0123:*{} \"#\n-of"[(x % 30) as usize]
                })
                .collect();
            run(&noise);
        }
    }
}
