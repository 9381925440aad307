//! A client's commands that wait on the adapter, in flight together while
//! its front-end goes on reading and writing.
//!
//! The rules, which are what a client can observe:
//!
//! - **Replies leave in command order.** While anything is in flight, every
//!   reply of the client (even one decided at once, such as an error or a
//!   pong) queues here behind the commands before it.
//! - **Publications run together.** A publication fixes its place in its
//!   room's order when it starts ([`roomcast_adapter::Adapter::publish`]
//!   does that before it returns), and operations start in command order, so
//!   one client's publications to a room keep their order however many are
//!   in flight.
//! - **Membership changes are exclusive.** A subscribe or unsubscribe starts
//!   once everything before it has finished, and nothing after it starts
//!   until it has: the client's rooms change in command order, and a
//!   publication sent after a subscribe is sent once the client is in.
//! - **Bounded.** The front-end stops reading from a client whose pipeline
//!   holds `max_pending_commands` operations, so a client that outpaces the
//!   adapter is slowed by TCP instead of growing the node's memory.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use roomcast_adapter::StreamPosition;
use std::collections::VecDeque;
use std::task::{Context, Poll};

use crate::client::Refusal;

/// What a finished operation leaves for its client, applied in command
/// order by [`crate::client::Client::apply`].
pub enum Outcome {
    /// A frame for the client (a reply or an error); empty for none.
    Reply(Bytes),
    /// A subscribe finished: where the room stood, or why it failed.
    Joined {
        /// The room.
        room: String,
        /// Its position when joined, or the refusal to send.
        result: Result<StreamPosition, Refusal>,
        /// The command id the refusal answers.
        id: u64,
    },
    /// An unsubscribe finished; `frame` (maybe empty) goes to the client.
    Left {
        /// The room.
        room: String,
        /// The reply.
        frame: Bytes,
    },
}

/// Starts an operation: called when its turn comes.
type Start = Box<dyn FnOnce() -> BoxFuture<'static, Outcome> + Send>;

/// The futures themselves. Behind a mutex only so that a client (and the
/// front-end holding it) stays `Sync`; every use has `&mut` access and
/// takes them without locking. Made on first use: an idle client, or one
/// whose commands all finish at once (the memory adapter), never has them.
#[derive(Default)]
struct Queues {
    running: FuturesOrdered<BoxFuture<'static, Outcome>>,
    /// Operations that may not start yet, in command order.
    waiting: VecDeque<(bool, Start)>,
}

/// The operations of one client, running or waiting for their turn.
#[derive(Default)]
pub struct Pipeline {
    queues: std::sync::Mutex<Option<Box<Queues>>>,
    running: usize,
    waiting: usize,
    /// The one running operation is exclusive.
    exclusive: bool,
}

impl Pipeline {
    /// Operations running or waiting.
    pub fn len(&self) -> usize {
        self.running + self.waiting
    }

    /// Nothing is in flight: a reply may go straight to the client.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether an operation arriving now could start at once.
    pub fn may_start_now(&self, exclusive: bool) -> bool {
        self.waiting == 0 && self.may_start(exclusive)
    }

    fn may_start(&self, exclusive: bool) -> bool {
        if exclusive {
            self.running == 0
        } else {
            !self.exclusive
        }
    }

    fn queues(&mut self) -> &mut Queues {
        self.queues
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(Box::default)
    }

    /// Adds an operation started already (see [`Pipeline::may_start_now`]).
    pub fn push_started(&mut self, exclusive: bool, fut: BoxFuture<'static, Outcome>) {
        debug_assert!(self.may_start_now(exclusive));
        self.begin(exclusive, fut);
    }

    fn begin(&mut self, exclusive: bool, fut: BoxFuture<'static, Outcome>) {
        self.exclusive = exclusive;
        self.running += 1;
        self.queues().running.push_back(fut);
    }

    /// Adds an operation that starts when its turn comes.
    pub fn push(
        &mut self,
        exclusive: bool,
        start: impl FnOnce() -> BoxFuture<'static, Outcome> + Send + 'static,
    ) {
        if self.may_start_now(exclusive) {
            self.push_started(exclusive, start());
        } else {
            self.waiting += 1;
            self.queues()
                .waiting
                .push_back((exclusive, Box::new(start)));
        }
    }

