//! Prometheus metrics of a node. Names follow the contract; counters get
//! their `_total` suffix from the exposition encoder.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// A `source` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `grpc` or `client`.
    pub source: &'static str,
}

/// A `policy` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// The overflow policy that dropped.
    pub policy: &'static str,
}

/// A `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// The error code.
    pub code: &'static str,
}

/// gRPC method and status labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// Method name.
    pub method: &'static str,
    /// gRPC status code name.
    pub code: String,
}

/// Every metric of the node.
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: Gauge,
    /// Upgrades accepted.
    pub connections_accepted: Counter,
    /// Upgrades refused before the handshake completed, by reason.
    pub connections_rejected: Family<ReasonLabel, Counter>,
    /// Closes by reason.
    pub disconnects: Family<ReasonLabel, Counter>,
    /// Sessions closed for missing the heartbeat.
    pub ping_timeouts: Counter,
    /// Room subscriptions on this node.
    pub subscriptions: Gauge,
    /// Rooms with at least one local subscriber.
    pub rooms: Gauge,
    /// Frames delivered to clients.
    pub messages_sent: Counter,
    /// Frames received from clients.
    pub messages_received: Counter,
    /// Publications accepted, by source.
    pub publications: Family<SourceLabel, Counter>,
    /// Publications dropped by a slow consumer policy, by policy.
    pub slow_consumer_drops: Family<PolicyLabel, Counter>,
    /// Errors answered to client commands, by code.
    pub command_errors: Family<CodeLabel, Counter>,
    /// 1 when the adapter is healthy.
    pub adapter_up: Gauge,
    /// 1 when the node accepts sessions (ready and not draining).
    pub ready: Gauge,
    /// From accepting a publication to writing it to a client.
    pub delivery_seconds: Histogram,
    /// gRPC calls by method and status.
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// socket.io sessions upgraded from long-polling to WebSocket.
    pub socketio_upgrades: Counter,
    /// socket.io sessions closed for a packet that is not Socket.IO.
    pub socketio_malformed_packets: Counter,
    /// socket.io sockets connected (one per namespace a client joins).
    pub socketio_sockets: Counter,
}

impl Metrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            connections: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_rejected: Family::default(),
            disconnects: Family::default(),
            ping_timeouts: Counter::default(),
            subscriptions: Gauge::default(),
            rooms: Gauge::default(),
            messages_sent: Counter::default(),
            messages_received: Counter::default(),
            publications: Family::default(),
            slow_consumer_drops: Family::default(),
            command_errors: Family::default(),
            adapter_up: Gauge::default(),
            ready: Gauge::default(),
            delivery_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            grpc_requests: Family::default(),
            socketio_upgrades: Counter::default(),
            socketio_malformed_packets: Counter::default(),
            socketio_sockets: Counter::default(),
        };
        let r = registry;
        r.register(
            "roomcast_connections",
            "Open WebSocket connections on this node",
            m.connections.clone(),
        );
        r.register(
            "roomcast_connections_accepted",
            "WebSocket upgrades accepted",
            m.connections_accepted.clone(),
        );
        r.register(
            "roomcast_connections_rejected",
            "WebSocket upgrades refused, by reason",
            m.connections_rejected.clone(),
        );
        r.register(
            "roomcast_disconnects",
            "Connections closed, by reason",
            m.disconnects.clone(),
        );
        r.register(
            "roomcast_ping_timeouts",
            "Connections closed for missing the heartbeat",
            m.ping_timeouts.clone(),
        );
        r.register(
            "roomcast_subscriptions",
            "Room subscriptions on this node",
            m.subscriptions.clone(),
        );
        r.register(
            "roomcast_rooms",
            "Rooms with at least one subscriber on this node",
            m.rooms.clone(),
        );
        r.register(
            "roomcast_messages_sent",
            "Frames delivered to clients",
            m.messages_sent.clone(),
        );
        r.register(
            "roomcast_messages_received",
            "Frames received from clients",
            m.messages_received.clone(),
        );
        r.register(
            "roomcast_publications",
            "Publications accepted, by source",
            m.publications.clone(),
        );
        r.register(
            "roomcast_slow_consumer_drops",
            "Queued publications dropped by a slow consumer policy",
            m.slow_consumer_drops.clone(),
        );
        r.register(
            "roomcast_command_errors",
            "Errors answered to client commands, by code",
            m.command_errors.clone(),
        );
        r.register(
            "roomcast_adapter_up",
            "1 when the adapter's connection is healthy",
            m.adapter_up.clone(),
        );
        r.register(
            "roomcast_ready",
            "1 when the node accepts connections (adapter up, not draining)",
            m.ready.clone(),
        );
        r.register(
            "roomcast_delivery_seconds",
            "From accepting a publication to writing it to a client",
            m.delivery_seconds.clone(),
        );
        r.register(
            "roomcast_grpc_requests",
            "gRPC control plane calls, by method and status",
            m.grpc_requests.clone(),
        );
        r.register(
            "roomcast_socketio_upgrades",
            "socket.io sessions upgraded from long-polling to WebSocket",
            m.socketio_upgrades.clone(),
        );
        r.register(
            "roomcast_socketio_malformed_packets",
            "socket.io sessions closed for a packet that is not Socket.IO",
            m.socketio_malformed_packets.clone(),
        );
        r.register(
            "roomcast_socketio_sockets",
            "socket.io sockets connected (one per namespace a client joins)",
            m.socketio_sockets.clone(),
        );
        m
    }

    /// Counts a close.
    pub fn disconnect(&self, reason: &'static str) {
        self.disconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts an error answered to a client command.
    pub fn command_error(&self, code: &'static str) {
        self.command_errors.get_or_create(&CodeLabel { code }).inc();
    }

    /// Counts an accepted publication.
    pub fn publication(&self, source: &'static str) {
        self.publications
            .get_or_create(&SourceLabel { source })
            .inc();
    }

    /// Counts a refused upgrade.
    pub fn reject(&self, reason: &'static str) {
        self.connections_rejected
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}
