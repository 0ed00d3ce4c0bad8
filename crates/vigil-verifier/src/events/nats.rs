//! The `nats` sink: NATS JetStream. Each node's events go to the subject
//! `<event_nats_subject_prefix>.<node id>` (characters NATS gives a meaning to in a
//! subject token — `.`, `*`, `>`, whitespace — and any other outside `[A-Za-z0-9_-]`
//! become `_`), captured by the stream `event_nats_stream`, which the sink creates
//! when it does not exist (subjects `<prefix>.>`). Every message carries
//! `Nats-Msg-Id: <event uuid>`, so JetStream itself drops a redelivery within the
//! stream's duplicate window; a delivery counts only once JetStream acknowledged it.
//!
//! The connection is made at the first delivery and kept; after an error it is dropped
//! and made again at the next attempt (the outbox retries with backoff).

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use tokio::sync::Mutex;

use super::{Outgoing, Sink, SinkFuture};
use crate::config::Config;

/// How long one publish may wait for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) struct NatsSink {
    url: String,
    prefix: String,
    stream: String,
    context: Mutex<Option<jetstream::Context>>,
}

impl NatsSink {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            url: config.event_nats_url.clone(),
            prefix: config.event_nats_subject_prefix.clone(),
            stream: config.event_nats_stream.clone(),
            context: Mutex::new(None),
        }
    }

    /// Connects and makes sure the stream exists.
    async fn connect(&self) -> Result<jetstream::Context, String> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(CONNECT_TIMEOUT)
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("event_nats_url {}: {e}", self.url))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ACK_TIMEOUT);
        js.get_or_create_stream(stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.prefix)],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("event_nats_stream {}: {e}", self.stream))?;
        Ok(js)
    }
}

/// The subject of `node`'s events under `prefix`.
pub(crate) fn subject(prefix: &str, node: &str) -> String {
    let token: String = node
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}.{token}")
}

impl Sink for NatsSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn deliver<'a>(&'a self, event: Outgoing<'a>) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut guard = self.context.lock().await;
            let js = match guard.as_ref() {
                Some(js) => js.clone(),
                None => {
                    let js = self.connect().await?;
                    *guard = Some(js.clone());
                    js
                }
            };
            drop(guard);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.uuid);
            let published = async {
                js.publish_with_headers(
                    subject(&self.prefix, event.node_id),
                    headers,
                    event.event.as_bytes().to_vec().into(),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
            }
            .await;
            if let Err(e) = published {
                *self.context.lock().await = None;
                return Err(format!("NATS {}: {e}", self.url));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_ids_become_one_subject_token() {
        assert_eq!(
            super::subject("vigil.events", "d432fbb3-d2f1"),
            "vigil.events.d432fbb3-d2f1"
        );
        assert_eq!(super::subject("p", "a.b *>c"), "p.a_b___c");
    }
}
