//! Running a program to its end, for the tests of the `pvusb` binary.
//!
//! Why: those tests look at what the program said, as text, and at how it
//! exited; this is that one conversion.

use std::process::Command;

/// Runs `cmd` to its end: its exit code (-1 when a signal ended it), stdout
/// and stderr as text. Panics if it cannot start.
pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("the program runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
