//! `config-apply`: the `usbctrl = [...]` and `usbdev = [...]` settings of an xl
//! domain configuration file, so existing xl configs work.
//!
//! The parser understands the xl.cfg grammar as far as these settings need it:
//! `key = value` statements ended by a newline or `;`, values that are numbers,
//! strings in either quote style or lists `[ ... ]` spanning lines with trailing
//! commas, and `#` comments outside strings. Other settings are skipped.

use crate::attach::DeviceSpec;
use crate::controller::{DEFAULT_PORTS, DEFAULT_VERSION};
use crate::error::ToolError;
use crate::store::Store;
use crate::sysfs::Sysfs;
use crate::Toolstack;

/// One `usbctrl` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrlEntry {
    /// `version=` (default 2).
    pub version: u8,
    /// `ports=` (default 8).
    pub ports: u32,
}

/// One `usbdev` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevEntry {
    /// `hostbus=`/`hostaddr=`.
    pub device: DeviceSpec,
    /// `controller=`.
    pub controller: Option<u32>,
    /// `port=`.
    pub port: Option<u32>,
}

/// The USB part of a domain config.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UsbConfig {
    /// Controllers, devid = index.
    pub controllers: Vec<CtrlEntry>,
    /// Devices in order.
    pub devices: Vec<DevEntry>,
}

/// What `config-apply` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Controllers created (devids).
    pub created_controllers: Vec<u32>,
    /// Devices attached (or found already attached): `(busid, ctrl, port)`.
    pub devices: Vec<(String, u32, u32)>,
}

#[derive(Debug)]
enum Value {
    Scalar,
    List(Vec<(String, usize)>),
}

/// What is wrong with a line of an xl config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A quoted string does not end on its line.
    #[error("unterminated string")]
    UnterminatedString,
    /// A statement starts with something other than a name.
    #[error("expected a setting name, found {0:?}")]
    ExpectedName(char),
    /// A name is not followed by `=`.
    #[error("expected '=' after {0}")]
    ExpectedEquals(String),
    /// A list has no closing bracket.
    #[error("unterminated list for {0}")]
    UnterminatedList(String),
    /// A list holds something other than strings.
    #[error("unexpected {found:?} in the list of {key}")]
    UnexpectedInList {
        /// The setting.
        key: String,
        /// The character found.
        found: char,
    },
    /// Text follows a value on its line.
    #[error("unexpected text after the value of {0}")]
    TrailingText(String),
    /// `usbctrl` or `usbdev` given a single value.
    #[error("{0} must be a list: {0} = [ '...' ]")]
    NotAList(String),
    /// An entry's option is not `key=value`.
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    /// An option that takes a number has something else.
    #[error("{key}={value} is not a number")]
    NotANumber {
        /// The option.
        key: String,
        /// Its value.
        value: String,
    },
    /// A `usbctrl` option pvusb does not know.
    #[error("unknown usbctrl option {0}")]
    UnknownCtrlOption(String),
    /// A `usbdev` option pvusb does not support.
    #[error("unsupported usbdev option {key}={value}")]
    UnsupportedDevOption {
        /// The option.
        key: String,
        /// Its value.
        value: String,
    },
    /// A `usbdev` entry without the host device.
    #[error("usbdev needs hostbus= and hostaddr=")]
    NoHostDevice,
}

/// Longest config file read.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

