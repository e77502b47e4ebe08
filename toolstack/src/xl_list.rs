//! `usb-list DOM`: exactly what `xl usb-list DOM` prints for the same xenstore and
//! sysfs state, so scripts that parse xl's output work unchanged.
//!
//! Followed line by line (Xen 4.17): `main_usblist` in tools/xl/xl_usb.c (the
//! printf formats, a header before *every* controller, the port loop) and, in
//! tools/libs/light/libxl_usb.c, `libxl_device_usbctrl_list` (libxl_device.c's
//! `libxl__device_list`: the entries of `/libxl/<domid>/device/vusb` in xenstore's
//! order, `atoi` of each name, and no controllers at all when any entry fails
//! `libxl__usbctrl_from_xenstore`), `libxl_device_usbctrl_getinfo` (no values line
//! when `type` or `backend` is missing from libxl's entry or the backend path does
//! not parse) and `libxl_ctrlport_to_device_usbdev` (a port's busid turned into
//! `busnum`/`devnum` from sysfs, printed in hex as `uint8_t`s).
//!
//! WHY parse like C: the point is byte-for-byte equality with xl, so numbers go
//! through [`c_atoi`] (leading blanks, sign, digits, 0 otherwise) as libxl's do.
//! Deliberate differences, none reachable from what libxl or pvusb write: a port
//! value that is not a busid is not looked up in sysfs (it would become a path), at
//! most [`MAX_LISTED_PORTS`] ports are listed per controller, the toolstack
//! domain's id is taken to be 0 (libxl reads its own `domid` for emulated
//! controllers), and xenstore failures are errors instead of an empty list.

use crate::error::ToolError;
use crate::paths::libxl_guest_dir;
use crate::store::Store;
use crate::sysfs::Sysfs;
use crate::Toolstack;

/// Most ports listed per controller (libxl loops up to whatever `num-ports` says).
pub const MAX_LISTED_PORTS: i32 = 1024;

/// libxl's `libxl_usbctrl_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtrlType {
    /// `auto` (libxl's default, also what an unparsable `type` leaves).
    Auto,
    /// `pv`: a `vusb` backend (usbback or pvusb).
    Pv,
    /// `devicemodel`: emulated by QEMU in an HVM guest.
    Devicemodel,
    /// `qusb`: QEMU's PV backend.
    Qusb,
}

impl CtrlType {
    /// `libxl_usbctrl_type_from_string` (case-insensitive).
    pub fn from_libxl(s: &str) -> Option<Self> {
        [Self::Auto, Self::Pv, Self::Devicemodel, Self::Qusb]
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// `libxl_usbctrl_type_to_string`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Pv => "pv",
            Self::Devicemodel => "devicemodel",
            Self::Qusb => "qusb",
        }
    }
}

/// `usb-list DOM`: every controller libxl lists, in its order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XlUsbList {
    /// Guest.
    pub domid: u16,
    /// Controllers.
    pub controllers: Vec<XlController>,
}

/// One controller: xl prints its header even when `getinfo` fails.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XlController {
    /// Devid (`atoi` of the entry's name).
    pub devid: i32,
    /// What `libxl_device_usbctrl_getinfo` returned, `None` when it failed.
    pub info: Option<XlCtrlInfo>,
}

/// `libxl_usbctrlinfo`, the fields xl prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XlCtrlInfo {
    /// Controller type.
    #[serde(rename = "type")]
    pub kind: CtrlType,
    /// Backend domain.
    pub backend_id: u32,
    /// Frontend xenbus state (-1 when absent).
    pub state: i32,
    /// `usb-ver` (-1 when absent).
    pub version: i32,
    /// `num-ports` (-1 when absent).
    pub ports: i32,
    /// Ports 1..=ports.
    pub port_devices: Vec<XlPort>,
}

/// One port line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XlPort {
    /// Port number.
    pub port: i32,
    /// The busid in the port, if any.
    pub busid: Option<String>,
    /// `(hostbus, hostaddr)` as libxl read them; `None` prints an empty port.
    pub hostdev: Option<(u8, u8)>,
}

impl std::fmt::Display for XlUsbList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.controllers {
            writeln!(
                f,
                "{:<6} {:<12} {:<3} {:<5} {:<7} {:<5}",
                "Devid", "Type", "BE", "state", "usb-ver", "ports"
            )?;
            let Some(i) = &c.info else { continue };
            // backend_id is a uint32_t printed with %d.
            writeln!(
                f,
                "{:<6} {:<12} {:<3} {:<5} {:<7} {:<5}",
                c.devid,
                i.kind.as_str(),
                i32::from_ne_bytes(i.backend_id.to_ne_bytes()),
                i.state,
                i.version,
                i.ports
            )?;
            for p in &i.port_devices {
                write!(f, "  Port {}:", p.port)?;
                match p.hostdev {
                    Some((bus, addr)) => writeln!(f, " Bus {bus:03x} Device {addr:03x}")?,
                    None => writeln!(f)?,
                }
            }
        }
        Ok(())
    }
}

