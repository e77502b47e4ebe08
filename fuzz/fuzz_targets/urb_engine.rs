//! Fuzz target: the backend's URB engine behind a hostile back ring (see `pvusb_fuzz::urb_engine`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::urb_engine::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "urb_engine",
        pvusb_fuzz::urb_engine::run,
        pvusb_fuzz::urb_engine::seeds,
    )
}
