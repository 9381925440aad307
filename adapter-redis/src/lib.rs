//! `RedisAdapter`: Roomcast nodes sharing publications, history and
//! membership through one or more Redis servers.
//!
//! - **Fan-out**: each node keeps one pub/sub connection per Redis shard and
//!   SUBSCRIBEs the channel of every room it has local subscribers in. A
//!   publication travels as one protobuf `RoomEnvelope`.
//! - **Order and history**: one Lua script per publication assigns the
//!   room's next offset, appends it to the room's stream (trimmed to the
//!   namespace's history size, expiring after its history ttl), records the
//!   idempotency key and PUBLISHes the envelope. Redis runs scripts one at a
//!   time, so every node sees a room's publications in offset order, and
//!   each shard's receive task hands them to the [`Handler`] in that order.
//! - **Sharding**: rooms are spread over the configured URLs by jump
//!   consistent hashing of the room name; the node registry and surveys live
//!   on shard 0.
//! - **Faults**: every command is bounded by `command_timeout`; each shard is
//!   probed through its own pub/sub connection and reconnected with
//!   exponential backoff and jitter; rooms are re-subscribed after a
//!   reconnect; [`Adapter::health`] is false while any shard is down.
//! - **Metrics**: publish duration, pub/sub lag, reconnects and dropped
//!   messages go through the `metrics` facade. Their handles are registered
//!   by [`RedisAdapter::connect`], so they report to the recorder installed
//!   (globally, or for the thread) when `connect` is first polled.
//!
//! The key layout, channels, scripts and the state of Redis Cluster support
//! are described in the crate's README.

mod codec;
mod config;
mod keys;
mod metrics;
mod publisher;
mod scripts;
mod shard;

pub mod testing;

pub use config::RedisConfig;

use async_trait::async_trait;
use bytes::Bytes;
use keys::{shard_of, Names};
use metrics::Metrics;
use parking_lot::Mutex;
use redis::AsyncCommands;
use roomcast_adapter::{
    now_unix_micros, Accepting, Adapter, AdapterError, Handler, HistoryQuery, HistoryResult,
    NodeInfo, NodeReply, NodeRequest, PresenceEvent, PublishRequest, PublishResult, RoomEvent,
    StreamPosition,
};
use roomcast_proto::v1 as pb;
use scripts::Scripts;
use shard::Shard;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Surveys received and not yet answered; more are dropped (and counted).
const SURVEY_QUEUE: usize = 1024;
/// Replies one survey may gather; more are dropped (and counted).
const SURVEY_REPLIES: usize = 4096;

/// The Redis adapter. Build it with [`RedisAdapter::connect`], then
/// [`Adapter::start`] it with the node's handler.
///
/// Dropping it without [`Adapter::shutdown`] stops its background work too,
/// but leaves its registry entry to expire after `node_ttl`, as a crashed
/// node would.
pub struct RedisAdapter {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    surveys_out: Mutex<Option<mpsc::Receiver<codec::Survey>>>,
}

/// State shared by the adapter and its background tasks.
pub(crate) struct Inner {
    config: RedisConfig,
    names: Names,
    shards: Vec<Shard>,
    scripts: Scripts,
    handler: OnceLock<Arc<dyn Handler>>,
    health: watch::Sender<bool>,
    metrics: Metrics,
    /// Open surveys of this node: id -> where their replies go.
    pending: Mutex<HashMap<u64, mpsc::Sender<NodeReply>>>,
    next_survey: AtomicU64,
    /// Received surveys, to the task that asks the handler and answers.
    surveys_in: mpsc::Sender<codec::Survey>,
    /// Set once, by shutdown or drop; background tasks watch it.
    stop: watch::Sender<bool>,
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapter")
            .field("node_id", &self.inner.config.node_id)
            .field("urls", &self.inner.config.urls)
            .finish_non_exhaustive()
    }
}

fn from_redis(e: redis::RedisError) -> AdapterError {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        AdapterError::Unavailable(e.to_string())
    } else {
        AdapterError::Protocol(e.to_string())
    }
}

