//! The directory a simulated world lives in.
//!
//! Why a helper: three constraints every caller used to re-learn. The
//! simulated transport names its sockets after domains inside this
//! directory, and a UNIX socket path must fit `sun_path` (108 bytes), so the
//! directory is short and under `/tmp` whatever `$TMPDIR` says. Worker
//! processes of the backend run as another user and must reach those
//! sockets, so the directory is traversable by others (0711, still not
//! listable). And it goes away with its handle, so nothing is left behind.

use std::io;
use std::os::unix::fs::PermissionsExt;

use tempfile::TempDir;

/// Where the directories are created (not `$TMPDIR`: see the module doc).
const PARENT: &str = "/tmp";

/// Mode of the directory: traversable by a confined worker user.
const MODE: u32 = 0o711;

/// A fresh directory `/tmp/<prefix>XXXXXX`, mode 0711, removed on drop.
pub fn create(prefix: &str) -> io::Result<TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(PARENT)?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(MODE))?;
    Ok(dir)
}
