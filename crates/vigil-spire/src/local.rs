//! A client of the agent's node-local identity socket (plain HTTP over a unix socket).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The largest answer read from the socket.
const MAX_ANSWER: usize = 1 << 20;
/// How long one exchange may take (a quote takes the TPM a moment).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent's socket gave no usable answer. Each variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The socket cannot be reached (missing, or its mode refuses this user).
    #[error("agent socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed or took too long.
    #[error("agent socket {socket}: {message}")]
    Exchange {
        /// The socket.
        socket: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The agent refused.
    #[error("agent socket {socket}: {path} answered {status}: {text}")]
    Refused {
        /// The socket.
        socket: PathBuf,
        /// The path asked.
        path: String,
        /// The HTTP status.
        status: u16,
        /// The agent's `status` text.
        text: String,
    },
}

/// `GET path` on the agent's socket: the `results` of a 200 answer.
pub async fn get(socket: &Path, path: &str) -> Result<Value, LocalError> {
    let exchange = |message: String| LocalError::Exchange {
        socket: socket.to_owned(),
        message,
    };
    let run = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|source| LocalError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let driver = tokio::spawn(conn);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| exchange(e.to_string()))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let status = res.status().as_u16();
        let body = Limited::new(res.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| exchange(format!("reading the answer: {e}")))?
            .to_bytes();
        driver.abort();
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 {
            return Err(LocalError::Refused {
                socket: socket.to_owned(),
                path: path.to_owned(),
                status,
                text: json["status"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(json["results"].clone())
    };
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| exchange(format!("no answer within {TIMEOUT:?}")))?
}
