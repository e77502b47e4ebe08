//! Ring push/pop with and without notification suppression: a batch of 16
//! requests published once versus published one by one with the peer going
//! back to sleep after each (every publish then needs an event). Variants that
//! really write an eventfd when an event is due show what suppression saves.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nix::sys::eventfd::{EfdFlags, EventFd};
use pvusb_benches::fixtures::bulk;
use pvusb_benches::ring_pair::{Publish, RingPair};
use pvusb_protocol::{Direction, UrbRequest};

fn batch() -> Vec<UrbRequest> {
    (0..16).map(|i| bulk(i, Direction::In, 64)).collect()
}

fn report_notify_counts() {
    for publish in [Publish::Batched, Publish::PerRequest] {
        let Ok(mut pair) = RingPair::new() else {
            return;
        };
        let rounds = 100u64;
        for _ in 0..rounds {
            let _ = pair.round(&batch(), publish);
        }
        let n = pair.notifies;
        eprintln!(
            "ring {publish:?}: {:.2} events per 16 requests ({:.2} to the back, {:.2} to the front)",
            n.total() as f64 / rounds as f64,
            n.to_back as f64 / rounds as f64,
            n.to_front as f64 / rounds as f64,
        );
    }
}

fn bench_ring(c: &mut Criterion) {
    report_notify_counts();
    let reqs = batch();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(16));
    for (name, publish) in [
        ("batch16_publish_once", Publish::Batched),
        ("publish_per_request", Publish::PerRequest),
    ] {
        group.bench_function(name, |b| {
            let mut pair = RingPair::new().expect("ring");
            b.iter(|| black_box(pair.round(black_box(&reqs), publish).expect("round")));
        });
        // The same, paying one eventfd write and read for every event that fired.
        group.bench_function(format!("{name}_with_eventfd"), |b| {
            let fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .expect("eventfd");
            b.iter_batched_ref(
                || RingPair::new().expect("ring"),
                |pair| {
                    let before = pair.notifies.total();
                    black_box(pair.round(&reqs, publish).expect("round"));
                    for _ in before..pair.notifies.total() {
                        fd.write(1).expect("write eventfd");
                        fd.read().expect("read eventfd");
                    }
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = pvusb_benches::criterion_config(); targets = bench_ring }
criterion_main!(benches);
