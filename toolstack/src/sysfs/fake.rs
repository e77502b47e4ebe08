//! A fake sysfs tree in a directory, for tests and demos.
//!
//! It lays out `bus/usb/devices/<busid>/{busnum,devnum,...}`, interface dirs with
//! `driver` symlinks and `bus/usb/drivers/<name>/{bind,unbind}`. Open it with
//! [`SysfsRoot::simulated`] so that bind/unbind update the symlinks (see the
//! parent module for exactly what is simulated).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::SysfsRoot;

/// A device to create in the fake tree.
#[derive(Debug, Clone)]
pub struct FakeDevice {
    /// Sysfs name, e.g. `1-2`.
    pub busid: String,
    /// `busnum`.
    pub busnum: u16,
    /// `devnum`.
    pub devnum: u16,
    /// `bDeviceClass`.
    pub class: u8,
    /// `idVendor`.
    pub vendor: u16,
    /// `idProduct`.
    pub product: u16,
    /// `manufacturer`.
    pub manufacturer: &'static str,
    /// `product`.
    pub product_name: &'static str,
    /// Interfaces of configuration 1: the driver each is bound to.
    pub interface_drivers: Vec<Option<&'static str>>,
    /// `serial`, if the device has one.
    pub serial: Option<&'static str>,
    /// Class, subclass and protocol of each interface, written into the
    /// `descriptors` file (by default what the driver in
    /// `interface_drivers` serves, see [`class_of_driver`]).
    pub interface_classes: Vec<[u8; 3]>,
}

/// The interface class a driver of the fake tree serves: usb-storage a
/// SCSI bulk-only stick, usbhid a boot keyboard, btusb Bluetooth, hub a hub,
/// anything else (or none) vendor-specific.
pub fn class_of_driver(driver: Option<&str>) -> [u8; 3] {
    match driver {
        Some("usb-storage") => [0x08, 0x06, 0x50],
        Some("usbhid") => [0x03, 0x01, 0x01],
        Some("btusb") => [0xe0, 0x01, 0x01],
        Some("hub") => [0x09, 0x00, 0x00],
        _ => [0xff, 0x00, 0x00],
    }
}

impl FakeDevice {
    /// The `descriptors` file: the device descriptor and configuration 1
    /// with one interface (alternate setting 0, no endpoints) per entry of
    /// `interface_classes`.
    pub fn descriptors(&self) -> Vec<u8> {
        let [vl, vh] = self.vendor.to_le_bytes();
        let [pl, ph] = self.product.to_le_bytes();
        let mut d = vec![
            18, 1, 0x00, 0x02, self.class, 0, 0, 64, vl, vh, pl, ph, 0, 1, 1, 2, 3, 1,
        ];
        let n = u8::try_from(self.interface_classes.len()).unwrap_or(u8::MAX);
        let [tl, th] = (9 + 9 * u16::from(n)).to_le_bytes();
        d.extend([9, 2, tl, th, n, 1, 0, 0x80, 50]);
        for (i, [c, sc, p]) in self
            .interface_classes
            .iter()
            .take(usize::from(n))
            .enumerate()
        {
            d.extend([9, 4, i as u8, 0, 0, *c, *sc, *p, 0]);
        }
        d
    }
}

impl FakeDevice {
    /// A non-hub device with the given interfaces' drivers.
    pub fn new(busid: &str, busnum: u16, devnum: u16, drivers: &[Option<&'static str>]) -> Self {
        Self {
            busid: busid.to_owned(),
            busnum,
            devnum,
            class: 0,
            vendor: 0x0781,
            product: 0x5567,
            manufacturer: "SanDisk",
            product_name: "Cruzer Blade",
            interface_drivers: drivers.to_vec(),
            serial: Some("4C530001"),
            interface_classes: drivers.iter().map(|d| class_of_driver(*d)).collect(),
        }
    }

    /// A hub (class 9) with one interface on the `hub` driver.
    pub fn hub(busid: &str, busnum: u16, devnum: u16) -> Self {
        Self {
            class: 9,
            vendor: 0x05e3,
            product: 0x0608,
            manufacturer: "Genesys",
            product_name: "USB2.0 Hub",
            ..Self::new(busid, busnum, devnum, &[Some("hub")])
        }
    }
}

/// Builder of a fake sysfs tree.
#[derive(Debug)]
pub struct FakeSysfs {
    root: PathBuf,
}

impl FakeSysfs {
    /// Create the skeleton under `root` (which must exist).
    pub fn create(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("bus/usb/devices"))?;
        fs::create_dir_all(root.join("bus/usb/drivers"))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// A [`SysfsRoot`] over this tree with simulated binding.
    pub fn sysfs(&self) -> SysfsRoot {
        SysfsRoot::simulated(&self.root)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Make a driver "loaded".
    pub fn add_driver(&self, name: &str) -> io::Result<()> {
        let dir = self.root.join("bus/usb/drivers").join(name);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("bind"), "")?;
        fs::write(dir.join("unbind"), "")
    }

