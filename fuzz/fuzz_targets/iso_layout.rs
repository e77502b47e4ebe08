//! Fuzz target: isochronous packet layouts to libusb and back (see `pvusb_fuzz::iso_layout`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::iso_layout::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "iso_layout",
        pvusb_fuzz::iso_layout::run,
        pvusb_fuzz::iso_layout::seeds,
    )
}
