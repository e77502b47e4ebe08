//! Fuzz target: the USB descriptor parsers (see `pvusb_fuzz::usb_descriptor`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::usb_descriptor::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "usb_descriptor",
        pvusb_fuzz::usb_descriptor::run,
        pvusb_fuzz::usb_descriptor::seeds,
    )
}
