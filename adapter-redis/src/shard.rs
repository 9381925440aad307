//! One Redis shard as a node sees it: a command connection and a pub/sub
//! connection, the rooms subscribed through it, and the task that keeps both
//! connections alive (connect, re-subscribe, receive, probe, back off, retry).

use crate::keys::Incoming;
use crate::publisher::Jobs;
use crate::Inner;
use futures::{FutureExt, StreamExt};
use parking_lot::{Mutex, RwLock};
use rand::Rng;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::AsyncCommands;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::time::{Instant, MissedTickBehavior};

/// How many SUBSCRIBE commands are in flight at once while re-subscribing
/// after a reconnect. Each is a separate command carrying one channel: the
/// client pairs one confirmation with one request, and a multi-channel
/// SUBSCRIBE answers with one confirmation per channel.
const RESUBSCRIBE_CONCURRENCY: usize = 128;

/// Most room events handed to the hub at once.
const DELIVER_BATCH: usize = 256;

/// One shard's connections and rooms.
pub(crate) struct Shard {
    pub url: String,
    pub client: redis::Client,
    /// Commands (scripts, PUBLISH, registry). Cheap to clone: calls clone it
    /// out of the lock and never hold the lock across `.await`. `None` while
    /// the shard is down.
    pub conn: Mutex<Option<MultiplexedConnection>>,
    /// The SUBSCRIBE/UNSUBSCRIBE half of the pub/sub connection.
    pub sink: Mutex<Option<PubSubSink>>,
    /// Rooms this node wants from this shard; re-subscribed after every
    /// reconnect, and the filter that drops events for rooms left meanwhile.
    pub rooms: RwLock<HashSet<String>>,
    /// Both connections are established and the pub/sub one answers probes.
    pub up: AtomicBool,
    /// Publications for this shard's pipeline task.
    pub jobs: Jobs,
}

impl Shard {
    pub fn new(url: String, client: redis::Client, jobs: Jobs) -> Self {
        Self {
            jobs,
            url,
            client,
            conn: Mutex::new(None),
            sink: Mutex::new(None),
            rooms: RwLock::new(HashSet::new()),
            up: AtomicBool::new(false),
        }
    }

    fn set_down(&self) {
        self.up.store(false, Ordering::SeqCst);
        *self.conn.lock() = None;
        *self.sink.lock() = None;
    }
}

struct Connected {
    conn: MultiplexedConnection,
    sink: PubSubSink,
    stream: PubSubStream,
}

/// Keeps shard `index` connected until the adapter stops.
pub(crate) async fn supervise(inner: Arc<Inner>, index: usize) {
    let shard = &inner.shards[index];
    let mut stop = inner.stop.subscribe();
    let min = inner.config.reconnect_backoff_min;
    let mut backoff = min;
    let mut failed_before = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = tokio::time::timeout(inner.config.connect_timeout, connect(&inner, index));
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(Ok(connected)) => {
                if failed_before {
                    inner.metrics.reconnects.increment(1);
                    tracing::info!(shard = index, url = %shard.url, "Redis shard reconnected");
                }
                backoff = min;
                let reason = tokio::select! {
                    reason = serve(&inner, index, connected) => reason,
                    _ = stop.changed() => {
                        shard.set_down();
                        return;
                    }
                };
                shard.set_down();
                inner.refresh_health();
                tracing::warn!(shard = index, url = %shard.url, %reason, "Redis shard lost; reconnecting");
            }
            Ok(Err(e)) => {
                tracing::warn!(shard = index, url = %shard.url, error = %e, "cannot connect to Redis shard");
            }
            Err(_) => {
                tracing::warn!(
                    shard = index,
                    url = %shard.url,
                    "connecting to Redis shard timed out after {:?}",
                    inner.config.connect_timeout
                );
            }
        }
        failed_before = true;
        // Full jitter over the upper half keeps a cluster of nodes that lost
        // the same Redis from reconnecting in lockstep.
        let wait = rand::thread_rng().gen_range(backoff / 2..=backoff);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(inner.config.reconnect_backoff_max);
    }
}

