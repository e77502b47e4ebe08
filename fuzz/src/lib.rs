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

/// An operation enum decoded from one opcode byte (`byte % number of variants`),
/// so the modulus and the table can never disagree with the variants: adding a
/// variant makes it reachable, and `Op::X as u8` is the byte that selects it
/// (the seeds are written that way).
macro_rules! opcodes {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$variant_meta:meta])* $variant:ident,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u8)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            /// Every variant, in opcode order.
            const ALL: &'static [$name] = &[$($name::$variant,)+];

            fn decode(byte: u8) -> Self {
                Self::ALL[usize::from(byte) % Self::ALL.len()]
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