impl Inner {
    fn check_open(&self) -> Result<(), AdapterError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(AdapterError::Closed)
        } else {
            Ok(())
        }
    }

    /// The command connection of a shard, or why there is none.
    fn conn(&self, index: usize) -> Result<redis::aio::MultiplexedConnection, AdapterError> {
        let shard = &self.shards[index];
        shard.conn.lock().clone().ok_or_else(|| {
            AdapterError::Unavailable(format!("Redis shard {index} ({}) is down", shard.url))
        })
    }

    /// Runs a Redis call with the command timeout.
    async fn timed<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, AdapterError> {
        match tokio::time::timeout(self.config.command_timeout, call).await {
            Ok(result) => result.map_err(from_redis),
            Err(_) => Err(AdapterError::Timeout(self.config.command_timeout)),
        }
    }

    /// Loads the publish script on a shard (at connect, and when Redis
    /// answers `NOSCRIPT`): publications are sent by its hash alone.
    pub(crate) async fn load_scripts(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(), AdapterError> {
        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(scripts::PUBLISH);
        let hash: String = self.timed(load.query_async(conn)).await?;
        if hash != self.scripts.publish.get_hash() {
            return Err(AdapterError::Protocol(format!(
                "Redis hashed the publish script as {hash}, not {}",
                self.scripts.publish.get_hash()
            )));
        }
        Ok(())
    }

    fn refresh_health(&self) {
        let up = !self.closed.load(Ordering::SeqCst)
            && self.shards.iter().all(|s| s.up.load(Ordering::SeqCst));
        self.health.send_if_modified(|now| {
            let changed = *now != up;
            *now = up;
            changed
        });
    }

    /// A room envelope arrived on `shard`'s pub/sub connection: decodes it
    /// into `batch`, or counts it dropped.
    fn decode_room(&self, shard: &Shard, payload: &[u8], batch: &mut Vec<(String, RoomEvent)>) {
        if self.handler.get().is_none() {
            self.metrics.dropped.increment(1);
            return;
        }
        let (room, event, time) = match codec::decode_envelope(Bytes::copy_from_slice(payload)) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.dropped.increment(1);
                tracing::debug!(error = %e, "dropped a room envelope");
                return;
            }
        };
        if !shard.rooms.read().contains(&room) {
            self.metrics.dropped.increment(1);
            return;
        }
        if time > 0 {
            let lag = (now_unix_micros() - time).max(0) as f64 / 1e6;
            self.metrics.lag.record(lag);
        }
        batch.push((room, event));
    }

    /// Hands what one wake-up brought to the handler.
    fn deliver(&self, batch: &mut Vec<(String, RoomEvent)>) {
        if batch.is_empty() {
            return;
        }
        if let Some(handler) = self.handler.get() {
            handler.on_room_events(std::mem::take(batch));
        }
    }

    fn on_survey(&self, payload: &[u8]) {
        match codec::decode_survey(payload) {
            Ok(survey) => {
                if self.surveys_in.try_send(survey).is_err() {
                    self.metrics.dropped.increment(1);
                }
            }
            Err(e) => {
                self.metrics.dropped.increment(1);
                tracing::debug!(error = %e, "dropped a survey");
            }
        }
    }

    fn on_reply(&self, payload: &[u8]) {
        let (id, reply) = match codec::decode_reply(payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.metrics.dropped.increment(1);
                tracing::debug!(error = %e, "dropped a survey reply");
                return;
            }
        };
        let to = self.pending.lock().get(&id).cloned();
        match to {
            Some(to) if to.try_send(reply).is_ok() => {}
            // A late reply to a survey that already gave up.
            _ => {
                self.metrics.dropped.increment(1);
            }
        }
    }

    /// Writes this node's registry entry.
    async fn heartbeat(&self, handler: &dyn Handler) -> Result<(), AdapterError> {
        let mut info = handler.node_info();
        if info.id.is_empty() {
            info.id = self.config.node_id.clone();
        }
        let mut conn = self.conn(0)?;
        let mut call = self.scripts.heartbeat.prepare_invoke();
        call.key(&self.names.nodes)
            .key(self.names.node_info(&self.config.node_id))
            .arg(&self.config.node_id)
            .arg(codec::encode_node(&info))
            .arg(self.config.node_ttl.as_millis() as u64);
        self.timed(call.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Answers surveys, one at a time, until the adapter stops.
    async fn answer_surveys(self: Arc<Self>, mut surveys: mpsc::Receiver<codec::Survey>) {
        while let Some(survey) = surveys.recv().await {
            let Some(handler) = self.handler.get() else {
                continue;
            };
            let reply = handler.on_request(&survey.request);
            let payload = codec::encode_reply(survey.id, &self.config.node_id, &reply);
            let Ok(mut conn) = self.conn(0) else {
                continue;
            };
            let sent = conn.publish::<_, _, i64>(survey.reply_channel, payload);
            if let Err(e) = self.timed(sent).await {
                tracing::debug!(error = %e, "could not answer a survey");
            }
        }
    }

    /// Refreshes the registry entry every `heartbeat_interval`.
    async fn keep_registered(self: Arc<Self>, handler: Arc<dyn Handler>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.heartbeat(handler.as_ref()).await {
                tracing::debug!(error = %e, "node heartbeat failed");
            }
        }
    }
}

