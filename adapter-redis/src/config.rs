//! [`RedisConfig`]: where the Redis shards are and how patient a node is with
//! them.

use roomcast_adapter::AdapterError;
use std::time::Duration;

/// How a [`crate::RedisAdapter`] reaches Redis and how it behaves when Redis
/// misbehaves. Build it with [`RedisConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// One URL per Redis shard (`redis://host:port/db`). Rooms are spread over
    /// them by consistent hashing; the order matters (shard 0 carries the
    /// node registry and surveys), so every node must list the same URLs in
    /// the same order, and new shards go at the end.
    pub urls: Vec<String>,
    /// This node's id: names its private channels and its registry entry.
    pub node_id: String,
    /// A Redis command that has not answered by then fails with
    /// [`AdapterError::Timeout`] instead of hanging the caller.
    pub command_timeout: Duration,
    /// Opening both connections to a shard (TCP + handshake) may take this long.
    pub connect_timeout: Duration,
    /// How long [`roomcast_adapter::Adapter::survey`] waits for the other
    /// nodes before returning the replies it has.
    pub survey_timeout: Duration,
    /// How often the node refreshes its registry entry.
    pub heartbeat_interval: Duration,
    /// How long a registry entry lives without a refresh: a node killed
    /// without shutdown leaves the node list after at most this long.
    pub node_ttl: Duration,
    /// How often each shard's pub/sub connection is probed with a ping
    /// published through the command connection.
    pub probe_interval: Duration,
    /// A probe not seen back on the pub/sub connection within this long marks
    /// the shard as down and reconnects it.
    pub probe_timeout: Duration,
    /// First delay before reconnecting a lost shard; doubles per failed
    /// attempt, with jitter, up to `reconnect_backoff_max`.
    pub reconnect_backoff_min: Duration,
    /// Longest delay between reconnect attempts.
    pub reconnect_backoff_max: Duration,
    /// Prefix of every key and channel, so several clusters (or other
    /// applications) can share one Redis.
    pub key_prefix: String,
}

impl RedisConfig {
    /// Defaults for the given shard URLs and node id.
    pub fn new(urls: Vec<String>, node_id: impl Into<String>) -> Self {
        Self {
            urls,
            node_id: node_id.into(),
            command_timeout: Duration::from_millis(2500),
            connect_timeout: Duration::from_secs(2),
            survey_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(1),
            node_ttl: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(3),
            reconnect_backoff_min: Duration::from_millis(100),
            reconnect_backoff_max: Duration::from_secs(5),
            key_prefix: "roomcast".into(),
        }
    }

    /// Checks what can be checked without a network, with one message per
    /// problem that names the field.
    pub fn validate(&self) -> Result<(), AdapterError> {
        let bad = |what: String| {
            Err(AdapterError::Unavailable(format!(
                "bad Redis config: {what}"
            )))
        };
        if self.urls.is_empty() {
            return bad("`urls` is empty: give at least one redis:// URL".into());
        }
        for url in &self.urls {
            if let Err(e) = redis::Client::open(url.as_str()) {
                return bad(format!("`urls`: {url:?} is not a Redis URL: {e}"));
            }
        }
        if self.node_id.is_empty() {
            return bad("`node_id` is empty".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return bad(format!(
                "`key_prefix` {:?} must be non-empty and free of braces",
                self.key_prefix
            ));
        }
        for (name, d) in [
            ("command_timeout", self.command_timeout),
            ("connect_timeout", self.connect_timeout),
            ("survey_timeout", self.survey_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("probe_interval", self.probe_interval),
            ("probe_timeout", self.probe_timeout),
            ("reconnect_backoff_min", self.reconnect_backoff_min),
        ] {
            if d.is_zero() {
                return bad(format!("`{name}` must be more than zero"));
            }
        }
        if self.node_ttl <= self.heartbeat_interval {
            return bad(format!(
                "`node_ttl` ({:?}) must be longer than `heartbeat_interval` ({:?})",
                self.node_ttl, self.heartbeat_interval
            ));
        }
        if self.reconnect_backoff_max < self.reconnect_backoff_min {
            return bad("`reconnect_backoff_max` is below `reconnect_backoff_min`".into());
        }
        Ok(())
    }
}
