//! The publications of one shard, many per round trip.
//!
//! [`crate::RedisAdapter`]'s `publish` builds its command (a `PUBLISH` for a
//! room without history, the publish script otherwise) and queues it here
//! before it returns, which is what fixes a publication's place in its
//! room's order. One task per shard takes everything queued (up to
//! [`MAX_BATCH`]), sends it as one pipeline, and answers each caller. One
//! pipeline is in flight per shard at a time: the next batch fills while
//! Redis works, so batches grow with the load and a saturated node spends
//! one round trip on hundreds of publications.
//!
//! Redis runs a connection's commands in the order they arrive, so the
//! pipeline's order is the order of acceptance. A script Redis no longer
//! has (`NOSCRIPT`, after `SCRIPT FLUSH`) is loaded again and the commands
//! that missed it are sent again, before the next batch: they did not run,
//! so nothing is published twice and nothing overtakes them.

use crate::Inner;
use roomcast_adapter::AdapterError;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most publications sent in one pipeline.
pub(crate) const MAX_BATCH: usize = 512;

/// One queued publication.
pub(crate) struct Job {
    /// The command, built and packed by `publish`.
    pub cmd: redis::Cmd,
    /// Where Redis's answer goes (the caller may have stopped waiting).
    pub reply: oneshot::Sender<Result<redis::Value, AdapterError>>,
}

/// The sending half, kept by the shard.
pub(crate) type Jobs = mpsc::UnboundedSender<Job>;

/// Sends shard `index`'s queued publications until the adapter stops.
pub(crate) async fn run(inner: Arc<Inner>, index: usize, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        if jobs.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        inner.metrics.publish_queue.decrement(batch.len() as f64);
        inner.metrics.publish_batch.record(batch.len() as f64);
        send(&inner, index, std::mem::take(&mut batch)).await;
        batch.reserve(MAX_BATCH);
    }
}

/// Sends one batch and answers every job in it.
async fn send(inner: &Inner, index: usize, batch: Vec<Job>) {
    let (mut pipe, mut replies) = pipeline(batch);
    let mut conn = match inner.conn(index) {
        Ok(conn) => conn,
        Err(e) => return answer_all(replies, || clone_error(&e)),
    };
    // At most one retry: the script is loaded in between.
    for attempt in 0..2 {
        let count = replies.len();
        let values = match inner
            .timed(conn.send_packed_commands(&pipe, 0, count))
            .await
        {
            Ok(values) if values.len() == count => values,
            Ok(values) => {
                let e = AdapterError::Protocol(format!(
                    "{count} publications sent, {} answers",
                    values.len()
                ));
                return answer_all(replies, || clone_error(&e));
            }
            Err(e) => return answer_all(replies, || clone_error(&e)),
        };
        let mut again = redis::pipe();
        let mut again_replies = Vec::new();
        for ((value, reply), cmd) in values.into_iter().zip(replies).zip(pipe.cmd_iter()) {
            match value {
                redis::Value::ServerError(e) if attempt == 0 && e.code() == "NOSCRIPT" => {
                    again.add_command(cmd.clone());
                    again_replies.push(reply);
                }
                redis::Value::ServerError(e) => {
                    let _ = reply.send(Err(AdapterError::Protocol(format!(
                        "Redis refused a publication: {} {}",
                        e.code(),
                        e.details().unwrap_or_default()
                    ))));
                }
                value => {
                    let _ = reply.send(Ok(value));
                }
            }
        }
        if again_replies.is_empty() {
            return;
        }
        tracing::info!(
            shard = index,
            publications = again_replies.len(),
            "Redis lost the publish script; loading it and sending again"
        );
        if let Err(e) = inner.load_scripts(&mut conn).await {
            return answer_all(again_replies, || clone_error(&e));
        }
        pipe = again;
        replies = again_replies;
    }
}

type Reply = oneshot::Sender<Result<redis::Value, AdapterError>>;

fn pipeline(batch: Vec<Job>) -> (redis::Pipeline, Vec<Reply>) {
    let mut pipe = redis::Pipeline::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        pipe.add_command(job.cmd);
        replies.push(job.reply);
    }
    (pipe, replies)
}

fn answer_all(replies: Vec<Reply>, error: impl Fn() -> AdapterError) {
    for reply in replies {
        let _ = reply.send(Err(error()));
    }
}

/// `AdapterError` holds no clonable source; its variants carry text.
fn clone_error(e: &AdapterError) -> AdapterError {
    match e {
        AdapterError::Unavailable(s) => AdapterError::Unavailable(s.clone()),
        AdapterError::Timeout(d) => AdapterError::Timeout(*d),
        AdapterError::Protocol(s) => AdapterError::Protocol(s.clone()),
        AdapterError::Closed => AdapterError::Closed,
    }
}
