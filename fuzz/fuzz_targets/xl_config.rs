//! Fuzz target: the xl config parser of config-apply (see `pvusb_fuzz::xl_config`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::xl_config::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "xl_config",
        pvusb_fuzz::xl_config::run,
        pvusb_fuzz::xl_config::seeds,
    )
}
