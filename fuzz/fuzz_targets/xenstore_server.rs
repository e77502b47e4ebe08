//! Fuzz target: the embedded xenstore server's request handling (see `pvusb_fuzz::xenstore_server`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::xenstore_server::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "xenstore_server",
        pvusb_fuzz::xenstore_server::run,
        pvusb_fuzz::xenstore_server::seeds,
    )
}