/// Parse an xl config text (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<UsbConfig, ToolError> {
    let err = |line: usize, reason: ConfigProblem| ToolError::Config {
        file: file.to_owned(),
        line,
        reason,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0usize;
    let mut line = 1usize;
    let mut cfg = UsbConfig::default();
    // Skip blanks, comments and (when `newlines`) statement ends.
    let skip = |i: &mut usize, line: &mut usize, newlines: bool| {
        while let Some(&c) = chars.get(*i) {
            if c == '#' {
                while chars.get(*i).is_some_and(|&c| c != '\n') {
                    *i += 1;
                }
            } else if c == '\n' && newlines {
                *line += 1;
                *i += 1;
            } else if c == ' ' || c == '\t' || c == '\r' || (newlines && c == ';') {
                *i += 1;
            } else {
                break;
            }
        }
    };
    let string = |i: &mut usize, line: &mut usize| -> Result<String, ToolError> {
        let q = chars.get(*i).copied().unwrap_or('"');
        *i += 1;
        let start_line = *line;
        let mut s = String::new();
        loop {
            match chars.get(*i) {
                None | Some('\n') => {
                    return Err(err(start_line, ConfigProblem::UnterminatedString))
                }
                Some(&c) if c == q => {
                    *i += 1;
                    return Ok(s);
                }
                Some('\\') => {
                    *i += 1;
                    if let Some(&c) = chars.get(*i) {
                        s.push(c);
                        *i += 1;
                    }
                }
                Some(&c) => {
                    s.push(c);
                    *i += 1;
                }
            }
        }
    };
    loop {
        skip(&mut i, &mut line, true);
        if i >= chars.len() {
            break;
        }
        let stmt_line = line;
        let start = i;
        while chars
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_')
        {
            i += 1;
        }
        let key: String = chars.get(start..i).unwrap_or_default().iter().collect();
        if key.is_empty() {
            return Err(err(
                line,
                ConfigProblem::ExpectedName(chars.get(i).copied().unwrap_or(' ')),
            ));
        }
        skip(&mut i, &mut line, false);
        if chars.get(i) != Some(&'=') {
            return Err(err(line, ConfigProblem::ExpectedEquals(key)));
        }
        i += 1;
        skip(&mut i, &mut line, false);
        let value = match chars.get(i) {
            Some('[') => {
                i += 1;
                let mut items = Vec::new();
                loop {
                    skip(&mut i, &mut line, true);
                    match chars.get(i) {
                        Some(']') => {
                            i += 1;
                            break;
                        }
                        Some(',') => i += 1,
                        Some('"') | Some('\'') => {
                            let l = line;
                            items.push((string(&mut i, &mut line)?, l));
                        }
                        None => return Err(err(stmt_line, ConfigProblem::UnterminatedList(key))),
                        Some(&found) => {
                            return Err(err(line, ConfigProblem::UnexpectedInList { key, found }))
                        }
                    }
                }
                Value::List(items)
            }
            Some('"') | Some('\'') => {
                string(&mut i, &mut line)?;
                Value::Scalar
            }
            _ => {
                while chars
                    .get(i)
                    .is_some_and(|&c| c != '\n' && c != ';' && c != '#')
                {
                    i += 1;
                }
                Value::Scalar
            }
        };
        skip(&mut i, &mut line, false);
        if !matches!(chars.get(i), None | Some('\n') | Some(';') | Some('#')) {
            return Err(err(line, ConfigProblem::TrailingText(key)));
        }
        match (key.as_str(), value) {
            ("usbctrl", Value::List(items)) => {
                for (s, l) in items {
                    cfg.controllers.push(ctrl_entry(&s).map_err(|r| err(l, r))?);
                }
            }
            ("usbdev", Value::List(items)) => {
                for (s, l) in items {
                    cfg.devices.push(dev_entry(&s).map_err(|r| err(l, r))?);
                }
            }
            ("usbctrl" | "usbdev", Value::Scalar) => {
                return Err(err(stmt_line, ConfigProblem::NotAList(key)))
            }
            _ => {}
        }
    }
    Ok(cfg)
}

fn pairs(s: &str) -> Result<Vec<(&str, &str)>, ConfigProblem> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| ConfigProblem::NotKeyValue(p.to_owned()))
        })
        .collect()
}

fn num<T: std::str::FromStr>(k: &str, v: &str) -> Result<T, ConfigProblem> {
    v.parse().map_err(|_| ConfigProblem::NotANumber {
        key: k.to_owned(),
        value: v.to_owned(),
    })
}

fn ctrl_entry(s: &str) -> Result<CtrlEntry, ConfigProblem> {
    let mut e = CtrlEntry {
        version: DEFAULT_VERSION,
        ports: DEFAULT_PORTS,
    };
    for (k, v) in pairs(s)? {
        match k {
            "version" => e.version = num(k, v)?,
            "ports" => e.ports = num(k, v)?,
            // pvusb is the only backend here; xl's backend selection is moot.
            "type" | "backend" => tracing::warn!(key = k, value = v, "usbctrl option ignored"),
            _ => return Err(ConfigProblem::UnknownCtrlOption(k.to_owned())),
        }
    }
    Ok(e)
}

