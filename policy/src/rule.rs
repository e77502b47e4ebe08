//! The rule model and its canonical text form.
//!
//! [`Rule`]'s `Display` is USBGuard's `toRuleString`: an attribute with one
//! value and the default operator (`equals`) is written single-valued, every
//! other one as `[operator] { v1 v2 ... }` with the operator left out when it
//! is `equals`. Attributes come out in one fixed order, so that
//! `parse(display(rule))` gives the rule back (the property tests check it).

use std::fmt;

/// What a matching rule does with the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The device may be given to the guest.
    Allow,
    /// The device is refused.
    Block,
    /// The device is refused. USBGuard also removes it from the host; pvusb
    /// leaves the host's own use of it alone, so it differs from `block` only
    /// in the word the refusal uses.
    Reject,
}

impl Target {
    /// The keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Target::Allow => "allow",
            Target::Block => "block",
            Target::Reject => "reject",
        }
    }

    /// The participle used in refusals ("blocked", "rejected").
    pub fn verb(self) -> &'static str {
        match self {
            Target::Allow => "allowed",
            Target::Block => "blocked",
            Target::Reject => "rejected",
        }
    }
}

/// How a multi-valued attribute compares its values with the device's
/// (USBGuard's `Rule::SetOperator`, the subset pvusb implements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetOp {
    /// Some rule value matches some device value.
    OneOf,
    /// Every rule value matches some device value.
    AllOf,
    /// No rule value matches any device value.
    NoneOf,
    /// As many values as the device has, and every rule value matches one of
    /// them (USBGuard's default, also for single-valued attributes).
    Equals,
}

impl SetOp {
    /// The keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            SetOp::OneOf => "one-of",
            SetOp::AllOf => "all-of",
            SetOp::NoneOf => "none-of",
            SetOp::Equals => "equals",
        }
    }
}

/// One attribute of a rule: an operator and at least one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attr<T> {
    /// The set operator.
    pub op: SetOp,
    /// The values, in the order written.
    pub values: Vec<T>,
}

impl<T> Attr<T> {
    /// A single-valued attribute (operator `equals`).
    pub fn single(value: T) -> Self {
        Self {
            op: SetOp::Equals,
            values: vec![value],
        }
    }
}

/// `VID:PID` with `*` wildcards: `1234:5678`, `1234:*`, `*:*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceIdPattern {
    /// idVendor, `None` for `*`.
    pub vendor: Option<u16>,
    /// idProduct, `None` for `*` (always `None` when `vendor` is).
    pub product: Option<u16>,
}

impl DeviceIdPattern {
    /// Whether the pattern covers this id.
    pub fn matches(&self, vendor: u16, product: u16) -> bool {
        self.vendor.is_none_or(|v| v == vendor) && self.product.is_none_or(|p| p == product)
    }
}

/// `CC:SS:PP` with `*` for the subclass and protocol (`08:*:*`, `03:01:*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfacePattern {
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass, `None` for `*`.
    pub subclass: Option<u8>,
    /// bInterfaceProtocol, `None` for `*` (always `None` when `subclass` is).
    pub protocol: Option<u8>,
}

/// An interface's class triple as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InterfaceClass {
    /// bInterfaceClass.
    pub class: u8,
    /// bInterfaceSubClass.
    pub subclass: u8,
    /// bInterfaceProtocol.
    pub protocol: u8,
}

impl InterfacePattern {
    /// Whether the pattern covers this interface.
    pub fn matches(&self, i: &InterfaceClass) -> bool {
        self.class == i.class
            && self.subclass.is_none_or(|s| s == i.subclass)
            && self.protocol.is_none_or(|p| p == i.protocol)
    }
}

/// One rule of a rules file. Absent attributes match every device.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// 1-based line in its file (0 for rules not read from a file).
    pub line: usize,
    /// What it does.
    pub target: Target,
    /// `id`.
    pub id: Option<Attr<DeviceIdPattern>>,
    /// `name` (the product string).
    pub name: Option<Attr<String>>,
    /// `serial`.
    pub serial: Option<Attr<String>>,
    /// `via-port` (the busid, e.g. `1-2.3`).
    pub via_port: Option<Attr<String>>,
    /// `with-interface`.
    pub with_interface: Option<Attr<InterfacePattern>>,
    /// `domain` (pvusb extension): the guests, by name or domid.
    pub domain: Option<Attr<String>>,
    /// `label`: kept and shown, never matched (as in USBGuard).
    pub label: Option<Attr<String>>,
}

