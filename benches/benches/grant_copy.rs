//! Grant copies through the simulated transport (backend side, 16 segments, one
//! per page), next to a plain memcpy of the same size as the ceiling.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pvusb_benches::grant_pair::GrantPair;

const SIZES: [(&str, usize); 3] = [("4k", 4096), ("16k", 16 * 1024), ("63k", 63 * 1024)];

fn bench_grant_copy(c: &mut Criterion) {
    let pair = GrantPair::new().expect("simulated grant pair");
    let mut group = c.benchmark_group("grant_copy");
    for (name, len) in SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        let segs = pair.segments(len);
        let src: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut dst = vec![0u8; len];
        group.bench_function(format!("to_guest_{name}"), |b| {
            b.iter(|| {
                pair.copy_to_guest(black_box(&segs), black_box(&src))
                    .expect("copy")
            })
        });
        group.bench_function(format!("from_guest_{name}"), |b| {
            b.iter(|| {
                pair.copy_from_guest(black_box(&segs), black_box(&mut dst))
                    .expect("copy")
            })
        });
        group.bench_function(format!("memcpy_{name}"), |b| {
            b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&src)))
        });
    }
    group.finish();
}

criterion_group! { name = benches; config = pvusb_benches::criterion_config(); targets = bench_grant_copy }
criterion_main!(benches);
