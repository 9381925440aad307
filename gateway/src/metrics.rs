//! The node's metrics, emitted through the `metrics` facade. Every handle is
//! registered once, in [`Metrics::new`]; the hot path only increments atomics
//! (no name lookup, label formatting or allocation per message). Labelled
//! families whose label values the code knows are registered up front, one
//! series per value, so they read 0 before their first event.
//!
//! Whatever recorder is installed receives them: the `roomcast` binary
//! installs the Prometheus one ([`prometheus_builder`]) and `/metrics`
//! renders it. Counters are registered under their exposition names, `_total`
//! included, since the Prometheus exporter adds no suffix of its own.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};

/// Upper bounds of the latency histograms, in seconds: 0.0001 × 2^k for
/// k = 0..16, so 100 µs up to about 3.3 s.
pub fn latency_buckets() -> Vec<f64> {
    (0..16).map(|k| 0.0001 * f64::from(1u32 << k)).collect()
}

/// How the `roomcast` binary's Prometheus recorder is built: every latency
/// histogram (the node's and its adapter's, in seconds) gets
/// [`latency_buckets`] and every `…_batch_size` one [`size_buckets`], rather than the exporter's default of a summary,
/// which could not be aggregated across nodes. The caller installs it
/// (`install_recorder`) and hands the handle to [`crate::run`].
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(&latency_buckets())
        .expect("the bucket list is not empty")
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_batch_size".into()),
            &size_buckets(),
        )
        .expect("the bucket list is not empty")
}

/// Upper bounds of the size histograms (`…_batch_size`): 1, 2, 4, … 1024.
pub fn size_buckets() -> Vec<f64> {
    (0..11).map(|k| f64::from(1u32 << k)).collect()
}

/// Values of `roomcast_disconnects_total{reason}`, one per session close
/// label (`session.rs`, `FrameError::metric_reason`).
const DISCONNECT_REASONS: &[&str] = &[
    "normal",
    "client_gone",
    "ping_timeout",
    "slow_consumer",
    "protocol_error",
    "message_too_large",
    "invalid_utf8",
    "unsupported_data",
    "unauthorized",
    "disconnected",
    "draining",
    "backend_denied",
    "backend_error",
];

/// Values of `roomcast_sessions{protocol,transport}`: every front-end and
/// the transports it runs over.
const SESSION_KINDS: &[(&str, &str)] = &[
    ("roomcast.v1.json", "websocket"),
    ("roomcast.v1.proto", "websocket"),
    ("echo", "websocket"),
    ("socket.io", "websocket"),
    ("socket.io", "polling"),
];

/// Values of `roomcast_connections_rejected_total{reason}` (`server.rs`).
const REJECT_REASONS: &[&str] = &[
    "bad_handshake",
    "draining",
    "origin",
    "subprotocol",
    "max_connections",
    "connection_rate",
    "unauthorized",
    "socketio_unknown_transport",
    "socketio_unknown_sid",
    "socketio_bad_method",
    "socketio_bad_request",
    "socketio_unsupported_version",
    "socketio_payload_too_large",
];

/// Values of `roomcast_slow_consumer_drops_total{policy}`: the overflow
/// policies that drop (`disconnect` closes instead, but is kept for a stable
/// set of series).
const DROP_POLICIES: &[&str] = &["disconnect", "drop_oldest", "latest_per_key"];

/// gRPC methods of the `Control` service, whose `code="OK"` series exist
/// from the start.
const GRPC_METHODS: &[&str] = &[
    "Publish",
    "PublishStream",
    "Broadcast",
    "Subscribe",
    "Unsubscribe",
    "Disconnect",
    "Presence",
    "History",
    "Rooms",
    "Info",
];

/// A gauge whose value the node also reads (for `Info` and the drain), kept
/// in an atomic beside the recorder's gauge, which cannot be read back.
pub struct Level {
    value: AtomicI64,
    gauge: Gauge,
}

