//! The `webhook` channel: `POST <webhook_url>` with the notice, retried with the
//! verifier's backoff (`retry_interval`, `max_retries`, `exponential_backoff`);
//! HTTP 200 or 202 is success, as in Keylime.

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use vigil_core::revocation::RevocationNotice;

use super::{Notifier, Origin};
use crate::client;
use crate::config::Config;

pub(super) struct Webhook {
    url: String,
    attempts: u32,
    delays: Vec<Duration>,
    timeout: Duration,
}

impl Webhook {
    pub(super) fn new(config: &Config) -> Self {
        let attestation = config.attestation().unwrap_or_default();
        let attempts = config.max_retries.max(1);
        Self {
            url: config.webhook_url.clone(),
            attempts,
            delays: (1..=attempts).map(|n| attestation.retry_delay(n)).collect(),
            timeout: config.request_timeout(),
        }
    }

    /// `http://host:port/path` → address, host header, path (https is not built in:
    /// put a TLS-terminating proxy in front, or use the agent channel).
    fn target(&self) -> Result<(std::net::SocketAddr, String, String), String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("webhook_url {}: only http:// is supported", self.url))?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let with_port = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("webhook_url {}: {e}", self.url))?
            .next()
            .ok_or_else(|| format!("webhook_url {}: no address", self.url))?;
        Ok((addr, host.to_owned(), path))
    }
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send(
        &self,
        notice: Arc<RevocationNotice>,
        _origin: Origin,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&*notice).map_err(|e| e.to_string())?;
            let mut last = String::new();
            for attempt in 0..self.attempts {
                match self.target() {
                    Err(e) => return Err(e),
                    Ok((addr, host, path)) => {
                        match client::request(
                            addr,
                            &host,
                            None,
                            hyper::Method::POST,
                            &path,
                            Some(body.clone()),
                            self.timeout,
                        )
                        .await
                        {
                            Ok(a) if a.status == 200 || a.status == 202 => return Ok(()),
                            Ok(a) => last = format!("HTTP {}", a.status),
                            Err(e) => last = e.to_string(),
                        }
                    }
                }
                if let Some(d) = self.delays.get(attempt as usize) {
                    tokio::time::sleep(*d).await;
                }
            }
            Err(format!(
                "{} attempts failed, the last with {last}",
                self.attempts
            ))
        })
    }
}
