//! pvUSB device policy: which host devices may be given to which guests,
//! written in USBGuard's rule language (usbguard-rules.conf(5)).
//!
//! Both enforcement points use this crate: the toolstack when `dev-attach`
//! is asked for a device (facts from sysfs), and the backend daemon each
//! time it opens a device for a port (facts from the device's descriptors),
//! so a device that re-enumerates as something else after it was assigned
//! is not served. It has no I/O besides reading the rules file
//! ([`Policy::load`]) and matching is pure ([`decide`]).
//!
//! # The language (the subset pvusb implements)
//! One rule per line, `#` starts a comment, blank lines are ignored.
//! `target [VID:PID] attribute...` with the targets `allow`, `block` and
//! `reject` and the attributes
//! * `id VID:PID`, four hex digits or `*` each (`1234:*`, `*:*`);
//! * `name "..."` (the product string), `serial "..."`;
//! * `via-port "1-2.3"` (the busid);
//! * `with-interface CC:SS:PP`, `*` allowed for SS:PP and PP (`08:*:*`);
//! * `domain "name-or-domid"` — the pvusb extension: the guest the device
//!   is given to, by name or domid; one value, `one-of` or `none-of`;
//! * `label "..."` (kept, never matched).
//!
//! Each attribute takes one value or a set `[operator] { v1 v2 ... }` with
//! the operators `one-of`, `all-of`, `none-of` and `equals` (the default),
//! evaluated as USBGuard does (see [`matching`]). Strings take USBGuard's
//! escapes (`\"`, `\\`, `\xHH`, ...).
//!
//! Refused with an error that says what to write instead: `hash` and
//! `parent-hash` (pvusb does not compute USBGuard's device hash), `if`
//! conditions, `with-connect-type`, `key`, the `equals-ordered` and
//! `match-all` operators, the `match` and `device` targets.
//!
//! # Semantics
//! Rules are tried in file order; the first whose every attribute matches
//! decides. A device no rule matches is blocked: USBGuard's default
//! `ImplicitPolicyTarget` ([`IMPLICIT_TARGET`]). `block` and `reject` both
//! refuse the device; pvusb does not remove rejected devices from the host.
//! No rules file at all means no policy: every device but hubs may be
//! assigned, as before rules existed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod descriptors;
pub mod load;
pub mod matching;
pub mod parse;
pub mod problem;
pub mod rule;

#[cfg(test)]
mod proptests;

pub use load::{LoadError, Policy, Refusal, DEFAULT_RULES, RULES_ENV};
pub use matching::{decide, Decision, DeviceFacts, Guest, IMPLICIT_TARGET};
pub use parse::{parse, parse_bytes, ParseError};
pub use problem::{BadValue, Problem};
pub use rule::{Attr, DeviceIdPattern, InterfaceClass, InterfacePattern, Rule, SetOp, Target};