impl Level {
    fn new(gauge: Gauge) -> Self {
        gauge.set(0.0);
        Self {
            value: AtomicI64::new(0),
            gauge,
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
        self.gauge.increment(1.0);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
        self.gauge.decrement(1.0);
    }

    /// The current value.
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A counter family with one label, one handle per known label value.
pub struct ByLabel {
    name: &'static str,
    label: &'static str,
    /// Few enough that a scan of `&'static str` beats hashing.
    series: Box<[(&'static str, Counter)]>,
}

impl ByLabel {
    fn new(name: &'static str, label: &'static str, values: &[&'static str]) -> Self {
        let series = values
            .iter()
            .map(|&v| (v, counter!(name, label => v)))
            .collect();
        Self {
            name,
            label,
            series,
        }
    }

    /// Adds `n` to the series of `value`.
    pub fn add(&self, value: &'static str, n: u64) {
        match self.series.iter().find(|(v, _)| *v == value) {
            Some((_, c)) => c.increment(n),
            // A value missing from the list above: still counted, through
            // the recorder's lookup (slower, but correct).
            None => counter!(self.name, self.label => value).increment(n),
        }
    }

    /// Adds one to the series of `value`.
    pub fn inc(&self, value: &'static str) {
        self.add(value, 1);
    }
}

/// `roomcast_grpc_requests_total{method,code}`: status codes are open-ended,
/// so each (method, code) pair is registered the first time it is seen and
/// its handle kept.
pub struct GrpcRequests {
    seen: RwLock<HashMap<(&'static str, tonic::Code), Counter>>,
}

impl GrpcRequests {
    fn new() -> Self {
        let seen = GRPC_METHODS
            .iter()
            .map(|&m| ((m, tonic::Code::Ok), Self::register(m, tonic::Code::Ok)))
            .collect();
        Self {
            seen: RwLock::new(seen),
        }
    }

    fn register(method: &'static str, code: tonic::Code) -> Counter {
        // The label spells `Ok` as `OK`; the other codes by their names.
        let code = match code {
            tonic::Code::Ok => "OK".to_owned(),
            other => format!("{other:?}"),
        };
        counter!(GRPC_REQUESTS, "method" => method, "code" => code)
    }

    /// Counts one call of `method` that ended with `code`.
    pub fn inc(&self, method: &'static str, code: tonic::Code) {
        if let Some(c) = self.seen.read().get(&(method, code)) {
            c.increment(1);
            return;
        }
        self.seen
            .write()
            .entry((method, code))
            .or_insert_with(|| Self::register(method, code))
            .increment(1);
    }
}

const CONNECTIONS: &str = "roomcast_connections";
const CONNECTIONS_ACCEPTED: &str = "roomcast_connections_accepted_total";
const CONNECTIONS_REJECTED: &str = "roomcast_connections_rejected_total";
const DISCONNECTS: &str = "roomcast_disconnects_total";
const PING_TIMEOUTS: &str = "roomcast_ping_timeouts_total";
const PENDING_FULL: &str = "roomcast_pending_commands_full_total";
const CLOSE_GRACE_EXPIRED: &str = "roomcast_close_grace_expired_total";
const SUBSCRIPTIONS: &str = "roomcast_subscriptions";
const ROOMS: &str = "roomcast_rooms";
const MESSAGES_SENT: &str = "roomcast_messages_sent_total";
const MESSAGES_RECEIVED: &str = "roomcast_messages_received_total";
const PUBLICATIONS: &str = "roomcast_publications_total";
const SLOW_CONSUMER_DROPS: &str = "roomcast_slow_consumer_drops_total";
const COMMAND_ERRORS: &str = "roomcast_command_errors_total";
const ADAPTER_UP: &str = "roomcast_adapter_up";
const READY: &str = "roomcast_ready";
const DELIVERY_SECONDS: &str = "roomcast_delivery_seconds";
const GRPC_REQUESTS: &str = "roomcast_grpc_requests_total";
const SESSIONS: &str = "roomcast_sessions";
const SOCKETIO_UPGRADES: &str = "roomcast_socketio_upgrades_total";
const SOCKETIO_MALFORMED: &str = "roomcast_socketio_malformed_packets_total";
const SOCKETIO_SOCKETS: &str = "roomcast_socketio_sockets";
const SOCKETIO_RECOVERIES: &str = "roomcast_socketio_recoveries_total";
const SOCKETIO_RECOVERY_STORE_ERRORS: &str = "roomcast_socketio_recovery_store_errors_total";
const SOCKETIO_FORWARDED: &str = "roomcast_socketio_forwarded_requests_total";
const SOCKETIO_RELAYS: &str = "roomcast_socketio_relayed_websockets";
const SOCKETIO_EMITTER_MESSAGES: &str = "roomcast_socketio_emitter_messages_total";
const SOCKETIO_EMITTER_UP: &str = "roomcast_socketio_emitter_up";

/// Outcomes of a socket.io request for a session another node owns.
pub const FORWARD_OUTCOMES: &[&str] = &["forwarded", "owner_unknown", "owner_unreachable"];
/// Outcomes of a message from `@socket.io/redis-emitter`.
pub const EMITTER_OUTCOMES: &[&str] = &[
    "delivered",
    "malformed",
    "other_namespace",
    "no_room",
    "except",
    "arguments",
];

/// Every metric of the node.
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: Level,
    /// Upgrades accepted.
    pub connections_accepted: Counter,
    /// Upgrades refused before the handshake completed, by reason.
    pub connections_rejected: ByLabel,
    /// Closes by reason.
    pub disconnects: ByLabel,
    /// Sessions closed for missing the heartbeat.
    pub ping_timeouts: Counter,
    /// Times a client filled its pipeline of commands waiting on the adapter.
    pub pending_full: Counter,
    /// Node-initiated closes whose client never answered within the grace.
    pub close_grace_expired: Counter,
    /// Room subscriptions on this node.
    pub subscriptions: Level,
    /// Rooms with at least one local subscriber.
    pub rooms: Level,
    /// Frames delivered to clients.
    pub messages_sent: Counter,
    /// Frames received from clients.
    pub messages_received: Counter,
    /// Publications accepted, by source (`grpc`, `client`).
    pub publications: ByLabel,
    /// Publications dropped by a slow consumer policy, by policy.
    pub slow_consumer_drops: ByLabel,
    /// Errors answered to client commands, by code.
    pub command_errors: ByLabel,
    /// 1 when the adapter is healthy.
    pub adapter_up: Gauge,
    /// 1 when the node accepts sessions (ready and not draining).
    pub ready: Gauge,
    /// From accepting a publication to writing it to a client.
    pub delivery_seconds: Histogram,
    /// gRPC calls by method and status.
    pub grpc_requests: GrpcRequests,
    /// Open sessions by protocol and transport.
    pub sessions: Sessions,
    /// socket.io sessions upgraded from long-polling to WebSocket.
    pub socketio_upgrades: Counter,
    /// socket.io sessions closed for a packet that is not Socket.IO.
    pub socketio_malformed_packets: Counter,
    /// Open socket.io sockets (one per namespace a client joined).
    pub socketio_sockets: Level,
    /// socket.io sockets recovered after a reconnect.
    pub socketio_recoveries: Counter,
    /// Reads and writes of kept socket.io state that the adapter failed.
    pub socketio_recovery_store_errors: Counter,
    /// socket.io requests for sessions of other nodes, by outcome.
    pub socketio_forwarded: ByLabel,
    /// WebSockets this node relays to the node that owns their session.
    pub socketio_relays: Level,
    /// Messages from `@socket.io/redis-emitter`, by outcome.
    pub socketio_emitter_messages: ByLabel,
    /// 1 while the emitter's Redis subscription is up (0 when it is down
    /// or not configured).
    pub socketio_emitter_up: Gauge,
}

/// `roomcast_sessions{protocol,transport}`, one handle per kind.
pub struct Sessions {
    series: Box<[(&'static str, &'static str, Gauge)]>,
}

impl Sessions {
    fn new() -> Self {
        let series = SESSION_KINDS
            .iter()
            .map(|&(p, t)| {
                let g = gauge!(SESSIONS, "protocol" => p, "transport" => t);
                g.set(0.0);
                (p, t, g)
            })
            .collect();
        Self { series }
    }

    fn gauge(&self, protocol: &str, transport: &str) -> Option<&Gauge> {
        self.series
            .iter()
            .find(|(p, t, _)| *p == protocol && *t == transport)
            .map(|(_, _, g)| g)
    }

    /// A session of this kind opened.
    pub fn opened(&self, protocol: &str, transport: &str) {
        if let Some(g) = self.gauge(protocol, transport) {
            g.increment(1.0);
        }
    }

    /// A session of this kind closed.
    pub fn closed(&self, protocol: &str, transport: &str) {
        if let Some(g) = self.gauge(protocol, transport) {
            g.decrement(1.0);
        }
    }
}

impl Metrics {
    /// Describes the metrics to the installed recorder and registers every
    /// handle.
    pub fn new() -> Self {
        describe_gauge!(CONNECTIONS, "Open WebSocket connections on this node.");
        describe_counter!(CONNECTIONS_ACCEPTED, "WebSocket upgrades accepted.");
        describe_counter!(
            CONNECTIONS_REJECTED,
            "WebSocket upgrades refused, by reason."
        );
        describe_counter!(DISCONNECTS, "Connections closed, by reason.");
        describe_counter!(
            PING_TIMEOUTS,
            "Connections closed for missing the heartbeat."
        );
        describe_counter!(
            PENDING_FULL,
            "Times a client had max_pending_commands commands waiting on the adapter, so the node paused reading its commands."
        );
        describe_counter!(
            CLOSE_GRACE_EXPIRED,
            "Node-initiated closes whose TCP connection was closed after the grace period, without the client's Close."
        );
        describe_gauge!(SUBSCRIPTIONS, "Room subscriptions on this node.");
        describe_gauge!(ROOMS, "Rooms with at least one subscriber on this node.");
        describe_counter!(MESSAGES_SENT, "Frames delivered to clients.");
        describe_counter!(MESSAGES_RECEIVED, "Frames received from clients.");
        describe_counter!(PUBLICATIONS, "Publications accepted, by source.");
        describe_counter!(
            SLOW_CONSUMER_DROPS,
            "Queued publications dropped by a slow consumer policy."
        );
        describe_counter!(
            COMMAND_ERRORS,
            "Errors answered to client commands, by code."
        );
        describe_gauge!(ADAPTER_UP, "1 when the adapter's connection is healthy.");
        describe_gauge!(
            READY,
            "1 when the node accepts connections (adapter up, not draining)."
        );
        describe_histogram!(
            DELIVERY_SECONDS,
            "From accepting a publication to writing it to a client."
        );
        describe_counter!(
            GRPC_REQUESTS,
            "gRPC control plane calls, by method and status."
        );
        describe_gauge!(
            SESSIONS,
            "Open sessions by protocol (roomcast.v1.json, roomcast.v1.proto, echo, socket.io) and transport (websocket, polling)."
        );
        describe_counter!(
            SOCKETIO_UPGRADES,
            "socket.io sessions upgraded from long-polling to WebSocket."
        );
        describe_counter!(
            SOCKETIO_MALFORMED,
            "socket.io sessions closed for a packet that is not Engine.IO or Socket.IO."
        );
        describe_gauge!(
            SOCKETIO_SOCKETS,
            "Open socket.io sockets (one per namespace a client joined)."
        );
        describe_counter!(
            SOCKETIO_RECOVERIES,
            "socket.io sockets whose state was recovered after a reconnect."
        );
        describe_counter!(
            SOCKETIO_RECOVERY_STORE_ERRORS,
            "Reads and writes of socket.io state kept for recovery that the adapter failed."
        );
        describe_counter!(
            SOCKETIO_FORWARDED,
            "socket.io requests for a session another node owns, by outcome."
        );
        describe_gauge!(
            SOCKETIO_RELAYS,
            "WebSockets this node relays to the node that owns their socket.io session."
        );
        describe_counter!(
            SOCKETIO_EMITTER_MESSAGES,
            "Messages from @socket.io/redis-emitter, by outcome."
        );
        describe_gauge!(
            SOCKETIO_EMITTER_UP,
            "1 while the subscription to the emitter's Redis is up."
        );
        let error_codes: Vec<&'static str> = crate::protocol::ErrorCode::ALL
            .iter()
            .map(|c| c.as_str())
            .collect();
        let adapter_up = gauge!(ADAPTER_UP);
        let ready = gauge!(READY);
        adapter_up.set(0.0);
        ready.set(0.0);
        Self {
            connections: Level::new(gauge!(CONNECTIONS)),
            connections_accepted: counter!(CONNECTIONS_ACCEPTED),
            connections_rejected: ByLabel::new(CONNECTIONS_REJECTED, "reason", REJECT_REASONS),
            disconnects: ByLabel::new(DISCONNECTS, "reason", DISCONNECT_REASONS),
            ping_timeouts: counter!(PING_TIMEOUTS),
            pending_full: counter!(PENDING_FULL),
            close_grace_expired: counter!(CLOSE_GRACE_EXPIRED),
            subscriptions: Level::new(gauge!(SUBSCRIPTIONS)),
            rooms: Level::new(gauge!(ROOMS)),
            messages_sent: counter!(MESSAGES_SENT),
            messages_received: counter!(MESSAGES_RECEIVED),
            publications: ByLabel::new(PUBLICATIONS, "source", &["grpc", "client"]),
            slow_consumer_drops: ByLabel::new(SLOW_CONSUMER_DROPS, "policy", DROP_POLICIES),
            command_errors: ByLabel::new(COMMAND_ERRORS, "code", &error_codes),
            adapter_up,
            ready,
            delivery_seconds: histogram!(DELIVERY_SECONDS),
            grpc_requests: GrpcRequests::new(),
            sessions: Sessions::new(),
            socketio_upgrades: counter!(SOCKETIO_UPGRADES),
            socketio_malformed_packets: counter!(SOCKETIO_MALFORMED),
            socketio_sockets: Level::new(gauge!(SOCKETIO_SOCKETS)),
            socketio_recoveries: counter!(SOCKETIO_RECOVERIES),
            socketio_recovery_store_errors: counter!(SOCKETIO_RECOVERY_STORE_ERRORS),
            socketio_forwarded: ByLabel::new(SOCKETIO_FORWARDED, "outcome", FORWARD_OUTCOMES),
            socketio_relays: Level::new(gauge!(SOCKETIO_RELAYS)),
            socketio_emitter_messages: ByLabel::new(
                SOCKETIO_EMITTER_MESSAGES,
                "outcome",
                EMITTER_OUTCOMES,
            ),
            socketio_emitter_up: gauge!(SOCKETIO_EMITTER_UP),
        }
    }

    /// Counts an error answered to a client command.
    pub fn command_error(&self, code: &'static str) {
        self.command_errors.inc(code);
    }

    /// Counts an accepted publication (`grpc` or `client`).
    pub fn publication(&self, source: &'static str) {
        self.publications.inc(source);
    }

    /// Counts a close.
    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects.inc(reason);
    }

    /// Counts a refused upgrade.
    pub fn reject(&self, reason: &'static str) {
        self.connections_rejected.inc(reason);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_documented_exponential_series() {
        let b = latency_buckets();
        assert_eq!(b.len(), 16);
        assert_eq!(b[0], 0.0001);
        assert_eq!(b[1], 0.0002);
        assert_eq!(b[15], 3.2768);
    }

    #[test]
    fn series_exist_from_the_start_and_count_through_cached_handles() {
        let recorder = prometheus_builder().build_recorder();
        let handle = recorder.handle();
        // Values registered late (an unlisted reason, a new gRPC code) go to
        // the recorder current at that moment, so all of it runs under this one.
        let m = metrics::with_local_recorder(&recorder, || {
            let m = Metrics::new();
            m.connections.inc();
            m.connections.inc();
            m.connections.dec();
            m.disconnect("slow_consumer");
            m.disconnect("not_in_the_list");
            m.command_errors.add("too_many_requests", 3);
            m.grpc_requests.inc("Info", tonic::Code::Ok);
            m.grpc_requests.inc("Info", tonic::Code::InvalidArgument);
            m.grpc_requests.inc("Info", tonic::Code::InvalidArgument);
            m.delivery_seconds.record(0.0003);
            m
        });
        let text = handle.render();
        let value = |sample: &str| {
            text.lines()
                .find_map(|l| {
                    let (name, v) = l.rsplit_once(' ')?;
                    (name == sample).then(|| v.parse::<f64>().unwrap())
                })
                .unwrap_or_else(|| panic!("{sample} missing from\n{text}"))
        };
        assert_eq!(m.connections.get(), 1);
        assert_eq!(value("roomcast_connections"), 1.0);
        assert_eq!(value("roomcast_ready"), 0.0);
        assert_eq!(
            value("roomcast_disconnects_total{reason=\"slow_consumer\"}"),
            1.0
        );
        assert_eq!(value("roomcast_disconnects_total{reason=\"normal\"}"), 0.0);
        assert_eq!(
            value("roomcast_disconnects_total{reason=\"not_in_the_list\"}"),
            1.0
        );
        assert_eq!(
            value("roomcast_command_errors_total{code=\"too_many_requests\"}"),
            3.0
        );
        assert_eq!(
            value("roomcast_grpc_requests_total{method=\"Publish\",code=\"OK\"}"),
            0.0
        );
        assert_eq!(
            value("roomcast_grpc_requests_total{method=\"Info\",code=\"OK\"}"),
            1.0
        );
        assert_eq!(
            value("roomcast_grpc_requests_total{method=\"Info\",code=\"InvalidArgument\"}"),
            2.0
        );
        assert_eq!(
            value("roomcast_delivery_seconds_bucket{le=\"0.0004\"}"),
            1.0
        );
        assert_eq!(
            value("roomcast_delivery_seconds_bucket{le=\"0.0002\"}"),
            0.0
        );
        assert_eq!(value("roomcast_delivery_seconds_count"), 1.0);
        assert!(text.contains("# HELP roomcast_messages_sent_total Frames delivered to clients."));
    }
}
