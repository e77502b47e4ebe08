//! The argument forms of xl's USB verbs (`usbctrl-attach`, `usbctrl-detach`,
//! `usbdev-attach`, `usbdev-detach`), so a script moves from `xl` to `pvusb` by
//! changing the command name.
//!
//! Followed (Xen 4.17): `main_usbctrl_attach` … `main_usbdev_detach` in
//! tools/xl/xl_usb.c and `parse_usbctrl_config` / `parse_usbdev_config` in
//! tools/xl/xl_parse.c: `key=value` words only, `type`/`version`/`ports` for a
//! controller (0 means libxl's default: version 2, 8 ports), `type`/`hostbus`/
//! `hostaddr`/`controller`/`port` for a device, `hostbus`/`hostaddr` read with
//! `strtoul(…, 0)` (so `0x1f` and `017` work), devids and ports as decimal numbers.
//!
//! WHY stricter than xl in one respect: xl reads numbers with `atoi`, so `ports=x`
//! silently means "default"; here a word that is not a number is refused with an
//! error naming the form, since a typo that changes what is created is worse than
//! a refusal.

use crate::controller::{DEFAULT_PORTS, DEFAULT_VERSION};
use crate::error::ToolError;
use crate::xl_list::CtrlType;

/// A parsed `usbctrl-attach` spec, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbctrlSpec {
    /// USB version (1 or 2; range checked by `ctrl-attach`).
    pub version: u8,
    /// Number of ports (range checked by `ctrl-attach`).
    pub ports: u32,
}

/// A parsed `usbdev-attach` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbdevSpec {
    /// lsusb's Bus.
    pub hostbus: u16,
    /// lsusb's Device.
    pub hostaddr: u16,
    /// `controller=`.
    pub controller: Option<u32>,
    /// `port=`.
    pub port: Option<u32>,
}

fn bad(msg: String) -> ToolError {
    ToolError::InvalidArgument(msg)
}

/// A decimal number for `key` (a devid, a port, a count).
pub fn decimal(key: &str, v: &str) -> Result<u32, ToolError> {
    v.parse().map_err(|_| {
        bad(format!(
            "{key} {v:?} is not a number: give {key} as a decimal number"
        ))
    })
}

/// C's `strtoul(s, NULL, 0)` over the whole word: `0x` hex, leading `0` octal,
/// else decimal.
fn c_number(v: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        (h, 16)
    } else if v.len() > 1 && v.starts_with('0') {
        (&v[1..], 8)
    } else {
        (v, 10)
    };
    if digits.is_empty() || digits.starts_with(['+', '-']) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// `parse_usbctrl_config` over every word after the domain.
pub fn parse_usbctrl(words: &[String]) -> Result<UsbctrlSpec, ToolError> {
    let mut spec = UsbctrlSpec {
        version: DEFAULT_VERSION,
        ports: DEFAULT_PORTS,
    };
    for w in words {
        match w.split_once('=') {
            Some(("type", t)) => match CtrlType::from_libxl(t) {
                Some(CtrlType::Pv | CtrlType::Auto) => {}
                Some(other) => {
                    return Err(bad(format!(
                        "type={} is not served by pvusb, which serves type=pv only: \
                         use `xl usbctrl-attach` for qusb and devicemodel controllers",
                        other.as_str()
                    )))
                }
                None => {
                    return Err(bad(format!(
                        "invalid usb controller type {t:?}: use type=pv (or auto)"
                    )))
                }
            },
            Some(("version", v)) => {
                spec.version = match decimal("version", v)? {
                    0 => DEFAULT_VERSION,
                    n => u8::try_from(n).map_err(|_| {
                        bad(format!(
                        "version={n} is not a USB controller version: use version=1 or version=2"
                    ))
                    })?,
                }
            }
            Some(("ports", v)) => {
                spec.ports = match decimal("ports", v)? {
                    0 => DEFAULT_PORTS,
                    n => n,
                }
            }
            _ => {
                return Err(bad(format!(
                    "unknown {w:?} in usbctrl spec: use type=pv, version=1|2, ports=N"
                )))
            }
        }
    }
    Ok(spec)
}

