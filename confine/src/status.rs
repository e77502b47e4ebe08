//! Reading another process's confinement from `/proc`: the monitor checks a
//! worker (and the tests check a child) from outside, because a confined
//! process cannot open `/proc/self/status` itself.

use std::io;
use std::path::PathBuf;

/// The confinement fields of `/proc/PID/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and file-system uid.
    pub uid: [u32; 4],
    /// Real, effective, saved and file-system gid.
    pub gid: [u32; 4],
    /// Effective capabilities, a bit per capability.
    pub cap_eff: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// 1 when `no_new_privs` is set (0 where the kernel does not say).
    pub no_new_privs: u32,
    /// 0 none, 1 strict, 2 filter (0 where the kernel does not say).
    pub seccomp: u32,
}

/// Why a process's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The file or directory could not be read (the process may be gone).
    #[error("cannot read {}", path.display())]
    Read {
        /// What was read.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A field the kernel always writes is not there.
    #[error("no {field} line in the process status")]
    Missing {
        /// The field's name.
        field: &'static str,
    },
    /// A field's value is not what the kernel writes.
    #[error("unexpected {field} value {value:?} in the process status")]
    Malformed {
        /// The field's name.
        field: &'static str,
        /// The text found.
        value: String,
    },
}

/// Parses `/proc/PID/status`.
pub fn of(pid: i32) -> Result<ProcStatus, StatusError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text),
        Err(source) => Err(StatusError::Read { path, source }),
    }
}

/// Parses the text of a `/proc/PID/status` file.
pub fn parse(text: &str) -> Result<ProcStatus, StatusError> {
    let field = |name: &'static str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let required = |name| field(name).ok_or(StatusError::Missing { field: name });
    let malformed = |name: &'static str, value: &str| StatusError::Malformed {
        field: name,
        value: value.to_owned(),
    };
    let ids = |name| -> Result<[u32; 4], StatusError> {
        let value = required(name)?;
        let numbers: Vec<u32> = value
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| malformed(name, value))?;
        numbers.try_into().map_err(|_| malformed(name, value))
    };
    let mask = |name| -> Result<u64, StatusError> {
        let value = required(name)?;
        u64::from_str_radix(value, 16).map_err(|_| malformed(name, value))
    };
    let number = |name| -> Result<u32, StatusError> {
        field(name).map_or(Ok(0), |v| v.parse().map_err(|_| malformed(name, v)))
    };
    Ok(ProcStatus {
        uid: ids("Uid")?,
        gid: ids("Gid")?,
        cap_eff: mask("CapEff")?,
        cap_prm: mask("CapPrm")?,
        no_new_privs: number("NoNewPrivs")?,
        seccomp: number("Seccomp")?,
    })
}

/// The open descriptors of process `pid` with what each refers to
/// (`/proc/PID/fd/N` link targets such as `pipe:[1234]` or `/dev/xen/gntdev`),
/// sorted by number. A descriptor closed while the directory is read is left out.
pub fn open_fds(pid: i32) -> Result<Vec<(i32, String)>, StatusError> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let read_error = |path: PathBuf| move |source| StatusError::Read { path, source };
    let mut fds = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_error(dir.clone()))? {
        let entry = entry.map_err(read_error(dir.clone()))?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        match std::fs::read_link(entry.path()) {
            Ok(target) => fds.push((fd, target.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_error(entry.path())(e)),
        }
    }
    fds.sort();
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFINED: &str = "Name:\tpvusb\nUmask:\t0022\nState:\tS (sleeping)\n\
        Tgid:\t1234\nPid:\t1234\nUid:\t65534\t65534\t65534\t65534\n\
        Gid:\t65534\t65534\t65534\t65534\nGroups:\t\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n\
        Seccomp:\t2\nSeccomp_filters:\t1\nSpeculation_Store_Bypass:\tthread vulnerable\n";

    #[test]
    fn a_confined_worker() {
        let s = parse(CONFINED).unwrap();
        assert_eq!(
            s,
            ProcStatus {
                uid: [65534; 4],
                gid: [65534; 4],
                cap_eff: 0,
                cap_prm: 0,
                no_new_privs: 1,
                seccomp: 2,
            }
        );
    }

    #[test]
    fn root_with_every_capability_on_an_old_kernel() {
        // No NoNewPrivs or Seccomp lines: 0 for both.
        let text = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t1\nCapPrm:\t000001ffffffffff\n\
                    CapEff:\t000001ffffffffff\n";
        let s = parse(text).unwrap();
        assert_eq!(s.uid, [0; 4]);
        assert_eq!(s.gid, [0, 0, 0, 1]);
        assert_eq!(s.cap_eff, 0x1ff_ffff_ffff);
        assert_eq!((s.no_new_privs, s.seccomp), (0, 0));
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let e = parse("Uid:\t0\t0\t0\t0\n").unwrap_err();
        assert!(matches!(e, StatusError::Missing { field: "Gid" }), "{e}");
        let e = parse(&CONFINED.replace("Uid:\t65534\t", "Uid:\t")).unwrap_err();
        assert!(
            matches!(e, StatusError::Malformed { field: "Uid", .. }),
            "{e}"
        );
        let e = parse(&CONFINED.replace("CapEff:\t0", "CapEff:\tx")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unexpected CapEff value \"x000000000000000\" in the process status"
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let me = i32::try_from(std::process::id()).unwrap();
        let s = of(me).unwrap();
        assert_eq!(s.uid[1], nix::unistd::geteuid().as_raw());
        let fds = open_fds(me).unwrap();
        // At least the descriptor reading the directory itself.
        assert!(!fds.is_empty());
        assert!(fds.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(matches!(of(-1), Err(StatusError::Read { .. })));
    }
}
