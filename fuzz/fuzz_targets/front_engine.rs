//! Fuzz target: the frontend's URB engine against a hostile backend (see `pvusb_fuzz::front_engine`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::front_engine::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "front_engine",
        pvusb_fuzz::front_engine::run,
        pvusb_fuzz::front_engine::seeds,
    )
}
