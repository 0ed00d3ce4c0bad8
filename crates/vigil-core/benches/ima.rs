//! IMA measurement-list throughput.
//!
//! The log is generated deterministically in the shape of
//! `shared/bench/keylime_ima_bench.py`: a `boot_aggregate` entry and then `N - 1`
//! `ima-ng` entries with SHA-256 file digests of `content-<i>`, realistic paths and
//! SHA-1 template hashes; the quote bank is SHA-256.
//!
//! - `hash_only`: the bare hashing per entry over pre-built template data, calling the
//!   hash crates directly: SHA-1 of the data (template-hash check), SHA-256 of the data,
//!   one SHA-256 extend.
//! - `hash_only_interleaved`: the same hashes with the crates' block functions, the
//!   independent block chains fed alternately as the replay feeds them.
//! - `hash_only_hashalg`: the same through the shared `HashAlg` API.
//! - `parse_template`: parsing and template-data rebuilding, no hashing.
//! - `replay`: parse + rebuild template data + the same hashing + quote matching, with
//!   the accept-all validator, from a `&str` batch.
//! - `replay_reader`: the same through the streaming reader.
//!
//! Entries per second = the reported `thrpt` in elements/s.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, Criterion, Throughput};
use vigil_core::hash::{blocks_of, pad_message, padded_len, BlockHasher, HashAlg};
use vigil_core::ima::keyring::ImaKeyrings;
use vigil_core::ima::validate::PolicyValidator;
use vigil_core::ima::{
    process_measurement_list, process_reader, AcceptAll, ImaConfig, ImaEntry, ImaLogReader,
};
use vigil_core::policy::runtime::RuntimePolicy;

const N: usize = 100_000;

fn synth_path(i: usize) -> String {
    let dir = match i % 7 {
        0 => "/usr/bin".to_owned(),
        1 => "/usr/lib/x86_64-linux-gnu".to_owned(),
        2 => format!("/usr/lib/python3/dist-packages/pkg{}", i % 97),
        3 => "/etc".to_owned(),
        4 => "/usr/sbin".to_owned(),
        5 => format!("/usr/share/lib{}", i % 13),
        _ => "/opt/app/modules".to_owned(),
    };
    format!("{dir}/file_{i:06}.so")
}

fn ima_ng_data(alg: &str, digest: &[u8], path: &str) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&((alg.len() + 2 + digest.len()) as u32).to_le_bytes());
    t.extend_from_slice(alg.as_bytes());
    t.extend_from_slice(b":\0");
    t.extend_from_slice(digest);
    t.extend_from_slice(&((path.len() + 1) as u32).to_le_bytes());
    t.extend_from_slice(path.as_bytes());
    t.push(0);
    t
}

struct Log {
    text: String,
    data: Vec<Vec<u8>>,
    pcr: vigil_core::Digest,
}

fn generate(n: usize) -> Log {
    let bank = HashAlg::Sha256;
    let mut text = String::new();
    let mut data = Vec::with_capacity(n);
    let mut pcr = bank.zero();
    let mut add = |digest: &[u8], path: &str| {
        let t = ima_ng_data("sha256", digest, path);
        let th = HashAlg::Sha1.hash(&t);
        pcr = bank.extend(&pcr, &bank.hash(&t));
        text.push_str(&format!(
            "10 {} ima-ng sha256:{} {}\n",
            th.to_hex(),
            hex::encode(digest),
            path
        ));
        data.push(t);
    };
    add(
        HashAlg::Sha256.hash(b"synthetic boot aggregate").as_bytes(),
        "boot_aggregate",
    );
    for i in 1..n {
        let d = HashAlg::Sha256.hash(format!("content-{i}").as_bytes());
        add(d.as_bytes(), &synth_path(i));
    }
    Log { text, data, pcr }
}