/// Removes an open survey when its caller returns or is cancelled.
struct PendingSurvey<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingSurvey<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().remove(&self.id);
    }
}

impl RedisAdapter {
    /// Builds the adapter and starts connecting to every shard.
    ///
    /// A bad configuration (no URLs, a malformed URL, zero timeouts) is an
    /// error. An unreachable Redis is not: the adapter waits up to
    /// `connect_timeout` for every shard, then returns anyway, unhealthy
    /// ([`Adapter::health`] false) and retrying in the background, so a node
    /// can come up before its Redis and report not-ready until it is there.
    pub async fn connect(config: RedisConfig) -> Result<Self, AdapterError> {
        config.validate()?;
        let mut shards = Vec::with_capacity(config.urls.len());
        let mut queues = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let client = redis::Client::open(url.as_str())
                .map_err(|e| AdapterError::Unavailable(format!("bad Redis URL {url:?}: {e}")))?;
            let (jobs, queue) = mpsc::unbounded_channel();
            shards.push(Shard::new(url.clone(), client, jobs));
            queues.push(queue);
        }
        let (surveys_in, surveys_out) = mpsc::channel(SURVEY_QUEUE);
        let inner = Arc::new(Inner {
            names: Names::new(&config.key_prefix, &config.node_id),
            shards,
            scripts: Scripts::new(),
            handler: OnceLock::new(),
            health: watch::channel(false).0,
            metrics: Metrics::new(),
            pending: Mutex::new(HashMap::new()),
            next_survey: AtomicU64::new(1),
            surveys_in,
            stop: watch::channel(false).0,
            closed: AtomicBool::new(false),
            config,
        });
        let mut tasks: Vec<JoinHandle<()>> = (0..inner.shards.len())
            .map(|i| tokio::spawn(shard::supervise(inner.clone(), i)))
            .collect();
        for (i, queue) in queues.into_iter().enumerate() {
            tasks.push(tokio::spawn(publisher::run(inner.clone(), i, queue)));
        }
        let adapter = Self {
            inner,
            tasks: Mutex::new(tasks),
            surveys_out: Mutex::new(Some(surveys_out)),
        };
        let mut health = adapter.inner.health.subscribe();
        let wait = adapter.inner.config.connect_timeout;
        if tokio::time::timeout(wait, health.wait_for(|up| *up))
            .await
            .is_err()
        {
            tracing::warn!(
                urls = ?adapter.inner.config.urls,
                "Redis not reachable within {wait:?}; starting unhealthy and retrying"
            );
        }
        Ok(adapter)
    }

    /// The configuration in force.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The shard (index into [`RedisConfig::urls`]) that holds `room`.
    pub fn shard_of(&self, room: &str) -> usize {
        shard_of(room, self.inner.shards.len())
    }

    fn stop_tasks(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        self.inner.stop.send_replace(true);
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        for shard in &self.inner.shards {
            shard.up.store(false, Ordering::SeqCst);
            *shard.conn.lock() = None;
            *shard.sink.lock() = None;
        }
        self.inner.refresh_health();
    }
}

impl Drop for RedisAdapter {
    fn drop(&mut self) {
        self.stop_tasks();
    }
}

#[async_trait]
impl Adapter for RedisAdapter {
    async fn start(&self, handler: Arc<dyn Handler>) -> Result<(), AdapterError> {
        self.inner.check_open()?;
        if self.inner.handler.set(handler.clone()).is_err() {
            return Err(AdapterError::Protocol("adapter started twice".into()));
        }
        // Register at once (best effort) so the node is listed before the
        // first tick; the heartbeat task keeps trying if Redis is away.
        if let Err(e) = self.inner.heartbeat(handler.as_ref()).await {
            tracing::warn!(error = %e, "first node heartbeat failed; retrying");
        }
        let surveys = self.surveys_out.lock().take();
        let mut tasks = self.tasks.lock();
        if let Some(surveys) = surveys {
            tasks.push(tokio::spawn(self.inner.clone().answer_surveys(surveys)));
        }
        tasks.push(tokio::spawn(self.inner.clone().keep_registered(handler)));
        Ok(())
    }

