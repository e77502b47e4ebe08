//! `--emulate` specs: which emulated device, and what backs a disk.
//!
//! WHY a spec and not a factory: with confined worker processes each worker
//! builds its own devices, and a factory (a closure) cannot cross a process
//! boundary. The daemon parses the specs and opens their backing once
//! ([`EmulatedSpec::open_backing`]: the disk file, or a memfd for a disk in
//! memory); every worker gets the same descriptors, so a disk's contents are
//! shared between controllers and survive a restarted worker, as they do with
//! one process.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::audio::{AudioDevice, AudioStats};
use super::faulty::{SlowDevice, StallDevice, VanishingDevice};
use super::keyboard::KeyboardHandle;
use super::loopback::LoopbackDevice;
use super::mass_storage::store::{FileStore, BLOCK_SIZE};
use super::mass_storage::MassStorageDevice;
use super::DeviceFactory;

/// Size of an emulated disk whose file does not exist yet.
pub const DEFAULT_DISK: u64 = 64 << 20;

/// The largest emulated disk (the SCSI model counts blocks in 32 bits).
const MAX_DISK: u64 = (u32::MAX as u64) * BLOCK_SIZE;

/// One `--emulate` spec, parsed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EmulatedSpec {
    /// A disk in a file (created with `size`, or with [`DEFAULT_DISK`] if
    /// missing; used as it is otherwise).
    Storage {
        /// The file.
        path: PathBuf,
        /// Create (or truncate) it with this many bytes.
        size: Option<u64>,
    },
    /// A disk in memory.
    StorageMem {
        /// Bytes.
        size: u64,
    },
    /// A keyboard that types `text` once opened.
    Keyboard(Option<String>),
    /// Bulk loopback.
    Loopback,
    /// UAC1 audio.
    Audio,
    /// A device that stalls every transfer.
    Stall,
    /// A loopback answering after 100 ms.
    Slow,
    /// A loopback that vanishes at its 100th transfer.
    Vanish,
}

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not a spec this build knows.
    #[error(
        "unknown --emulate spec {0:?}; use storage:FILE[:SIZE], storage-mem:SIZE, \
         keyboard[:TEXT], loopback, audio, stall, slow or vanish"
    )]
    Unknown(String),
    /// A size that is not one.
    #[error("size {0:?} is not a number of bytes of at least 512 (e.g. 64M)")]
    Size(String),
    /// The disk's backing could not be opened or created.
    #[error("emulated storage {what}")]
    Backing {
        /// The file, or "in memory".
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A disk spec without its backing descriptor (a worker's setup).
    #[error("emulated storage {0} has no backing descriptor")]
    NoBacking(String),
}

/// Parses "64M", "1G", "512K" or a byte count (at least one block).
pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    let bad = || SpecError::Size(s.to_owned());
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (s.get(..i).unwrap_or(""), 1u64 << 10),
        Some((i, 'M' | 'm')) => (s.get(..i).unwrap_or(""), 1 << 20),
        Some((i, 'G' | 'g')) => (s.get(..i).unwrap_or(""), 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult)
        .filter(|b| (BLOCK_SIZE..=MAX_DISK).contains(b))
        .ok_or_else(bad)
}

