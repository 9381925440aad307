//! The adapter's Prometheus metrics.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Handles to the adapter's metrics; cloning shares them.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// Time of one publish round trip to Redis.
    pub publish_duration: Histogram,
    /// Successful reconnections of a shard after a loss.
    pub reconnects: Counter,
    /// Messages received and thrown away.
    pub dropped: Counter,
    /// From acceptance (the envelope's time) to arrival on this node.
    pub lag: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            // 100 µs .. ~3.3 s
            publish_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            reconnects: Counter::default(),
            dropped: Counter::default(),
            lag: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "roomcast_adapter_publish_duration_seconds",
            "Time to accept one publication in Redis (script round trip)",
            self.publish_duration.clone(),
        );
        registry.register(
            "roomcast_adapter_reconnects",
            "Reconnections to a Redis shard after its connection was lost",
            self.reconnects.clone(),
        );
        registry.register(
            "roomcast_adapter_messages_dropped",
            "Messages received from Redis and dropped (undecodable, for rooms no longer subscribed, or queues full)",
            self.dropped.clone(),
        );
        registry.register(
            "roomcast_adapter_pubsub_lag_seconds",
            "From a publication's acceptance to its arrival on this node through Redis pub/sub",
            self.lag.clone(),
        );
    }
}
