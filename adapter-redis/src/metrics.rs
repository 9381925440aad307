//! The adapter's metrics, emitted through the `metrics` facade to whatever
//! recorder the process installed (the `roomcast` binary installs the
//! Prometheus one). Handles are registered once, when the adapter is built;
//! counters carry their exposition names, `_total` included.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};

/// Histogram: time of one publish round trip to Redis.
const PUBLISH_DURATION: &str = "roomcast_adapter_publish_duration_seconds";
/// Counter: reconnections of a shard after a loss.
const RECONNECTS: &str = "roomcast_adapter_reconnects_total";
/// Counter: messages received from Redis and thrown away.
const MESSAGES_DROPPED: &str = "roomcast_adapter_messages_dropped_total";
/// Gauge: publications queued for their shard's next pipeline.
const PUBLISH_QUEUE: &str = "roomcast_adapter_publish_queue";
/// Histogram: publications sent to Redis in one pipeline.
const PUBLISH_BATCH: &str = "roomcast_adapter_publish_batch_size";
/// Histogram: from acceptance (the envelope's time) to arrival on this node.
const PUBSUB_LAG: &str = "roomcast_adapter_pubsub_lag_seconds";

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
    /// Publications queued for their shard's next pipeline.
    pub publish_queue: Gauge,
    /// Publications per pipeline.
    pub publish_batch: Histogram,
}

impl Metrics {
    /// Describes and registers the metrics with the current recorder.
    pub fn new() -> Self {
        describe_histogram!(
            PUBLISH_DURATION,
            "Time to accept one publication in Redis: its wait for a pipeline and the round trip."
        );
        describe_counter!(
            RECONNECTS,
            "Reconnections to a Redis shard after its connection was lost."
        );
        describe_counter!(
            MESSAGES_DROPPED,
            "Messages received from Redis and dropped (undecodable, for rooms no longer subscribed, or queues full)."
        );
        describe_histogram!(
            PUBSUB_LAG,
            "From a publication's acceptance to its arrival on this node through Redis pub/sub."
        );
        describe_gauge!(
            PUBLISH_QUEUE,
            "Publications waiting for their Redis shard's next pipeline."
        );
        describe_histogram!(
            PUBLISH_BATCH,
            "Publications sent to Redis in one pipeline (one round trip)."
        );
        Self {
            publish_queue: gauge!(PUBLISH_QUEUE),
            publish_batch: histogram!(PUBLISH_BATCH),
            publish_duration: histogram!(PUBLISH_DURATION),
            reconnects: counter!(RECONNECTS),
            dropped: counter!(MESSAGES_DROPPED),
            lag: histogram!(PUBSUB_LAG),
        }
    }
}
