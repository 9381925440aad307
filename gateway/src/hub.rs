//! The hub: this node's index of rooms to local sessions, and the only
//! consumer of adapter events.
//!
//! A publication arriving from the adapter is encoded at most once per
//! subprotocol (lazily, by the first subscriber that needs it) and the same
//! `Bytes` go into every subscriber's queue. Rooms live in shards, each behind
//! a read-write lock held only for synchronous work, never across `.await`.
//! The adapter is told about a room when its first local subscriber arrives
//! and when its last one leaves; those calls are serialised per shard so a
//! quick leave-and-join can never leave the node unsubscribed.

use crate::client::ClientShared;
use crate::config::{Namespaces, OverflowPolicy};
use crate::metrics::Metrics;
use crate::outbound::{Control, Outbound, Pushed};
use crate::protocol::{ErrorCode, ServerEvent, Subprotocol};
use bytes::Bytes;
use parking_lot::RwLock;
use roomcast_adapter::{
    Adapter, AdapterError, ClientInfo, Handler, HistoryQuery, NodeInfo, NodeReply, NodeRequest,
    PresenceEvent, RoomEvent, StreamPosition, Target,
};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

const SHARDS: usize = 64;

/// Why a subscribe failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The session is already in the room.
    #[error("already subscribed")]
    AlreadySubscribed,
    /// The adapter failed.
    #[error("adapter: {0}")]
    Adapter(#[from] AdapterError),
}

impl SubscribeError {
    /// The error code for the client.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::AlreadySubscribed => ErrorCode::BadRequest,
            Self::Adapter(_) => ErrorCode::Internal,
        }
    }
}

/// A room event encoded lazily, once per subprotocol, for every local
/// subscriber.
struct Encoded {
    room: Arc<str>,
    event: RoomEvent,
    json: OnceLock<Bytes>,
    proto: OnceLock<Bytes>,
    /// socket.io dialects in the default namespace, the common case.
    socketio: [OnceLock<Bytes>; 3],
    /// Other socket.io dialects (other namespaces, recovery offsets).
    other: parking_lot::Mutex<Vec<(Subprotocol, Bytes)>>,
}

impl Encoded {
    fn new(room: Arc<str>, event: RoomEvent) -> Self {
        Self {
            room,
            event,
            json: OnceLock::new(),
            proto: OnceLock::new(),
            socketio: Default::default(),
            other: Default::default(),
        }
    }

    fn frame(&self, s: &ClientShared) -> Bytes {
        let encode = || encode_event(s, &self.room, &self.event);
        let cell = match s.proto {
            Subprotocol::Json => &self.json,
            Subprotocol::Proto => &self.proto,
            Subprotocol::SocketIo(d) if d.is_common() => &self.socketio[d.slot()],
            other => {
                let mut cache = self.other.lock();
                if let Some((_, b)) = cache.iter().find(|(p, _)| *p == other) {
                    return b.clone();
                }
                let b = encode();
                cache.push((other, b.clone()));
                return b;
            }
        };
        cell.get_or_init(encode).clone()
    }

    fn offset(&self) -> Option<u64> {
        match &self.event {
            RoomEvent::Publication { publication, .. } => Some(publication.offset),
            RoomEvent::Presence(_) => None,
        }
    }

    fn outbound(&self, s: &ClientShared, policy: OverflowPolicy) -> Outbound {
        let (accepted_us, offset) = match &self.event {
            RoomEvent::Publication { publication, .. } => {
                (publication.time_unix_micros.max(1), publication.offset)
            }
            RoomEvent::Presence(_) => (0, 0),
        };
        // Only `latest_per_key` and clients tracking what they were
        // written look at keys; skip the refcount otherwise.
        let keyed = policy == OverflowPolicy::LatestPerKey || (offset > 0 && s.tracks_positions());
        Outbound {
            frame: self.frame(s),
            accepted_us,
            key: keyed.then(|| self.room.clone()),
            offset,
        }
    }

    /// Publications can exclude a client; nobody is told of their own join or leave.
    fn excludes(&self, client_id: &str) -> bool {
        match &self.event {
            RoomEvent::Publication {
                exclude_client_id, ..
            } => !exclude_client_id.is_empty() && exclude_client_id == client_id,
            RoomEvent::Presence(PresenceEvent::Join(c) | PresenceEvent::Leave(c)) => {
                c.client_id == client_id
            }
        }
    }
}

