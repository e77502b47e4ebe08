//! Every sysfs access of the toolstack, through a root path (`/sys` on a real
//! host, a fake tree in tests).
//!
//! What is read: `bus/usb/devices/*` (device dirs like `3-11`, interface dirs like
//! `3-11:1.0`), each device's `busnum`, `devnum`, `bDeviceClass`, `idVendor`,
//! `idProduct`, `manufacturer`, `product`, `speed`, `bConfigurationValue`, and each
//! interface's `driver` symlink; for the device policy also `serial` and the raw
//! `descriptors`. What is written: the interface name into
//! `bus/usb/drivers/<driver>/{unbind,bind}`.
//!
//! [`SysfsRoot`] in [`Binding::Kernel`] mode does exactly that. In
//! [`Binding::Simulated`] mode (tests, see [`fake`]) the writes are replaced by what
//! the kernel would do in reaction — removing or creating the interface's `driver`
//! symlink — because files in a tempdir cannot react to writes. Simulated bind fails
//! like the kernel does when the driver is not loaded (no `drivers/<name>` dir) or
//! the interface already has a driver. Everything else (enumeration, attribute
//! parsing, symlink reading) is the same code in both modes.

pub mod fake;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::paths::{is_busid, is_interface_of};

/// A sysfs failure: which file and why.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// A file or directory could not be read or written.
    #[error("sysfs {what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No such USB device.
    #[error("no USB device {0} in sysfs")]
    NoDevice(String),
    /// A simulated bind/unbind was refused the way the kernel refuses it.
    #[error("{0}")]
    Refused(String),
}

/// One interface of the active configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsbInterface {
    /// `<busid>:<config>.<interface>`.
    pub name: String,
    /// Name of the bound driver, if any.
    pub driver: Option<String>,
}

/// One USB device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsbDevice {
    /// Sysfs name, e.g. `3-11`.
    pub busid: String,
    /// `busnum` (lsusb's "Bus").
    pub busnum: u16,
    /// `devnum` (lsusb's "Device").
    pub devnum: u16,
    /// `bDeviceClass` (9 = hub).
    pub class: u8,
    /// `idVendor`.
    pub vendor: u16,
    /// `idProduct`.
    pub product: u16,
    /// `manufacturer` string, if the device has one.
    pub manufacturer: Option<String>,
    /// `product` string, if the device has one.
    pub product_name: Option<String>,
    /// `speed` in Mbit/s as sysfs prints it.
    pub speed: Option<String>,
    /// Interfaces of the active configuration, sorted by name.
    pub interfaces: Vec<UsbInterface>,
}

/// USB class code of hubs, which can never be assigned.
pub const HUB_CLASS: u8 = 9;

impl UsbDevice {
    /// Whether this is a hub.
    pub fn is_hub(&self) -> bool {
        self.class == HUB_CLASS
    }
}

/// Access to the host's USB devices and driver binding.
pub trait Sysfs {
    /// Busids of every (non-root-hub) USB device.
    fn busids(&self) -> Result<Vec<String>, SysfsError>;
    /// One device; [`SysfsError::NoDevice`] when absent.
    fn device(&self, busid: &str) -> Result<UsbDevice, SysfsError>;
    /// Current driver of an interface.
    fn interface_driver(&self, interface: &str) -> Result<Option<String>, SysfsError>;
    /// Unbind an interface from `driver`.
    fn unbind(&self, interface: &str, driver: &str) -> Result<(), SysfsError>;
    /// Bind an interface to `driver`.
    fn bind(&self, interface: &str, driver: &str) -> Result<(), SysfsError>;
    /// The raw text of one attribute file of a device (`busnum`, `devnum`, ...),
    /// `None` when `busid` is not a busid or the file cannot be read. For readers
    /// that must parse exactly as libxl does (`usb-list`), not as [`Sysfs::device`].
    fn device_attr(&self, busid: &str, name: &str) -> Option<String>;
    /// The file whose `flock` serialises the toolstack commands that change
    /// these devices' bindings ([`crate::lock`]).
    fn command_lock_path(&self) -> PathBuf;
    /// A device's `serial` string, if it has one.
    fn serial(&self, busid: &str) -> Result<Option<String>, SysfsError>;
    /// A device's raw `descriptors` (the device descriptor, then every
    /// configuration), what the device policy reads interfaces from.
    fn descriptors(&self, busid: &str) -> Result<Vec<u8>, SysfsError>;
    /// The device rules these devices are checked against at `dev-attach`
    /// ([`crate::device_policy`]); the file may not exist (no policy).
    fn rules_path(&self) -> PathBuf;
}

