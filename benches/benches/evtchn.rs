//! The synchronous event round trip between two threads: raw eventfds and the
//! simulated event channel. The one-URB-in-flight floor.

use criterion::{criterion_group, criterion_main, Criterion};
use pvusb_benches::pingpong::{EventfdPingPong, EvtchnPingPong};

fn bench_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_round_trip");
    {
        let p = EventfdPingPong::start().expect("eventfd ping-pong");
        group.bench_function("eventfd_threads", |b| {
            b.iter(|| p.round_trip().expect("round trip"))
        });
    }
    {
        let p = EvtchnPingPong::start().expect("event channel ping-pong");
        group.bench_function("sim_evtchn_threads", |b| {
            b.iter(|| p.round_trip().expect("round trip"))
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = pvusb_benches::criterion_config(); targets = bench_round_trip }
criterion_main!(benches);
