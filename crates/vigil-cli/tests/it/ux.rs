//! What a new operator hit (issue 18), one test per item: bad input that is not an IMA
//! list, a closed pipe, JSON outputs, the tenant's configuration file, each command's
//! help, completions and manual pages, error messages that say what to do, the docs'
//! examples, and the tenant checking the services' names. (`tenant status` exit codes
//! and its headline are unit tests of `cmd::tenant`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn vigil_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vigil"));
    cmd.args(args)
        .env_remove("VIGIL_STATE_DIR")
        .env_remove("XDG_CONFIG_HOME");
    cmd
}

fn vigil(args: &[&str]) -> Output {
    vigil_cmd(args).output().expect("run vigil")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(path)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn quoted_pcr(log: &str) -> String {
    let pcrs: Value =
        serde_json::from_slice(&std::fs::read(repo("examples/ima/pcr10.json")).unwrap()).unwrap();
    pcrs[log]["sha256"].as_str().unwrap().to_owned()
}

/// Item 1: a file that is no IMA list at all is bad input (2), not an untrusted node;
/// an empty list says so, and is trusted only with an initial PCR 10.
#[test]
fn ima_check_refuses_what_is_not_a_measurement_list() {
    let policy = repo("examples/ima/runtime-policy.json");
    // --log and --policy swapped, each way.
    let out = vigil(&["ima", "check", "--log", p(&policy), "--policy", p(&policy)]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("is not an IMA measurement list: none of its"),
        "{}",
        stderr(&out)
    );
    let log = repo("examples/ima/ascii_runtime_measurements");
    let out = vigil(&["ima", "check", "--log", p(&policy), "--policy", p(&log)]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("is not a runtime policy"), "{err}");
    assert!(
        err.contains("looks like an IMA measurement list: pass that as --log"),
        "{err}"
    );
    assert!(!err.contains("expected struct Document"), "{err}");

    // Empty: trusted without a PCR or with the initial one, and said to be empty; not
    // trusted with any other quoted value.
    let zeros = "0".repeat(64);
    for extra in [&[][..], &["--pcr", &zeros][..]] {
        let mut args = vec!["ima", "check", "--log", "/dev/null", "--policy", p(&policy)];
        args.extend_from_slice(extra);
        let out = vigil(&args);
        assert_eq!(out.status.code(), Some(0), "{extra:?}");
        assert!(
            stdout(&out).contains("the measurement list is empty"),
            "{}",
            stdout(&out)
        );
        args.push("--json");
        let v: Value = serde_json::from_slice(&vigil(&args).stdout).unwrap();
        assert_eq!(
            (v["trusted"].clone(), v["empty"].clone()),
            (true.into(), true.into())
        );
    }
    let pcr = quoted_pcr("ascii_runtime_measurements");
    let out = vigil(&[
        "ima",
        "check",
        "--log",
        "/dev/null",
        "--policy",
        p(&policy),
        "--pcr",
        &pcr,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("ima.pcr_mismatch"),
        "{}",
        stdout(&out)
    );
}

/// Item 4: JSON carries what the text shows, and `--json` is accepted everywhere.
#[test]
fn json_outputs_carry_what_the_text_shows() {
    let log = repo("examples/ima/tampered_runtime_measurements");
    let policy = repo("examples/ima/runtime-policy.json");
    let out = vigil(&[
        "ima",
        "check",
        "--log",
        p(&log),
        "--policy",
        p(&policy),
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let located: Vec<(u64, &str)> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["file"].as_str().unwrap()))
        .collect();
    assert_eq!(
        located,
        [(7, "/etc/ssh/sshd_config"), (12, "/root/bad-script.sh")]
    );

    let mb = shared("testdata/keylime/test/data/create-mb-policy/binary_bios_measurements");
    let v: Value =
        serde_json::from_slice(&vigil(&["eventlog", "replay", p(&mb), "--json"]).stdout).unwrap();
    let text = stdout(&vigil(&["eventlog", "replay", p(&mb)]));
    let sha256 = v["boot_aggregates"]["sha256"].as_array().unwrap();
    assert_eq!(sha256.len(), 2, "{v}");
    for d in sha256 {
        assert!(text.contains(d.as_str().unwrap()), "{d} not in {text}");
    }
    assert!(v["sha256"]["7"].is_string());

    let uefi = shared("testdata/tpm2-tools/event-uefiservices.bin");
    let json = vigil(&["eventlog", "dump", p(&uefi), "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", stderr(&json));
    let format = vigil(&["eventlog", "dump", p(&uefi), "--format", "json"]);
    assert_eq!(json.stdout, format.stdout);
    let both = vigil(&["eventlog", "dump", p(&uefi), "--format", "yaml", "--json"]);
    assert_eq!(both.status.code(), Some(2));
}

/// Item 5: /etc/vigil/tenant.toml, then ~/.config/vigil/tenant.toml, then
/// `VIGIL_TENANT_*`, then flags; the error names the port that each one set.
#[test]
fn tenant_toml_then_variables_then_flags() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/vigil");
    std::fs::create_dir_all(&dir).unwrap();
    // Ports nothing listens on (privileged, unused here), refused at once.
    std::fs::write(
        dir.join("tenant.toml"),
        "verifier_ip = \"127.0.0.1\"\nverifier_port = 7\ntimeout = 5\n",
    )
    .unwrap();
    let list = |env: &[(&str, &str)], flags: &[&str]| {
        let mut args = vec!["tenant", "list", "--insecure-no-tls"];
        args.extend_from_slice(flags);
        let mut cmd = vigil_cmd(&args);
        cmd.env("HOME", home.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        stderr(&out)
    };
    assert!(
        list(&[], &[]).contains("http://127.0.0.1:7"),
        "{}",
        list(&[], &[])
    );
    let env = [("VIGIL_TENANT_VERIFIER_PORT", "9")];
    assert!(list(&env, &[]).contains("http://127.0.0.1:9"));
    assert!(list(&env, &["--verifier-port", "11"]).contains("http://127.0.0.1:11"));
    // An unknown key is named with its file.
    std::fs::write(dir.join("tenant.toml"), "verifier_prot = 7\n").unwrap();
    let err = list(&[], &[]);
    assert!(
        err.contains("tenant.toml") && err.contains("verifier_prot"),
        "{err}"
    );
    let env = [("VIGIL_TENANT_VERIFIER_PORT", "x")];
    std::fs::write(dir.join("tenant.toml"), "").unwrap();
    assert!(list(&env, &[]).contains("VIGIL_TENANT_* overrides: verifier_port"));
}

/// Item 6: no "(later)"; each command shows only the options that apply to it.
#[test]
fn help_shows_each_commands_own_options() {
    let top = stdout(&vigil(&["--help"]));
    assert!(!top.contains("later"), "{top}");
    for sub in ["completions", "man", "tenant"] {
        assert!(top.contains(sub), "{sub}: {top}");
    }
    for cmd in ["push", "list", "show", "delete"] {
        let help = stdout(&vigil(&["policy", cmd, "--help"]));
        for absent in [
            "--registrar-ip",
            "--registrar-port",
            "--max-retries",
            "--verifier-id",
        ] {
            assert!(!help.contains(absent), "policy {cmd}: {absent} in {help}");
        }
        assert!(help.contains("--verifier-port"), "{help}");
    }
    let push = stdout(&vigil(&["policy", "push", "--help"]));
    for absent in ["--mb-policy", "--tpm-policy", "--runtime-policy-name"] {
        assert!(!push.contains(absent), "{absent} in {push}");
    }
    // Still accepted (keylime_tenant passes them).
    let out = vigil(&[
        "policy",
        "list",
        "-r",
        "127.0.0.1",
        "--registrar-port",
        "1",
        "--verifier-port",
        "7",
        "--insecure-no-tls",
    ]);
    assert!(
        !stderr(&out).contains("unexpected argument"),
        "{}",
        stderr(&out)
    );
    // tenant add: its own options, then the connection options under their heading.
    let add = stdout(&vigil(&["tenant", "add", "--help"]));
    let heading = add
        .find("Connection (defaults from tenant.toml):")
        .expect(&add);
    assert!(add.find("--uuid").unwrap() < heading);
    assert!(add.find("--registrar-ip").unwrap() > heading);
    let status = stdout(&vigil(&["tenant", "status", "--help"]));
    assert!(status.contains("Exit status: 0 attested"), "{status}");
    for absent in ["--registrar-ip", "--max-retries", "--verifier-id"] {
        assert!(!status.contains(absent), "status: {absent} in {status}");
    }
    let reglist = stdout(&vigil(&["tenant", "reglist", "--help"]));
    assert!(reglist.contains("--registrar-port"), "{reglist}");
    assert!(!reglist.contains("--verifier-port"), "{reglist}");
    // Before or after the command's name; after wins.
    let out = vigil(&[
        "tenant",
        "--verifier-port",
        "9",
        "--insecure-no-tls",
        "status",
        "-u",
        "x",
    ]);
    assert!(stderr(&out).contains("127.0.0.1:9:"), "{}", stderr(&out));
    let out = vigil(&[
        "tenant",
        "--verifier-port",
        "9",
        "status",
        "-u",
        "x",
        "--verifier-port",
        "10",
        "--insecure-no-tls",
    ]);
    assert!(stderr(&out).contains("127.0.0.1:10:"), "{}", stderr(&out));
}

/// Item 7: completions for bash, zsh and fish, and a manual page per command.
#[test]
fn completions_and_man_pages_generate() {
    for (shell, mark) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef vigil"),
        ("fish", "complete -c vigil"),
    ] {
        let out = vigil(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = stdout(&out);
        assert!(text.contains(mark), "{shell}");
        assert!(
            text.contains("regstatus") && text.contains("verifier-port"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let out = vigil(&["man", p(&man)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for page in [
        "vigil.1",
        "vigil-tenant-status.1",
        "vigil-policy-create-runtime.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}");
    }
    let status = std::fs::read_to_string(man.join("vigil-tenant-status.1")).unwrap();
    assert!(status.contains("attested"), "{status}");
}

/// Item 8: each error once, saying which service or option and what to do.
#[test]
fn error_messages_say_what_to_do() {
    let out = vigil(&[
        "tenant",
        "status",
        "-u",
        "x",
        "--insecure-no-tls",
        "--verifier-port",
        "7",
    ]);
    let err = stderr(&out);
    assert_eq!(err.matches("os error 111").count(), 1, "{err}");
    assert!(
        err.contains("is the verifier running there? check -v/--verifier-ip and --verifier-port"),
        "{err}"
    );
    let out = vigil(&[
        "tenant",
        "regstatus",
        "-u",
        "x",
        "--insecure-no-tls",
        "--registrar-port",
        "7",
    ]);
    assert!(
        stderr(&out).contains("check -r/--registrar-ip and --registrar-port"),
        "{}",
        stderr(&out)
    );
    let out = vigil(&["tenant", "list", "--tls-dir", "/nonexistent"]);
    let err = stderr(&out);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    assert!(err.contains("vigil ca init"), "{err}");

    let log = repo("examples/ima/ascii_runtime_measurements");
    let policy = repo("examples/ima/runtime-policy.json");
    let out = vigil(&[
        "ima",
        "check",
        "--log",
        p(&log),
        "--policy",
        p(&policy),
        "--pcr",
        "xyz",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid --pcr: 'xyz' is not hex"),
        "{}",
        stderr(&out)
    );

    let mb = shared("testdata/keylime/test/data/create-mb-policy/binary_bios_measurements");
    let out = vigil(&["policy", "create", "measured-boot", "-e", p(&mb)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("-i/--without-secureboot"),
        "{}",
        stderr(&out)
    );

    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("dist-packages")).unwrap();
    std::fs::write(root.path().join("dist-packages/m.py"), "x").unwrap();
    let out = vigil(&[
        "policy",
        "create",
        "runtime",
        "--rootfs",
        p(root.path()),
        "-o",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("it is taken as the root of a tree"),
        "{}",
        stderr(&out)
    );
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let out = vigil(&[
        "policy",
        "create",
        "runtime",
        "--rootfs",
        p(root.path()),
        "-o",
        "/dev/null",
    ]);
    assert!(!stderr(&out).contains("root of a tree"), "{}", stderr(&out));
}

/// Item 8: a registrar started without its TLS files says to run `vigil ca init`,
/// and names the missing file once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrar_without_a_ca_says_to_create_one() {
    vigil_testkit::db::with_sqlite(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        let config = vigil_registrar::Config {
            port: 0,
            tls_port: 0,
            state_dir: dir.path().to_owned(),
            database_url: url,
            ..vigil_registrar::Config::default()
        };
        let Err(e) = vigil_registrar::Registrar::start(&config).await else {
            panic!("started without TLS files");
        };
        let text = vigil_service::report::chain(&anyhow::Error::new(e));
        assert!(text.contains("run `vigil ca init --dir"), "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    })
    .await;
}

/// Item 10: the docs show what the commands print and make.
#[test]
fn docs_match_the_commands() {
    let ima = std::fs::read_to_string(repo("docs/ima.md")).unwrap();
    let start = ima.find("`--json` prints").unwrap();
    let block = &ima[start..];
    let block = &block[block.find("```json").unwrap() + 7..];
    let block = &block[..block.find("```").unwrap()];
    let documented: Value = serde_json::from_str(block).unwrap();
    let log = "tampered_runtime_measurements";
    let out = vigil(&[
        "ima",
        "check",
        "--log",
        p(&repo(&format!("examples/ima/{log}"))),
        "--policy",
        p(&repo("examples/ima/runtime-policy.json")),
        "--pcr",
        &quoted_pcr(log),
        "--json",
    ]);
    let real: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&documented), keys(&real));
    let ids = |v: &Value| {
        v["failures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["event_id"].clone(), f["line"].clone(), f["file"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&documented), ids(&real));
    for k in [
        "trusted",
        "pcr_match",
        "counts",
        "summary",
        "bank",
        "next_entry",
    ] {
        assert_eq!(documented[k], real[k], "{k}");
    }

    let registrar = std::fs::read_to_string(repo("docs/registrar.md")).unwrap();
    let table = &registrar[registrar.find("## The CA: `vigil ca`").unwrap()..];
    let ca = tempfile::tempdir().unwrap();
    let dir = ca.path().join("cv_ca");
    assert_eq!(
        vigil(&["ca", "init", "--dir", p(&dir)]).status.code(),
        Some(0)
    );
    for file in std::fs::read_dir(&dir).unwrap() {
        let name = file.unwrap().file_name().into_string().unwrap();
        assert!(
            table.contains(&format!("`{name}`")),
            "{name} not in docs/registrar.md"
        );
    }

    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    assert!(readme.contains("`./vigil-demo` for a bare `vigil demo`"));
}

/// Item 11: the tenant checks that a service's certificate names the address it
/// connects to; `--tls-no-name-check` accepts any name from the CA, with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_checks_the_services_name() {
    vigil_testkit::db::with_sqlite(|url| async move {
        let dir = tempfile::tempdir().unwrap();
        // The certificate names 127.0.0.1 only; the registrar listens on 127.0.0.2.
        let ca =
            vigil_tls::ca::init(&dir.path().join("cv_ca"), &["127.0.0.1".into()], false).unwrap();
        let config = vigil_registrar::Config {
            ip: "127.0.0.2".parse().unwrap(),
            port: 0,
            tls_port: 0,
            state_dir: dir.path().to_owned(),
            database_url: url,
            ..vigil_registrar::Config::default()
        };
        let registrar = vigil_registrar::Registrar::start(&config).await.unwrap();
        let port = registrar.https_addr().port().to_string();
        let run = |extra: &[&str]| {
            let mut args = vec![
                "tenant",
                "reglist",
                "--tls-dir",
                p(ca.dir()),
                "-r",
                "127.0.0.2",
                "--registrar-port",
                &port,
            ];
            args.extend_from_slice(extra);
            vigil(&args)
        };
        let out = tokio::task::block_in_place(|| run(&[]));
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains("NotValidForName") || err.contains("not valid for name"),
            "{err}"
        );
        assert!(err.contains("--tls-no-name-check"), "{err}");

        let out = tokio::task::block_in_place(|| run(&["--tls-no-name-check"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(
            stdout(&out).contains("no nodes registered"),
            "{}",
            stdout(&out)
        );
        assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("--tls-no-name-check"),
            "{}",
            stderr(&out)
        );
    })
    .await;
}
