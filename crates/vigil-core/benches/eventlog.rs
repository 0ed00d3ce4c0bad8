//! UEFI event-log throughput on Keylime's 49 KB test log
//! (`keylime/test/data/create-mb-policy/binary_bios_measurements`: SHA-1 and SHA-256
//! banks, 121 events).
//!
//! - `parse_replay`: parse the log and replay every bank (what `vigil eventlog replay`
//!   and the verifier's PCR check do).
//! - `parse_decode`: parse the log and decode every event's data.
//! - `parse_yaml`: parse, decode and print the tpm2_eventlog-compatible YAML (what
//!   `tpm2_eventlog --eventlog-version=2` does).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil_core::eventlog::{self, RenderOptions};

const LOG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/keylime/test/data/create-mb-policy/binary_bios_measurements"
);

fn bench(c: &mut Criterion) {
    let bytes = std::fs::read(LOG).expect("Keylime's UEFI test log (../shared/testdata)");
    let mut g = c.benchmark_group("eventlog");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("parse_replay", |b| {
        b.iter(|| {
            let log = eventlog::parse(black_box(&bytes)).unwrap();
            black_box(log.replay())
        })
    });
    g.bench_function("parse_decode", |b| {
        b.iter(|| {
            let log = eventlog::parse(black_box(&bytes)).unwrap();
            let decoded: Vec<_> = log.events.iter().map(eventlog::decode).collect();
            black_box(decoded)
        })
    });
    g.bench_function("parse_yaml", |b| {
        b.iter(|| {
            let log = eventlog::parse(black_box(&bytes)).unwrap();
            black_box(eventlog::to_yaml(&log, RenderOptions::default()))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
