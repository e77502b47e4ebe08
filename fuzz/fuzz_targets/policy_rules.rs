//! Fuzz target: the device rules parser and matcher (see `pvusb_fuzz::policy_rules`).
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| pvusb_fuzz::policy_rules::run(data));

#[cfg(not(fuzzing))]
fn main() -> std::process::ExitCode {
    pvusb_fuzz::replay::main(
        "policy_rules",
        pvusb_fuzz::policy_rules::run,
        pvusb_fuzz::policy_rules::seeds,
    )
}