fn dev_entry(s: &str) -> Result<DevEntry, ConfigProblem> {
    let (mut bus, mut addr, mut controller, mut port) = (None, None, None, None);
    for (k, v) in pairs(s)? {
        match k {
            "hostbus" => bus = Some(num(k, v)?),
            "hostaddr" => addr = Some(num(k, v)?),
            "controller" => controller = Some(num(k, v)?),
            "port" => port = Some(num(k, v)?),
            "devtype" if v == "hostdev" => {}
            "backend" => tracing::warn!(key = k, value = v, "usbdev option ignored"),
            _ => {
                return Err(ConfigProblem::UnsupportedDevOption {
                    key: k.to_owned(),
                    value: v.to_owned(),
                })
            }
        }
    }
    match (bus, addr) {
        (Some(b), Some(a)) => Ok(DevEntry {
            device: DeviceSpec::BusAddr(b, a),
            controller,
            port,
        }),
        _ => Err(ConfigProblem::NoHostDevice),
    }
}

impl<S: Store, F: Sysfs> Toolstack<S, F> {
    /// `config-apply`: create the file's controllers (devid = position in
    /// `usbctrl`, skipping ones that already exist with the same shape) and attach
    /// its devices (already-attached ones are left as they are), so re-running it
    /// after an interruption finishes the job.
    pub fn config_apply(&self, domid: u16, file: &str, text: &str) -> Result<Applied, ToolError> {
        let _lock = self.exclusive()?;
        let cfg = parse(file, text)?;
        let mut applied = Applied {
            created_controllers: Vec::new(),
            devices: Vec::new(),
        };
        for (i, c) in cfg.controllers.iter().enumerate() {
            let devid = u32::try_from(i)
                .map_err(|_| ToolError::InvalidArgument("too many controllers".into()))?;
            match self.our_controller(domid, devid) {
                Ok(existing) => {
                    if existing.version != Some(c.version) || existing.num_ports != c.ports {
                        return Err(ToolError::InvalidArgument(format!(
                            "controller {devid} of domain {domid} exists with version {:?} and {} ports, \
                             not as configured: remove it with `pvusb ctrl-detach {domid} {devid}` first",
                            existing.version, existing.num_ports
                        )));
                    }
                }
                Err(ToolError::NoSuchController { .. }) => {
                    self.create_controller(domid, Some(devid), c.version, c.ports)?;
                    applied.created_controllers.push(devid);
                }
                Err(e) => return Err(e),
            }
        }
        for devid in &applied.created_controllers {
            self.wait_connected(domid, *devid)?;
        }
        for d in &cfg.devices {
            let a = self.dev_attach(domid, &d.device, d.controller, d.port)?;
            applied.devices.push((a.busid, a.ctrl, a.port));
        }
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xl_syntax() {
        let text = r#"
name = "guest1"   # a comment
memory = 512; vcpus = 2
usbctrl = [ 'version=2, ports=8', "version=1,ports=4", ]
usbdev = [
    # first device
    'hostbus=1, hostaddr=6, controller=0, port=1',
    "hostbus=2,hostaddr=3",
]
"#;
        let cfg = parse("g.cfg", text).unwrap();
        assert_eq!(
            cfg.controllers,
            vec![
                CtrlEntry {
                    version: 2,
                    ports: 8
                },
                CtrlEntry {
                    version: 1,
                    ports: 4
                }
            ]
        );
        assert_eq!(cfg.devices.len(), 2);
        assert_eq!(cfg.devices[0].device, DeviceSpec::BusAddr(1, 6));
        assert_eq!(
            (cfg.devices[0].controller, cfg.devices[0].port),
            (Some(0), Some(1))
        );
        assert_eq!(
            (cfg.devices[1].controller, cfg.devices[1].port),
            (None, None)
        );
    }

    #[test]
    fn reports_the_bad_line() {
        let e = parse("g.cfg", "a = 1\nusbdev = [ 'hostbus=1' ]\n").unwrap_err();
        assert!(
            e.to_string().starts_with("g.cfg:2: usbdev needs hostbus="),
            "{e}"
        );
        let e = parse("g.cfg", "usbctrl = [ 'version=2\n").unwrap_err();
        assert!(
            e.to_string().contains("g.cfg:1: unterminated string"),
            "{e}"
        );
        let e = parse("g.cfg", "usbctrl = 'version=2'\n").unwrap_err();
        assert!(e.to_string().contains("must be a list"), "{e}");
        let e = parse("g.cfg", "usbctrl = [ 'speed=9' ]").unwrap_err();
        assert!(
            e.to_string().contains("unknown usbctrl option speed"),
            "{e}"
        );
    }
}
