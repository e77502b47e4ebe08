//! Fuzz target: a `BackRing` driven by a hostile frontend (see `pvusb_fuzz::back_ring`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::back_ring::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "back_ring",
        pvusb_fuzz::back_ring::run,
        pvusb_fuzz::back_ring::seeds,
    )
}