fn encode_event(s: &ClientShared, room: &str, event: &RoomEvent) -> Bytes {
    match event {
        RoomEvent::Publication {
            publication, epoch, ..
        } => s.encode(
            0,
            &ServerEvent::Message {
                room,
                epoch,
                publication,
            },
        ),
        RoomEvent::Presence(PresenceEvent::Join(client)) => {
            s.encode(0, &ServerEvent::Join { room, client })
        }
        RoomEvent::Presence(PresenceEvent::Leave(client)) => {
            s.encode(0, &ServerEvent::Leave { room, client })
        }
    }
}

/// A pending session and the events held for it.
type Held = (Arc<ClientShared>, Vec<Arc<Encoded>>);

struct Room {
    name: Arc<str>,
    live: HashMap<u64, Arc<ClientShared>>,
    /// Sessions whose subscribe is still reading history: events are held
    /// here so they follow the replayed ones, in order.
    pending: parking_lot::Mutex<HashMap<u64, Held>>,
    adapter_subscribed: bool,
    policy: OverflowPolicy,
}

impl Room {
    fn len(&self) -> usize {
        self.live.len() + self.pending.lock().len()
    }
}

#[derive(Default)]
struct Shard {
    rooms: RwLock<HashMap<Arc<str>, Room>>,
    /// Serialises adapter subscribe/unsubscribe for this shard's rooms.
    interest: tokio::sync::Mutex<()>,
}

/// The node's local index of rooms and sessions.
pub struct Hub {
    node_id: String,
    adapter: Arc<dyn Adapter>,
    metrics: Arc<Metrics>,
    namespaces: Namespaces,
    shards: Vec<Shard>,
    hasher: std::collections::hash_map::RandomState,
    sessions: RwLock<HashMap<u64, Arc<ClientShared>>>,
    started: Instant,
    /// Filled in at start: what the node announces.
    pub(crate) addresses: OnceLock<(String, String)>,
}

impl Hub {
    /// A hub for this node.
    pub fn new(
        node_id: String,
        adapter: Arc<dyn Adapter>,
        metrics: Arc<Metrics>,
        namespaces: Namespaces,
    ) -> Self {
        Self {
            node_id,
            adapter,
            metrics,
            namespaces,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: Default::default(),
            sessions: RwLock::new(HashMap::new()),
            started: Instant::now(),
            addresses: OnceLock::new(),
        }
    }