fn bench(c: &mut Criterion) {
    let log = generate(N);
    let cfg = ImaConfig::new(HashAlg::Sha256);
    // `keylime_ima_bench.py --generate-only --n 100000 --pcr-bank sha256` prints this
    // value: the log here has exactly the shape of Keylime's baseline benchmark.
    assert_eq!(
        log.pcr.to_hex(),
        "5ef5637b54f90232f7edbf19652c7b562a0dbbee5a3fc2da405263d976c23439"
    );
    // The benchmark is meaningless if the replay does not agree with the generator.
    let v = process_measurement_list(cfg, None, &log.text, Some(log.pcr), AcceptAll);
    assert!(v.is_ok(), "{:?}", v.failure);
    assert_eq!(v.pcr_match, Some(N));

    let mut g = c.benchmark_group("ima");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N as u64));

    // The floor: the hash crates called directly, no Vigil types in between.
    g.bench_function("hash_only", |b| {
        use sha1::Digest as _;
        b.iter(|| {
            let mut pcr = [0u8; 32];
            let mut ok = 0u32;
            for t in &log.data {
                let th = sha1::Sha1::digest(t);
                ok = ok.wrapping_add(u32::from(th[0]));
                let m = sha2::Sha256::digest(t);
                pcr = sha2::Sha256::new()
                    .chain_update(pcr)
                    .chain_update(m)
                    .finalize()
                    .into();
            }
            black_box((pcr, ok))
        })
    });
    // The same three hashes block by block (`BlockHasher`: the crates' block functions),
    // the three block chains of consecutive entries fed alternately (SHA-1 and SHA-256 of entry i with the extend
    // of entry i-1), as the replay does; padding is added beforehand, outside the
    // timing. The lowest hashing cost known here, so the strictest floor.
    g.bench_function("hash_only_interleaved", |b| {
        fn padded(msg: &[u8]) -> Vec<u8> {
            let mut v = msg.to_vec();
            v.resize(padded_len(msg.len()), 0);
            pad_message(&mut v, msg.len(), msg.len() as u64 * 8);
            v
        }
        let data: Vec<Vec<u8>> = log.data.iter().map(|t| padded(t)).collect();
        let (Some(sha1), Some(sha256)) = (
            BlockHasher::new(HashAlg::Sha1),
            BlockHasher::new(HashAlg::Sha256),
        ) else {
            unreachable!("SHA-1 and SHA-256 have block hashers")
        };
        b.iter(|| {
            // Extend message: PCR ‖ measurement, then one padding block. The first round
            // extends zeros, standing in for the entry before the first.
            let mut ext = padded(&[0u8; 64]);
            let mut ok = 0u8;
            for t in &data {
                let (mut h1, mut h256, mut he) = (sha1, sha256, sha256);
                // Both extend blocks alongside the first two data blocks (there are
                // always two data blocks or more here), then any further data blocks.
                let mut data_blocks = blocks_of(t);
                for e in blocks_of(&ext) {
                    if let Some(d) = data_blocks.next() {
                        h1.block(d);
                        h256.block(d);
                    }
                    he.block(e);
                }
                for d in data_blocks {
                    h1.block(d);
                    h256.block(d);
                }
                let mut out = [0u8; 32];
                h1.write_state(&mut out);
                ok = ok.wrapping_add(out[0]);
                he.write_state(&mut ext[..32]);
                h256.write_state(&mut ext[32..64]);
            }
            black_box((ext, ok))
        })
    });
    // The same through Vigil's shared `HashAlg` API.
    g.bench_function("hash_only_hashalg", |b| {
        b.iter(|| {
            let bank = HashAlg::Sha256;
            let mut pcr = bank.zero();
            let mut ok = true;
            for t in &log.data {
                let th = HashAlg::Sha1.hash(t);
                ok &= th.len() == 20;
                pcr = bank.extend(&pcr, &bank.hash(t));
            }
            black_box((pcr, ok))
        })
    });
    // Parsing and template-data rebuilding alone, without any hashing.
    g.bench_function("parse_template", |b| {
        let mut buf = Vec::new();
        b.iter(|| {
            let mut total = 0usize;
            for line in black_box(&log.text).lines() {
                if let Ok(e) = ImaEntry::parse(line) {
                    e.write_template_data(&mut buf);
                    total += buf.len();
                }
            }
            black_box(total)
        })
    });
    g.bench_function("replay", |b| {
        b.iter(|| {
            let v =
                process_measurement_list(cfg, None, black_box(&log.text), Some(log.pcr), AcceptAll);
            black_box(v.running_pcr)
        })
    });
    g.bench_function("replay_reader", |b| {
        b.iter(|| {
            let mut reader = ImaLogReader::new(black_box(log.text.as_bytes()));
            let v = process_reader(cfg, None, &mut reader, Some(log.pcr), AcceptAll);
            black_box(v.map(|v| v.running_pcr).ok())
        })
    });
    // The whole verifier check: parse, template-hash check, sha256 replay, quote match and
    // the runtime policy (every path listed, 20 exclude regexes as keylime_ima_bench.py
    // writes them), with the policy parsed once beforehand as the verifier shares it.
    let policy = policy_for(&log.text, 20);
    g.bench_function("check", |b| {
        b.iter(|| {
            let mut keyrings = ImaKeyrings::new();
            let validator = PolicyValidator::new(&policy, &[], &mut keyrings);
            let v =
                process_measurement_list(cfg, None, black_box(&log.text), Some(log.pcr), validator);
            assert!(v.is_ok());
            black_box(v.running_pcr)
        })
    });
    g.finish();

    // Loading a policy of N paths, which the verifier does once per policy (not per node
    // or per round).
    let mut g = c.benchmark_group("policy");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(N as u64));
    let json = policy_json(&log.text, 20);
    g.bench_function("load", |b| {
        b.iter(|| black_box(RuntimePolicy::from_json(black_box(&json)).map(|p| p.len())))
    });
    g.bench_function("lookup_and_exclude", |b| {
        let paths: Vec<&str> = log
            .text
            .lines()
            .filter_map(|l| l.rsplit(' ').next())
            .collect();
        b.iter(|| {
            let mut found = 0usize;
            for p in &paths {
                found += usize::from(!policy.is_excluded(p) && policy.digests_for(p).is_some());
            }
            black_box(found)
        })
    });
    g.finish();
}

