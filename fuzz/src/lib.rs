//! Fuzz targets of pvusb, as library functions so that the libFuzzer entry points,
//! the stable replay binaries and the seed tests all run the very same code.
//!
//! Each target module has `run(&[u8])` (must never panic on any input; an `assert!`
//! in it is an oracle, so a panic is a finding) and `seeds()` (inputs that reach
//! the interesting paths, written to `corpus/<target>/` by `--write-seeds`).
#![forbid(unsafe_code)]

/// The tests every target has: its seeds run clean, and (with a count and a
/// length) that many pseudo-random inputs of up to that many bytes too.
#[cfg(test)]
#[macro_export]
macro_rules! clean_run_tests {
    () => {
        #[test]
        fn seeds_run_clean() {
            for seed in super::seeds() {
                super::run(&seed);
            }
        }
    };
    ($count:expr, $max_len:expr) => {
        $crate::clean_run_tests!();

        #[test]
        fn pseudo_random_inputs_run_clean() {
            for data in $crate::input::noise($count, $max_len) {
                super::run(&data);
            }
        }
    };
}

pub mod back_ring;
pub mod front_engine;
pub mod input;
pub mod iso_layout;
pub mod policy_rules;
pub mod replay;
pub mod urb_engine;
pub mod usb_descriptor;
pub mod usbip_codec;
pub mod xenstore_msg;
pub mod xenstore_proxy;
pub mod xenstore_server;
pub mod xl_config;