    /// The node id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The adapter.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.adapter
    }

    /// Namespace options.
    pub fn namespaces(&self) -> &Namespaces {
        &self.namespaces
    }

    fn shard(&self, room: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(room) as usize) % SHARDS]
    }

    /// Registers a new session.
    pub fn add_session(&self, s: Arc<ClientShared>) {
        self.sessions.write().insert(s.id, s);
    }

    /// Forgets a session (after it left its rooms).
    pub fn remove_session(&self, id: u64) {
        self.sessions.write().remove(&id);
    }

    /// Subscribes a session: registers it, makes sure the adapter delivers
    /// the room, reads what it missed, and queues the reply, the missed
    /// publications and anything newer, in that order.
    pub async fn subscribe(
        &self,
        s: &Arc<ClientShared>,
        room: &str,
        since: Option<StreamPosition>,
        reply_id: u64,
    ) -> Result<StreamPosition, SubscribeError> {
        let opts = self.namespaces.for_room(room).clone();
        let shard = self.shard(room);
        {
            let mut rooms = shard.rooms.write();
            let entry = rooms.entry(Arc::from(room)).or_insert_with_key(|k| Room {
                name: k.clone(),
                live: HashMap::new(),
                pending: Default::default(),
                adapter_subscribed: false,
                policy: opts.overflow,
            });
            if entry.live.contains_key(&s.id) || entry.pending.lock().contains_key(&s.id) {
                return Err(SubscribeError::AlreadySubscribed);
            }
            if entry.len() == 0 {
                self.metrics.rooms.inc();
            }
            entry.pending.lock().insert(s.id, (s.clone(), Vec::new()));
            self.metrics.subscriptions.inc();
        }
        if let Err(e) = self.ensure_adapter_interest(room).await {
            self.unsubscribe(s, room).await;
            return Err(e.into());
        }
        let history = opts.history();
        let (position, recovered, missed) = if history.enabled() {
            let query = HistoryQuery {
                limit: if since.is_some() { None } else { Some(0) },
                since: since.clone(),
                options: history,
            };
            match self.adapter.history(room, query).await {
                Ok(h) => (h.position, h.recovered, h.publications),
                Err(e) => {
                    self.unsubscribe(s, room).await;
                    return Err(e.into());
                }
            }
        } else {
            let recovered = since
                .as_ref()
                .is_none_or(|p| p.offset == 0 && p.epoch.is_empty());
            (StreamPosition::default(), recovered, Vec::new())
        };
        // Offsets at or below this were replayed (or the client had them).
        let seen = missed
            .last()
            .map(|p| p.offset)
            .or_else(|| since.as_ref().filter(|_| recovered).map(|p| p.offset))
            .unwrap_or(position.offset);
        let mut rooms = shard.rooms.write();
        // Where the client stands before the replay: what it had, or now.
        let start = StreamPosition {
            epoch: position.epoch.clone(),
            offset: match (&since, recovered) {
                (Some(p), true) => p.offset,
                _ => position.offset,
            },
        };
        let Some(entry) = rooms.get_mut(room) else {
            return Ok(start); // unsubscribed meanwhile
        };
        let Some((_, held)) = entry.pending.lock().remove(&s.id) else {
            return Ok(start);
        };
        let reply = s.encode(
            reply_id,
            &ServerEvent::Subscribed {
                room,
                position: &position,
                recovered,
            },
        );
        self.push(s, Outbound::reply(reply), entry.policy);
        for p in &missed {
            let frame = s.encode(
                0,
                &ServerEvent::Message {
                    room,
                    epoch: &position.epoch,
                    publication: p,
                },
            );
            self.push(
                s,
                Outbound {
                    frame,
                    accepted_us: p.time_unix_micros.max(1),
                    key: Some(entry.name.clone()),
                    offset: p.offset,
                },
                entry.policy,
            );
        }
        for e in held {
            let newer = e.offset().is_none_or(|o| o == 0 || o > seen);
            if newer && !e.excludes(&s.client_id) {
                self.push(s, e.outbound(s, entry.policy), entry.policy);
            }
        }
        entry.live.insert(s.id, s.clone());
        Ok(start)
    }

    async fn ensure_adapter_interest(&self, room: &str) -> Result<(), AdapterError> {
        let shard = self.shard(room);
        let _serial = shard.interest.lock().await;
        let needed = shard
            .rooms
            .read()
            .get(room)
            .is_some_and(|r| !r.adapter_subscribed);
        if needed {
            self.adapter.subscribe(room).await?;
            if let Some(r) = shard.rooms.write().get_mut(room) {
                r.adapter_subscribed = true;
            }
        }
        Ok(())
    }

    /// Removes a session from a room; returns whether it was there. The
    /// adapter is told when the room has no local subscriber left.
    pub async fn unsubscribe(&self, s: &ClientShared, room: &str) -> bool {
        let shard = self.shard(room);
        let emptied = {
            let mut rooms = shard.rooms.write();
            let Some(entry) = rooms.get_mut(room) else {
                return false;
            };
            let was_there =
                entry.live.remove(&s.id).is_some() || entry.pending.lock().remove(&s.id).is_some();
            if !was_there {
                return false;
            }
            self.metrics.subscriptions.dec();
            if entry.len() == 0 {
                self.metrics.rooms.dec();
                let subscribed = entry.adapter_subscribed;
                rooms.remove(room);
                subscribed
            } else {
                false
            }
        };
        if emptied {
            let _serial = shard.interest.lock().await;
            // A newcomer may have re-created the room; it subscribes itself
            // after this lock is released, or already has.
            let recreated = shard
                .rooms
                .read()
                .get(room)
                .is_some_and(|r| r.adapter_subscribed);
            if !recreated {
                if let Err(e) = self.adapter.unsubscribe(room).await {
                    tracing::warn!(room, error = %e, "adapter unsubscribe failed");
                }
            }
        }
        true
    }

    /// Announces a join or leave if the room's namespace wants them.
    pub async fn announce(&self, room: &str, event: PresenceEvent) {
        if self.namespaces.for_room(room).join_leave {
            if let Err(e) = self.adapter.publish_presence_event(room, event).await {
                tracing::warn!(room, error = %e, "join/leave event not published");
            }
        }
    }

    fn targets(&self, target: &Target) -> Vec<Arc<ClientShared>> {
        self.sessions
            .read()
            .values()
            .filter(|s| match target {
                Target::Client(c) => s.client_id == *c,
                Target::User(u) => !u.is_empty() && s.user() == u,
            })
            .cloned()
            .collect()
    }

    /// Clients in a room on this node.
    pub fn local_presence(&self, room: &str) -> Vec<ClientInfo> {
        let rooms = self.shard(room).rooms.read();
        rooms
            .get(room)
            .map(|r| r.live.values().map(|s| s.info(&self.node_id)).collect())
            .unwrap_or_default()
    }

    fn local_rooms(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            for (name, r) in shard.rooms.read().iter() {
                if name.starts_with(prefix) {
                    let n = r.len() as u64;
                    if n > 0 {
                        out.push((name.to_string(), n));
                    }
                }
            }
        }
        out
    }

    /// Every session (for draining).
    pub fn all_sessions(&self) -> Vec<Arc<ClientShared>> {
        self.sessions.read().values().cloned().collect()
    }
}

