//! Fuzz target: the xenstore proxy's verdict on a worker's requests (see `pvusb_fuzz::xenstore_proxy`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::xenstore_proxy::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "xenstore_proxy",
        pvusb_fuzz::xenstore_proxy::run,
        pvusb_fuzz::xenstore_proxy::seeds,
    )
}