async fn connect(inner: &Inner, index: usize) -> redis::RedisResult<Connected> {
    let shard = &inner.shards[index];
    let config =
        redis::AsyncConnectionConfig::new().set_connection_timeout(inner.config.connect_timeout);
    let mut conn = shard
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if let Err(e) = inner.load_scripts(&mut conn).await {
        return Err(redis::RedisError::from((
            redis::ErrorKind::ResponseError,
            "cannot load the publish script",
            e.to_string(),
        )));
    }
    let (mut sink, stream) = shard.client.get_async_pubsub().await?.split();
    sink.subscribe(&inner.names.ping).await?;
    if index == 0 {
        sink.subscribe(&inner.names.survey).await?;
        sink.subscribe(&inner.names.reply).await?;
    }
    Ok(Connected { conn, sink, stream })
}

/// Runs one established connection pair until it fails; returns why.
async fn serve(inner: &Arc<Inner>, index: usize, c: Connected) -> String {
    let shard = &inner.shards[index];
    *shard.conn.lock() = Some(c.conn.clone());
    *shard.sink.lock() = Some(c.sink.clone());
    // Rooms subscribed from here on go through the new sink; rooms already
    // wanted are re-subscribed below (a room in both is subscribed twice,
    // which Redis treats as once).
    let rooms: Vec<String> = shard.rooms.read().iter().cloned().collect();
    let count = rooms.len();
    let timeout = inner.config.command_timeout;
    let failures = futures::stream::iter(rooms)
        .map(|room| {
            let mut sink = c.sink.clone();
            let channel = inner.names.room_channel(&room);
            async move { tokio::time::timeout(timeout, sink.subscribe(channel)).await }
        })
        .buffer_unordered(RESUBSCRIBE_CONCURRENCY)
        .filter(|r| futures::future::ready(!matches!(r, Ok(Ok(())))))
        .count()
        .await;
    if failures > 0 {
        return format!("{failures} of {count} rooms could not be re-subscribed");
    }
    if count > 0 {
        tracing::info!(shard = index, rooms = count, "re-subscribed rooms");
    }
    shard.up.store(true, Ordering::SeqCst);
    inner.refresh_health();

    let probe_every = inner.config.probe_interval;
    let probe_grace = inner.config.probe_timeout;
    let mut probe = tokio::time::interval(probe_every);
    probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_pong = Instant::now();
    let mut stream = c.stream;
    let mut batch = Vec::with_capacity(DELIVER_BATCH);
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return "pub/sub connection closed".into();
                };
                // Everything already received goes to the hub together.
                let mut next = Some(msg);
                let mut ended = false;
                while let Some(msg) = next.take() {
                    match inner.names.classify(msg.get_channel_name()) {
                        Incoming::Room => inner.decode_room(shard, msg.get_payload_bytes(), &mut batch),
                        Incoming::Ping => last_pong = Instant::now(),
                        Incoming::Survey => inner.on_survey(msg.get_payload_bytes()),
                        Incoming::Reply => inner.on_reply(msg.get_payload_bytes()),
                        Incoming::Other => inner.metrics.dropped.increment(1),
                    }
                    if batch.len() < DELIVER_BATCH {
                        match stream.next().now_or_never() {
                            Some(Some(m)) => next = Some(m),
                            Some(None) => ended = true,
                            None => {}
                        }
                    }
                }
                inner.deliver(&mut batch);
                if ended {
                    return "pub/sub connection closed".into();
                }
            }
            _ = probe.tick() => {
                if last_pong.elapsed() > probe_every + probe_grace {
                    return format!(
                        "liveness probe not seen back within {:?}",
                        probe_every + probe_grace
                    );
                }
                // Sent from a task of its own so a hung command connection
                // cannot stall delivery; the timeout bounds how many pile up.
                let mut conn = c.conn.clone();
                let channel = inner.names.ping.clone();
                tokio::spawn(async move {
                    let sent = conn.publish::<_, _, i64>(channel, "ping");
                    let _ = tokio::time::timeout(probe_grace, sent).await;
                });
            }
        }
    }
}
