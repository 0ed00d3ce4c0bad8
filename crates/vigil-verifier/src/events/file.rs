//! The `file` sink: one JSON object per line, appended to `event_file` (relative to
//! `state_dir`). Each event is one `write` on a file opened for appending, so lines of
//! concurrent writers do not interleave and a reader never sees half a line unless the
//! disk filled up mid-write.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

use super::{Outgoing, Sink, SinkFuture};
use crate::config::Config;

pub(super) struct FileSink {
    path: PathBuf,
}

impl FileSink {
    pub(super) fn new(config: &Config) -> Self {
        Self {
            path: config.state_dir.join(&config.event_file),
        }
    }
}

impl Sink for FileSink {
    fn name(&self) -> &'static str {
        "file"
    }

    fn deliver<'a>(&'a self, event: Outgoing<'a>) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut line = Vec::with_capacity(event.event.len() + 1);
            line.extend_from_slice(event.event.as_bytes());
            line.push(b'\n');
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| format!("event_file {}: {e}", self.path.display()))?;
            file.write_all(&line)
                .await
                .map_err(|e| format!("event_file {}: {e}", self.path.display()))?;
            file.flush()
                .await
                .map_err(|e| format!("event_file {}: {e}", self.path.display()))
        })
    }
}