    fn publish(&self, request: PublishRequest) -> Accepting {
        let inner = self.inner.clone();
        if let Err(e) = inner.check_open() {
            return Box::pin(std::future::ready(Err(e)));
        }
        let started = Instant::now();
        let index = self.shard_of(&request.room);
        let channel = inner.names.room_channel(&request.room);
        let publication = pb::Publication {
            offset: 0,
            event: request.event,
            data: request.data,
            binary: request.binary,
            time_unix_micros: now_unix_micros(),
        };
        let scripted = request.history.enabled();
        let cmd = if !scripted {
            // No history, no script: one PUBLISH, and nothing kept.
            let payload = codec::publication_envelope(
                &request.room,
                publication,
                "",
                &request.exclude_client_id,
            );
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(payload);
            cmd
        } else {
            let parts =
                codec::envelope_parts(&request.room, publication, &request.exclude_client_id);
            let idempotent = !request.idempotency_key.is_empty();
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(inner.scripts.publish.get_hash())
                .arg(3)
                .arg(inner.names.meta(&request.room))
                .arg(inner.names.history(&request.room))
                .arg(
                    inner
                        .names
                        .idempotency(&request.room, &request.idempotency_key),
                )
                .arg(channel)
                .arg(roomcast_adapter::new_epoch())
                .arg(request.history.size)
                .arg(request.history.ttl.as_millis().max(1) as u64)
                .arg(if idempotent { "1" } else { "0" })
                .arg(parts.room_field)
                .arg(parts.publication)
                .arg(parts.exclude_field);
            cmd
        };
        let (reply, answer) = oneshot::channel();
        let job = publisher::Job { cmd, reply };
        if inner.shards[index].jobs.send(job).is_err() {
            return Box::pin(std::future::ready(Err(AdapterError::Closed)));
        }
        inner.metrics.publish_queue.increment(1.0);
        Box::pin(async move {
            let value = answer.await.map_err(|_| AdapterError::Closed)??;
            let result = if scripted {
                let (offset, epoch) = scripts::parse_publish(&value)?;
                PublishResult { offset, epoch }
            } else {
                PublishResult {
                    offset: 0,
                    epoch: String::new(),
                }
            };
            inner
                .metrics
                .publish_duration
                .record(started.elapsed().as_secs_f64());
            Ok(result)
        })
    }