impl Rule {
    /// A rule with only a target (it matches every device).
    pub fn new(target: Target) -> Self {
        Self {
            line: 0,
            target,
            id: None,
            name: None,
            serial: None,
            via_port: None,
            with_interface: None,
            domain: None,
            label: None,
        }
    }

    /// The rule without its line number, for comparing what rules say.
    pub fn without_line(&self) -> Self {
        Self {
            line: 0,
            ..self.clone()
        }
    }
}

/// Writes `s` as a rule-language string literal: `"` and `\` escaped,
/// control characters as `\xHH`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `value` as `width` lowercase hex digits, or `*` for "any".
fn hex_or_any(
    f: &mut fmt::Formatter<'_>,
    value: Option<impl fmt::LowerHex>,
    width: usize,
) -> fmt::Result {
    match value {
        Some(v) => write!(f, "{v:0width$x}"),
        None => f.write_str("*"),
    }
}

impl fmt::Display for DeviceIdPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex_or_any(f, self.vendor, 4)?;
        f.write_str(":")?;
        hex_or_any(f, self.product, 4)
    }
}

impl fmt::Display for InterfacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:", self.class)?;
        hex_or_any(f, self.subclass, 2)?;
        f.write_str(":")?;
        hex_or_any(f, self.protocol, 2)
    }
}

impl fmt::Display for InterfaceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}:{:02x}",
            self.class, self.subclass, self.protocol
        )
    }
}

fn write_attr<T>(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    attr: &Option<Attr<T>>,
    value: impl Fn(&T) -> String,
) -> fmt::Result {
    let Some(a) = attr else { return Ok(()) };
    write!(f, " {name} ")?;
    if a.op == SetOp::Equals && a.values.len() == 1 {
        return f.write_str(&value(&a.values[0]));
    }
    if a.op != SetOp::Equals {
        write!(f, "{} ", a.op.keyword())?;
    }
    f.write_str("{")?;
    for v in &a.values {
        write!(f, " {}", value(v))?;
    }
    f.write_str(" }")
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.target.keyword())?;
        write_attr(f, "id", &self.id, ToString::to_string)?;
        write_attr(f, "name", &self.name, |s| quote(s))?;
        write_attr(f, "serial", &self.serial, |s| quote(s))?;
        write_attr(f, "via-port", &self.via_port, |s| quote(s))?;
        write_attr(
            f,
            "with-interface",
            &self.with_interface,
            ToString::to_string,
        )?;
        write_attr(f, "domain", &self.domain, |s| quote(s))?;
        write_attr(f, "label", &self.label, |s| quote(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_uses_usbguard_forms() {
        let mut r = Rule::new(Target::Allow);
        r.id = Some(Attr::single(DeviceIdPattern {
            vendor: Some(0x1050),
            product: None,
        }));
        r.with_interface = Some(Attr {
            op: SetOp::AllOf,
            values: vec![
                InterfacePattern {
                    class: 8,
                    subclass: None,
                    protocol: None,
                },
                InterfacePattern {
                    class: 3,
                    subclass: Some(1),
                    protocol: None,
                },
            ],
        });
        r.serial = Some(Attr {
            op: SetOp::Equals,
            values: vec!["a\"b\\c\n".into(), "x".into()],
        });
        assert_eq!(
            r.to_string(),
            r#"allow id 1050:* serial { "a\"b\\c\x0a" "x" } with-interface all-of { 08:*:* 03:01:* }"#
        );
        assert_eq!(Rule::new(Target::Reject).to_string(), "reject");
    }

    #[test]
    fn patterns_match_with_wildcards() {
        let any = DeviceIdPattern {
            vendor: None,
            product: None,
        };
        let vendor = DeviceIdPattern {
            vendor: Some(0x1234),
            product: None,
        };
        assert!(any.matches(1, 2));
        assert!(vendor.matches(0x1234, 7));
        assert!(!vendor.matches(0x1235, 7));
        let kbd = InterfaceClass {
            class: 3,
            subclass: 1,
            protocol: 1,
        };
        let hid = InterfacePattern {
            class: 3,
            subclass: None,
            protocol: None,
        };
        let boot = InterfacePattern {
            class: 3,
            subclass: Some(1),
            protocol: Some(2),
        };
        assert!(hid.matches(&kbd));
        assert!(!boot.matches(&kbd));
    }
}
