//! The rules-file parser: one rule per line, `#` comments, blank lines.
//!
//! Grammar (USBGuard's `Grammar.hpp`, the subset of [`crate`]'s doc):
//!
//! ```text
//! line      ::= [rule] [comment]
//! rule      ::= target [device-id] attribute*
//! target    ::= "allow" | "block" | "reject"
//! attribute ::= name value | name [operator] "{" value+ "}"
//! operator  ::= "one-of" | "all-of" | "none-of" | "equals"
//! ```
//!
//! Every error carries the 1-based line and column (in characters) of the
//! token it is about. Keywords USBGuard knows but pvusb does not implement
//! are refused by name, with what to write instead, rather than being
//! reported as unknown words.

use crate::problem::{BadValue, Problem};
use crate::rule::{Attr, DeviceIdPattern, InterfacePattern, Rule, SetOp, Target};

/// A rules-file syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {reason}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong and what to write instead.
    pub reason: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    col: usize,
}

/// Parses a whole rules file. Rules keep their line numbers.
pub fn parse(text: &str) -> Result<Vec<Rule>, ParseError> {
    let mut rules = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(mut rule) = parse_line(line, i + 1)? {
            rule.line = i + 1;
            rules.push(rule);
        }
    }
    Ok(rules)
}

/// Parses a rules file given as bytes (it must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<Vec<Rule>, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(text),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
            let start = good.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            let col = String::from_utf8_lossy(&good[start..]).chars().count() + 1;
            Err(ParseError {
                line,
                col,
                reason: Problem::FileNotUtf8,
            })
        }
    }
}

/// Parses one line; `None` for blank and comment lines.
pub fn parse_line(line: &str, number: usize) -> Result<Option<Rule>, ParseError> {
    let tokens = tokenize(line, number)?;
    if tokens.is_empty() {
        return Ok(None);
    }
    Parser {
        tokens,
        pos: 0,
        line: number,
        end_col: line.chars().count() + 1,
    }
    .rule()
    .map(Some)
}

fn err(line: usize, col: usize, reason: Problem) -> ParseError {
    ParseError { line, col, reason }
}

fn tokenize(line: &str, number: usize) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        match c {
            ' ' | '\t' => i += 1,
            '#' => break,
            '{' | '}' => {
                out.push(Token {
                    tok: if c == '{' { Tok::Open } else { Tok::Close },
                    col,
                });
                i += 1;
            }
            '"' => {
                let (s, next) = string(&chars, i, number)?;
                out.push(Token {
                    tok: Tok::Str(s),
                    col,
                });
                i = next;
            }
            _ => {
                let start = i;
                while i < chars.len() && !matches!(chars[i], ' ' | '\t' | '{' | '}' | '"' | '#') {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(chars[start..i].iter().collect()),
                    col,
                });
            }
        }
    }
    Ok(out)
}

/// A string literal starting at `chars[open]` (the `"`): its value and the
/// index after the closing quote. Escapes as in USBGuard: `\"` `\\` `\'`
/// `\a` `\b` `\f` `\n` `\r` `\t` `\v`, `\xHH` and decimal `\D`..`\DDD`.
fn string(chars: &[char], open: usize, line: usize) -> Result<(String, usize), ParseError> {
    let mut bytes = Vec::new();
    let mut i = open + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(err(line, open + 1, Problem::UnterminatedString));
        };
        match c {
            '"' => break,
            '\\' => {
                let col = i + 1;
                let Some(&e) = chars.get(i + 1) else {
                    return Err(err(line, col, Problem::LoneBackslash));
                };
                i += 2;
                let byte = match e {
                    '"' | '\\' | '\'' => e as u8,
                    'a' => 7,
                    'b' => 8,
                    'f' => 12,
                    'n' => b'\n',
                    'r' => b'\r',
                    't' => b'\t',
                    'v' => 11,
                    'x' => {
                        let hex: String = chars.get(i..i + 2).unwrap_or_default().iter().collect();
                        i += 2;
                        match (hex.len() == 2).then(|| u8::from_str_radix(&hex, 16)) {
                            Some(Ok(b)) => b,
                            _ => return Err(err(line, col, Problem::BadHexEscape)),
                        }
                    }
                    '0'..='9' => {
                        let mut v = u32::from(e as u8 - b'0');
                        for _ in 0..2 {
                            match chars.get(i) {
                                Some(d) if d.is_ascii_digit() => {
                                    v = v * 10 + u32::from(*d as u8 - b'0');
                                    i += 1;
                                }
                                _ => break,
                            }
                        }
                        u8::try_from(v).map_err(|_| err(line, col, Problem::DecimalEscapeTooBig))?
                    }
                    other => return Err(err(line, col, Problem::UnknownEscape(other))),
                };
                bytes.push(byte);
            }
            c => {
                let mut buf = [0; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += 1;
            }
        }
    }
    let s = String::from_utf8(bytes).map_err(|_| err(line, open + 1, Problem::StringNotUtf8))?;
    Ok((s, i + 1))
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    line: usize,
    end_col: usize,
}

