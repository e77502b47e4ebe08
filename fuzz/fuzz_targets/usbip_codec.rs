//! Fuzz target: the USB/IP codec on a hostile stream (see `pvusb_fuzz::usbip_codec`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::usbip_codec::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "usbip_codec",
        pvusb_fuzz::usbip_codec::run,
        pvusb_fuzz::usbip_codec::seeds,
    )
}
