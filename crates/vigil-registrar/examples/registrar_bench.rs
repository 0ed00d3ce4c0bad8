//! Registrations per second and latency of the whole agent flow (POST the EK/AK, open
//! the MakeCredential blob, PUT the auth tag) against an in-process registrar, with
//! N concurrent clients on keep-alive HTTP/1.1 connections.
//!
//! The EK is a software P-256 key and the AK is Keylime's test AK, so no TPM is the
//! bottleneck; the clients' ActivateCredential runs on the same machine and is counted
//! in the latency, as an agent's would be.
//!
//! ```sh
//! cargo run --release -p vigil-registrar --example registrar_bench -- \
//!     [--database sqlite|postgres://…] [--clients 50] [--agents 5000]
//! ```
//!
//! With `--database postgres://…/db` the benchmark creates and drops a schema of its
//! own there. Results go to stdout as one Markdown table row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rand_core::OsRng;
use serde_json::{json, Value};
use vigil_core::tpm::credential::{activate_credential, auth_tag, CredentialBlob, EkPrivateKey};
use vigil_core::tpm::public::TpmPublic;
use vigil_registrar::{Config, Registrar};

struct Args {
    database: String,
    clients: usize,
    agents: usize,
}

fn args() -> Result<Args> {
    let mut a = Args {
        database: "sqlite".into(),
        clients: 50,
        agents: 5000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database" => a.database = value,
            "--clients" => a.clients = value.parse().context("--clients")?,
            "--agents" => a.agents = value.parse().context("--agents")?,
            _ => bail!("unknown argument {flag}"),
        }
    }
    if a.clients == 0 || a.agents < a.clients {
        bail!("need at least one client and as many agents as clients");
    }
    Ok(a)
}

/// What every simulated agent shares: the EK (public and private) and the AK.
struct Keys {
    ek: TpmPublic,
    ek_key: EkPrivateKey,
    ak: Vec<u8>,
    ak_name: Vec<u8>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr) -> Result<Sender> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn call(sender: &mut Sender, method: &str, path: &str, body: &Value) -> Result<Value> {
    sender.ready().await?;
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body)?)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let v: Value = serde_json::from_slice(&bytes)?;
    if !status.is_success() {
        bail!("{method} {path}: {status} {v}");
    }
    Ok(v)
}

/// One agent's registration and activation.
async fn flow(sender: &mut Sender, keys: &Keys, id: &str) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let path = format!("/v2.6/agents/{id}");
    let reg = json!({"ek_tpm": b64.encode(keys.ek.to_tpm2b()), "aik_tpm": b64.encode(&keys.ak),
                     "ip": "127.0.0.1", "port": 9002});
    let reply = call(sender, "POST", &path, &reg).await?;
    let blob = b64.decode(reply["results"]["blob"].as_str().context("no blob")?)?;
    let blob = CredentialBlob::parse_tpm2_tools(&blob)?;
    let secret = activate_credential(&keys.ek, &keys.ek_key, &keys.ak_name, &blob)?;
    call(
        sender,
        "PUT",
        &path,
        &json!({"auth_tag": auth_tag(&secret, id)}),
    )
    .await?;
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let dir = tempfile::tempdir()?;
    vigil_tls::ca::init(&dir.path().join("cv_ca"), &["localhost".into()], false)?;

    // PostgreSQL: a schema of our own, dropped at the end.
    let schema = format!("bench_{}", std::process::id());
    let (database_url, backend) = if args.database == "sqlite" {
        (
            format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            ),
            "SQLite",
        )
    } else {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&args.database).await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await?;
        let sep = if args.database.contains('?') {
            '&'
        } else {
            '?'
        };
        (
            format!("{}{sep}options[search_path]={schema}", args.database),
            "PostgreSQL",
        )
    };
    let config = Config {
        port: 0,
        tls_port: 0,
        state_dir: dir.path().to_owned(),
        database_url,
        log: "warn".into(),
        ..Config::default()
    };
    let registrar = Registrar::start(&config).await?;
    let addr = registrar.http_addr();

    let ek_secret = p256::SecretKey::random(&mut OsRng);
    let spki = {
        use p256::pkcs8::EncodePublicKey;
        ek_secret.public_key().to_public_key_der()?
    };
    let ak = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/keylime/test-data/files/ak.pub"
    ))
    .context("Keylime's test AK (../shared/testdata)")?;
    let keys = Arc::new(Keys {
        ek: TpmPublic::ek_from_spki(spki.as_bytes())?,
        ek_key: EkPrivateKey::P256(ek_secret),
        ak_name: TpmPublic::parse_tpm2b(&ak)?.name(),
        ak,
    });

    let per_client = args.agents / args.clients;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut latencies = Vec::with_capacity(per_client);
            for i in 0..per_client {
                let t = Instant::now();
                flow(&mut sender, &keys, &format!("bench-{c}-{i}")).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    registrar.shutdown().await;
    if backend == "PostgreSQL" {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&args.database).await?;
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut admin)
            .await?;
    }

    latencies.sort();
    let n = latencies.len();
    println!(
        "| {backend} | {} | {n} | {:.0} | {:.1} | {:.1} |",
        args.clients,
        n as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}
