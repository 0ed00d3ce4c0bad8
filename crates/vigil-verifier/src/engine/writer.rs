//! Group commit of rounds. A node task hands its round's write to the [`RoundWriter`]
//! and waits for the answer; the writer records whatever rounds queued up meanwhile in
//! one transaction ([`VerifierAgents::record_rounds`](vigil_store::VerifierAgents)).
//! One commit per round was where a verifier with thousands of nodes ran out of
//! database: SQLite serialises writers, and every commit writes its pages to the WAL.
//! A lone round is written at once, as before; under load the batches grow by
//! themselves, up to [`MAX_BATCH`].

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use vigil_store::{Backend, Fence, RoundUpdate, RoundWrite, Store, StoreError};

/// Rounds written in one transaction at most: bounds a transaction's time, and so the
/// wait of the rounds behind it.
const MAX_BATCH: usize = 256;

struct Job {
    write: RoundWrite,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The verifier's round writer (see the module's docs).
#[derive(Debug, Clone)]
pub(crate) struct RoundWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

impl RoundWriter {
    /// Starts the writer tasks: one on SQLite (it has one writer at a time anyway),
    /// a few on PostgreSQL, whose rows lock one by one.
    pub(crate) fn start(store: Store) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        let rx = Arc::new(Mutex::new(rx));
        let writers = match store.backend() {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        for _ in 0..writers {
            let (store, rx) = (store.clone(), rx.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&rx).await {
                    let (writes, replies): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|j| (j.write, j.reply)).unzip();
                    let results = store.verifier_agents().record_rounds(writes).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                }
            });
        }
        Self { jobs }
    }

    /// Records one round (as `record_round` does), in the next batch.
    pub(crate) async fn record(
        &self,
        agent_id: &str,
        update: RoundUpdate,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            write: RoundWrite {
                agent_id: agent_id.to_owned(),
                update,
                fence: fence.cloned(),
            },
            reply,
        };
        let stopped = || StoreError::Database {
            op: "record attestation round",
            source: "the round writer has stopped".into(),
        };
        self.jobs.send(job).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// The jobs waiting now (at least one, at most [`MAX_BATCH`]); `None` once every
/// sender is gone.
async fn next_batch(rx: &Mutex<mpsc::UnboundedReceiver<Job>>) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    Some(batch)
}
