//! `vigil config import-keylime` against the configuration files Keylime itself writes
//! (`keylime_upgrade_config --defaults` from the reference templates, as
//! scripts/keylime-reference.sh does): the Vigil files it writes load with each
//! service's own loader, carry the options Vigil has, and name the ones it has not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

/// Keylime's default configuration files in a new directory, or `None` without the
/// reference venv (outside CI).
fn keylime_defaults(test: &str) -> Option<tempfile::TempDir> {
    let bin = vigil_testkit::keylime::venv_bin(test)?;
    let templates =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/keylime-reference/templates");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin.join("keylime_upgrade_config"))
        .arg("--defaults")
        .arg("--templates")
        .arg(&templates)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("run keylime_upgrade_config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

fn import(dir: &Path, out: &Path) -> Output {
    vigil(&[
        "config",
        "import-keylime",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn keylime_defaults_import_and_load() {
    let Some(keylime) = keylime_defaults("config_import::keylime_defaults_import_and_load") else {
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let out = import(keylime.path(), out_dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let verifier = vigil_verifier::Config::load(
        Some(&out_dir.path().join("verifier.toml")),
        std::iter::empty(),
    )
    .unwrap();
    assert_eq!(verifier.port, 8881);
    assert_eq!(verifier.quote_interval, 2.0);
    assert_eq!(verifier.max_upload_size, 104_857_600);
    assert_eq!(verifier.enabled_revocation_notifications, ["agent"]);
    assert_eq!(verifier.severity_labels.len(), 7);
    let registrar = vigil_registrar::Config::load(
        Some(&out_dir.path().join("registrar.toml")),
        std::iter::empty(),
    )
    .unwrap();
    assert_eq!((registrar.port, registrar.tls_port), (8890, 8891));
    // Keylime's tenant options for EK certificates go to Vigil's registrar.
    assert!(registrar.require_ek_cert);
    assert_eq!(
        registrar.tpm_cert_store,
        Path::new("/var/lib/keylime/tpm_cert_store")
    );
    let agent =
        vigil_agent::Config::load(Some(&out_dir.path().join("agent.toml")), std::iter::empty())
            .unwrap();
    assert_eq!((agent.port, agent.registrar_port), (9002, 8890));
    assert_eq!(agent.state_dir, Path::new("/var/lib/keylime"));
    let tenant: toml::Table = read(out_dir.path().join("tenant.toml")).parse().unwrap();
    assert_eq!(tenant["verifier_port"].as_integer(), Some(8881));
    assert_eq!(tenant["timeout"].as_integer(), Some(60));

    // What has no Vigil equivalent is named with its section, on the terminal and
    // at the top of the file it would have gone into.
    for (file, line) in [
        ("verifier", "[verifier] num_workers = 0"),
        ("verifier", "[revocations] zmq_port = 8992"),
        (
            "registrar",
            "[registrar] signed_attributes = ek_tpm,aik_tpm,ekcert",
        ),
        ("tenant", "[tenant] max_payload_size = 1048576"),
        ("agent", "[agent] run_as = keylime:tss"),
    ] {
        assert!(stdout.contains(line), "{line} not reported:\n{stdout}");
        let text = read(out_dir.path().join(format!("{file}.toml")));
        let header: String = text.lines().take_while(|l| l.starts_with('#')).collect();
        assert!(header.contains(line), "{line} not in {file}.toml:\n{text}");
    }
    // What Vigil has is not reported.
    assert!(!stdout.contains("quote_interval"), "{stdout}");
}

#[test]
fn missing_files_are_skipped_and_bad_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::write(
        dir.path().join("tenant.conf"),
        "[tenant]\nverifier_ip = 10.0.0.5\nverifier_port = 9881\n",
    )
    .unwrap();
    let out = import(dir.path(), &out_dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("verifier.conf not found, skipped"),
        "{stdout}"
    );
    assert!(stdout.contains("agent.conf not found, skipped"), "{stdout}");
    assert!(!out_dir.join("verifier.toml").exists());
    let tenant: toml::Table = read(out_dir.join("tenant.toml")).parse().unwrap();
    assert_eq!(tenant["verifier_ip"].as_str(), Some("10.0.0.5"));
    assert_eq!(tenant["verifier_port"].as_integer(), Some(9881));

    std::fs::write(dir.path().join("agent.conf"), "[agent\nport = 1\n").unwrap();
    let out = import(dir.path(), &out_dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("agent.conf does not parse"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let out = import(empty.path(), &out_dir);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn changed_keylime_options_carry_over() {
    let Some(keylime) = keylime_defaults("config_import::changed_keylime_options_carry_over")
    else {
        return;
    };
    let conf = keylime.path().join("verifier.conf");
    let text = read(conf.clone())
        .replace(
            "database_url = sqlite",
            "database_url = postgresql+psycopg2://vigil@127.0.0.1/test",
        )
        .replace("ip = \"127.0.0.1\"", "ip = verifier.example")
        .replace("server_cert = default", "server_cert = /etc/keylime/cv.crt")
        .replace("quote_interval = 2", "quote_interval = 7.5");
    std::fs::write(&conf, text).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = import(keylime.path(), out_dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let verifier = vigil_verifier::Config::load(
        Some(&out_dir.path().join("verifier.toml")),
        std::iter::empty(),
    )
    .unwrap();
    assert_eq!(verifier.database_url, "postgres://vigil@127.0.0.1/test");
    assert_eq!(verifier.server_cert, Path::new("/etc/keylime/cv.crt"));
    assert_eq!(verifier.quote_interval, 7.5);
    // A host name where Vigil binds an address is named, and Vigil's default kept.
    assert!(
        stdout.contains("[verifier] ip = verifier.example: not an IP address"),
        "{stdout}"
    );
    assert_eq!(verifier.ip, vigil_verifier::Config::default().ip);
}
