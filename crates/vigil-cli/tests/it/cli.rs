//! The `vigil` command end to end: `ima check` (exit codes, text and JSON output,
//! incremental continuation, legacy allowlists, bad input), `eventlog replay` and
//! `eventlog dump`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/ima")
        .join(name)
}

fn quoted_pcr(log: &str) -> String {
    let pcrs: Value =
        serde_json::from_str(&std::fs::read_to_string(example("pcr10.json")).unwrap()).unwrap();
    pcrs[log]["sha256"].as_str().unwrap().to_owned()
}

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `vigil ima check --log <examples/ima/LOG> --policy <the demo policy> EXTRA...`
fn check_example(log: &str, extra: &[&str]) -> Output {
    let (log, policy) = (example(log), example("runtime-policy.json"));
    let mut args = vec![
        "ima",
        "check",
        "--log",
        path(&log),
        "--policy",
        path(&policy),
    ];
    args.extend_from_slice(extra);
    vigil(&args)
}

#[test]
fn healthy_node_is_trusted() {
    let log = "ascii_runtime_measurements";
    let pcr = quoted_pcr(log);
    let out = check_example(log, &["--pcr", &pcr, "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["trusted"], true);
    assert_eq!(v["pcr_match"], 11);
    assert_eq!(v["failures"], Value::Array(vec![]));
    assert_eq!(v["counts"]["good"], 10);
    assert_eq!(v["counts"]["excluded"], 1);
    assert_eq!(v["running_pcr"], pcr.as_str());
    assert_eq!(v["next_entry"], 11);

    let text = check_example(log, &[]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("TRUSTED"));
}

#[test]
fn tampered_node_names_the_files() {
    let log = "tampered_runtime_measurements";
    let pcr = quoted_pcr(log);
    let out = check_example(log, &["--pcr", &pcr, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    let ids: Vec<&str> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ima.validation.ima-ng.runtime_policy_hash",
            "ima.validation.ima-ng.not_in_allowlist"
        ]
    );
    assert_eq!(
        v["failures"][1]["context"]["message"],
        "File not found in allowlist: /root/bad-script.sh"
    );
    // Keylime resets the incremental state after any failure.
    assert_eq!(v["next_entry"], 0);

    let text = check_example(log, &[]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(1));
    assert!(stdout.contains("line 7: /etc/ssh/sshd_config"), "{stdout}");
    assert!(stdout.contains("/root/bad-script.sh"), "{stdout}");
    assert!(stdout.contains("NOT TRUSTED (2 failures)"), "{stdout}");

    // A quote that matches no prefix of the log.
    let wrong = "ab".repeat(32);
    let v = json(&check_example(log, &["--pcr", &wrong, "--json"]));
    assert_eq!(v["pcr_match"], Value::Null);
    assert_eq!(
        v["failures"].as_array().unwrap().last().unwrap()["event_id"],
        "ima.pcr_mismatch"
    );
}

#[test]
fn incremental_continuation_matches_a_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let policy = example("runtime-policy.json");
    let full = std::fs::read_to_string(example("ascii_runtime_measurements")).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    // First poll: the node had 6 entries; the quote covered them all.
    let first = dir.path().join("first");
    std::fs::write(&first, lines[..6].join("\n") + "\n").unwrap();
    let v1 = json(&vigil(&[
        "ima",
        "check",
        "--log",
        path(&first),
        "--policy",
        path(&policy),
        "--json",
    ]));
    assert_eq!(v1["trusted"], true);
    assert_eq!(v1["next_entry"], 6);
    // Second poll: the whole log, starting from the saved state.
    let pcr = quoted_pcr("ascii_runtime_measurements");
    let v2 = json(&vigil(&[
        "ima",
        "check",
        "--log",
        path(&example("ascii_runtime_measurements")),
        "--policy",
        path(&policy),
        "--pcr",
        &pcr,
        "--from-entry",
        "6",
        "--from-pcr",
        v1["next_pcr"].as_str().unwrap(),
        "--json",
    ]));
    assert_eq!(v2["trusted"], true, "{v2}");
    assert_eq!(v2["pcr_match"], 5);
    assert_eq!(v2["next_entry"], 11);
    assert_eq!(v2["running_pcr"], pcr.as_str());
    assert_eq!(v2["counts"]["entries"], 5);
}

#[test]
fn legacy_allowlist_and_excludelist() {
    let dir = tempfile::tempdir().unwrap();
    let policy: Value =
        serde_json::from_str(&std::fs::read_to_string(example("runtime-policy.json")).unwrap())
            .unwrap();
    let mut allow = String::new();
    for (p, ds) in policy["digests"].as_object().unwrap() {
        allow.push_str(&format!("{}  {p}\n", ds[0].as_str().unwrap()));
    }
    let (a, e) = (dir.path().join("allow"), dir.path().join("exclude"));
    std::fs::write(&a, allow).unwrap();
    std::fs::write(&e, "# scratch space\n/tmp/.*\n").unwrap();
    let out = vigil(&[
        "ima",
        "check",
        "--log",
        path(&example("ascii_runtime_measurements")),
        "--allowlist",
        path(&a),
        "--excludelist",
        path(&e),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_input_exits_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = example("ascii_runtime_measurements");
    let bad_policy = dir.path().join("policy.json");
    std::fs::write(&bad_policy, r#"{"meta":{"version":1,"generator":3}}"#).unwrap();
    for (args, needle) in [
        (
            vec!["--policy", path(&bad_policy)],
            "invalid runtime policy",
        ),
        (vec!["--policy", "/nonexistent/policy.json"], "cannot read"),
        (
            vec![
                "--policy",
                path(&example("runtime-policy.json")),
                "--pcr",
                &"zz".repeat(32),
            ],
            "invalid --pcr",
        ),
        (
            vec![
                "--policy",
                path(&example("runtime-policy.json")),
                "--pcr",
                "abcd",
            ],
            "cannot infer the PCR bank",
        ),
        (
            vec![
                "--policy",
                path(&example("runtime-policy.json")),
                "--from-entry",
                "99",
                "--from-pcr",
                &"00".repeat(32),
            ],
            "past the end",
        ),
    ] {
        let mut all = vec!["ima", "check", "--log", path(&log)];
        all.extend(args);
        let out = vigil(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
    }
}

#[test]
fn eventlog_replay_json_and_bad_logs() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let log = data.join("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let out = vigil(&["eventlog", "replay", path(&log), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(
        v["sha256"]["7"],
        "741fd028c51b4d2fbdcc7f28014cc758d17ccc1fe2ea7ca17b0e8009480a557c"
    );
    assert!(v["sha1"]["14"].is_string());
    let bogus = data.join("keylime/test/data/create-mb-policy/binary_bios_measurements-bogus");
    let out = vigil(&["eventlog", "replay", path(&bogus)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed event log"));
}

#[test]
fn eventlog_dump_yaml_and_json() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/tpm2-tools");
    // tpm2-tools' expected output for its uefiservices log (libefivar < 39 device paths).
    let log = data.join("event-uefiservices.bin");
    let out = vigil(&["eventlog", "dump", path(&log), "--eventlog-version", "1"]);
    assert_eq!(out.status.code(), Some(0));
    let expected =
        std::fs::read_to_string(data.join("event-pretty/event-uefiservices.bin.yaml")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    let out = vigil(&["eventlog", "dump", path(&log), "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    let event = &v["events"][1];
    assert_eq!(event["EventType"], "EV_EFI_BOOT_SERVICES_DRIVER");
    assert_eq!(
        event["Event"]["DevicePath"],
        "PciRoot(0x0)/Pci(0x2,0x0)/Pci(0x0,0x0)/Offset(0x12600,0x3c3ff)"
    );
    assert!(v["pcrs"]["sha256"]["2"].as_str().unwrap().starts_with("0x"));
    // The YAML Vigil prints loads as YAML.
    let out = vigil(&["eventlog", "dump", path(&data.join("event-arch-linux.bin"))]);
    let doc: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["events"][3]["Event"]["VariableData"]["Enabled"], "No");
}

#[test]
fn quote_check_keylime_vector() {
    let files = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/keylime/test-data/files");
    let f = |n: &str| files.join(n);
    let (attest, sig, pcrs, ak, nonce) = (
        f("quote.out"),
        f("quotesig.out"),
        f("quotepcr.out"),
        f("akpub.pem"),
        f("rand.out"),
    );
    let args = |nonce_file: &Path| {
        vec![
            "quote".to_owned(),
            "check".into(),
            "--attest".into(),
            path(&attest).into(),
            "--sig".into(),
            path(&sig).into(),
            "--pcrs".into(),
            path(&pcrs).into(),
            "--ak".into(),
            path(&ak).into(),
            "--nonce-file".into(),
            path(nonce_file).into(),
            "--json".into(),
        ]
    };
    let run = |a: Vec<String>| vigil(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(&nonce));
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["valid"], true);
    assert_eq!(
        v["pcrs"]["16"],
        "9dbb22387e019c04da95477333546082ce313152c4a7f8a6e1d5f0c77f4fb6f0"
    );
    assert_eq!(v["clock_info"]["clock"], 5994);
    // The same AK as a TPM2B_PUBLIC (tpm2-tools' ak.pub).
    let mut tpm2b = args(&nonce);
    let at = tpm2b.iter().position(|a| a == "--ak").unwrap() + 1;
    tpm2b[at] = path(&f("ak.pub")).into();
    assert_eq!(run(tpm2b).status.code(), Some(0));
    // The wrong nonce: invalid, exit 1, Keylime's event id.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("nonce");
    std::fs::write(&other, b"not the nonce").unwrap();
    let out = run(args(&other));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json(&out)["failures"][0]["event_id"],
        "qoute_validation.quote_validation"
    );
    // PCR checks on the verified quote (PCRs 15 = 0…0, 16, 22 = f…f): a tpm_policy
    // that allows PCR 15 passes; one that wants another value or an unquoted PCR fails
    // with Keylime's events; a golden set names the class and the expected value.
    let with = |extra: &[&str]| {
        let mut a = args(&nonce);
        a.extend(extra.iter().map(|s| s.to_string()));
        run(a)
    };
    let zeros = "00".repeat(32);
    let ok = format!(r#"{{"15": "{zeros}", "22": ["{}"]}}"#, "ff".repeat(32));
    assert_eq!(with(&["--tpm-policy", &ok]).status.code(), Some(0));
    let bad = format!(r#"{{"15": "{}", "7": "{zeros}"}}"#, "11".repeat(32));
    let out = with(&["--tpm-policy", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let ids: Vec<_> = json(&out)["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [
            "pcr_validation.invalid_pcr_15",
            "pcr_validation.missing_pcrs"
        ]
    );
    let golden = dir.path().join("golden.json");
    std::fs::write(
        &golden,
        format!(r#"{{"name": "lab", "bank": "sha256", "pcrs": {{"22": ["{zeros}"]}}}}"#),
    )
    .unwrap();
    let out = with(&["--golden", path(&golden)]);
    assert_eq!(out.status.code(), Some(1));
    let failure = &json(&out)["failures"][0];
    assert_eq!(failure["event_id"], "pcr_validation.invalid_pcr_22");
    assert_eq!(failure["context"]["class"], "lab");
    assert_eq!(failure["context"]["expected"][0], zeros.as_str());
    // PCR 16 must be the extend of the node key; Keylime's key is not given, so any
    // other key fails the binding.
    let key = dir.path().join("nk.pem");
    std::fs::write(
        &key,
        "-----BEGIN PUBLIC KEY-----\nx\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let out = with(&["--data-key", path(&key)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        json(&out)["failures"][0]["event_id"],
        "pcr_validation.invalid_pcr_16"
    );
    // A policy naming PCR 10 or 16 is bad input.
    let out = with(&["--tpm-policy", r#"{"16": "00"}"#]);
    assert_eq!(out.status.code(), Some(2));
    // A malformed quote string is bad input.
    let out = vigil(&[
        "quote",
        "check",
        "--quote",
        "xyz",
        "--ak",
        path(&ak),
        "--nonce",
        "n",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// A file of `len` bytes that takes no disk space (a hole): for the size limits.
fn sparse_file(p: &Path, len: u64) {
    std::fs::File::create(p).unwrap().set_len(len).unwrap();
}

#[test]
fn quote_check_malformed_input_exits_2() {
    let files = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/keylime/test-data/files");
    let f = |n: &str| files.join(n);
    let dir = tempfile::tempdir().unwrap();
    let (ak, nonce) = (f("akpub.pem"), f("rand.out"));
    let real = [f("quote.out"), f("quotesig.out"), f("quotepcr.out")];
    let check = |parts: &[PathBuf; 3]| {
        vigil(&[
            "quote",
            "check",
            "--attest",
            path(&parts[0]),
            "--sig",
            path(&parts[1]),
            "--pcrs",
            path(&parts[2]),
            "--ak",
            path(&ak),
            "--nonce-file",
            path(&nonce),
        ])
    };
    assert_eq!(check(&real).status.code(), Some(0));
    for (i, part) in ["attest", "sig", "pcrs"].into_iter().enumerate() {
        let bytes = std::fs::read(&real[i]).unwrap();
        for (case, content) in [
            ("empty", Vec::new()),
            ("truncated", bytes[..bytes.len() - 1].to_vec()),
            ("garbage", b"not a TPM structure at all".to_vec()),
        ] {
            let bad = dir.path().join(format!("{part}-{case}"));
            std::fs::write(&bad, content).unwrap();
            let mut parts = real.clone();
            parts[i] = bad.clone();
            let out = check(&parts);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{part} {case}: {stderr}");
            assert!(
                stderr.contains(&format!("malformed quote in {}", bad.display())),
                "{part} {case}: {stderr}"
            );
            assert!(
                out.stdout.is_empty(),
                "{part} {case}: no verdict is printed"
            );
        }
        let big = dir.path().join(format!("{part}-oversized"));
        sparse_file(&big, (64 << 10) + 1);
        let mut parts = real.clone();
        parts[i] = big;
        let out = check(&parts);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{part} oversized: {stderr}");
        assert!(stderr.contains("larger than 64 KiB"), "{part}: {stderr}");
    }
    // A well-formed quote that fails a check is invalid, not bad input.
    let mut sig = std::fs::read(&real[1]).unwrap();
    *sig.last_mut().unwrap() ^= 1;
    let flipped = dir.path().join("sig-flipped");
    std::fs::write(&flipped, sig).unwrap();
    let out = check(&[real[0].clone(), flipped, real[2].clone()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("INVALID"));
    // --quote: base64 parts that are not the structures, one part cut short, or two
    // parts swapped.
    let read = |i: usize| std::fs::read(&real[i]).unwrap();
    let string = |attest, signature, pcr_blob| {
        vigil_core::tpm::quote::KeylimeQuote {
            attest,
            signature,
            pcr_blob,
        }
        .to_keylime_string()
    };
    for quote in [
        "rAAAA:AAAA:AAAA".to_owned(),
        "r::".to_owned(),
        string(read(0), read(1), read(2)[..100].to_vec()),
        string(read(0), read(2), read(1)),
    ] {
        let out = vigil(&[
            "quote",
            "check",
            "--quote",
            &quote,
            "--ak",
            path(&ak),
            "--nonce-file",
            path(&nonce),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{quote}: {stderr}");
        assert!(stderr.contains("malformed quote in --quote"), "{stderr}");
    }
}

#[test]
fn policy_validate_and_eventlog_refuse_empty_zero_and_oversized_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    for (name, content) in [("empty.json", ""), ("blank.json", " \n\n")] {
        std::fs::write(d(name), content).unwrap();
        let out = vigil(&["policy", "validate", path(&d(name))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("is empty"), "{name}: {stderr}");
    }
    // 4 KiB of zeros would read as one empty event into PCR 0.
    std::fs::write(d("zeros.bin"), [0u8; 4096]).unwrap();
    for command in ["replay", "dump"] {
        let out = vigil(&["eventlog", command, path(&d("zeros.bin"))]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("not a TCG event log"),
            "{command}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{command}");
    }
    sparse_file(&d("huge.bin"), (64 << 20) + 1);
    let out = vigil(&["eventlog", "replay", path(&d("huge.bin"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 64 MiB"));
    sparse_file(&d("huge.json"), (1 << 30) + 1);
    let out = vigil(&["policy", "validate", path(&d("huge.json"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 1024 MiB"));
}

#[test]
fn credential_make_and_parse() {
    let files = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/keylime/test-data/files");
    let f = |n: &str| files.join(n);
    // tpm2-tools' own file parses, and Keylime's `blob` is its base64.
    let out = vigil(&["credential", "parse", path(&f("mkcred.out")), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["enc_identity"].as_str().unwrap().len(), 2 * 11);
    assert_eq!(v["encrypted_secret"].as_str().unwrap().len(), 2 * 256);
    assert!(v["keylime_blob"]
        .as_str()
        .unwrap()
        .starts_with("utzA3gAAAAE"));

    // The same EK as TPM2B_PUBLIC or PEM, the AK as a name file, hex or TPM2B_PUBLIC:
    // every combination makes a file of tpm2_makecredential's shape.
    let dir = tempfile::tempdir().unwrap();
    let hex_name = hex::encode(std::fs::read(f("ak.name")).unwrap());
    let (ek, ek_pem, ak_name, ak, secret) = (
        f("ek.pub"),
        f("ekpub.pem"),
        f("ak.name"),
        f("ak.pub"),
        f("secret.data"),
    );
    let cases: [&[&str]; 3] = [
        &["--ek", path(&ek), "--ak-name", path(&ak_name)],
        &[
            "--ek",
            path(&ek_pem),
            "--ek-format",
            "pem",
            "--ak-name",
            &hex_name,
        ],
        &["--ek", path(&ek), "--ak", path(&ak)],
    ];
    for (i, case) in cases.into_iter().enumerate() {
        let blob = dir.path().join(format!("blob{i}"));
        let mut args = vec![
            "credential",
            "make",
            "--secret",
            path(&secret),
            "-o",
            path(&blob),
        ];
        args.extend_from_slice(case);
        let out = vigil(&args);
        assert_eq!(out.status.code(), Some(0), "{case:?}: {out:?}");
        let bytes = std::fs::read(&blob).unwrap();
        assert_eq!(
            bytes.len(),
            std::fs::metadata(f("mkcred.out")).unwrap().len() as usize
        );
        assert_eq!(&bytes[..10], &std::fs::read(f("mkcred.out")).unwrap()[..10]);
    }

    // Bad input exits 2 and says why.
    let blob = dir.path().join("x");
    let too_long = dir.path().join("long");
    std::fs::write(&too_long, [b'a'; 33]).unwrap();
    for (args, why) in [
        (
            vec![
                "--ek",
                path(&ak),
                "--ak-name",
                path(&ak_name),
                "--secret",
                path(&secret),
            ],
            "unsupported EK",
        ),
        (
            vec![
                "--ek",
                path(&ek),
                "--ak-name",
                "zz",
                "--secret",
                path(&secret),
            ],
            "neither a file nor hexadecimal",
        ),
        (
            vec![
                "--ek",
                path(&ek),
                "--ak-name",
                "000b00",
                "--secret",
                path(&secret),
            ],
            "invalid AK name",
        ),
        (
            vec![
                "--ek",
                path(&ek),
                "--ak-name",
                path(&ak_name),
                "--secret",
                path(&too_long),
            ],
            "secret must be 1 to 32 bytes",
        ),
    ] {
        let mut full = vec!["credential", "make", "-o", path(&blob)];
        full.extend(args);
        let out = vigil(&full);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{err}");
    }
    let out = vigil(&["credential", "parse", path(&f("ak.pub"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("magic"));
}

fn keylime_cert_store() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/keylime/tpm_cert_store")
}

#[test]
fn ekcert_verify_against_keylime_store() {
    let store = keylime_cert_store();
    let cert = store.join("STM_ECC_01I.pem");
    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        path(&cert),
        "--store",
        path(&store),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["trusted"], true);
    assert_eq!(v["store_certificates"], 51);
    assert_eq!(v["chain"][1]["source"]["entry"], "STM_ECC_01RT.pem");
    assert_eq!(v["checked_at"], Value::Null);

    // Expired in 2025: fine for Keylime, not when a time is given.
    let cert = store.join("IFX1.pem");
    let at = ["--at", "2026-06-01T00:00:00Z"];
    let mut args = vec![
        "ekcert",
        "verify",
        "--cert",
        path(&cert),
        "--store",
        path(&store),
    ];
    assert_eq!(vigil(&args).status.code(), Some(0));
    args.extend(at);
    let out = vigil(&args);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CN=IFX TPM EK Intermediate CA 01': expired at 2025-10-20T13:47:43Z"),
        "{text}"
    );
}

/// A vendor-style non-DER encoding outside the signed part (a padded outer length):
/// trusted with a warning by default, refused with `--reject-malformed`.
#[test]
fn ekcert_malformed_certificate_policy() {
    use vigil_core::tpm::ek_cert::EkCert;
    let store = keylime_cert_store();
    let der = EkCert::parse(&std::fs::read(store.join("INTEL_I.pem")).unwrap())
        .unwrap()
        .as_bytes()
        .to_vec();
    // 30 82 LL LL -> 30 83 00 LL LL, plus NV padding.
    assert_eq!(der[1], 0x82);
    let mut ber = vec![0x30, 0x83, 0x00];
    ber.extend_from_slice(&der[2..]);
    ber.extend([0xff; 32]);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("ek.der");
    std::fs::write(&cert, &ber).unwrap();

    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        path(&cert),
        "--store",
        path(&store),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not DER: length with leading zero bytes at byte 0"),
        "{stderr}"
    );

    let out = vigil(&[
        "ekcert",
        "verify",
        "--cert",
        path(&cert),
        "--store",
        path(&store),
        "--reject-malformed",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["ek_cert"]["der"], false);
    assert_eq!(v["ek_cert"]["padding"], 32);
    assert!(v["failures"][0]
        .as_str()
        .unwrap()
        .contains("malformed certificates are rejected"));
    // The chain itself still verifies: the signed bytes are untouched.
    assert_eq!(v["chain"][1]["source"]["entry"], "INTEL_RT.pem");
}

#[test]
fn ekcert_bad_input_exits_2() {
    let store = keylime_cert_store();
    let cert = store.join("IFX1.pem");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.der");
    std::fs::write(&junk, b"\x30\x03\x02\x01").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (c, s) = (path(&cert), path(&store));
    for (args, needle) in [
        (
            vec!["--cert", "/nonexistent.der", "--store", s],
            "cannot read",
        ),
        (
            vec!["--cert", path(&junk), "--store", s],
            "invalid EK certificate",
        ),
        (
            vec!["--cert", c, "--store", path(&empty)],
            "holds no certificate",
        ),
        (
            vec!["--cert", c, "--store", s, "--at", "yesterday"],
            "not an RFC 3339 time",
        ),
        (
            vec!["--cert", c, "--store", s, "--ek", path(&junk)],
            "invalid EK public key",
        ),
        (
            vec!["--cert", c, "--store", s, "--intermediate", path(&junk)],
            "invalid intermediate",
        ),
    ] {
        let mut all = vec!["ekcert", "verify"];
        all.extend(args);
        let out = vigil(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{all:?}: {stderr}");
    }
}

fn mb_log(suffix: &str) -> String {
    format!(
        "{}/../../../shared/testdata/keylime/test/data/create-mb-policy/binary_bios_measurements{suffix}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn policy_create_and_check_measured_boot() {
    let dir = tempfile::tempdir().unwrap();
    let rs = dir.path().join("refstate.json");
    let log = mb_log("");
    // Secure Boot is off in this log: refused unless asked for.
    let out = vigil(&["policy", "create", "measured-boot", "-e", &log]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Secure Boot disabled"));
    let out = vigil(&[
        "policy",
        "create",
        "measured-boot",
        "-e",
        &log,
        "-i",
        "-o",
        path(&rs),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let created: Value = serde_json::from_str(&std::fs::read_to_string(&rs).unwrap()).unwrap();
    assert_eq!(created["has_secureboot"], false);
    assert!(created["kernels"][0]["vmlinuz_plain_sha256"].is_string());

    // Keylime's example policy refuses this log's StartupLocality event, as Keylime does.
    let out = vigil(&[
        "policy",
        "check",
        "measured-boot",
        "-e",
        &log,
        "-r",
        path(&rs),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["valid"], false);
    assert_eq!(v["failures"][0]["event_id"], "measured_boot.policy_example");
    assert!(v["failures"][0]["context"]["reason"]
        .as_str()
        .unwrap()
        .ends_with("'Event': {'StartupLocality': 3}} test was already run once"));
    let out = vigil(&[
        "policy",
        "check",
        "measured-boot",
        "-e",
        &log,
        "-r",
        path(&rs),
        "--policy",
        "accept-all",
    ]);
    assert_eq!(out.status.code(), Some(0));

    // Bad input: a malformed refstate, an unknown policy, the bogus and empty logs.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"kernels": [], "scrtm_and_bios": [], "pk": []}"#).unwrap();
    let out = vigil(&[
        "policy",
        "check",
        "measured-boot",
        "-e",
        &log,
        "-r",
        path(&bad),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("field kek"));
    let out = vigil(&[
        "policy",
        "check",
        "measured-boot",
        "-e",
        &log,
        "-r",
        path(&rs),
        "--policy",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    for suffix in ["-bogus", "-empty"] {
        let out = vigil(&[
            "policy",
            "create",
            "measured-boot",
            "-e",
            &mb_log(suffix),
            "-i",
        ]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("malformed event log"));
    }
}

#[test]
fn ca_init_and_issue_make_a_keylime_style_cv_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cv_ca");
    let out = vigil(&["ca", "init", "--dir", path(&dir), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(v["ca_cert"], path(&dir.join("cacert.crt")));
    for f in [
        "cacert.crt",
        "server-cert.crt",
        "server-private.pem",
        "client-cert.crt",
        "client-private.pem",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    // A second init would orphan every issued certificate: refused without --force.
    let again = vigil(&["ca", "init", "--dir", path(&dir)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let out = vigil(&["ca", "issue", "--name", "tenant", "--dir", path(&dir)]);
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("tenant-private.pem").is_file());
    let bad = vigil(&["ca", "issue", "--name", "../x", "--dir", path(&dir)]);
    assert_eq!(bad.status.code(), Some(2));
    // An independent opinion: openssl accepts the chain and the purposes.
    if Path::new("/usr/bin/openssl").exists() {
        for (cert, purpose) in [
            ("server-cert.crt", "sslserver"),
            ("client-cert.crt", "sslclient"),
            ("tenant-cert.crt", "sslclient"),
        ] {
            let out = Command::new("openssl")
                .args(["verify", "-purpose", purpose, "-CAfile"])
                .arg(dir.join("cacert.crt"))
                .arg(dir.join(cert))
                .output()
                .unwrap();
            assert!(out.status.success(), "{cert}: {out:?}");
        }
    }
}

/// `vigil policy sign|convert|validate` on their own (Keylime's side of them is
/// `policy_sign_diff.rs`): exit codes and the errors they name.
#[test]
fn policy_sign_convert_validate() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    let policy = example("runtime-policy.json");

    // Sign with a generated key, then validate with and without its public key.
    let env = d("signed.json");
    let key = d("key.pem");
    let out = vigil(&[
        "policy",
        "sign",
        "runtime",
        "-r",
        path(&policy),
        "-p",
        path(&key),
        "-o",
        path(&env),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An existing key file is not overwritten.
    let again = vigil(&[
        "policy",
        "sign",
        "runtime",
        "-r",
        path(&policy),
        "-p",
        path(&key),
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    let out = vigil(&["policy", "validate", path(&env), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["kind"], "DSSE-signed runtime policy");
    assert!(v["warnings"][0].as_str().unwrap().contains("not checked"));
    // The wrong key: a certificate made for another key (x509 backend).
    let cert = d("cert.pem");
    let other = d("other.json");
    let out = vigil(&[
        "policy",
        "sign",
        "runtime",
        "-r",
        path(&policy),
        "-p",
        path(&d("k2.pem")),
        "-b",
        "x509",
        "-c",
        path(&cert),
        "-o",
        path(&other),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vigil(&["policy", "validate", path(&other), "-k", path(&cert)]);
    assert_eq!(out.status.code(), Some(0));
    let out = vigil(&[
        "policy",
        "validate",
        path(&env),
        "-k",
        path(&cert),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["errors"][0]
        .as_str()
        .unwrap()
        .contains("no signature"));
    // Signing an envelope, or x509 without a certificate path, is bad input.
    for args in [
        vec![
            "policy",
            "sign",
            "runtime",
            "-r",
            path(&env),
            "-k",
            path(&key),
        ],
        vec![
            "policy",
            "sign",
            "runtime",
            "-r",
            path(&policy),
            "-k",
            path(&key),
            "-b",
            "x509",
        ],
    ] {
        assert_eq!(vigil(&args).status.code(), Some(2), "{args:?}");
    }

    // Convert a flat allowlist; a malformed line is named.
    let allow = d("allow.txt");
    std::fs::write(
        &allow,
        format!(
            "{} /usr/bin/ls\n\n{} %keyring:.ima\n",
            "a".repeat(64),
            "b".repeat(64)
        ),
    )
    .unwrap();
    let excl = d("excl.txt");
    std::fs::write(&excl, "# c\n/tmp/.*\n").unwrap();
    let conv = d("conv.json");
    let out = vigil(&[
        "policy",
        "convert",
        "-a",
        path(&allow),
        "-e",
        path(&excl),
        "-o",
        path(&conv),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&conv).unwrap()).unwrap();
    assert_eq!(doc["digests"]["/usr/bin/ls"][0], "a".repeat(64));
    assert_eq!(doc["keyrings"][".ima"][0], "b".repeat(64));
    assert_eq!(doc["excludes"], serde_json::json!(["/tmp/.*"]));
    assert!(doc["meta"]["timestamp"].is_string());
    assert_eq!(
        vigil(&["policy", "validate", path(&conv)]).status.code(),
        Some(0)
    );
    std::fs::write(&allow, "abc\n").unwrap();
    let out = vigil(&["policy", "convert", "-a", path(&allow)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowlist line 1"));

    // Validate: precise errors, exit 1; unreadable, exit 2.
    let bad = d("bad.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&policy).unwrap()).unwrap();
    doc["excludes"] = serde_json::json!(["ok", "(unclosed"]);
    std::fs::write(&bad, doc.to_string()).unwrap();
    let out = vigil(&["policy", "validate", path(&bad), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(json(&out)["errors"][0]
        .as_str()
        .unwrap()
        .contains("(unclosed"));
    doc["excludes"] = serde_json::json!([]);
    doc["digests"]["/bin/x"] = serde_json::json!(["XYZ"]);
    std::fs::write(&bad, doc.to_string()).unwrap();
    let out = vigil(&["policy", "validate", path(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("digests./bin/x: 'XYZ' is not a digest"));
    // What only Vigil reads: a warning, an error with --strict.
    doc["digests"]["/bin/x"] = serde_json::json!([format!("sha256:{}", "c".repeat(64))]);
    std::fs::write(&bad, doc.to_string()).unwrap();
    assert_eq!(
        vigil(&["policy", "validate", path(&bad)]).status.code(),
        Some(0)
    );
    assert_eq!(
        vigil(&["policy", "validate", "--strict", path(&bad)])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        vigil(&["policy", "validate", path(&d("missing"))])
            .status
            .code(),
        Some(2)
    );

    // A measured-boot reference state (Keylime's example), and one with a bad entry.
    let refstate = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../../shared/testdata/keylime/keylime/mba/elchecking/example_reference_state.json",
    );
    let out = vigil(&["policy", "validate", path(&refstate), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["kind"], "measured-boot reference state");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&refstate).unwrap()).unwrap();
    doc["pk"] = serde_json::json!([{"SignatureOwner": "x"}]);
    std::fs::write(&bad, doc.to_string()).unwrap();
    let out = vigil(&["policy", "validate", path(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pk[0].SignatureData"));
}
