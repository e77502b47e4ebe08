//! What both simulated-transport test files check once a granter is dead.

use pvusb_testkit::wait::within;
use pvusb_xen::sim::SimXen;
use pvusb_xen::{CopySeg, GrantError, GrantMapper};

/// The backend's grant copies of the first four bytes of page `gref` of
/// domain 1 after that domain died: the copy in (what it read) and the
/// copy out of `late`. Copies make no syscall, so they neither hang nor
/// panic (run under [`within`], which fails the test on a hang).
pub fn copies_after_death(
    back: &SimXen,
    gref: u32,
) -> (Result<[u8; 4], GrantError>, Result<(), GrantError>) {
    let back = back.clone();
    within(move || {
        let seg = [CopySeg::new(gref, 0, 4)];
        let mut b = [0u8; 4];
        let copied = back.copy_from_guest(1, &seg, &mut b).map(|()| b);
        let written = back.copy_to_guest(1, &seg, b"late");
        (copied, written)
    })
}
