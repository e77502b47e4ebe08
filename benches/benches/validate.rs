//! Request validation (`pvusb_protocol::validate`), the per-URB trust-boundary
//! check of the backend, on the request kinds it sees most.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use pvusb_benches::fixtures::{bulk, control_get_status, iso_in, NUM_PORTS};
use pvusb_protocol::{validate, Direction};

fn bench_validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    let cases = [
        ("control_get_status", control_get_status(1)),
        ("bulk_in_64", bulk(2, Direction::In, 64)),
        ("bulk_out_63k_16segs", bulk(3, Direction::Out, 63 * 1024)),
        ("iso_in_8x192", iso_in(4, 8, 192)),
    ];
    for (name, req) in cases {
        assert!(validate(&req, NUM_PORTS).is_ok(), "{name} must be valid");
        group.bench_function(name, |b| b.iter(|| validate(black_box(&req), NUM_PORTS)));
    }
    group.finish();
}

criterion_group! { name = benches; config = pvusb_benches::criterion_config(); targets = bench_validate }
criterion_main!(benches);