/// Keywords of USBGuard's language that pvusb refuses, and why.
fn unsupported(word: &str) -> Option<&'static str> {
    Some(match word {
        "hash" | "parent-hash" => {
            "is not supported: pvusb does not compute USBGuard's device hashes; \
             match with id, serial, name and via-port instead"
        }
        "with-connect-type" => {
            "is not supported: pvusb cannot see a port's connect type; use via-port"
        }
        "if" => "is not supported: rule conditions are not evaluated by pvusb; remove it",
        "key" => "is not supported: remove it",
        "equals-ordered" | "match-all" => "is not supported: use one-of, all-of, none-of or equals",
        "match" | "device" => "is not a pvusb target: use allow, block or reject",
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos);
        self.pos += 1;
        t
    }

    fn col(&self) -> usize {
        self.peek().map_or(self.end_col, |t| t.col)
    }

    fn fail<T>(&self, col: usize, reason: Problem) -> Result<T, ParseError> {
        Err(err(self.line, col, reason))
    }

    fn rule(mut self) -> Result<Rule, ParseError> {
        let col = self.col();
        let target = match self.next().map(|t| &t.tok) {
            Some(Tok::Word(w)) => match w.as_str() {
                "allow" => Target::Allow,
                "block" => Target::Block,
                "reject" => Target::Reject,
                w => {
                    let why = unsupported(w)
                        .filter(|_| matches!(w, "match" | "device"))
                        .map_or_else(
                            || Problem::BadTarget(w.to_owned()),
                            |why| Problem::Unsupported {
                                word: w.to_owned(),
                                why,
                            },
                        );
                    return self.fail(col, why);
                }
            },
            _ => return self.fail(col, Problem::NoTarget),
        };
        let mut rule = Rule::new(target);
        // USBGuard accepts a bare device id right after the target.
        if let Some(Token {
            tok: Tok::Word(w),
            col,
        }) = self.peek()
        {
            if w.contains(':') {
                let (w, col) = (w.clone(), *col);
                self.pos += 1;
                rule.id = Some(Attr::single(
                    device_id(&w).map_err(|r| err(self.line, col, Problem::Id(r)))?,
                ));
            }
        }
        while let Some(t) = self.next() {
            let col = t.col;
            let Tok::Word(name) = t.tok.clone() else {
                return self.fail(col, Problem::ExpectedAttribute);
            };
            let dup = |present: bool| -> Result<(), ParseError> {
                if present {
                    Err(err(self.line, col, Problem::Duplicate(name.clone())))
                } else {
                    Ok(())
                }
            };
            match name.as_str() {
                "id" => {
                    dup(rule.id.is_some())?;
                    rule.id = Some(self.values(&name, |s, _| device_id(s), None)?);
                }
                "with-interface" => {
                    dup(rule.with_interface.is_some())?;
                    rule.with_interface = Some(self.values(&name, |s, _| interface(s), None)?);
                }
                // The string attributes: any set operator, any number of values.
                "name" | "serial" | "via-port" | "label" => {
                    let slot = match name.as_str() {
                        "name" => &mut rule.name,
                        "serial" => &mut rule.serial,
                        "via-port" => &mut rule.via_port,
                        _ => &mut rule.label,
                    };
                    dup(slot.is_some())?;
                    *slot = Some(self.strings(&name, None)?);
                }
                "domain" => {
                    dup(rule.domain.is_some())?;
                    let ops: &[SetOp] = &[SetOp::Equals, SetOp::OneOf, SetOp::NoneOf];
                    let a = self.strings(&name, Some(ops))?;
                    if a.op == SetOp::Equals && a.values.len() > 1 {
                        return self.fail(col, Problem::OneDomain);
                    }
                    rule.domain = Some(a);
                }
                other => {
                    return self.fail(
                        col,
                        match unsupported(other) {
                            Some(why) => Problem::Unsupported {
                                word: other.to_owned(),
                                why,
                            },
                            None if other.contains(':') => Problem::IdNotFirst(other.to_owned()),
                            None => Problem::UnknownAttribute(other.to_owned()),
                        },
                    )
                }
            }
        }
        Ok(rule)
    }

    /// An attribute whose values are quoted strings.
    fn strings(&mut self, name: &str, ops: Option<&[SetOp]>) -> Result<Attr<String>, ParseError> {
        self.values(
            name,
            |_, s| s.map(str::to_owned).ok_or(BadValue::NotQuoted),
            ops,
        )
    }

    /// An attribute's value part: a single value, or `[op] { v... }`.
    /// `value` gets the word or the string of one value token.
    fn values<T>(
        &mut self,
        name: &str,
        value: impl Fn(&str, Option<&str>) -> Result<T, BadValue>,
        ops: Option<&[SetOp]>,
    ) -> Result<Attr<T>, ParseError> {
        let col = self.col();
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Word(w))
                if w.ends_with("-of")
                    || matches!(w.as_str(), "equals" | "equals-ordered" | "match-all") =>
            {
                let op = match w.as_str() {
                    "one-of" => SetOp::OneOf,
                    "all-of" => SetOp::AllOf,
                    "none-of" => SetOp::NoneOf,
                    "equals" => SetOp::Equals,
                    w => {
                        let why = unsupported(w).unwrap_or(
                            "is not a set operator: use one-of, all-of, none-of or equals",
                        );
                        let word = w.to_owned();
                        return self.fail(col, Problem::Unsupported { word, why });
                    }
                };
                self.pos += 1;
                if self.peek().map(|t| &t.tok) != Some(&Tok::Open) {
                    let name = name.to_owned();
                    return self.fail(
                        self.col(),
                        Problem::NeedsSet {
                            name,
                            op: op.keyword(),
                        },
                    );
                }
                Some(op)
            }
            Some(Tok::Open) => Some(SetOp::Equals),
            _ => None,
        };
        if let (Some(op), Some(allowed)) = (op, ops) {
            if !allowed.contains(&op) {
                let name = name.to_owned();
                return self.fail(
                    col,
                    Problem::OperatorNotAllowed {
                        name,
                        op: op.keyword(),
                    },
                );
            }
        }
        let one = |p: &Self, t: Option<&Token>| -> Result<T, ParseError> {
            let col = t.map_or(p.end_col, |t| t.col);
            match t.map(|t| &t.tok) {
                Some(Tok::Word(w)) => value(w, None),
                Some(Tok::Str(s)) => value("", Some(s)),
                _ => Err(BadValue::Missing),
            }
            .map_err(|value| {
                let name = name.to_owned();
                err(p.line, col, Problem::Value { name, value })
            })
        };
        let Some(op) = op else {
            let t = self.next();
            let t = t.map(|t| Token {
                tok: t.tok.clone(),
                col: t.col,
            });
            return Ok(Attr::single(one(self, t.as_ref())?));
        };
        self.pos += 1; // the `{`
        let mut values = Vec::new();
        loop {
            match self.peek().map(|t| &t.tok) {
                Some(Tok::Close) => {
                    self.pos += 1;
                    break;
                }
                None => return self.fail(self.end_col, Problem::SetNotClosed(name.to_owned())),
                Some(Tok::Open) => {
                    return self.fail(self.col(), Problem::NestedSet(name.to_owned()))
                }
                Some(_) => {
                    let t = self.next().map(|t| Token {
                        tok: t.tok.clone(),
                        col: t.col,
                    });
                    values.push(one(self, t.as_ref())?);
                }
            }
        }
        if values.is_empty() {
            return self.fail(col, Problem::EmptySet(name.to_owned()));
        }
        Ok(Attr { op, values })
    }
}

