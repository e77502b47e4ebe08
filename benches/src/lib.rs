//! Shared code of the criterion benches: request fixtures, a ring pair that
//! counts the notifications it would send, a simulated grant pair and event
//! channel ping-pongs.
//!
//! Why a library: the fixtures are the same in every bench and are tested here
//! (a bench that measures a failing operation measures nothing).
#![forbid(unsafe_code)]

use std::time::Duration;

pub mod fixtures;
pub mod grant_pair;
pub mod pingpong;
pub mod ring_pair;

/// Criterion settings shared by every bench: short, so the suite runs in a
/// couple of minutes on two cores, and the same everywhere so the figures of
/// different benches are comparable.
pub fn criterion_config() -> criterion::Criterion {
    criterion::Criterion::default()
        .measurement_time(Duration::from_secs(MEASUREMENT_SECS))
        .warm_up_time(Duration::from_millis(WARM_UP_MILLIS))
        .sample_size(SAMPLE_SIZE)
}

/// Measurement time per benchmark.
const MEASUREMENT_SECS: u64 = 2;
/// Samples per benchmark.
const SAMPLE_SIZE: usize = 20;
/// Warm-up per benchmark.
const WARM_UP_MILLIS: u64 = 500;