    async fn publish_presence_event(
        &self,
        room: &str,
        event: PresenceEvent,
    ) -> Result<(), AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut conn = inner.conn(self.shard_of(room))?;
        let payload = codec::presence_envelope(room, &event);
        inner
            .timed(conn.publish::<_, _, i64>(inner.names.room_channel(room), payload))
            .await?;
        Ok(())
    }

    async fn subscribe(&self, room: &str) -> Result<(), AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let index = self.shard_of(room);
        let shard = &inner.shards[index];
        let added = shard.rooms.write().insert(room.to_owned());
        let sink = shard.sink.lock().clone();
        let result = match sink {
            Some(mut sink) => {
                inner
                    .timed(sink.subscribe(inner.names.room_channel(room)))
                    .await
            }
            None => Err(AdapterError::Unavailable(format!(
                "Redis shard {index} ({}) is down",
                shard.url
            ))),
        };
        if result.is_err() && added {
            // The caller sees the failure and will not count the room as
            // subscribed, so neither does the next reconnect.
            shard.rooms.write().remove(room);
        }
        result
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let shard = &inner.shards[self.shard_of(room)];
        // Forgetting the room is what counts: its events are dropped from now
        // on, and a reconnect will not subscribe it again. The UNSUBSCRIBE is
        // housekeeping; if Redis is away, the lost connection already did it.
        shard.rooms.write().remove(room);
        let sink = shard.sink.lock().clone();
        if let Some(mut sink) = sink {
            let channel = inner.names.room_channel(room);
            if let Err(e) = inner.timed(sink.unsubscribe(channel)).await {
                tracing::debug!(room, error = %e, "UNSUBSCRIBE failed");
            }
        }
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        query: HistoryQuery,
    ) -> Result<HistoryResult, AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        if !query.options.enabled() {
            // Nothing is kept, so there is nothing to ask Redis: a client can
            // only be "recovered" if it knew of nothing either.
            let recovered = match &query.since {
                None => true,
                Some(s) => s.offset == 0 && s.epoch.is_empty(),
            };
            return Ok(HistoryResult {
                publications: Vec::new(),
                position: StreamPosition::default(),
                recovered,
            });
        }
        let mut conn = inner.conn(self.shard_of(room))?;
        let (since, since_epoch) = match &query.since {
            Some(s) => (s.offset.to_string(), s.epoch.clone()),
            None => (String::new(), String::new()),
        };
        let limit = query.limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let mut call = inner.scripts.history.prepare_invoke();
        call.key(inner.names.meta(room))
            .key(inner.names.history(room))
            .arg(roomcast_adapter::new_epoch())
            .arg(query.options.ttl.as_millis().max(1) as u64)
            .arg(since)
            .arg(since_epoch)
            .arg(limit)
            .arg(query.options.size);
        let reply: redis::Value = inner.timed(call.invoke_async(&mut conn)).await?;
        let found = scripts::parse_history(&reply)?;
        let publications = found
            .publications
            .iter()
            .map(|p| codec::decode_publication(p))
            .collect::<Result<Vec<_>, _>>()?;
        let recovered = match &query.since {
            None => true,
            Some(s) if s.epoch != found.epoch || s.offset > found.offset => false,
            Some(s) => {
                let oldest_needed = s.offset + 1;
                oldest_needed > found.offset || (found.oldest != 0 && found.oldest <= oldest_needed)
            }
        };
        Ok(HistoryResult {
            publications,
            position: StreamPosition {
                epoch: found.epoch,
                offset: found.offset,
            },
            recovered,
        })
    }

    async fn survey(&self, request: NodeRequest) -> Result<Vec<NodeReply>, AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let id = inner.next_survey.fetch_add(1, Ordering::Relaxed);
        let (to, mut replies_in) = mpsc::channel(SURVEY_REPLIES);
        inner.pending.lock().insert(id, to);
        let _pending = PendingSurvey { inner, id };
        let mut conn = inner.conn(0)?;
        let payload = codec::encode_survey(id, &inner.names.reply, &request);
        // PUBLISH answers with how many connections received the survey: one
        // per live node, this one included. That is who will answer, without
        // waiting on nodes that died but are still within their registry ttl.
        let listeners: i64 = inner
            .timed(conn.publish(&inner.names.survey, payload))
            .await?;
        let expected = usize::try_from(listeners).unwrap_or(0);
        let deadline = tokio::time::Instant::now() + inner.config.survey_timeout;
        let mut replies = Vec::with_capacity(expected);
        while replies.len() < expected {
            match tokio::time::timeout_at(deadline, replies_in.recv()).await {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) | Err(_) => break,
            }
        }
        if replies.len() < expected {
            tracing::debug!(
                expected,
                got = replies.len(),
                "survey timed out with missing replies"
            );
        }
        Ok(replies)
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut conn = inner.conn(0)?;
        let mut call = inner.scripts.nodes.prepare_invoke();
        call.key(&inner.names.nodes)
            .arg(inner.names.node_info_prefix());
        let reply: redis::Value = inner.timed(call.invoke_async(&mut conn)).await?;
        scripts::parse_nodes(&reply)?
            .iter()
            .map(|n| codec::decode_node(n))
            .collect()
    }

    async fn keep(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut conn = inner.conn(self.shard_of(key))?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(inner.names.kept(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(ttl_ms);
        inner.timed(cmd.query_async::<()>(&mut conn)).await
    }

    async fn take_kept(&self, key: &str) -> Result<Option<Bytes>, AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut conn = inner.conn(self.shard_of(key))?;
        let name = inner.names.kept(key);
        // GET and DEL in one transaction: two nodes asking at once cannot
        // both take it (GETDEL would need Redis 6.2).
        let mut pipe = redis::pipe();
        pipe.atomic().get(&name).del(&name).ignore();
        let (value,): (Option<Vec<u8>>,) = inner.timed(pipe.query_async(&mut conn)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn forget_kept(&self, key: &str) -> Result<(), AdapterError> {
        let inner = &self.inner;
        inner.check_open()?;
        let mut conn = inner.conn(self.shard_of(key))?;
        let mut cmd = redis::cmd("DEL");
        cmd.arg(inner.names.kept(key));
        inner.timed(cmd.query_async::<()>(&mut conn)).await
    }

    fn health(&self) -> watch::Receiver<bool> {
        self.inner.health.subscribe()
    }

    async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // Stop the heartbeat before deregistering, so that no refresh can
        // land after the entry is removed.
        let conn = inner.conn(0);
        self.stop_tasks();
        if let Ok(mut conn) = conn {
            let mut pipe = redis::pipe();
            pipe.srem(&inner.names.nodes, &inner.config.node_id)
                .del(inner.names.node_info(&inner.config.node_id));
            if let Err(e) = inner.timed(pipe.query_async::<()>(&mut conn)).await {
                tracing::warn!(error = %e, "could not deregister the node; it will expire");
            }
        }
    }
}
