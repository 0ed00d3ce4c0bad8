//! A node task's mailbox: the engine's commands wait here until the task takes them.
//!
//! One per node, alive as long as the node is attested here, and nearly always empty:
//! a queue that allocates only while a command waits, and a [`Notify`], about a hundred
//! bytes in all where tokio's `mpsc` channel allocates a block of 32 slots and
//! cache-padded state (about 1 KiB) up front.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

use super::Command;

/// Commands for one node's task, in the order sent.
pub(crate) struct Mailbox {
    /// `None` once the task has ended: nothing is accepted any more.
    queue: Mutex<Option<VecDeque<Command>>>,
    ready: Notify,
}

impl Mailbox {
    /// An open mailbox.
    pub(crate) fn new() -> Self {
        Self {
            queue: Mutex::new(Some(VecDeque::new())),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<VecDeque<Command>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves `cmd` for the task; `false` (and `cmd` dropped, so whoever waits on its
    /// reply hears the task is gone) once the task has ended.
    pub(crate) fn send(&self, cmd: Command) -> bool {
        match self.lock().as_mut() {
            Some(queue) => queue.push_back(cmd),
            None => return false,
        }
        // A permit is stored if the task is not waiting yet: the wake is not lost.
        self.ready.notify_one();
        true
    }

    /// The next command, waiting for one.
    pub(crate) async fn recv(&self) -> Command {
        loop {
            if let Some(queue) = self.lock().as_mut() {
                if let Some(cmd) = queue.pop_front() {
                    if queue.is_empty() {
                        // Nothing kept allocated between commands.
                        *queue = VecDeque::new();
                    }
                    return cmd;
                }
            }
            self.ready.notified().await;
        }
    }

    /// The task has ended: commands still waiting are dropped (their senders hear the
    /// task is gone) and no more are accepted.
    pub(crate) fn close(&self) {
        let waiting = self.lock().take();
        drop(waiting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    #[tokio::test]
    async fn commands_come_in_order_and_a_send_before_the_wait_is_not_lost() {
        let mailbox = Mailbox::new();
        assert!(mailbox.send(Command::Rebuild));
        assert!(mailbox.send(Command::Shutdown));
        assert!(matches!(mailbox.recv().await, Command::Rebuild));
        assert!(matches!(mailbox.recv().await, Command::Shutdown));
        let held = mailbox.lock().as_ref().map(VecDeque::capacity);
        assert_eq!(held, Some(0), "an empty mailbox holds no slots");
    }

    #[tokio::test]
    async fn a_waiting_task_wakes_on_a_send() {
        let mailbox = std::sync::Arc::new(Mailbox::new());
        let task = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { matches!(mailbox.recv().await, Command::Release) }
        });
        tokio::task::yield_now().await;
        assert!(mailbox.send(Command::Release));
        assert!(task.await.unwrap());
    }

    #[tokio::test]
    async fn a_closed_mailbox_refuses_and_drops_what_waited() {
        let mailbox = Mailbox::new();
        let (tx, rx) = oneshot::channel();
        assert!(mailbox.send(Command::Stop(tx)));
        mailbox.close();
        // The waiting command's reply channel is dropped with it.
        assert!(rx.await.is_err());
        let (tx, rx) = oneshot::channel();
        assert!(!mailbox.send(Command::Stop(tx)));
        assert!(rx.await.is_err());
    }
}