/// A v1 policy allowing every entry of `log`, with `excludes` non-matching regexes.
fn policy_json(log: &str, excludes: usize) -> Vec<u8> {
    let mut digests = serde_json::Map::new();
    for line in log.lines() {
        let mut fields = line.split(' ').skip(3);
        let (Some(digest), Some(path)) = (fields.next(), fields.next()) else {
            continue;
        };
        let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
        digests.insert(path.to_owned(), serde_json::json!([hex]));
    }
    let excludes: Vec<String> = (0..excludes)
        .map(|k| format!("^/tmp/excluded{k}/"))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": excludes,
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    }))
    .expect("policy JSON")
}

fn policy_for(log: &str, excludes: usize) -> RuntimePolicy {
    RuntimePolicy::from_json(&policy_json(log, excludes)).expect("bench policy")
}

criterion_group!(benches, bench);

/// `VIGIL_IMA_PROFILE=<check|replay|lookup>[:<reps>]` runs that workload `reps` times
/// (default 3) outside criterion and exits, for `valgrind --tool=callgrind` or
/// `perf record`, whose counts do not depend on the load of a shared machine.
/// `VIGIL_IMA_PROFILE=policymem:<paths>` loads a policy of that many paths and prints
/// the resident-memory growth (run it under `valgrind --tool=dhat` for exact heap bytes:
/// the policy is deliberately leaked, so "At t-end" is the policy alone).
fn profile(spec: &str) {
    let (what, reps) = spec.split_once(':').unwrap_or((spec, "3"));
    let reps: usize = reps.parse().expect("VIGIL_IMA_PROFILE repetitions");
    if what == "policymem" {
        let json = synth_policy_json(reps);
        let json_len = json.len();
        let before = rss_kib();
        let policy = RuntimePolicy::from_json(&json).expect("synthetic policy");
        drop(json);
        let after = rss_kib();
        println!(
            "policy of {} paths: {json_len} bytes of JSON, resident growth {} KiB \
             ({} bytes/path)",
            policy.len(),
            (after + json_len as i64 / 1024) - before,
            ((after + json_len as i64 / 1024) - before) * 1024 / reps as i64
        );
        std::mem::forget(policy);
        return;
    }
    let log = generate(N);
    let cfg = ImaConfig::new(HashAlg::Sha256);
    let policy = policy_for(&log.text, 20);
    let mut sink = 0usize;
    for _ in 0..reps {
        match what {
            "replay" => {
                let v = process_measurement_list(cfg, None, &log.text, Some(log.pcr), AcceptAll);
                sink += v.pcr_match.unwrap_or(0);
            }
            "check" => {
                let mut keyrings = ImaKeyrings::new();
                let validator = PolicyValidator::new(&policy, &[], &mut keyrings);
                let v = process_measurement_list(cfg, None, &log.text, Some(log.pcr), validator);
                assert!(v.is_ok());
                sink += v.pcr_match.unwrap_or(0);
            }
            "lookup" => {
                for p in log.text.lines().filter_map(|l| l.rsplit(' ').next()) {
                    sink += usize::from(!policy.is_excluded(p) && policy.digests_for(p).is_some());
                }
            }
            other => panic!("VIGIL_IMA_PROFILE: unknown workload {other}"),
        }
    }
    println!("{what} x{reps}: {sink}");
}

/// A policy of `n` distinct paths shaped like the log's, each with one SHA-256 digest.
fn synth_policy_json(n: usize) -> Vec<u8> {
    let mut out = String::from(r#"{"meta":{"version":1,"generator":3},"release":0,"digests":{"#);
    for i in 0..n {
        let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!(
            r#""{}":["{x:016x}{x:016x}{x:016x}{x:016x}"]"#,
            synth_path(i)
        ));
    }
    out.push_str(r#"},"excludes":[],"keyrings":{},"ima":{"ignored_keyrings":[],"log_hash_alg":"sha1","dm_policy":null},"ima-buf":{},"verification-keys":""}"#);
    out.into_bytes()
}

/// This process's resident memory in KiB (Linux), 0 elsewhere.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if let Ok(spec) = std::env::var("VIGIL_IMA_PROFILE") {
        profile(&spec);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