/// `parse_usbdev_config` over every word after the domain.
pub fn parse_usbdev(words: &[String]) -> Result<UsbdevSpec, ToolError> {
    let (mut bus, mut addr, mut controller, mut port) = (None, None, None, None);
    let host = |key: &str, v: &str| -> Result<u16, ToolError> {
        c_number(v)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| {
                bad(format!(
                    "{key}={v} is not a number: give {key}=N (lsusb's numbers)"
                ))
            })
    };
    for w in words {
        match w.split_once('=') {
            Some(("type", t)) => {
                if !t.eq_ignore_ascii_case("hostdev") {
                    return Err(bad(format!(
                        "invalid usb device type {t:?}: use type=hostdev (or leave it out)"
                    )));
                }
            }
            Some(("hostbus", v)) => bus = Some(host("hostbus", v)?),
            Some(("hostaddr", v)) => addr = Some(host("hostaddr", v)?),
            Some(("controller", v)) => controller = Some(decimal("controller", v)?),
            Some(("port", v)) => port = Some(decimal("port", v)?),
            _ => {
                return Err(bad(format!(
                    "unknown {w:?} in usbdev spec: use hostbus=B hostaddr=A [controller=C [port=P]]"
                )))
            }
        }
    }
    match (bus, addr) {
        (Some(hostbus), Some(hostaddr)) => Ok(UsbdevSpec {
            hostbus,
            hostaddr,
            controller,
            port,
        }),
        _ => Err(bad(
            "usbdev-attach needs hostbus=B hostaddr=A (lsusb's Bus and Device numbers)".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn err(r: Result<impl std::fmt::Debug, ToolError>) -> String {
        let e = r.unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    /// Each `(words, reason)`: `parse` refuses the words, and its one-line
    /// message contains the reason.
    fn assert_refusals<T: std::fmt::Debug>(
        parse: fn(&[String]) -> Result<T, ToolError>,
        cases: &[(&str, &str)],
    ) {
        for (words, reason) in cases {
            let e = err(parse(&w(words)));
            assert!(e.contains(reason), "{words}: {e}");
        }
    }

    #[test]
    fn usbctrl_forms() {
        let d = UsbctrlSpec {
            version: 2,
            ports: 8,
        };
        assert_eq!(parse_usbctrl(&w("")).unwrap(), d);
        assert_eq!(parse_usbctrl(&w("type=pv")).unwrap(), d);
        assert_eq!(parse_usbctrl(&w("type=PV version=0 ports=0")).unwrap(), d);
        assert_eq!(
            parse_usbctrl(&w("type=auto version=1 ports=4")).unwrap(),
            UsbctrlSpec {
                version: 1,
                ports: 4
            }
        );
    }

    #[test]
    fn usbctrl_refusals_name_the_accepted_forms() {
        let cases = [
            ("type=qusb", "type=pv only"),
            ("type=devicemodel", "xl usbctrl-attach"),
            ("type=usbback", "use type=pv"),
            ("backend=1", "type=pv, version=1|2, ports=N"),
            ("2", "usbctrl spec"),
            ("ports=x", "not a number"),
            ("version=300", "version=1 or version=2"),
        ];
        assert_refusals(parse_usbctrl, &cases);
    }

    #[test]
    fn usbdev_forms() {
        assert_eq!(
            parse_usbdev(&w("hostbus=1 hostaddr=0x1f")).unwrap(),
            UsbdevSpec {
                hostbus: 1,
                hostaddr: 31,
                controller: None,
                port: None
            }
        );
        assert_eq!(
            parse_usbdev(&w(
                "type=hostdev hostaddr=010 hostbus=2 controller=1 port=3"
            ))
            .unwrap(),
            UsbdevSpec {
                hostbus: 2,
                hostaddr: 8,
                controller: Some(1),
                port: Some(3)
            }
        );
    }

    #[test]
    fn usbdev_refusals() {
        let cases = [
            ("hostbus=1", "hostbus=B hostaddr=A"),
            ("1.6", "usbdev spec"),
            ("hostbus=1 hostaddr=2 bus=3", "usbdev spec"),
            ("type=tablet hostbus=1 hostaddr=2", "hostdev"),
            ("hostbus=x hostaddr=2", "not a number"),
            ("hostbus=1 hostaddr=2 port=-1", "not a number"),
        ];
        assert_refusals(parse_usbdev, &cases);
    }
}
