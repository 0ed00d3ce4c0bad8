//! The `webhook` sink: `POST <event_webhook_url>` with the event as the body, signed so
//! the receiver can check it came from this verifier: `X-Vigil-Signature:
//! sha256=<hex HMAC-SHA256 of the body under the shared secret>` (the secret is read
//! from `event_webhook_secret_file`). Any 2xx answer is success. `https://` URLs use
//! the verifier's client TLS context, as the revocation webhook does.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use hyper::Method;
use sha2::Sha256;
use vigil_service::client::{Client, Endpoint, Limits};

use super::{Outgoing, Sink, SinkFuture};
use crate::config::Config;

/// The header carrying the body's signature.
pub(crate) const SIGNATURE_HEADER: &str = "X-Vigil-Signature";
/// Webhook answers are a status line and a short body.
const ANSWER_LIMIT: usize = 1 << 20;
/// The largest secret file read.
const SECRET_LIMIT: u64 = 4096;

pub(super) struct WebhookSink {
    url: String,
    client: Client,
    /// The HMAC key, or why it cannot be read (reported with each attempt, so the
    /// verifier still starts and the events stay queued).
    secret: Result<Vec<u8>, String>,
    tls: Result<Arc<rustls::ClientConfig>, String>,
}

impl WebhookSink {
    pub(super) fn new(config: &Config) -> Self {
        let timeout = config.request_timeout();
        let path = config.state_dir.join(&config.event_webhook_secret_file);
        let secret = std::fs::File::open(&path)
            .and_then(|f| {
                use std::io::Read;
                let mut buf = Vec::new();
                f.take(SECRET_LIMIT).read_to_end(&mut buf)?;
                Ok(buf)
            })
            .map(|s| s.trim_ascii().to_vec())
            .map_err(|e| format!("event_webhook_secret_file {}: {e}", path.display()))
            .and_then(|s| {
                if s.is_empty() {
                    Err(format!(
                        "event_webhook_secret_file {} is empty",
                        path.display()
                    ))
                } else {
                    Ok(s)
                }
            });
        let tls = config
            .trusted_client_ca
            .first()
            .map(|p| config.tls_file(p))
            .ok_or_else(|| "https webhook: trusted_client_ca is empty".to_owned())
            .and_then(|ca| {
                let cert = config.tls_file(&config.client_cert);
                let key = config.tls_file(&config.client_key);
                vigil_tls::client_config(&ca, Some((&cert, &key)))
                    .map(Arc::new)
                    .map_err(|e| format!("https webhook: {e}"))
            });
        Self {
            url: config.event_webhook_url.clone(),
            client: Client::new(Limits {
                connect_timeout: timeout,
                timeout,
                body_limit: ANSWER_LIMIT,
            }),
            secret,
            tls,
        }
    }
}

/// The signature header's value for `body` under `secret`.
pub(crate) fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, event: Outgoing<'a>) -> SinkFuture<'a> {
        Box::pin(async move {
            let secret = self.secret.as_ref().map_err(Clone::clone)?;
            let (endpoint, target) =
                Endpoint::url(&self.url).map_err(|e| format!("event_webhook_url: {e}"))?;
            let endpoint = if endpoint.is_https() {
                endpoint.with_tls(self.tls.clone()?)
            } else {
                endpoint
            };
            let sig = signature(secret, event.event.as_bytes());
            let headers = [
                (SIGNATURE_HEADER, sig.as_str()),
                ("X-Vigil-Event-Id", event.uuid),
            ];
            let body = Some(event.event.as_bytes().to_vec());
            match self
                .client
                .request_with_headers(&endpoint, Method::POST, &target, body, &headers)
                .await
            {
                Ok(a) if (200..300).contains(&a.status) => Ok(()),
                Ok(a) => Err(format!("HTTP {}", a.status)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::http::HeaderMap;
    use axum::routing::post;
    use tokio::sync::watch;

    use super::*;

    #[tokio::test]
    async fn events_are_posted_signed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("event-webhook.secret"), "s3cret\n").unwrap();
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| async move {
                let sig = headers[SIGNATURE_HEADER].to_str().unwrap().to_owned();
                seen.lock().unwrap().push((sig, body));
                axum::http::StatusCode::NO_CONTENT
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(vigil_service::server::serve(listener, None, app, stopped));
        let config = Config {
            state_dir: dir.path().to_owned(),
            event_webhook_url: format!("http://{addr}/hook"),
            ..Config::default()
        };
        let sink = WebhookSink::new(&config);
        let event = r#"{"uuid":"u1","kind":"runtime"}"#;
        sink.deliver(Outgoing {
            uuid: "u1",
            node_id: "n1",
            event,
        })
        .await
        .unwrap();
        let got = got.lock().unwrap().clone();
        assert_eq!(
            got,
            [(signature(b"s3cret", event.as_bytes()), event.to_owned())]
        );
        let missing = WebhookSink::new(&Config {
            state_dir: dir.path().join("none"),
            ..config
        });
        let e = missing
            .deliver(Outgoing {
                uuid: "u1",
                node_id: "n1",
                event,
            })
            .await
            .unwrap_err();
        assert!(e.contains("event_webhook_secret_file"), "{e}");
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