    /// Make a driver "unloaded" (binding to it then fails).
    pub fn remove_driver(&self, name: &str) -> io::Result<()> {
        fs::remove_dir_all(self.root.join("bus/usb/drivers").join(name))
    }

    /// Add a device, its interfaces and the drivers they are bound to.
    pub fn add_device(&self, d: &FakeDevice) -> io::Result<()> {
        let devices = self.root.join("bus/usb/devices");
        let dir = devices.join(&d.busid);
        fs::create_dir_all(&dir)?;
        let attrs = [
            ("busnum", d.busnum.to_string()),
            ("devnum", d.devnum.to_string()),
            ("bDeviceClass", format!("{:02x}", d.class)),
            ("idVendor", format!("{:04x}", d.vendor)),
            ("idProduct", format!("{:04x}", d.product)),
            ("manufacturer", d.manufacturer.to_owned()),
            ("product", d.product_name.to_owned()),
            ("speed", "480".to_owned()),
            ("bConfigurationValue", "1".to_owned()),
        ];
        for (name, value) in attrs {
            fs::write(dir.join(name), format!("{value}\n"))?;
        }
        if let Some(serial) = d.serial {
            fs::write(dir.join("serial"), format!("{serial}\n"))?;
        }
        fs::write(dir.join("descriptors"), d.descriptors())?;
        for (i, driver) in d.interface_drivers.iter().enumerate() {
            let intf = devices.join(format!("{}:1.{i}", d.busid));
            fs::create_dir_all(&intf)?;
            if let Some(driver) = driver {
                self.add_driver(driver)?;
                std::os::unix::fs::symlink(
                    self.root.join("bus/usb/drivers").join(driver),
                    intf.join("driver"),
                )?;
            }
        }
        Ok(())
    }

    /// Write the tree's device rules ([`super::FAKE_TREE_RULES`]); `None`
    /// removes them (no policy).
    pub fn set_rules(&self, text: Option<&str>) -> io::Result<()> {
        let path = self.root.join(super::FAKE_TREE_RULES);
        match text {
            Some(t) => fs::write(path, t),
            None => match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }

    /// Remove a device (host unplug).
    pub fn unplug(&self, busid: &str) -> io::Result<()> {
        let devices = self.root.join("bus/usb/devices");
        for entry in fs::read_dir(&devices)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == busid || name.starts_with(&format!("{busid}:")) {
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysfs::Sysfs;

    #[test]
    fn reads_devices_and_simulates_binding() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeSysfs::create(dir.path()).unwrap();
        fake.add_device(&FakeDevice::new("1-2", 1, 6, &[Some("usb-storage"), None]))
            .unwrap();
        fake.add_device(&FakeDevice::hub("1-1", 1, 2)).unwrap();
        let s = fake.sysfs();
        assert_eq!(
            s.busids().unwrap(),
            vec!["1-1".to_owned(), "1-2".to_owned()]
        );
        let d = s.device("1-2").unwrap();
        assert_eq!(
            (d.busnum, d.devnum, d.vendor, d.product),
            (1, 6, 0x0781, 0x5567)
        );
        assert!(!d.is_hub());
        assert!(s.device("1-1").unwrap().is_hub());
        assert_eq!(d.interfaces.len(), 2);
        assert_eq!(d.interfaces[0].driver.as_deref(), Some("usb-storage"));
        assert_eq!(d.interfaces[1].driver, None);

        s.unbind("1-2:1.0", "usb-storage").unwrap();
        assert_eq!(s.interface_driver("1-2:1.0").unwrap(), None);
        assert!(s.unbind("1-2:1.0", "usb-storage").is_err());
        s.bind("1-2:1.0", "usb-storage").unwrap();
        assert!(s.bind("1-2:1.0", "usb-storage").is_err(), "already bound");
        assert_eq!(
            s.interface_driver("1-2:1.0").unwrap().as_deref(),
            Some("usb-storage")
        );
        assert!(s.bind("1-2:1.1", "btusb").is_err(), "driver not loaded");
        assert!(matches!(
            s.device("9-9"),
            Err(crate::sysfs::SysfsError::NoDevice(_))
        ));
    }
}
