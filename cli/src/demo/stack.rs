//! The simulated machine the demo builds and tears down: a private directory,
//! the embedded xenstore, the guest domain's nodes, the fake sysfs that
//! describes the emulated devices to the toolstack, and the leftover checks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pvusb_backend::usb::emulated::descriptors::EMULATED_VENDOR_ID;
use pvusb_backend::usb::emulated::keyboard::KEYBOARD_PRODUCT_ID;
use pvusb_backend::usb::emulated::loopback::LOOPBACK_PRODUCT_ID;
use pvusb_backend::usb::emulated::mass_storage::MASS_STORAGE_PRODUCT_ID;
use pvusb_backend::usb::emulated::EMULATED_BUS;
use pvusb_support::Chain;
use pvusb_toolstack::sysfs::fake::{FakeDevice, FakeSysfs};
use pvusb_xenstore::{Access, Perm, Tx, XsClient};

/// The guest domain the demo creates.
pub const GUEST_DOMID: u16 = 1;
/// Its name (the toolstack commands address it by name, as `xl` users do).
pub const GUEST_NAME: &str = "demo-guest";

/// Where everything of one demo run lives.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The private directory (also the simulated transport's rendezvous).
    pub dir: PathBuf,
    /// The xenstore socket.
    pub xs: PathBuf,
    /// The fake sysfs root.
    pub sysfs: PathBuf,
    /// The file backing the emulated disk.
    pub disk: PathBuf,
}

impl Paths {
    /// The layout under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            xs: dir.join("xenstore.sock"),
            sysfs: dir.join("sysfs"),
            disk: dir.join("disk.img"),
        }
    }
}

/// One emulated device: the backend's `--emulate` spec, its busid on the
/// emulated bus (assigned in order: 200-1, 200-2, ...), and its sysfs view.
#[derive(Debug, Clone)]
pub struct Emulated {
    /// `--emulate` argument.
    pub spec: String,
    /// Busid.
    pub busid: String,
    /// What it is, for the output.
    pub what: &'static str,
    /// Controller port the demo puts it on.
    pub port: u8,
    product_id: u16,
    product_name: &'static str,
    driver: Option<&'static str>,
}

/// The three devices of the demo, in the order the backend creates them.
pub fn emulated_devices(paths: &Paths, disk_mib: u64, typed: &str) -> Vec<Emulated> {
    let dev = |n: u8, spec: String, what, product_id, product_name, driver| Emulated {
        spec,
        busid: format!("{EMULATED_BUS}-{n}"),
        what,
        port: n,
        product_id,
        product_name,
        driver,
    };
    vec![
        dev(
            1,
            format!("storage:{}:{disk_mib}M", paths.disk.display()),
            "mass storage",
            MASS_STORAGE_PRODUCT_ID,
            "pvusb disk",
            Some("usb-storage"),
        ),
        dev(
            2,
            format!("keyboard:{typed}"),
            "HID keyboard",
            KEYBOARD_PRODUCT_ID,
            "pvusb keyboard",
            Some("usbhid"),
        ),
        dev(
            3,
            "loopback".into(),
            "loopback",
            LOOPBACK_PRODUCT_ID,
            "pvusb loopback",
            None,
        ),
    ]
}

/// Describes the emulated devices in a fake sysfs tree, so that `dev-attach`
/// and `dev-detach` run their real code paths — the crash-safe records, the
/// driver unbind/rebind micro-states — against devices the kernel has never
/// seen (binding is simulated: the tree's `driver` symlinks move instead).
pub fn fake_sysfs(paths: &Paths, devices: &[Emulated]) -> std::io::Result<()> {
    std::fs::create_dir_all(&paths.sysfs)?;
    let fake = FakeSysfs::create(&paths.sysfs)?;
    for d in devices {
        let devnum = u16::from(d.port) + 1;
        let mut f = FakeDevice::new(&d.busid, u16::from(EMULATED_BUS), devnum, &[d.driver]);
        f.vendor = EMULATED_VENDOR_ID;
        f.product = d.product_id;
        f.manufacturer = "pvusb";
        f.product_name = d.product_name;
        fake.add_device(&f)?;
    }
    Ok(())
}