impl EmulatedSpec {
    /// Parses one `--emulate` value.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let (kind, rest) = spec
            .split_once(':')
            .map_or((spec, None), |(k, r)| (k, Some(r)));
        Ok(match (kind, rest) {
            ("storage", Some(rest)) => match rest.rsplit_once(':') {
                Some((file, size)) if parse_size(size).is_ok() => EmulatedSpec::Storage {
                    path: PathBuf::from(file),
                    size: Some(parse_size(size)?),
                },
                _ => EmulatedSpec::Storage {
                    path: PathBuf::from(rest),
                    size: None,
                },
            },
            ("storage-mem", Some(size)) => EmulatedSpec::StorageMem {
                size: parse_size(size)?,
            },
            ("keyboard", text) => EmulatedSpec::Keyboard(text.map(str::to_owned)),
            ("loopback", None) => EmulatedSpec::Loopback,
            ("audio", None) => EmulatedSpec::Audio,
            ("stall", None) => EmulatedSpec::Stall,
            ("slow", None) => EmulatedSpec::Slow,
            ("vanish", None) => EmulatedSpec::Vanish,
            _ => return Err(SpecError::Unknown(spec.to_owned())),
        })
    }

    /// What the device is, for the operator.
    pub fn describe(&self) -> String {
        match self {
            EmulatedSpec::Storage { path, .. } => format!("storage ({})", path.display()),
            EmulatedSpec::StorageMem { size } => format!("storage in memory ({size} bytes)"),
            EmulatedSpec::Keyboard(_) => "keyboard".into(),
            EmulatedSpec::Loopback => "loopback".into(),
            EmulatedSpec::Audio => "audio".into(),
            EmulatedSpec::Stall => "stall".into(),
            EmulatedSpec::Slow => "slow loopback (100 ms)".into(),
            EmulatedSpec::Vanish => "loopback that vanishes at its 100th transfer".into(),
        }
    }

    /// Whether the device needs a backing descriptor.
    pub fn needs_backing(&self) -> bool {
        matches!(
            self,
            EmulatedSpec::Storage { .. } | EmulatedSpec::StorageMem { .. }
        )
    }

    /// Opens (or creates) what backs a disk; `None` for other devices.
    pub fn open_backing(&self) -> Result<Option<File>, SpecError> {
        match self {
            EmulatedSpec::Storage { path, size } => {
                let what = || path.display().to_string();
                let create = size.is_some() || !path.exists();
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create(create)
                    .truncate(create)
                    .open(path)
                    .map_err(|source| SpecError::Backing {
                        what: what(),
                        source,
                    })?;
                if create {
                    file.set_len(size.unwrap_or(DEFAULT_DISK))
                        .map_err(|source| SpecError::Backing {
                            what: what(),
                            source,
                        })?;
                }
                Ok(Some(file))
            }
            EmulatedSpec::StorageMem { size } => {
                let backing = || -> std::io::Result<File> {
                    let fd = nix::sys::memfd::memfd_create(
                        c"pvusb-disk",
                        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
                    )?;
                    let file = File::from(fd);
                    file.set_len(*size)?;
                    Ok(file)
                };
                backing().map(Some).map_err(|source| SpecError::Backing {
                    what: "in memory".into(),
                    source,
                })
            }
            _ => Ok(None),
        }
    }

    /// The device factory, on `backing` for a disk (from [`Self::open_backing`]).
    pub fn factory(&self, backing: Option<File>) -> Result<DeviceFactory, SpecError> {
        Ok(match self {
            EmulatedSpec::Storage { .. } | EmulatedSpec::StorageMem { .. } => {
                let file = backing.ok_or_else(|| SpecError::NoBacking(self.describe()))?;
                let store = FileStore::new(file).map_err(|source| SpecError::Backing {
                    what: self.describe(),
                    source,
                })?;
                let store = Arc::new(store);
                Arc::new(move || Box::new(MassStorageDevice::new(Arc::clone(&store) as _)))
            }
            EmulatedSpec::Keyboard(text) => {
                let handle = KeyboardHandle::new();
                if let Some(t) = text {
                    handle.press(t);
                }
                Arc::new(move || Box::new(handle.device()))
            }
            EmulatedSpec::Loopback => Arc::new(|| Box::new(LoopbackDevice::new(1 << 20))),
            EmulatedSpec::Audio => {
                let stats = Arc::new(AudioStats::default());
                Arc::new(move || Box::new(AudioDevice::new(Arc::clone(&stats))))
            }
            EmulatedSpec::Stall => Arc::new(|| Box::new(StallDevice)),
            EmulatedSpec::Slow => Arc::new(|| {
                Box::new(SlowDevice::new(
                    LoopbackDevice::new(1 << 20),
                    Duration::from_millis(100),
                ))
            }),
            EmulatedSpec::Vanish => {
                Arc::new(|| Box::new(VanishingDevice::new(LoopbackDevice::new(1 << 20), 100)))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse() {
        assert_eq!(parse_size("64M").ok(), Some(64 << 20));
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert!(parse_size("1").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999G").is_err());
        assert_eq!(
            EmulatedSpec::parse("storage-mem:1M").ok(),
            Some(EmulatedSpec::StorageMem { size: 1 << 20 })
        );
        assert_eq!(
            EmulatedSpec::parse("storage:/tmp/a:2M").ok(),
            Some(EmulatedSpec::Storage {
                path: "/tmp/a".into(),
                size: Some(2 << 20)
            })
        );
        assert!(EmulatedSpec::parse("keyboard:hi").is_ok());
        assert!(EmulatedSpec::parse("bogus").is_err());
        assert!(EmulatedSpec::parse("storage-mem").is_err());
        assert!(EmulatedSpec::parse("loopback:x").is_err());
    }

    #[test]
    fn a_memory_disk_is_one_backing_shared_by_every_factory() {
        let spec = EmulatedSpec::parse("storage-mem:64K").unwrap();
        let backing = spec.open_backing().unwrap().unwrap();
        assert_eq!(backing.metadata().unwrap().len(), 64 << 10);
        let again = backing.try_clone().unwrap();
        use std::os::unix::fs::FileExt;
        backing.write_all_at(b"kept", 512).unwrap();
        let mut buf = [0u8; 4];
        again.read_exact_at(&mut buf, 512).unwrap();
        assert_eq!(&buf, b"kept");
        assert!(spec.factory(Some(again)).is_ok());
        assert!(matches!(spec.factory(None), Err(SpecError::NoBacking(_))));
    }
}