fn hex_field(s: &str, digits: usize) -> Result<Option<u16>, ()> {
    if s == "*" {
        return Ok(None);
    }
    if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(());
    }
    u16::from_str_radix(s, 16).map(Some).map_err(|_| ())
}

/// `VID:PID`, four hex digits each or `*` (`*:PID` is refused, as in USBGuard).
pub fn device_id(s: &str) -> Result<DeviceIdPattern, BadValue> {
    let bad = || BadValue::NotDeviceId(s.to_owned());
    let (v, p) = s.split_once(':').ok_or_else(bad)?;
    match (hex_field(v, 4), hex_field(p, 4)) {
        (Ok(None), Ok(Some(_))) => Err(BadValue::ProductWithoutVendor {
            id: s.into(),
            product: p.into(),
        }),
        (Ok(vendor), Ok(product)) => Ok(DeviceIdPattern { vendor, product }),
        _ => Err(bad()),
    }
}

/// `CC:SS:PP`, two hex digits each, `*` for SS and PP (`CC:*:PP` is refused,
/// as in USBGuard).
pub fn interface(s: &str) -> Result<InterfacePattern, BadValue> {
    let bad = || BadValue::NotInterface(s.to_owned());
    let mut parts = s.split(':');
    let (Some(c), Some(sc), Some(pr), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let class = hex_field(c, 2).map_err(|_| bad())?.ok_or_else(bad)?;
    let subclass = hex_field(sc, 2).map_err(|_| bad())?;
    let protocol = hex_field(pr, 2).map_err(|_| bad())?;
    if subclass.is_none() && protocol.is_some() {
        return Err(BadValue::ProtocolWithoutSubclass {
            id: s.to_owned(),
            class: c.to_owned(),
        });
    }
    let narrow = |v: Option<u16>| v.map(|v| v as u8);
    Ok(InterfacePattern {
        class: class as u8,
        subclass: narrow(subclass),
        protocol: narrow(protocol),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Rule {
        parse(s).unwrap().pop().unwrap()
    }

    fn error(s: &str) -> ParseError {
        parse(s).unwrap_err()
    }

    #[test]
    fn parses_the_usbguard_examples() {
        let r =
            one(r#"allow 1050:0011 name "Yubico Yubikey II" serial "0001234567" via-port "1-2""#);
        assert_eq!(r.target, Target::Allow);
        assert_eq!(r.id.unwrap().values[0].product, Some(0x11));
        assert_eq!(r.name.unwrap().values, vec!["Yubico Yubikey II"]);
        assert_eq!(r.via_port.unwrap().values, vec!["1-2"]);
        let r = one("reject with-interface all-of { 08:*:* 03:00:* }");
        let wi = r.with_interface.unwrap();
        assert_eq!(wi.op, SetOp::AllOf);
        assert_eq!(wi.values.len(), 2);
        let r = one("allow with-interface equals { 08:*:* }");
        assert_eq!(r.with_interface.unwrap().op, SetOp::Equals);
        let r = one("allow with-interface {08:*:* 03:01:01}");
        assert_eq!(r.with_interface.unwrap().values.len(), 2);
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let rules = parse("# policy\n\n  allow id 1234:* # trailing\r\nblock\n").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].line, rules[1].line), (3, 4));
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn domain_extension() {
        let r = one(r#"allow id *:* domain one-of { "web" "3" }"#);
        let d = r.domain.unwrap();
        assert_eq!((d.op, d.values.len()), (SetOp::OneOf, 2));
        assert_eq!(
            one(r#"block domain "web""#).domain.unwrap().values,
            vec!["web"]
        );
        assert_eq!(
            error(r#"allow domain all-of { "a" }"#).reason,
            Problem::OperatorNotAllowed {
                name: "domain".into(),
                op: "all-of"
            }
        );
        assert_eq!(
            error(r#"allow domain { "a" "b" }"#).reason,
            Problem::OneDomain
        );
    }

    #[test]
    fn string_escapes() {
        let r = one(r#"allow serial "a\"b\\c\x41\65\n""#);
        assert_eq!(r.serial.unwrap().values[0], "a\"b\\cAA\n");
        assert_eq!(
            error(r#"allow serial "\q""#).reason,
            Problem::UnknownEscape('q')
        );
        assert_eq!(
            error(r#"allow serial "\xff""#).reason,
            Problem::StringNotUtf8
        );
        assert_eq!(
            error(r#"allow serial "\300""#).reason,
            Problem::DecimalEscapeTooBig
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let e = error("allow\nallow id 12345:1");
        assert_eq!((e.line, e.col), (2, 10));
        assert_eq!(
            e.reason,
            Problem::Value {
                name: "id".into(),
                value: BadValue::NotDeviceId("12345:1".into())
            }
        );
        let e = error("allow hash \"abc\"");
        assert_eq!((e.line, e.col), (1, 7));
        assert!(e.to_string().contains("hash is not supported"), "{e}");
        let e = error("permit");
        assert_eq!(e.col, 1);
        let reasons = [
            ("match", "not a pvusb target"),
            ("allow with-interface 08:*:50", "protocol must be *"),
            ("allow id *:1234", "vendor"),
            ("allow id { }", "at least one"),
            ("allow id { 1234:*", "not closed"),
            ("allow id 1234:* id 5678:*", "twice"),
            ("allow id match-all { 1234:* }", "not supported"),
            ("allow id equals-ordered { 1234:* }", "not supported"),
            ("allow serial abc", "quoted"),
            ("allow serial \"abc", "unterminated"),
            ("allow if true", "conditions"),
            ("allow with-connect-type \"hotplug\"", "via-port"),
            ("allow frobnicate", "unknown attribute"),
            ("allow id", "id: a value is missing"),
            ("allow id one-of 1234:*", "needs a set"),
        ];
        for (policy, reason) in reasons {
            let e = error(policy);
            assert!(e.to_string().contains(reason), "{policy}: {e}");
        }
        assert_eq!(error("ok\nallow").line, 1);
        let e = parse_bytes(b"allow\nallow name \"\xff\"").unwrap_err();
        assert_eq!((e.line, e.col), (2, 13));
    }

    #[test]
    fn display_is_the_error_position_then_reason() {
        assert_eq!(
            error("block id 1:2").to_string(),
            "1:10: id: \"1:2\" is not a device id: write VID:PID in hex, e.g. 0781:5567, 0781:* or *:*"
        );
    }
}
