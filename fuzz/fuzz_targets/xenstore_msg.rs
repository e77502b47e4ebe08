//! Fuzz target: the xenstore wire parser on a hostile byte stream (see `pvusb_fuzz::xenstore_msg`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::xenstore_msg::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "xenstore_msg",
        pvusb_fuzz::xenstore_msg::run,
        pvusb_fuzz::xenstore_msg::seeds,
    )
}
