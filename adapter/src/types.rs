//! Values that cross the adapter seam.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Why an adapter call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The backing store (Redis) cannot be reached right now.
    #[error("adapter unavailable: {0}")]
    Unavailable(String),
    /// The backing store answered, but not in time.
    #[error("adapter timed out after {0:?}")]
    Timeout(Duration),
    /// The backing store returned something this node cannot read.
    #[error("adapter protocol error: {0}")]
    Protocol(String),
    /// The adapter was shut down.
    #[error("adapter shut down")]
    Closed,
}

/// A position in a room's history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StreamPosition {
    /// Changes whenever the room's history is lost and restarted.
    pub epoch: String,
    /// Offset of the newest publication; 0 before the first one.
    pub offset: u64,
}

/// How a room keeps history (from its namespace options).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Publications kept per room; 0 keeps none and offsets stay 0.
    pub size: usize,
    /// How long a room's history lives after its last publication.
    pub ttl: Duration,
}

impl HistoryOptions {
    /// Whether the room keeps history at all.
    pub fn enabled(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// A publication asked of the adapter.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// Target room.
    pub room: String,
    /// Optional event name; empty when none.
    pub event: String,
    /// Payload: JSON text unless `binary`.
    pub data: Bytes,
    /// The payload is opaque bytes.
    pub binary: bool,
    /// Sessions of this client do not receive it.
    pub exclude_client_id: String,
    /// Deduplicates retried publishes within the room's history lifetime.
    pub idempotency_key: String,
    /// The room's history settings.
    pub history: HistoryOptions,
}

/// Where an accepted publication landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishResult {
    /// Its offset (0 when the room keeps no history).
    pub offset: u64,
    /// The room's epoch ("" when the room keeps no history).
    pub epoch: String,
}

/// One accepted publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Offset in the room's history; 0 when the room keeps none.
    pub offset: u64,
    /// Optional event name.
    pub event: String,
    /// Payload.
    pub data: Bytes,
    /// The payload is opaque bytes rather than JSON.
    pub binary: bool,
    /// When it was accepted, microseconds since the Unix epoch.
    pub time_unix_micros: i64,
}

/// A join or leave announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// A client subscribed.
    Join(ClientInfo),
    /// A client unsubscribed or went away.
    Leave(ClientInfo),
}

/// What a node receives for a room.
#[derive(Debug, Clone)]
pub enum RoomEvent {
    /// A publication, shared by every session it reaches.
    Publication {
        /// The publication itself.
        publication: Arc<Publication>,
        /// The room's epoch at the time.
        epoch: String,
        /// Sessions of this client skip it ("" for none).
        exclude_client_id: String,
    },
    /// A join or leave.
    Presence(PresenceEvent),
}

/// One client in a room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientInfo {
    /// The session's client id.
    pub client_id: String,
    /// The authenticated user ("" when anonymous).
    pub user: String,
    /// The node holding the session.
    pub node: String,
    /// What the application's backend said about the client when it
    /// connected (JSON text), shown in presence; "" when nothing.
    pub info: String,
}

/// A history read.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only publications after this position.
    pub since: Option<StreamPosition>,
    /// At most this many (the newest ones when `since` is unset, the oldest
    /// after `since` otherwise); `None` means all kept.
    pub limit: Option<usize>,
    /// The room's history settings (the lifetime matters to some stores).
    pub options: HistoryOptions,
}

/// A history answer.
#[derive(Debug, Clone, Default)]
pub struct HistoryResult {
    /// Oldest first.
    pub publications: Vec<Publication>,
    /// The room's current position.
    pub position: StreamPosition,
    /// With `since`: true when `publications` holds everything after it.
    pub recovered: bool,
}

/// Which sessions a command targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The sessions of one client id.
    Client(String),
    /// Every session of one user.
    User(String),
}

/// A request sent to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRequest {
    /// Who is in a room on your node?
    Presence {
        /// The room.
        room: String,
    },
    /// Which rooms with this prefix have subscribers on your node, and how many?
    Rooms {
        /// Name prefix ("" for all).
        prefix: String,
    },
    /// Close these sessions.
    Disconnect {
        /// Whose sessions.
        target: Target,
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Subscribe these sessions to a room.
    Subscribe {
        /// Whose sessions.
        target: Target,
        /// The room.
        room: String,
    },
    /// Unsubscribe these sessions from a room.
    Unsubscribe {
        /// Whose sessions.
        target: Target,
        /// The room.
        room: String,
    },
}

/// One node's answer to a [`NodeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeReply {
    /// Clients in the room on that node.
    Presence(Vec<ClientInfo>),
    /// Rooms and local subscriber counts.
    Rooms(Vec<(String, u64)>),
    /// How many sessions the command affected.
    Affected(u64),
}

/// A node as announced to the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// HTTP/WebSocket address.
    pub address: String,
    /// gRPC address.
    pub grpc_address: String,
    /// Open WebSocket sessions.
    pub connections: u64,
    /// Rooms with local subscribers.
    pub rooms: u64,
    /// Room subscriptions.
    pub subscriptions: u64,
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// Software version.
    pub version: String,
}

/// Microseconds since the Unix epoch, now.
pub fn now_unix_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

/// A fresh random epoch string.
pub fn new_epoch() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}