    /// Queues a reply behind what is in flight.
    pub fn push_reply(&mut self, frame: Bytes) {
        self.push(false, move || {
            Box::pin(std::future::ready(Outcome::Reply(frame)))
        });
    }

    /// The next outcome in command order (pending while the oldest
    /// operation runs; `None` when nothing is in flight). Starts the
    /// operations that were waiting for it.
    pub async fn next(&mut self) -> Option<Outcome> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`Pipeline::next`] for a front-end that polls several pipelines.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        if self.is_empty() {
            return Poll::Ready(None);
        }
        let outcome = match self.queues().running.poll_next_unpin(cx) {
            Poll::Ready(Some(outcome)) => outcome,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        self.running -= 1;
        if self.running == 0 {
            self.exclusive = false;
        }
        while let Some(exclusive) = self.queues().waiting.front().map(|(e, _)| *e) {
            if !self.may_start(exclusive) {
                break;
            }
            let (exclusive, start) = self.queues().waiting.pop_front().expect("front exists");
            self.waiting -= 1;
            self.begin(exclusive, start());
        }
        Poll::Ready(Some(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;

    fn reply(s: &'static str) -> Outcome {
        Outcome::Reply(Bytes::from_static(s.as_bytes()))
    }

    fn text(o: Outcome) -> String {
        match o {
            Outcome::Reply(b) => String::from_utf8(b.to_vec()).unwrap(),
            Outcome::Joined { room, .. } => format!("joined {room}"),
            Outcome::Left { room, .. } => format!("left {room}"),
        }
    }

    /// An operation that records when it starts and finishes when told.
    fn gated(
        log: &Arc<Mutex<Vec<String>>>,
        name: &'static str,
    ) -> (
        oneshot::Sender<()>,
        impl FnOnce() -> BoxFuture<'static, Outcome> + Send + 'static,
    ) {
        let (tx, rx) = oneshot::channel::<()>();
        let log = log.clone();
        let start = move || {
            log.lock().unwrap().push(format!("start {name}"));
            async move {
                let _ = rx.await;
                reply(name)
            }
            .boxed()
        };
        (tx, start)
    }

    #[tokio::test]
    async fn outcomes_come_in_command_order_whatever_finishes_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = Pipeline::default();
        let (a, start_a) = gated(&log, "a");
        let (b, start_b) = gated(&log, "b");
        p.push(false, start_a);
        p.push(false, start_b);
        p.push_reply(Bytes::from_static(b"c"));
        assert_eq!(p.len(), 3);
        // Both publications started at once, in order.
        assert_eq!(*log.lock().unwrap(), ["start a", "start b"]);
        b.send(()).unwrap();
        assert!(p.next().now_or_never().is_none(), "a is still running");
        a.send(()).unwrap();
        assert_eq!(text(p.next().await.unwrap()), "a");
        assert_eq!(text(p.next().await.unwrap()), "b");
        assert_eq!(text(p.next().await.unwrap()), "c");
        assert!(p.is_empty());
        assert!(p.next().await.is_none());
    }

    #[tokio::test]
    async fn an_exclusive_operation_runs_alone_and_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut p = Pipeline::default();
        let (a, start_a) = gated(&log, "a");
        let (s, start_s) = gated(&log, "s");
        let (b, start_b) = gated(&log, "b");
        p.push(false, start_a);
        p.push(true, start_s);
        p.push(false, start_b);
        assert_eq!(*log.lock().unwrap(), ["start a"]);
        assert!(!p.may_start_now(false), "b waits behind s");
        a.send(()).unwrap();
        assert_eq!(text(p.next().await.unwrap()), "a");
        assert_eq!(*log.lock().unwrap(), ["start a", "start s"]);
        s.send(()).unwrap();
        assert_eq!(text(p.next().await.unwrap()), "s");
        assert_eq!(*log.lock().unwrap(), ["start a", "start s", "start b"]);
        b.send(()).unwrap();
        assert_eq!(text(p.next().await.unwrap()), "b");
        assert!(p.is_empty());
        assert!(p.may_start_now(true));
    }
}
