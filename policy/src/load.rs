//! Reading a rules file: no file is no policy (today's behaviour, everything
//! but hubs may be assigned); a file that cannot be read or parsed is an
//! error, never "no policy", so a typo cannot open everything up.

use std::io;
use std::path::{Path, PathBuf};

use crate::matching::{decide, DeviceFacts};
use crate::parse::{parse_bytes, ParseError};
use crate::rule::{Rule, Target};

/// Where the rules live unless `--rules` or `PVUSB_RULES` say otherwise.
pub const DEFAULT_RULES: &str = "/etc/pvusb/rules.conf";

/// The environment variable naming the rules file.
pub const RULES_ENV: &str = "PVUSB_RULES";

/// Upper bound on a rules file's size, so a wrong path (a disk image) fails
/// fast instead of being read into memory.
pub const MAX_RULES_BYTES: u64 = 4 << 20;

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It exists but cannot be read.
    #[error("cannot read the device rules {} (fix its permissions, or remove it to allow every device but hubs)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It is larger than [`MAX_RULES_BYTES`].
    #[error("the device rules {} are larger than {MAX_RULES_BYTES} bytes: point --rules (or PVUSB_RULES) at the rules file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// It does not parse.
    // `error` is where and what, part of this message rather than a cause, so it is
    // not a `#[source]`: the message keeps the compiler-style `file:line:col:`.
    #[error("{}:{error}: fix the rule (see usbguard-rules.conf(5); pvusb's subset is in its README)", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        error: ParseError,
    },
}

/// The rules of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file they came from (for messages).
    pub path: PathBuf,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

/// A refusal, ready to be shown: `what` (the target's participle) and
/// `why` (`FILE:LINE \`rule\`` or the implicit target's explanation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The target that refused it.
    pub target: Target,
    /// "blocked" or "rejected".
    pub what: &'static str,
    /// Which rule, as `FILE:LINE \`rule\``, or that none matched.
    pub why: String,
}

impl Policy {
    /// Reads `path`: `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>, LoadError> {
        let read = |source| LoadError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read(e)),
        };
        if meta.len() > MAX_RULES_BYTES {
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let rules = parse_bytes(&bytes).map_err(|error| LoadError::Parse {
            path: path.to_owned(),
            error,
        })?;
        Ok(Some(Self {
            path: path.to_owned(),
            rules,
        }))
    }

    /// Rules from text (tests, tools), attributed to `path`.
    pub fn from_text(path: impl Into<PathBuf>, text: &str) -> Result<Self, LoadError> {
        let path = path.into();
        let rules = crate::parse::parse(text).map_err(|error| LoadError::Parse {
            path: path.clone(),
            error,
        })?;
        Ok(Self { path, rules })
    }

    /// `None` when the device may go to the guest, else why not.
    pub fn check(&self, device: &DeviceFacts) -> Option<Refusal> {
        let d = decide(&self.rules, device);
        if d.allowed() {
            return None;
        }
        let why = match d.rule {
            Some(r) => format!("{}:{} `{r}`", self.path.display(), r.line),
            None => format!(
                "{}: no rule matches it and unmatched devices are {}",
                self.path.display(),
                d.target.verb()
            ),
        };
        Some(Refusal {
            target: d.target,
            what: d.target.verb(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_no_policy_and_bad_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.conf");
        assert_eq!(Policy::load(&path).unwrap(), None);
        std::fs::write(&path, "allow id 1234:*\nallow id nope\n").unwrap();
        let e = Policy::load(&path).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}:2:10: id: ", path.display())),
            "{e}"
        );
        std::fs::write(&path, "# only comments\n").unwrap();
        assert!(Policy::load(&path).unwrap().unwrap().rules.is_empty());
        assert!(matches!(
            Policy::load(dir.path()),
            Err(LoadError::Read { .. })
        ));
    }

    #[test]
    fn refusals_name_file_line_and_rule() {
        let p = Policy::from_text(
            "/etc/pvusb/rules.conf",
            "allow id 1234:*\nreject id 0781:* # sticks\n",
        )
        .unwrap();
        let stick = DeviceFacts {
            vendor: 0x0781,
            ..Default::default()
        };
        let r = p.check(&stick).unwrap();
        assert_eq!(r.why, "/etc/pvusb/rules.conf:2 `reject id 0781:*`");
        assert_eq!(r.what, "rejected");
        let other = DeviceFacts {
            vendor: 0x1111,
            ..Default::default()
        };
        let r = p.check(&other).unwrap();
        assert_eq!(r.target, Target::Block);
        assert!(r.why.contains("no rule matches"), "{}", r.why);
        assert_eq!(
            p.check(&DeviceFacts {
                vendor: 0x1234,
                ..Default::default()
            }),
            None
        );
    }
}