/// The command lock of the host's own `/sys`: in `/run`, which every process
/// of the host sees and a reboot clears.
pub const HOST_COMMAND_LOCK: &str = "/run/pvusb/toolstack.lock";

/// The rules file of a sysfs tree other than `/sys`, relative to its root.
pub const FAKE_TREE_RULES: &str = ".pvusb-rules.conf";

/// Whether bind/unbind are real kernel writes or simulated on a fake tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Write the interface name into `drivers/<drv>/{bind,unbind}`.
    Kernel,
    /// Update the `driver` symlink as the kernel would (fake trees only).
    Simulated,
}

/// Sysfs under a root directory.
#[derive(Debug, Clone)]
pub struct SysfsRoot {
    root: PathBuf,
    binding: Binding,
    rules: Option<PathBuf>,
}

/// Upper bound on directory entries scanned, so a broken tree cannot make a
/// listing run forever.
const MAX_ENTRIES: usize = 4096;

impl SysfsRoot {
    /// The host's sysfs at `root` (normally `/sys`), binding through the kernel.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            binding: Binding::Kernel,
            rules: None,
        }
    }

    /// A tree whose bind/unbind are simulated (see the module doc).
    pub fn simulated(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            binding: Binding::Simulated,
            rules: None,
        }
    }

    /// The same tree, checked against the device rules at `path` (`--rules`,
    /// `PVUSB_RULES`) instead of the default ([`Sysfs::rules_path`]).
    pub fn with_rules(mut self, path: impl Into<PathBuf>) -> Self {
        self.rules = Some(path.into());
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/usb/devices")
    }

    fn driver_dir(&self, driver: &str) -> PathBuf {
        self.root.join("bus/usb/drivers").join(driver)
    }

    /// The `driver` symlink of an interface: absent while it has none.
    fn driver_link(&self, interface: &str) -> PathBuf {
        self.devices_dir().join(interface).join("driver")
    }

    fn entries(&self) -> Result<Vec<String>, SysfsError> {
        let dir = self.devices_dir();
        let rd = fs::read_dir(&dir).map_err(io_error("listing", &dir))?;
        let mut names = Vec::new();
        for entry in rd.take(MAX_ENTRIES) {
            let entry = entry.map_err(io_error("listing", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn attr(&self, busid: &str, name: &str) -> Option<String> {
        let text = fs::read_to_string(self.devices_dir().join(busid).join(name)).ok()?;
        let t = text.trim();
        (!t.is_empty()).then(|| t.to_owned())
    }

    fn attr_num(&self, busid: &str, name: &str, radix: u32) -> Result<u32, SysfsError> {
        let path = self.devices_dir().join(busid).join(name);
        let text = fs::read_to_string(&path).map_err(io_error("reading", &path))?;
        u32::from_str_radix(text.trim(), radix).map_err(|e| SysfsError::Io {
            what: "parsing",
            path,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    fn write_attr(&self, path: PathBuf, value: &str) -> Result<(), SysfsError> {
        fs::write(&path, value).map_err(|source| SysfsError::Io {
            what: "writing",
            path,
            source,
        })
    }
}

/// For `map_err`: `what` (a verb: "reading", "binding") failed on `path`.
fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SysfsError + 'a {
    move |source| SysfsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn narrow<T: TryFrom<u32>>(v: u32, busid: &str, name: &str) -> Result<T, SysfsError> {
    T::try_from(v).map_err(|_| SysfsError::Io {
        what: "parsing",
        path: PathBuf::from(busid).join(name),
        source: io::Error::new(io::ErrorKind::InvalidData, "value out of range"),
    })
}

impl Sysfs for SysfsRoot {
    fn device_attr(&self, busid: &str, name: &str) -> Option<String> {
        let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric());
        if !is_busid(busid) || !plain {
            return None;
        }
        fs::read_to_string(self.devices_dir().join(busid).join(name)).ok()
    }

    fn command_lock_path(&self) -> PathBuf {
        if self.root == Path::new("/sys") {
            PathBuf::from(HOST_COMMAND_LOCK)
        } else {
            // A tree of its own (tests, the demo): its own lock, so that
            // unrelated trees do not wait for each other.
            self.root.join(".pvusb-toolstack.lock")
        }
    }

    fn rules_path(&self) -> PathBuf {
        match &self.rules {
            Some(p) => p.clone(),
            None if self.root == Path::new("/sys") => PathBuf::from(pvusb_policy::DEFAULT_RULES),
            // A tree of its own (tests, the demo): its own rules, so that the
            // host's /etc does not decide what a fake tree may attach.
            None => self.root.join(FAKE_TREE_RULES),
        }
    }

    fn serial(&self, busid: &str) -> Result<Option<String>, SysfsError> {
        if !is_busid(busid) {
            return Err(SysfsError::NoDevice(busid.to_owned()));
        }
        Ok(self.attr(busid, "serial"))
    }

    fn descriptors(&self, busid: &str) -> Result<Vec<u8>, SysfsError> {
        if !is_busid(busid) {
            return Err(SysfsError::NoDevice(busid.to_owned()));
        }
        let path = self.devices_dir().join(busid).join("descriptors");
        fs::read(&path).map_err(|source| SysfsError::Io {
            what: "reading",
            path,
            source,
        })
    }

    fn busids(&self) -> Result<Vec<String>, SysfsError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|n| is_busid(n))
            .collect())
    }

    fn device(&self, busid: &str) -> Result<UsbDevice, SysfsError> {
        if !is_busid(busid) || !self.devices_dir().join(busid).is_dir() {
            return Err(SysfsError::NoDevice(busid.to_owned()));
        }
        let config = self.attr(busid, "bConfigurationValue");
        let mut interfaces = Vec::new();
        if let Some(config) = config {
            let prefix = format!("{busid}:{config}.");
            for name in self.entries()? {
                if name.starts_with(&prefix) && is_interface_of(&name, busid) {
                    let driver = self.interface_driver(&name)?;
                    interfaces.push(UsbInterface { name, driver });
                }
            }
        }
        Ok(UsbDevice {
            busid: busid.to_owned(),
            busnum: narrow(self.attr_num(busid, "busnum", 10)?, busid, "busnum")?,
            devnum: narrow(self.attr_num(busid, "devnum", 10)?, busid, "devnum")?,
            class: narrow(
                self.attr_num(busid, "bDeviceClass", 16)?,
                busid,
                "bDeviceClass",
            )?,
            vendor: narrow(self.attr_num(busid, "idVendor", 16)?, busid, "idVendor")?,
            product: narrow(self.attr_num(busid, "idProduct", 16)?, busid, "idProduct")?,
            manufacturer: self.attr(busid, "manufacturer"),
            product_name: self.attr(busid, "product"),
            speed: self.attr(busid, "speed"),
            interfaces,
        })
    }

    fn interface_driver(&self, interface: &str) -> Result<Option<String>, SysfsError> {
        let link = self.driver_link(interface);
        match fs::read_link(&link) {
            Ok(target) => Ok(target
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(io_error("reading", &link)(source)),
        }
    }

    fn unbind(&self, interface: &str, driver: &str) -> Result<(), SysfsError> {
        match self.binding {
            Binding::Kernel => self.write_attr(self.driver_dir(driver).join("unbind"), interface),
            Binding::Simulated => {
                if self.interface_driver(interface)?.as_deref() != Some(driver) {
                    return Err(SysfsError::Refused(format!(
                        "{interface} is not bound to {driver} (simulated ENODEV)"
                    )));
                }
                let link = self.driver_link(interface);
                fs::remove_file(&link).map_err(io_error("unbinding", &link))
            }
        }
    }

    fn bind(&self, interface: &str, driver: &str) -> Result<(), SysfsError> {
        match self.binding {
            Binding::Kernel => self.write_attr(self.driver_dir(driver).join("bind"), interface),
            Binding::Simulated => {
                let dir = self.driver_dir(driver);
                if !dir.is_dir() {
                    return Err(SysfsError::Refused(format!(
                        "driver {driver} is not loaded (simulated ENOENT)"
                    )));
                }
                if self.interface_driver(interface)?.is_some() {
                    return Err(SysfsError::Refused(format!(
                        "{interface} already has a driver (simulated EBUSY)"
                    )));
                }
                let link = self.driver_link(interface);
                std::os::unix::fs::symlink(&dir, &link).map_err(io_error("binding", &link))
            }
        }
    }
}