impl Handler for Hub {
    fn on_room_event(&self, room: &str, event: RoomEvent) {
        let rooms = self.shard(room).rooms.read();
        let Some(r) = rooms.get(room) else {
            return;
        };
        let encoded = Arc::new(Encoded::new(r.name.clone(), event));
        for s in r.live.values() {
            if encoded.excludes(&s.client_id) {
                continue;
            }
            self.push(s, encoded.outbound(s, r.policy), r.policy);
        }
        let mut pending = r.pending.lock();
        for (_, held) in pending.values_mut() {
            held.push(encoded.clone());
        }
    }

    fn on_request(&self, request: &NodeRequest) -> NodeReply {
        match request {
            NodeRequest::Presence { room } => NodeReply::Presence(self.local_presence(room)),
            NodeRequest::Rooms { prefix } => NodeReply::Rooms(self.local_rooms(prefix)),
            NodeRequest::Disconnect {
                target,
                code,
                reason,
            } => {
                let sessions = self.targets(target);
                let n = sessions
                    .iter()
                    .filter(|s| s.control(Control::Close(*code, reason.clone())))
                    .count();
                NodeReply::Affected(n as u64)
            }
            NodeRequest::Subscribe { target, room } => {
                let n = self
                    .targets(target)
                    .iter()
                    .filter(|s| s.control(Control::Subscribe(room.clone())))
                    .count();
                NodeReply::Affected(n as u64)
            }
            NodeRequest::Unsubscribe { target, room } => {
                let n = self
                    .targets(target)
                    .iter()
                    .filter(|s| s.control(Control::Unsubscribe(room.clone())))
                    .count();
                NodeReply::Affected(n as u64)
            }
        }
    }

    fn node_info(&self) -> NodeInfo {
        let (address, grpc_address) = self.addresses.get().cloned().unwrap_or_default();
        NodeInfo {
            id: self.node_id.clone(),
            address,
            grpc_address,
            connections: self.metrics.connections.get().max(0) as u64,
            rooms: self.metrics.rooms.get().max(0) as u64,
            subscriptions: self.metrics.subscriptions.get().max(0) as u64,
            uptime_seconds: self.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

fn policy_name(p: OverflowPolicy) -> &'static str {
    match p {
        OverflowPolicy::Disconnect => "disconnect",
        OverflowPolicy::DropOldest => "drop_oldest",
        OverflowPolicy::LatestPerKey => "latest_per_key",
    }
}

impl Hub {
    /// Queues a frame for a session and counts what its policy dropped.
    fn push(&self, s: &ClientShared, item: Outbound, policy: OverflowPolicy) {
        // A dialect may have nothing to say (a socket.io reply nobody asked
        // an acknowledgement for).
        if item.frame.is_empty() {
            return;
        }
        let dropped = match s.queue.push(item, policy) {
            Pushed::QueuedDropping(n) => n as u64,
            Pushed::Replaced => 1,
            _ => return,
        };
        self.metrics
            .slow_consumer_drops
            .add(policy_name(policy), dropped);
    }
}
