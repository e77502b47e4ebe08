//! What is wrong with a line of a rules file, each with what to write
//! instead ([`crate::ParseError`] adds where).

/// A rules-file syntax error's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file's bytes are not UTF-8.
    #[error("not UTF-8: save the file as UTF-8 (write other bytes as \\xHH in strings)")]
    FileNotUtf8,
    /// A string runs to the end of its line.
    #[error("unterminated string: close it with \" on the same line")]
    UnterminatedString,
    /// A string ends in a backslash.
    #[error("a string ends in a lone \\: write \\\\")]
    LoneBackslash,
    /// `\x` without two hex digits.
    #[error("\\x needs two hex digits, e.g. \\x0a")]
    BadHexEscape,
    /// A decimal escape above 255.
    #[error("a decimal escape is at most \\255")]
    DecimalEscapeTooBig,
    /// A backslash before a character that is no escape.
    #[error("unknown escape \\{0}: write \\\\ for a backslash")]
    UnknownEscape(char),
    /// A string's escapes make bytes that are not UTF-8.
    #[error("the string's escapes do not form UTF-8: pvusb compares UTF-8 strings")]
    StringNotUtf8,
    /// A rule that does not start with a word.
    #[error("a rule starts with allow, block or reject")]
    NoTarget,
    /// A rule that starts with another word.
    #[error("a rule starts with allow, block or reject, not {0:?}")]
    BadTarget(String),
    /// A USBGuard keyword pvusb does not implement (target, attribute or
    /// set operator), with what to write instead.
    #[error("{word} {why}")]
    Unsupported {
        /// The keyword.
        word: String,
        /// Why, and what to write instead.
        why: &'static str,
    },
    /// Something other than a name where an attribute starts.
    #[error(
        "expected an attribute name (id, name, serial, via-port, with-interface, domain, label)"
    )]
    ExpectedAttribute,
    /// An attribute given twice in one rule.
    #[error("{0} is given twice: merge the values into one set, e.g. {0} one-of {{ ... }}")]
    Duplicate(String),
    /// `domain` with several values and no operator.
    #[error("a device goes to one guest: write domain one-of {{ ... }}")]
    OneDomain,
    /// A device id elsewhere than right after the target.
    #[error("{0:?} must follow the target directly or be written id {0}")]
    IdNotFirst(String),
    /// A word that is no attribute.
    #[error(
        "unknown attribute {0:?}: use id, name, serial, via-port, with-interface, domain or label"
    )]
    UnknownAttribute(String),
    /// A set operator without its `{`.
    #[error("{op} needs a set: {name} {op} {{ ... }}")]
    NeedsSet {
        /// The attribute.
        name: String,
        /// The operator's keyword.
        op: &'static str,
    },
    /// An operator the attribute does not take.
    #[error("{name} takes one value, one-of {{ ... }} or none-of {{ ... }}, not {op}")]
    OperatorNotAllowed {
        /// The attribute.
        name: String,
        /// The operator's keyword.
        op: &'static str,
    },
    /// A set without its closing `}`.
    #[error("{0}: the set is not closed: end it with }} on the same line")]
    SetNotClosed(String),
    /// A `{` inside a set.
    #[error("{0}: sets do not nest")]
    NestedSet(String),
    /// `{ }`.
    #[error("{0}: a set needs at least one value")]
    EmptySet(String),
    /// The device id right after the target is malformed.
    #[error("{0}")]
    Id(BadValue),
    /// An attribute's value is malformed.
    #[error("{name}: {value}")]
    Value {
        /// The attribute.
        name: String,
        /// What is wrong with the value.
        value: BadValue,
    },
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    /// No value where one is due.
    #[error("a value is missing")]
    Missing,
    /// A word where a quoted string is due.
    #[error("expected a quoted string, e.g. \"1-2\"")]
    NotQuoted,
    /// Not `VID:PID`.
    #[error("{0:?} is not a device id: write VID:PID in hex, e.g. 0781:5567, 0781:* or *:*")]
    NotDeviceId(String),
    /// `*:PID`.
    #[error("{id:?}: a product id needs its vendor id; write VID:{product} or *:*")]
    ProductWithoutVendor {
        /// The value.
        id: String,
        /// Its product part.
        product: String,
    },
    /// Not `CC:SS:PP`.
    #[error("{0:?} is not an interface type: write class:subclass:protocol in hex, e.g. 08:06:50, 03:01:* or 08:*:*")]
    NotInterface(String),
    /// `CC:*:PP`.
    #[error("{id:?}: with a * subclass the protocol must be * too ({class}:*:*)")]
    ProtocolWithoutSubclass {
        /// The value.
        id: String,
        /// Its class part.
        class: String,
    },
}
