//! The machine of the cross-crate tests: guest [`DOM`], the emulated disk
//! at [`DISK`] and the loopback at [`LOOP`], both in the fake sysfs (the
//! disk bound to usb-storage), for the real toolstack, daemon and frontend.

use std::path::Path;

use pvusb_backend::DaemonHandle;

use crate::world::World;

/// The guest.
pub const DOM: u16 = 1;
/// The emulated disk (first on the emulated bus).
pub const DISK: &str = "200-1";
/// The emulated loopback device.
pub const LOOP: &str = "200-2";
/// Blocks of the emulated disk.
pub const DISK_BLOCKS: u32 = 4096;
/// Bytes of OUT data the loopback keeps (what `--emulate loopback` keeps).
const LOOPBACK_CAPACITY: usize = 1 << 20;

/// The machine, nothing started.
pub fn new() -> World {
    World::builder()
        .guest(DOM)
        .disk(DISK_BLOCKS)
        .loopback(LOOPBACK_CAPACITY)
        .build()
}

/// The same bus as `--emulate` specs, for worker processes, which build
/// their devices themselves.
pub fn emulated_specs() -> Vec<String> {
    vec![
        format!("storage-mem:{}", u64::from(DISK_BLOCKS) * 512),
        "loopback".to_owned(),
    ]
}

/// The daemon on `m`'s bus with each controller in a worker process of
/// `exe` (the `pvusb` binary of the calling test crate).
pub fn process_daemon(m: &World, exe: &Path) -> DaemonHandle {
    m.daemon_builder().processes(exe, &emulated_specs()).start()
}
