//! The `webhook` channel: `POST <webhook_url>` with the notice; HTTP 200 or 202 is
//! success, as in Keylime. The URL is the target recorded with each delivery, so a
//! delivery resumed after a restart goes where it was meant to.

use std::net::ToSocketAddrs;
use std::time::Duration;

use super::{ChannelFuture, Notifier, Origin};
use crate::client;
use crate::config::Config;

pub(super) struct Webhook {
    url: String,
    timeout: Duration,
}

impl Webhook {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            url: config.webhook_url.clone(),
            timeout: config.request_timeout(),
        }
    }
}

/// `http://host:port/path` → address, host header, path (https is not built in:
/// put a TLS-terminating proxy in front, or use the agent channel).
fn target(url: &str) -> Result<(std::net::SocketAddr, String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("webhook_url {url}: only http:// is supported"))?;
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
        .map_err(|e| format!("webhook_url {url}: {e}"))?
        .next()
        .ok_or_else(|| format!("webhook_url {url}: no address"))?;
    Ok((addr, host.to_owned(), path))
}

impl Notifier for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn targets<'a>(&'a self, _origin: &'a Origin) -> ChannelFuture<'a, Vec<String>> {
        Box::pin(async move { Ok(vec![self.url.clone()]) })
    }

    fn send<'a>(&'a self, notice: &'a str, url: &'a str) -> ChannelFuture<'a, ()> {
        Box::pin(async move {
            let (addr, host, path) = target(url)?;
            match client::request(
                addr,
                &host,
                None,
                hyper::Method::POST,
                &path,
                Some(notice.as_bytes().to_vec()),
                self.timeout,
            )
            .await
            {
                Ok(a) if a.status == 200 || a.status == 202 => Ok(()),
                Ok(a) => Err(format!("HTTP {}", a.status)),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
