//! The `webhook` channel: `POST <webhook_url>` with the notice; HTTP 200 or 202 is
//! success, as in Keylime. The URL is the target recorded with each delivery, so a
//! delivery resumed after a restart goes where it was meant to.
//!
//! `http://` and `https://` URLs, IPv6 literals in brackets, names resolved without
//! blocking. Over https the verifier uses its client TLS context, as Keylime does: the
//! webhook's certificate must chain to the verifier's CA (the first
//! `trusted_client_ca`) and name the URL's host, and the verifier presents its client
//! certificate.

use std::sync::Arc;

use hyper::Method;
use vigil_service::client::{Client, Endpoint, Limits};

use super::{ChannelFuture, Notifier, Origin, Sent};
use crate::config::Config;

/// Webhook answers are a status line and a short body.
const ANSWER_LIMIT: usize = 1 << 20;

pub(super) struct Webhook {
    url: String,
    client: Client,
    /// The TLS configuration for https URLs, or why it cannot be loaded (reported with
    /// each delivery, so the verifier still starts and records the notices).
    tls: Result<Arc<rustls::ClientConfig>, String>,
}

impl Webhook {
    pub(super) fn new(config: &Config) -> Self {
        let timeout = config.request_timeout();
        Self {
            url: config.webhook_url.clone(),
            client: Client::new(Limits {
                connect_timeout: timeout,
                timeout,
                body_limit: ANSWER_LIMIT,
            }),
            tls: tls_config(config),
        }
    }
}

fn tls_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca = config
        .trusted_client_ca
        .first()
        .map(|p| config.tls_file(p))
        .ok_or("https webhook: trusted_client_ca is empty, so no CA to check it against")?;
    let cert = config.tls_file(&config.client_cert);
    let key = config.tls_file(&config.client_key);
    vigil_tls::client_config(&ca, Some((&cert, &key)))
        .map(Arc::new)
        .map_err(|e| format!("https webhook: {e}"))
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn targets<'a>(&'a self, _origin: &'a Origin) -> ChannelFuture<'a, Vec<String>> {
        Box::pin(async move { Ok(vec![self.url.clone()]) })
    }

    fn send<'a>(&'a self, notice: &'a str, url: &'a str) -> ChannelFuture<'a, Sent> {
        Box::pin(async move {
            let (endpoint, target) = Endpoint::url(url).map_err(|e| format!("webhook_url: {e}"))?;
            let endpoint = if endpoint.is_https() {
                endpoint.with_tls(self.tls.clone()?)
            } else {
                endpoint
            };
            let body = Some(notice.as_bytes().to_vec());
            match self
                .client
                .request(&endpoint, Method::POST, &target, body)
                .await
            {
                Ok(a) if a.status == 200 || a.status == 202 => Ok(Sent::Delivered),
                Ok(a) => Err(format!("HTTP {}", a.status)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv6Addr, SocketAddr};
    use std::sync::Mutex;

    use axum::routing::post;
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::*;

    /// A webhook on `[::1]` that records the bodies it is sent and answers `status`.
    async fn hook(
        tls: Option<rustls::ServerConfig>,
        status: u16,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>, watch::Sender<bool>) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |body: String| async move {
                seen.lock().unwrap().push(body);
                axum::http::StatusCode::from_u16(status).unwrap()
            }),
        );
        let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(vigil_service::server::serve(
            listener, acceptor, app, stopped,
        ));
        (addr, got, stop)
    }

    /// Over http and https, to an IPv6 literal: 200 and 202 are delivered, another
    /// code is not; an https webhook whose certificate the verifier's CA did not
    /// issue is refused.
    #[tokio::test]
    async fn delivers_over_http_and_https_to_ipv6_literals() {
        let dir = tempfile::tempdir().unwrap();
        let ca = vigil_tls::ca::init(&dir.path().join("cv_ca"), &["::1".into()], false).unwrap();
        let config = Config {
            state_dir: dir.path().to_owned(),
            webhook_url: "unused".into(),
            ..Config::default()
        };
        let webhook = Webhook::new(&config);
        let notice = r#"{"msg":"{}","signature":""}"#;

        let (addr, got, _stop) = hook(None, 200).await;
        let url = format!("http://[::1]:{}/hook", addr.port());
        webhook.send(notice, &url).await.unwrap();
        assert_eq!(*got.lock().unwrap(), [notice]);

        let server = vigil_tls::server_config(
            &ca.cert("server"),
            &ca.key("server"),
            &[&ca.ca_cert()],
            vigil_tls::ClientAuth::Required,
        )
        .unwrap();
        let (addr, got, _stop) = hook(Some(server), 202).await;
        let url = format!("https://[::1]:{}/hook", addr.port());
        webhook.send(notice, &url).await.unwrap();
        assert_eq!(*got.lock().unwrap(), [notice]);

        let (addr, _, _stop) = hook(None, 500).await;
        let url = format!("http://[::1]:{}/hook", addr.port());
        assert_eq!(webhook.send(notice, &url).await.unwrap_err(), "HTTP 500");

        let other = vigil_tls::ca::init(&dir.path().join("other"), &["::1".into()], false).unwrap();
        let foreign = vigil_tls::server_config(
            &other.cert("server"),
            &other.key("server"),
            &[&ca.ca_cert()],
            vigil_tls::ClientAuth::Optional,
        )
        .unwrap();
        let (addr, got, _stop) = hook(Some(foreign), 200).await;
        let url = format!("https://[::1]:{}/hook", addr.port());
        let e = webhook.send(notice, &url).await.unwrap_err();
        assert!(e.contains("TLS handshake"), "{e}");
        assert!(got.lock().unwrap().is_empty());
        let e = webhook.send(notice, "ftp://[::1]/hook").await.unwrap_err();
        assert!(e.starts_with("webhook_url: invalid URL"), "{e}");
    }
}