/// `pvusb xenstored` for this run.
pub fn xenstored_command(exe: &Path, paths: &Paths) -> Command {
    let mut c = Command::new(exe);
    c.arg("xenstored")
        .arg("--socket")
        .arg(&paths.xs)
        .arg("--trust-declared-domids");
    c
}

/// Waits until the xenstore socket answers, as dom0.
pub fn connect_xenstore(paths: &Paths, timeout: Duration) -> Result<XsClient, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match XsClient::connect(&paths.xs).and_then(|c| c.read(Tx::NONE, "/").map(|_| c)) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "xenstore did not answer on {} within {timeout:?}: {e}",
                    paths.xs.display(),
                    e = Chain(&e)
                ))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Creates dom0's and the guest's home directories as libxl does at domain
/// creation (the guest may read its home, not write it; `device/` likewise, so
/// only the toolstack creates device nodes) and introduces the guest.
pub fn create_guest_domain(xs: &XsClient) -> Result<(), String> {
    let ro = [
        Perm {
            domid: 0,
            access: Access::None,
        },
        Perm {
            domid: GUEST_DOMID,
            access: Access::Read,
        },
    ];
    let home = format!("/local/domain/{GUEST_DOMID}");
    xs.transaction(|tx| {
        xs.write(tx, "/local/domain/0/name", "Domain-0")?;
        xs.write(tx, "/local/domain/0/domid", "0")?;
        for (key, value) in [
            ("", ""),
            ("/name", GUEST_NAME),
            ("/domid", "1"),
            ("/device", ""),
        ] {
            let path = format!("{home}{key}");
            xs.write(tx, &path, value)?;
            xs.set_perms(tx, &path, &ro)?;
        }
        Ok(())
    })
    .map_err(|e| {
        format!(
            "cannot create domain {GUEST_DOMID} in xenstore: {e}",
            e = Chain(&e)
        )
    })?;
    // The simulated guest has no real ring page or event channel for xenstore:
    // any numbers do, the embedded server only records that the domain exists.
    xs.introduce_domain(GUEST_DOMID, 0, 0)
        .map_err(|e| format!("cannot introduce domain {GUEST_DOMID}: {e}", e = Chain(&e)))
}

/// Destroys the guest domain as the toolstack would, after its devices are gone.
pub fn destroy_guest_domain(xs: &XsClient) -> Result<(), String> {
    xs.rm(Tx::NONE, &format!("/local/domain/{GUEST_DOMID}"))
        .and_then(|()| xs.release_domain(GUEST_DOMID))
        .map_err(|e| format!("cannot remove domain {GUEST_DOMID}: {e}", e = Chain(&e)))
}

/// xenstore nodes that would be left over by the controller and its devices:
/// both controller directories and any device record of the toolstack.
pub fn leftover_nodes(xs: &XsClient, devid: u32) -> Result<Vec<String>, String> {
    let mut left = Vec::new();
    for path in [
        format!("/local/domain/0/backend/vusb/{GUEST_DOMID}/{devid}"),
        format!("/local/domain/{GUEST_DOMID}/device/vusb/{devid}"),
    ] {
        if xs
            .exists(Tx::NONE, &path)
            .map_err(|e| Chain(&e).to_string())?
        {
            left.push(path);
        }
    }
    let records = "/pvusb/usbback";
    if xs
        .exists(Tx::NONE, records)
        .map_err(|e| Chain(&e).to_string())?
    {
        let entries = xs
            .directory(Tx::NONE, records)
            .map_err(|e| Chain(&e).to_string())?;
        left.extend(entries.into_iter().map(|e| format!("{records}/{e}")));
    }
    Ok(left)
}
