//! Whole-module tests against external logs and Keylime's own results.
//!
//! Expected PCR values come from outside Vigil: the `[verified]` table of
//! keylime-compat.md §4.2, or Keylime 7.14.3's `process_measurement_list` run on the
//! same file (noted next to each value).

use super::*;
use crate::failure::{Component, Event, Failure};
use crate::hash::{Digest, HashAlg};

fn testdata(rel: &str) -> String {
    let path = format!(
        "{}/../../../shared/testdata/{rel}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const REAL_LOG: &str = "rust-keylime/keylime-agent/test-data/ima/ascii_runtime_measurements";
const BOOT_ONLY: &str = "rust-keylime/keylime/test-data/ima_log.txt";
const POLICY_DIR: &str = "keylime/test/data/create-runtime-policy";

fn hex(s: &str) -> Digest {
    Digest::from_hex(s).unwrap()
}

fn ids(f: &Failure) -> Vec<&str> {
    f.events().iter().map(|e| e.event_id.as_str()).collect()
}

fn replay(text: &str, bank: HashAlg) -> ImaVerdict {
    process_measurement_list(ImaConfig::new(bank), None, text, None, AcceptAll)
}

/// keylime-compat.md §4.2, verified there against Keylime.
#[test]
fn compat_table_values() {
    let table = [
        (
            REAL_LOG,
            826,
            "82231c67a69da98dc5b3aa10f6343d33109225fc",
            "c4a065637fc6a7c55f2811dd06cb45dd037133be2b3dc5c3e6fbe6bf061db724",
        ),
        (
            BOOT_ONLY,
            1,
            "703b9083e1f35ae2faf8aee75f0541c709c53c77",
            "c7b7b6cd2a56c8cf9e46cf2f7773b455053e4d9af2999cd5e81004e16329666d",
        ),
        (
            "keylime/test/data/create-runtime-policy/ima-log-sha256",
            2,
            "8adcb4304b78ee782bbba3733b191591e75dc83d",
            "8dcd5e7eb63e363377ec19b0d358601ccc19f25a30486f35784c5288dbb91d9d",
        ),
    ];
    for (file, entries, sha1, sha256) in table {
        let text = testdata(file);
        for (bank, want) in [(HashAlg::Sha1, sha1), (HashAlg::Sha256, sha256)] {
            let v = replay(&text, bank);
            assert!(v.is_ok(), "{file} {bank}: {:?}", v.failure);
            assert_eq!(v.running_pcr, hex(want), "{file} {bank}");
            assert_eq!(v.counts.entries, entries, "{file}");
            assert_eq!(v.counts.good, entries, "{file}");
            // Quoting the final value matches after the last line.
            let q = process_measurement_list(
                ImaConfig::new(bank),
                None,
                &text,
                Some(hex(want)),
                AcceptAll,
            );
            assert!(q.is_ok());
            assert_eq!(q.pcr_match, Some(entries as usize));
            // The streaming reader gives the same verdict.
            let mut reader = ImaLogReader::new(text.as_bytes());
            let r = process_reader(
                ImaConfig::new(bank),
                None,
                &mut reader,
                Some(hex(want)),
                AcceptAll,
            )
            .unwrap();
            assert_eq!(r, q);
        }
    }
}

/// The per-algorithm logs of Keylime's policy-generator tests. Expected values are what
/// Keylime 7.14.3's `process_measurement_list` returns for the same file and bank.
#[test]
fn per_algorithm_logs() {
    let cases: &[(&str, HashAlg, HashAlg, &str, &[&str])] = &[
        ("sha1", HashAlg::Sha1, HashAlg::Sha1, "62e5bdf4783228f7deec959f0a89a4739af79ac5", &["ima.validation.tomtou"]),
        ("sha1", HashAlg::Sha256, HashAlg::Sha1, "37c153b0a390c91993992d79eb0b9b05b5cb9085c6179528e1b71694ed19896c", &["ima.validation.tomtou"]),
        ("sha1", HashAlg::Sm3_256, HashAlg::Sha1, "87377437d8f0ab2356da0fd8aa363eba8e3ad7c5b0e41980912fbbf34655860c", &["ima.validation.tomtou"]),
        ("sha256", HashAlg::Sha384, HashAlg::Sha1, "268b34ccd4d8e2b8f388f780c363f1c8048d22353a9c411f886cf76b8a32c9dd40fbe42679fb530dd2a349503b2666f5", &[]),
        ("sha256", HashAlg::Sha512, HashAlg::Sha1, "163e39f3abf1f06ca678841e53b775bd88379e399ed6c4bfb53ea1e7872f556783903b8139b2564f6e5a45681479ed80e2a4a1dacffef614e3f28a1df9e7afec", &[]),
        ("sha256", HashAlg::Sm3_256, HashAlg::Sha1, "1266fa45f581acb1f74684a560304595475f0c45dd9e66de32fe343f65c729d4", &[]),
        ("sha384", HashAlg::Sha1, HashAlg::Sha1, "3dfd156753bbf66afbb3c10b98bac02ed13b481c", &["ima.validation.tomtou"]),
        ("sha384", HashAlg::Sha256, HashAlg::Sha1, "35771508049511f8d3aef6691b528a1ea2fdcf13839dc0edceec1fa2ffb0737e", &["ima.validation.tomtou"]),
        ("sha512", HashAlg::Sha1, HashAlg::Sha1, "a37fb4ca32af8c94fefe8a4ce10d4b6dac5a7322", &["ima.validation.tomtou"]),
        ("sha512", HashAlg::Sha256, HashAlg::Sha1, "ac16f32385ac34b7ca6b15b2afc7a319249206634d8143b5b245ddac4f11a2eb", &["ima.validation.tomtou"]),
        ("sha512", HashAlg::Sha512, HashAlg::Sha1, "4c74e36f3503073d55d2e8c7025e6c84e1a1a543fb911c69d6ef70381248bf89952e40f97ad851b507c53634583987f56968ea8f03b213424c23c1ae06507b71", &["ima.validation.tomtou"]),
        // This log's template hashes are SM3: with the default SHA-1 log algorithm both
        // entries fail the template-hash check; with sm3_256 the second passes and the
        // 32-byte zero column of the first becomes a violation entry.
        ("sm3_256", HashAlg::Sha1, HashAlg::Sha1, "b99dc7512a43c05bcd750be86f871711d7d23e82", &["ima.validation.ima_hash", "ima.validation.ima_hash"]),
        ("sm3_256", HashAlg::Sha1, HashAlg::Sm3_256, "6956cf4a0031dae91883dd046db1731a8cdfc6b2", &["ima.validation.tomtou"]),
        ("sm3_256", HashAlg::Sha256, HashAlg::Sm3_256, "4b2794784f13841ecdd6626211bd572eb4862e633ea198cdf8fecf7c1929043d", &["ima.validation.tomtou"]),
        ("sm3_256", HashAlg::Sm3_256, HashAlg::Sm3_256, "9e6066a7981769154d79a1ce330020099eba2683e55729413b536a27bf517d81", &["ima.validation.tomtou"]),
        // "unknown:" is just an algorithm name to Keylime: the lines parse, and fail
        // the template-hash check (their columns are not hashes of this data).
        ("unknown", HashAlg::Sha1, HashAlg::Sha1, "ba09100d6cd2211f86d09ec77c323df9fd1b6df5", &["ima.validation.ima_hash", "ima.validation.ima_hash"]),
        ("unknown", HashAlg::Sha256, HashAlg::Sha1, "453e43ce2adc817a87665d70dbca0e0486ecd5f62c3c34076a0aa652dd9ee07a", &["ima.validation.ima_hash", "ima.validation.ima_hash"]),
    ];
    for &(file, bank, log_hash_alg, want, events) in cases {
        let text = testdata(&format!("{POLICY_DIR}/ima-log-{file}"));
        // Keylime ran without a config file, where `ignore_tomtou_errors` falls back
        // to true and violation entries produce the tomtou event.
        let cfg = ImaConfig {
            bank,
            log_hash_alg,
            ignore_tomtou_errors: true,
        };
        let v = process_measurement_list(cfg, None, &text, None, AcceptAll);
        assert_eq!(v.running_pcr, hex(want), "{file} {bank} {log_hash_alg}");
        assert_eq!(ids(&v.failure), events, "{file} {bank} {log_hash_alg}");
        assert_eq!(v.counts.parse, 0);
        // With the shipped default the violation entries pass silently.
        let quiet = process_measurement_list(
            ImaConfig {
                ignore_tomtou_errors: false,
                ..cfg
            },
            None,
            &text,
            None,
            AcceptAll,
        );
        assert_eq!(quiet.running_pcr, v.running_pcr);
        assert!(!ids(&quiet.failure).contains(&"ima.validation.tomtou"));
        assert_eq!(quiet.counts.tomtou, v.counts.tomtou);
    }
}

#[test]
fn empty_and_invalid_logs() {
    let empty = testdata("rust-keylime/keylime/test-data/empty_ima_log.txt");
    for bank in HashAlg::ALL {
        let v = replay(&empty, bank);
        assert!(v.is_ok());
        assert_eq!(v.running_pcr, bank.zero());
        assert_eq!(v.counts.lines, 0);
        // A zero PCR matches the empty prefix.
        let q = process_measurement_list(
            ImaConfig::new(bank),
            None,
            &empty,
            Some(bank.zero()),
            AcceptAll,
        );
        assert!(q.is_ok());
        assert_eq!(q.pcr_match, Some(0));
    }
    let invalid = testdata("rust-keylime/keylime/test-data/invalid_ima_log.txt");
    let v = replay(&invalid, HashAlg::Sha256);
    assert_eq!(ids(&v.failure), ["ima.parser.entry"]);
    assert_eq!(
        v.failure.events()[0].context["message"],
        "Line was not parsable into a valid IMA entry: this-is-an-invalid-ima-log-file"
    );
    assert_eq!(v.running_pcr, HashAlg::Sha256.zero());
    assert_eq!(v.counts.parse, 1);
    assert_eq!(v.parse_errors.len(), 1);
    assert_eq!(v.parse_errors[0].line, 1);
    assert_eq!(v.parse_errors[0].error.field(), Field::TemplateHash);
}

/// Records every call so tests can see what reached the policy hook.
#[derive(Default)]
struct Recorder {
    calls: Vec<(usize, String)>,
    reject: Vec<&'static str>,
}

impl EntryValidator for Recorder {
    fn validate(
        &mut self,
        entry: &ImaEntry<'_>,
        line_no: usize,
        failure: &mut Failure,
    ) -> EntryVerdict {
        self.calls.push((line_no, entry.name.to_owned()));
        if self.reject.contains(&entry.name) {
            failure.push(Event::new(
                Component::Ima,
                &["validation", "ima-ng"],
                "not_in_allowlist",
                Event::message(format!("File not found in allowlist: {}", entry.name)),
                true,
            ));
            return EntryVerdict::NotFound;
        }
        EntryVerdict::Good
    }
}

fn ng_line(path: &str, content: &str) -> String {
    let digest = HashAlg::Sha256.hash(content.as_bytes());
    let probe = format!("10 00 ima-ng sha256:{} {path}", digest.to_hex());
    let data = ImaEntry::parse(&probe).unwrap().template_data();
    format!(
        "10 {} ima-ng sha256:{} {path}",
        HashAlg::Sha1.hash(&data).to_hex(),
        digest.to_hex()
    )
}

/// The running value after each line, computed independently of the replay loop.
fn prefix_values(lines: &[String], bank: HashAlg) -> Vec<Digest> {
    let mut r = bank.zero();
    let mut out = vec![r];
    for l in lines {
        let e = ImaEntry::parse(l).unwrap();
        let m = if e.template_hash.is_violation(HashAlg::Sha1) {
            bank.ones()
        } else {
            bank.hash(&e.template_data())
        };
        r = bank.extend(&r, &m);
        out.push(r);
    }
    out
}

#[test]
fn violation_entries_extend_ones_and_skip_validation() {
    let tomtou = format!(
        "10 {} ima-ng sha256:{} /var/log/x",
        "0".repeat(40),
        "ab".repeat(32)
    );
    let lines = vec![
        ng_line("/bin/a", "a"),
        tomtou.clone(),
        ng_line("/bin/b", "b"),
    ];
    let text = lines.join("\n");
    let expected = prefix_values(&lines, HashAlg::Sha256);
    let mut rec = Recorder::default();
    let v = process_measurement_list(
        ImaConfig::new(HashAlg::Sha256),
        None,
        &text,
        Some(expected[3]),
        &mut rec,
    );
    assert!(v.is_ok(), "{:?}", v.failure);
    assert_eq!(v.running_pcr, expected[3]);
    assert_eq!(v.counts.tomtou, 1);
    assert_eq!(
        rec.calls,
        [(1, "/bin/a".to_owned()), (3, "/bin/b".to_owned())]
    );
    // The violation extends exactly HashAlg::ones, not the hash of its data.
    assert_eq!(
        expected[2],
        HashAlg::Sha256.extend(&expected[1], &HashAlg::Sha256.ones())
    );

    // A column of all 0xff skips the check but extends the data's real hash.
    let ff = format!(
        "10 {} ima-ng sha256:{} /var/log/y",
        "f".repeat(40),
        "cd".repeat(32)
    );
    let v = replay(&ff, HashAlg::Sha1);
    assert!(v.is_ok());
    let data = ImaEntry::parse(&ff).unwrap().template_data();
    assert_eq!(
        v.running_pcr,
        HashAlg::Sha1.extend(&HashAlg::Sha1.zero(), &HashAlg::Sha1.hash(&data))
    );
    assert_eq!(v.counts.tomtou, 1);
}

#[test]
fn quoted_pcr_matches_any_prefix() {
    let text = testdata(REAL_LOG);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let values = prefix_values(&lines, HashAlg::Sha256);
    for k in [0usize, 1, 413, 825, 826] {
        let v = process_measurement_list(
            ImaConfig::new(HashAlg::Sha256),
            None,
            &text,
            Some(values[k]),
            AcceptAll,
        );
        assert!(v.is_ok(), "prefix {k}");
        assert_eq!(v.pcr_match, Some(k));
        // Every line is replayed whatever the match.
        assert_eq!(v.running_pcr, values[826]);
    }
    let mut state = ImaAttestState::new();
    let bogus = hex(&"ab".repeat(32));
    let v = process_measurement_list(
        ImaConfig::new(HashAlg::Sha256),
        Some(&mut state),
        &text,
        Some(bogus),
        AcceptAll,
    );
    assert_eq!(ids(&v.failure), ["ima.pcr_mismatch"]);
    assert_eq!(
        v.failure.events()[0].context["message"],
        format!(
            "IMA measurement list does not match TPM PCR {}",
            "ab".repeat(32)
        )
    );
    assert_eq!(v.pcr_match, None);
    assert!(v.state_reset);
    // No quote: nothing to match, nothing to fail.
    assert_eq!(replay(&text, HashAlg::Sha256).pcr_match, None);
}

#[test]
fn incremental_batches_equal_one_batch() {
    let text = testdata(REAL_LOG);
    let lines: Vec<&str> = text.lines().collect();
    let bank = HashAlg::Sha1;
    let cfg = ImaConfig::new(bank);
    let final_pcr = hex("82231c67a69da98dc5b3aa10f6343d33109225fc");

    let mut one = ImaAttestState::new();
    assert_eq!(one.begin_batch(0, 0), BatchStart::Fresh);
    let v = process_measurement_list(cfg, Some(&mut one), &text, Some(final_pcr), AcceptAll);
    assert!(v.is_ok());
    assert_eq!((one.next_entry, one.running_pcr), (826, Some(final_pcr)));

    for split in [1usize, 300, 825] {
        let mid = prefix_values(
            &lines[..split]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            bank,
        )[split];
        let mut st = ImaAttestState::new();
        assert_eq!(st.begin_batch(0, 0), BatchStart::Fresh);
        let first = lines[..split].join("\n") + "\n";
        let v = process_measurement_list(cfg, Some(&mut st), &first, Some(mid), AcceptAll);
        assert!(v.is_ok());
        assert_eq!(st.next_entry, split as u64);

        assert_eq!(st.begin_batch(split as u64, 0), BatchStart::Continue);
        let rest = lines[split..].join("\n") + "\n";
        let v = process_measurement_list(cfg, Some(&mut st), &rest, Some(final_pcr), AcceptAll);
        assert!(v.is_ok());
        assert_eq!(v.pcr_match, Some(826 - split));
        // Same replay position; quote progress describes only the last batch.
        assert_eq!(
            (st.next_entry, st.running_pcr, st.boottime),
            (one.next_entry, one.running_pcr, one.boottime),
            "split at {split}"
        );
        let lag_free = st.quote_progress.unwrap();
        assert_eq!(lag_free.match_line, lag_free.log_length);
    }
}

#[test]
fn lagging_quote_advances_state_to_the_match() {
    let text = testdata(REAL_LOG);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let values = prefix_values(&lines, HashAlg::Sha256);
    let cfg = ImaConfig::new(HashAlg::Sha256);
    let mut st = ImaAttestState::new();
    st.begin_batch(0, 0);
    // The agent sent 600 lines but the quote only covers 500.
    let batch = lines[..600].join("\n");
    let v = process_measurement_list(cfg, Some(&mut st), &batch, Some(values[500]), AcceptAll);
    assert!(v.is_ok());
    assert_eq!(v.pcr_match, Some(500));
    assert_eq!((st.next_entry, st.running_pcr), (500, Some(values[500])));
    assert_eq!(
        st.quote_progress,
        Some(QuoteProgress {
            match_line: 500,
            log_length: 600
        })
    );

    // Next poll from 500: the quote caught up past the previous lag of 100.
    assert_eq!(st.begin_batch(500, 0), BatchStart::Continue);
    let batch = lines[500..].join("\n");
    let v = process_measurement_list(cfg, Some(&mut st), &batch, Some(values[700]), AcceptAll);
    assert!(v.is_ok());
    assert_eq!(st.next_entry, 700);

    // Lag of 126 now; a quote that moves only 50 lines further has not caught up.
    assert_eq!(st.begin_batch(700, 0), BatchStart::Continue);
    let batch = lines[700..].join("\n");
    let v = process_measurement_list(cfg, Some(&mut st), &batch, Some(values[750]), AcceptAll);
    assert_eq!(ids(&v.failure), ["ima.quote_progress"]);
    assert!(v.state_reset);
    assert_eq!(st, ImaAttestState::new());
}

#[test]
fn batch_start_rules() {
    let mut st = ImaAttestState {
        next_entry: 40,
        running_pcr: Some(HashAlg::Sha1.ones()),
        boottime: 7,
        quote_progress: None,
    };
    let s = st.begin_batch(12, 7);
    assert_eq!(
        s,
        BatchStart::UnexpectedEntry {
            expected: 40,
            got: 12
        }
    );
    let ev = s.failure_event().unwrap();
    assert_eq!(ev.event_id, "qoute_validation.invalid_ima_entry_nb");
    assert!(!ev.recoverable);
    assert_eq!(
        (ev.context["got"].as_u64(), ev.context["expected"].as_u64()),
        (Some(12), Some(40))
    );
    assert_eq!(st.next_entry, 40, "state is kept");

    assert_eq!(st.begin_batch(40, 8), BatchStart::Rebooted);
    assert!(!BatchStart::Rebooted.should_process());
    assert_eq!(st, ImaAttestState::new());

    st.next_entry = 3;
    assert_eq!(st.begin_batch(0, 9), BatchStart::Fresh);
    assert_eq!((st.next_entry, st.boottime), (0, 9));
    assert!(BatchStart::Fresh.failure_event().is_none());
}

#[test]
fn failures_are_counted_and_reset_the_state() {
    let lines = [
        ng_line("/bin/ok", "1"),
        ng_line("/bin/missing", "2"),
        // Template hash that does not match its data.
        format!(
            "10 {} ima-ng sha256:{} /bin/c",
            "11".repeat(20),
            "ab".repeat(32)
        ),
        // Unknown template: not extended.
        "10 0123456789abcdef0123456789abcdef01234567 ima-modsig sha256:00 /bin/m 00".to_owned(),
        // Wrong PCR, otherwise fine.
        ng_line("/bin/p", "3").replacen("10 ", "11 ", 1),
        String::new(),
        format!("10 {} ima {} /legacy", "22".repeat(20), "33".repeat(20)),
    ];
    let text = lines.join("\n");
    let mut st = ImaAttestState {
        next_entry: 0,
        running_pcr: None,
        boottime: 0,
        quote_progress: None,
    };
    let mut rec = Recorder {
        reject: vec!["/bin/missing"],
        ..Recorder::default()
    };
    let v = process_measurement_list(
        ImaConfig::new(HashAlg::Sha256),
        Some(&mut st),
        &text,
        None,
        &mut rec,
    );
    assert_eq!(
        ids(&v.failure),
        [
            "ima.validation.ima-ng.not_in_allowlist",
            "ima.validation.ima_hash",
            "ima.parser.entry",
            "ima.validation.ima_pcr",
            "ima.validation.ima_hash",
        ]
    );
    let c = &v.counts;
    assert_eq!(
        (c.lines, c.entries, c.parse, c.unknown_template),
        (6, 5, 1, 1)
    );
    assert_eq!((c.good, c.fnf, c.template_hash, c.wrong_pcr), (2, 1, 2, 1));
    assert_eq!(c.per_template[Template::ImaNg.index()], 4);
    assert_eq!(
        c.error_summary().as_deref(),
        Some("IMA ERRORS: Some entries couldn't be validated. Number of failures in modes: ImaNg 3, Ima 1.")
    );
    assert_eq!(
        c.legacy_summary(),
        "IMA ERRORS: template-hash 2 fnf 1 hash 0 bad-sig 0 good 2"
    );
    assert_eq!(
        c.counters_line(),
        "good 2, excluded 0, not in policy 1, wrong hash 0, template-hash errors 2, \
         ToMToU 0, unparsable 1"
    );
    // The policy hook saw the entries that passed the template-hash check, with their
    // line numbers (the blank line 6 counts).
    let seen: Vec<usize> = rec.calls.iter().map(|c| c.0).collect();
    assert_eq!(seen, [1, 2, 5]);
    // ima_hash context is Python's repr of the bytes, as Keylime writes it.
    let ctx = &v.failure.events()[1].context;
    assert_eq!(ctx["expected"], format!("b'{}'", "\\x11".repeat(20)));
    assert!(ctx["got"]
        .as_str()
        .unwrap()
        .starts_with("b'(\\x00\\x00\\x00sha256:\\x00\\xab"));
    // Without a quote there is no match, but failures still reset the state.
    assert!(v.state_reset);
    assert_eq!(v.parse_errors[0].line, 4);
    assert!(v.parse_errors[0].error.is_unknown_template());
    assert!(replay("", HashAlg::Sha1).counts.error_summary().is_none());
}

#[test]
fn unknown_template_is_not_extended() {
    let good = ng_line("/bin/a", "a");
    let modsig = "10 0123456789abcdef0123456789abcdef01234567 ima-modsig sha256:00 /bin/m 00";
    let with = replay(&format!("{good}\n{modsig}\n"), HashAlg::Sha256);
    let without = replay(&good, HashAlg::Sha256);
    assert_eq!(with.running_pcr, without.running_pcr);
    assert_eq!(ids(&with.failure), ["ima.parser.entry"]);
}

/// A deterministic xorshift generator, so the fuzz loop needs no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn mutated_lines_never_panic() {
    let text = testdata(REAL_LOG);
    let mut seeds: Vec<Vec<u8>> = text
        .lines()
        .take(40)
        .map(|l| l.as_bytes().to_vec())
        .collect();
    seeds.push(b"10 1e70a3e1af66f42826ad63b761b4cb9c4df195e1 ima-sig sha256:d33d5d13792292e202dbf69a6f1b07bc8a02f01424db8489ba7bb7d43c0290ef /usr/bin/dd 030204f3452d2301009d".to_vec());
    seeds.push(b"10 b7862dbbf1383ac6c7cca7f02d981a081aacb1f1 ima-buf sha1:6e0e6fc8a188ef4f059638949adca4d221946906 device_resume 6e616d653d".to_vec());
    seeds.push(
        format!(
            "10 {} ima {} /usr/bin/kmod",
            "00".repeat(20),
            "6f".repeat(20)
        )
        .into_bytes(),
    );
    let alphabet = b"0123456789abcdefABCDEF :\t\r\n-_/xg\xff\xc3\xa9";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut buf = Vec::new();
    let mut parsed = 0;
    for _ in 0..20_000 {
        let mut line = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            let i = rng.below(line.len() + 1);
            match rng.below(5) {
                0 if i < line.len() => line[i] = alphabet[rng.below(alphabet.len())],
                1 if i < line.len() => {
                    line.remove(i);
                }
                2 => line.insert(i, alphabet[rng.below(alphabet.len())]),
                3 => line.truncate(i),
                _ => line.extend(std::iter::repeat_n(b'a', rng.below(300))),
            }
        }
        // Straight through the reader (which also sees invalid UTF-8) ...
        let mut reader = ImaLogReader::new(&line[..]).with_max_line(4096);
        let cfg = ImaConfig::new(HashAlg::ALL[rng.below(5)]);
        let v = process_reader(cfg, None, &mut reader, None, AcceptAll).unwrap();
        assert_eq!(v.counts.parse + v.counts.entries, v.counts.lines);
        // ... and through the parser and template writer directly.
        if let Ok(s) = std::str::from_utf8(&line) {
            for piece in s.split('\n') {
                match ImaEntry::parse(piece) {
                    Ok(e) => {
                        parsed += 1;
                        e.write_template_data(&mut buf);
                        assert!(buf.len() >= e.digest.len() + e.name.len());
                    }
                    Err(err) => assert!(!err.to_string().is_empty()),
                }
            }
        }
    }
    // The mutations must leave plenty of lines parsable, or the loop tests little.
    assert!(parsed > 2_000, "{parsed}");
}

#[test]
fn huge_and_binary_input_is_bounded() {
    // One 3 MiB line: the reader rejects it without holding more than its cap.
    let mut data = b"10 00 ima-buf sha256:00 /x ".to_vec();
    data.extend(std::iter::repeat_n(b'a', 3 << 20));
    data.extend_from_slice(b"\n\xff\xfe\n");
    data.extend_from_slice(ng_line("/bin/a", "a").as_bytes());
    let mut reader = ImaLogReader::new(&data[..]);
    let v = process_reader(
        ImaConfig::new(HashAlg::Sha1),
        None,
        &mut reader,
        None,
        AcceptAll,
    )
    .unwrap();
    assert_eq!(ids(&v.failure), ["ima.parser.entry", "ima.parser.entry"]);
    assert_eq!((v.counts.lines, v.counts.entries), (3, 1));
    assert!(matches!(
        v.parse_errors[0].error,
        EntryError::LineTooLong { .. }
    ));
    assert_eq!(
        v.parse_errors[1],
        LineError {
            line: 2,
            error: EntryError::NotUtf8 { offset: 0 }
        }
    );
    assert!(reader.raw_line().len() <= DEFAULT_MAX_LINE);
}