/// C's `atoi` (glibc: `(int) strtol(s, NULL, 10)`): leading blanks, an optional
/// sign, then digits; 0 when there are none.
pub fn c_atoi(s: &str) -> i32 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    let v = if neg { v.saturating_neg() } else { v };
    // strtol saturates to long; the cast to int keeps the low 32 bits.
    i32::from_ne_bytes(((v as u64 & 0xffff_ffff) as u32).to_ne_bytes())
}

/// `libxl__backendpath_parse_domid`: `sscanf(be, "/local/domain/%u%c")` with the
/// character a `/`.
pub fn backend_domid(be: &str) -> Option<u32> {
    let rest = be.strip_prefix("/local/domain/")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, rest) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = rest.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || rest.as_bytes().get(n) != Some(&b'/') {
        return None;
    }
    let mut v: u64 = 0;
    for b in rest[..n].bytes() {
        v = v.saturating_mul(10).saturating_add(u64::from(b - b'0'));
    }
    let v = (v & 0xffff_ffff) as u32;
    Some(if neg { v.wrapping_neg() } else { v })
}

fn int(v: Option<String>) -> i32 {
    v.map_or(-1, |s| c_atoi(&s))
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    fn libxl_entry(domid: u16, devid: i32) -> String {
        format!("{}/{devid}", libxl_guest_dir(domid))
    }

    fn rd(&self, path: &str) -> Result<Option<String>, ToolError> {
        Ok(self.store.read(S::NO_TX, path)?)
    }

    /// `libxl__usbctrl_from_xenstore`: whether the entry can be listed at all.
    fn libxl_listable(&self, domid: u16, devid: i32) -> Result<bool, ToolError> {
        let lp = Self::libxl_entry(domid, devid);
        let kind = self
            .rd(&format!("{lp}/type"))?
            .and_then(|t| CtrlType::from_libxl(&t));
        if kind == Some(CtrlType::Devicemodel) {
            return Ok(true);
        }
        match self.rd(&format!("{lp}/backend"))? {
            // libxl leaves with rc still 0 here.
            None => Ok(true),
            Some(be) => Ok(backend_domid(&be).is_some()),
        }
    }

    /// `vusb_be_from_xs_libxl`: where a controller's ports are.
    fn libxl_ports_dir(&self, domid: u16, devid: i32) -> Result<Option<String>, ToolError> {
        let lp = Self::libxl_entry(domid, devid);
        let Some(kind) = self
            .rd(&format!("{lp}/type"))?
            .and_then(|t| CtrlType::from_libxl(&t))
        else {
            return Ok(None);
        };
        if kind == CtrlType::Devicemodel {
            return Ok(Some(lp));
        }
        self.rd(&format!("{lp}/backend"))
    }

    /// `libxl_ctrlport_to_device_usbdev`.
    fn libxl_port(&self, domid: u16, devid: i32, port: i32) -> Result<XlPort, ToolError> {
        let mut out = XlPort {
            port,
            busid: None,
            hostdev: None,
        };
        let Some(dir) = self.libxl_ports_dir(domid, devid)? else {
            return Ok(out);
        };
        let busid = self.rd(&format!("{dir}/port/{port}"))?.unwrap_or_default();
        if busid.is_empty() {
            return Ok(out);
        }
        // usbdev_busaddr_from_busid: atoi into uint8_t.
        let num = |name: &str| {
            self.sysfs
                .device_attr(&busid, name)
                .map(|t| c_atoi(&t).to_le_bytes()[0])
        };
        out.hostdev = num("busnum").zip(num("devnum"));
        out.busid = Some(busid);
        Ok(out)
    }

    /// `libxl_device_usbctrl_getinfo` and the port loop of `main_usblist`.
    fn libxl_info(&self, domid: u16, devid: i32) -> Result<Option<XlCtrlInfo>, ToolError> {
        let lp = Self::libxl_entry(domid, devid);
        let Some(kind) = self.rd(&format!("{lp}/type"))? else {
            return Ok(None);
        };
        let kind = CtrlType::from_libxl(&kind).unwrap_or(CtrlType::Auto);
        let (backend_id, state, version, ports) = if kind == CtrlType::Devicemodel {
            let v = int(self.rd(&format!("{lp}/usb-ver"))?);
            let p = int(self.rd(&format!("{lp}/num-ports"))?);
            (0, 0, v, p)
        } else {
            let fe = format!("/local/domain/{domid}/device/vusb/{devid}");
            let Some(be) = self.rd(&format!("{lp}/backend"))? else {
                return Ok(None);
            };
            let Some(backend_id) = backend_domid(&be) else {
                return Ok(None);
            };
            (
                backend_id,
                int(self.rd(&format!("{fe}/state"))?),
                int(self.rd(&format!("{be}/usb-ver"))?),
                int(self.rd(&format!("{be}/num-ports"))?),
            )
        };
        let mut port_devices = Vec::new();
        for j in 1..=ports.min(MAX_LISTED_PORTS) {
            port_devices.push(self.libxl_port(domid, devid, j)?);
        }
        Ok(Some(XlCtrlInfo {
            kind,
            backend_id,
            state,
            version,
            ports,
            port_devices,
        }))
    }

    /// `usb-list DOM`: libxl's view of the guest's USB controllers and devices;
    /// its [`std::fmt::Display`] is `xl usb-list`'s output.
    pub fn xl_usb_list(&self, domid: u16) -> Result<XlUsbList, ToolError> {
        let mut list = XlUsbList {
            domid,
            controllers: Vec::new(),
        };
        let devids: Vec<i32> = self
            .store
            .directory(S::NO_TX, &libxl_guest_dir(domid))?
            .iter()
            .map(|n| c_atoi(n))
            .collect();
        for &d in &devids {
            if !self.libxl_listable(domid, d)? {
                // libxl_device_usbctrl_list returns NULL: xl prints nothing.
                return Ok(list);
            }
        }
        for devid in devids {
            let info = self.libxl_info(domid, devid)?;
            list.controllers.push(XlController { devid, info });
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atoi_like_c() {
        assert_eq!(c_atoi("4"), 4);
        assert_eq!(c_atoi(" 12\n"), 12);
        assert_eq!(c_atoi("-1"), -1);
        assert_eq!(c_atoi("+7x"), 7);
        assert_eq!(c_atoi("x7"), 0);
        assert_eq!(c_atoi(""), 0);
        assert_eq!(c_atoi("4294967297"), 1);
        assert_eq!(c_atoi("99999999999999999999999"), -1);
    }

    #[test]
    fn backend_paths_parse_like_sscanf() {
        assert_eq!(backend_domid("/local/domain/0/backend/vusb/3/0"), Some(0));
        assert_eq!(backend_domid("/local/domain/12/x"), Some(12));
        assert_eq!(backend_domid("/local/domain/12"), None);
        assert_eq!(backend_domid("/local/domain/x/"), None);
        assert_eq!(backend_domid("/libxl/0/"), None);
    }

    #[test]
    fn types_are_libxl_names() {
        assert_eq!(CtrlType::from_libxl("PV"), Some(CtrlType::Pv));
        assert_eq!(CtrlType::from_libxl("qusb"), Some(CtrlType::Qusb));
        assert_eq!(CtrlType::from_libxl("usbback"), None);
        assert_eq!(CtrlType::Devicemodel.as_str(), "devicemodel");
    }

    fn ctrl(devid: i32, ports: Vec<Option<(u8, u8)>>) -> XlController {
        XlController {
            devid,
            info: Some(XlCtrlInfo {
                kind: CtrlType::Pv,
                backend_id: 0,
                state: 4,
                version: 2,
                ports: i32::try_from(ports.len()).unwrap(),
                port_devices: ports
                    .into_iter()
                    .enumerate()
                    .map(|(i, hostdev)| XlPort {
                        port: i32::try_from(i + 1).unwrap(),
                        busid: hostdev.map(|_| "1-1".to_owned()),
                        hostdev,
                    })
                    .collect(),
            }),
        }
    }

    #[test]
    fn empty_prints_nothing() {
        let l = XlUsbList {
            domid: 3,
            controllers: vec![],
        };
        assert_eq!(l.to_string(), "");
    }

    #[test]
    fn one_controller_text() {
        let l = XlUsbList {
            domid: 3,
            controllers: vec![ctrl(0, vec![None, None])],
        };
        assert_eq!(
            l.to_string(),
            "Devid  Type         BE  state usb-ver ports\n\
             0      pv           0   4     2       2    \n  Port 1:\n  Port 2:\n"
        );
    }

    #[test]
    fn devices_print_in_hex() {
        let l = XlUsbList {
            domid: 3,
            controllers: vec![ctrl(0, vec![Some((1, 10)), None, Some((255, 2))])],
        };
        assert_eq!(
            l.to_string(),
            "Devid  Type         BE  state usb-ver ports\n\
             0      pv           0   4     2       3    \n  Port 1: Bus 001 Device 00a\n  Port 2:\n  Port 3: Bus 0ff Device 002\n"
        );
    }

    #[test]
    fn two_controllers_and_a_failed_getinfo() {
        let l = XlUsbList {
            domid: 3,
            controllers: vec![
                ctrl(1, vec![None]),
                XlController {
                    devid: 0,
                    info: None,
                },
            ],
        };
        assert_eq!(
            l.to_string(),
            "Devid  Type         BE  state usb-ver ports\n\
             1      pv           0   4     2       1    \n  Port 1:\n\
             Devid  Type         BE  state usb-ver ports\n"
        );
    }
}
