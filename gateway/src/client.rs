//! What every client is, whatever protocol it speaks and over whatever
//! transport: its identity, grants, rooms, limits and outbound queue.
//!
//! [`ClientShared`] is all the hub and the control plane ever see of a
//! client. [`Client`] is the part a front-end task owns: the commands every
//! protocol has (subscribe, unsubscribe, publish, presence), with their
//! checks, answered in the client's own dialect through its queue. The
//! front-ends (`session.rs` for roomcast.v1 over WebSocket, `socketio/` for
//! socket.io over WebSocket or long-polling) only decode, call these, and
//! write what the queue holds.

use crate::auth::Grant;
use crate::backend::{Backend, Peer};
use crate::config::OverflowPolicy;
use crate::outbound::{Control, Outbound, OutboundQueue};
use crate::protocol::{Data, ErrorCode, ServerEvent, Subprotocol};
use crate::Node;
use bytes::Bytes;
use roomcast_adapter::{
    ClientInfo, NodeReply, NodeRequest, PresenceEvent, PublishRequest, StreamPosition,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// What the rest of the node knows about a client.
pub struct ClientShared {
    /// Node-local id.
    pub id: u64,
    /// Cluster-wide client id (a socket.io client's socket id).
    pub client_id: String,
    user: OnceLock<String>,
    /// The dialect its frames are encoded in.
    pub proto: Subprotocol,
    /// The socket.io namespace the client is in (`/` for everything else):
    /// frames for it carry this prefix.
    pub nsp: Arc<str>,
    /// Outbound frames and control work. Several socket.io namespaces of
    /// one connection share one queue: they share one transport.
    pub queue: Arc<OutboundQueue>,
    /// Backend hook calls in flight for this client (`backend.max_per_session`).
    pub backend_calls: AtomicUsize,
    peer: OnceLock<Peer>,
    presence_info: OnceLock<String>,
}

impl ClientShared {
    /// A client with its own queue and a fresh client id.
    pub fn new(id: u64, proto: Subprotocol, queue_limit: usize) -> Self {
        Self::with_queue(
            id,
            uuid::Uuid::new_v4().to_string(),
            proto,
            Arc::from("/"),
            Arc::new(OutboundQueue::new(queue_limit)),
        )
    }

    /// A client on a queue it may share.
    pub fn with_queue(
        id: u64,
        client_id: String,
        proto: Subprotocol,
        nsp: Arc<str>,
        queue: Arc<OutboundQueue>,
    ) -> Self {
        Self {
            id,
            client_id,
            user: OnceLock::new(),
            proto,
            nsp,
            queue,
            backend_calls: AtomicUsize::new(0),
            peer: OnceLock::new(),
            presence_info: OnceLock::new(),
        }
    }

    /// Records where the client connected from, for the backend (once).
    pub fn set_peer(&self, peer: Peer) {
        let _ = self.peer.set(peer);
    }

    /// Where the client connected from, when its front-end said.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.get()
    }

    /// Sets what presence shows of the client besides its user: the JSON
    /// the backend's Connect gave (once, before the client joins a room).
    pub fn set_presence_info(&self, info: String) {
        let _ = self.presence_info.set(info);
    }

    /// The authenticated user, "" when anonymous.
    pub fn user(&self) -> &str {
        self.user.get().map_or("", String::as_str)
    }

    /// How presence shows this client.
    pub fn info(&self, node: &str) -> ClientInfo {
        ClientInfo {
            client_id: self.client_id.clone(),
            user: self.user().to_owned(),
            node: node.to_owned(),
            info: self.presence_info.get().cloned().unwrap_or_default(),
        }
    }

    /// Encodes a reply or event for this client (`id` 0: not a reply).
    pub fn encode(&self, id: u64, event: &ServerEvent<'_>) -> Bytes {
        self.proto.encode_for(&self.nsp, id, event)
    }

    /// Whether the front-end tracks, per room, the offset of the last
    /// publication written to this client (socket.io connection state
    /// recovery): its publications then carry their room and offset.
    pub fn tracks_positions(&self) -> bool {
        matches!(self.proto, Subprotocol::SocketIo(d) if d.offsets)
    }

    /// Hands control work to the task that owns this client.
    pub fn control(&self, c: Control) -> bool {
        self.queue.control(self.id, c)
    }
}

/// Checks a room name: 1 to 200 bytes of `[A-Za-z0-9_.:@/-]`.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= 200
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:@/-".contains(&b))
}

/// Flattens every node's presence answer.
pub fn merge_presence(replies: Vec<NodeReply>) -> Vec<ClientInfo> {
    let mut clients: Vec<ClientInfo> = replies
        .into_iter()
        .flat_map(|r| match r {
            NodeReply::Presence(c) => c,
            _ => Vec::new(),
        })
        .collect();
    clients.sort();
    clients.dedup();
    clients
}

/// A token bucket: `rate` per second, bursts of `rate`.
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// `rate` per second; 0 is unlimited.
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate as f64,
            tokens: rate as f64,
            last: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A failed command: the error the client gets.
pub type Refusal = (ErrorCode, String);

/// The state of one client that its front-end task owns.
pub struct Client {
    /// The node.
    pub node: Arc<Node>,
    /// What the hub sees.
    pub shared: Arc<ClientShared>,
    /// Rooms it is subscribed to.
    pub rooms: HashSet<String>,
    /// Where each room stood when the client joined it (the front-end
    /// moves these on as it writes publications, when it tracks them).
    pub positions: HashMap<String, StreamPosition>,
    /// Its token's grant, when auth is on and it authenticated.
    pub grant: Option<Grant>,
    /// When its token expires.
    pub expires: Option<Instant>,
    /// Why the client ends, told to the backend (`Disconnected`) on cleanup.
    pub end_reason: &'static str,
    rate: RateLimit,
}

impl Client {
    /// A client of `node`, registered with the hub until [`Client::cleanup`].
    pub fn new(node: Arc<Node>, shared: Arc<ClientShared>) -> Self {
        node.hub.add_session(shared.clone());
        Self {
            rate: RateLimit::new(node.config.command_rate),
            node,
            shared,
            rooms: HashSet::new(),
            positions: HashMap::new(),
            grant: None,
            expires: None,
            end_reason: "normal",
        }
    }

    /// Takes the grant of a verified token.
    pub fn authenticate(&mut self, g: Grant) {
        let _ = self.shared.user.set(g.user.clone());
        self.expires = g.expires_at.map(|exp| {
            let now_unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            Instant::now() + Duration::from_secs(exp.saturating_sub(now_unix))
        });
        self.grant = Some(g);
    }

    /// Whether the command rate allows one more command now.
    pub fn allow_command(&mut self) -> bool {
        self.rate.allow(Instant::now())
    }

    /// Queues a reply frame (replies are never dropped by a policy).
    pub fn reply_frame(&self, f: Bytes) {
        if !f.is_empty() {
            self.shared
                .queue
                .push(Outbound::reply(f), OverflowPolicy::Disconnect);
        }
    }

    /// Queues a reply to command `id` (none for 0).
    pub fn reply(&self, id: u64, event: &ServerEvent<'_>) {
        if id != 0 {
            self.reply_frame(self.shared.encode(id, event));
        }
    }

    /// Counts and queues an error reply.
    pub fn error(&self, id: u64, code: ErrorCode, message: &str) {
        self.node.metrics.command_error(code.as_str());
        self.reply_frame(
            self.shared
                .encode(id, &ServerEvent::Error { code, message }),
        );
    }

    fn refuse(&self, id: u64, (code, message): Refusal) {
        self.error(id, code, &message);
    }

    /// Checks a room name and the grant.
    pub fn check_room(
        &self,
        room: &str,
        allowed: impl Fn(&Grant, &str) -> bool,
    ) -> Result<(), Refusal> {
        if !valid_room(room) {
            return Err((
                ErrorCode::BadRequest,
                "invalid room name: 1 to 200 bytes of [A-Za-z0-9_.:@/-]".into(),
            ));
        }
        if let Some(g) = &self.grant {
            if !allowed(g, room) {
                return Err((ErrorCode::Forbidden, format!("not allowed for room {room}")));
            }
        }
        Ok(())
    }

    /// `subscribe`: checks, then joins; the hub queues the reply and what
    /// the client missed.
    pub async fn subscribe(&mut self, room: String, since: Option<StreamPosition>, id: u64) {
        if let Err(r) = self.check_room(&room, |g, r| g.may_subscribe(r)) {
            return self.refuse(id, r);
        }
        if self.rooms.contains(&room) {
            return self.error(id, ErrorCode::BadRequest, "already subscribed");
        }
        if self.rooms.len() >= self.node.config.max_rooms_per_session {
            let msg = format!(
                "at most {} rooms per session",
                self.node.config.max_rooms_per_session
            );
            return self.error(id, ErrorCode::TooManyRequests, &msg);
        }
        // The backend's Subscribe hook, when the room's namespace has one.
        if Backend::subscribe_hook_on(&self.node, &room) {
            let hook =
                Backend::check_subscribe(self.node.clone(), self.shared.clone(), room.clone());
            if let Err(r) = hook.await {
                return self.refuse(id, r);
            }
        }
        self.join(room, since, id).await;
    }

    /// Joins a room without the checks of a client command (the node's own
    /// decisions: gRPC `Subscribe`, socket.io `join` lists).
    pub async fn join(&mut self, room: String, since: Option<StreamPosition>, id: u64) {
        let hub = self.node.hub.clone();
        match hub.subscribe(&self.shared, &room, since, id).await {
            Ok(start) => {
                hub.announce(&room, PresenceEvent::Join(self.shared.info(hub.node_id())))
                    .await;
                self.positions.insert(room.clone(), start);
                self.rooms.insert(room);
            }
            Err(e) => {
                let code = e.code();
                self.error(id, code, &e.to_string());
            }
        }
    }

    /// `unsubscribe`.
    pub async fn unsubscribe(&mut self, room: &str, id: u64) {
        if !self.rooms.contains(room) {
            return self.error(id, ErrorCode::NotFound, "not subscribed");
        }
        self.leave(room).await;
        self.reply(id, &ServerEvent::Unsubscribed { room });
    }

    /// Leaves a room (no reply).
    pub async fn leave(&mut self, room: &str) {
        self.rooms.remove(room);
        self.positions.remove(room);
        let hub = self.node.hub.clone();
        if hub.unsubscribe(&self.shared, room).await {
            hub.announce(room, PresenceEvent::Leave(self.shared.info(hub.node_id())))
                .await;
        }
    }

    /// `publish`: checks, then hands the publication to the adapter.
    /// Returns its offset when accepted (the reply is already queued).
    pub async fn publish(&mut self, room: String, event: String, data: Data, id: u64) -> bool {
        if let Err(r) = self.check_room(&room, |g, r| g.may_publish(r)) {
            self.refuse(id, r);
            return false;
        }
        let ns = self.node.hub.namespaces().for_room(&room);
        if !ns.client_publish {
            self.error(
                id,
                ErrorCode::Forbidden,
                "clients may not publish in this namespace",
            );
            return false;
        }
        self.publish_unchecked(room, event, data, id).await
    }

    /// Publishes without the client-publish checks (a socket.io event the
    /// configuration routes to a room).
    pub async fn publish_unchecked(
        &mut self,
        room: String,
        event: String,
        data: Data,
        id: u64,
    ) -> bool {
        // The backend's Publish hook, when the room's namespace has one: it
        // may refuse the publication or replace its data.
        let data = if Backend::publish_hook_on(&self.node, &room) {
            let hook = Backend::check_publish(
                self.node.clone(),
                self.shared.clone(),
                room.clone(),
                event.clone(),
                data.clone(),
            );
            match hook.await {
                Ok(replaced) => replaced.unwrap_or(data),
                Err(r) => {
                    self.refuse(id, r);
                    return false;
                }
            }
        } else {
            data
        };
        let ns = self.node.hub.namespaces().for_room(&room);
        let request = PublishRequest {
            room: room.clone(),
            event,
            data: data.bytes,
            binary: data.binary,
            exclude_client_id: String::new(),
            idempotency_key: String::new(),
            history: ns.history(),
        };
        match self.node.hub.adapter().publish(request).await {
            Ok(res) => {
                self.node.metrics.publication("client");
                self.reply(
                    id,
                    &ServerEvent::Published {
                        room: &room,
                        offset: res.offset,
                    },
                );
                true
            }
            Err(e) => {
                tracing::warn!(room, error = %e, "client publish failed");
                self.error(
                    id,
                    ErrorCode::Internal,
                    "publication not accepted: adapter unavailable",
                );
                false
            }
        }
    }

    /// `presence`.
    pub async fn presence(&mut self, room: String, id: u64) {
        if let Err(r) = self.check_room(&room, |g, r| g.may_subscribe(r)) {
            return self.refuse(id, r);
        }
        if !self.node.hub.namespaces().for_room(&room).presence {
            return self.error(
                id,
                ErrorCode::Forbidden,
                "presence is not enabled in this namespace",
            );
        }
        match self
            .node
            .hub
            .adapter()
            .survey(NodeRequest::Presence { room: room.clone() })
            .await
        {
            Ok(replies) => {
                let clients = merge_presence(replies);
                self.reply(
                    id,
                    &ServerEvent::Presence {
                        room: &room,
                        clients: &clients,
                    },
                );
            }
            Err(e) => self.error(
                id,
                ErrorCode::Internal,
                &format!("presence unavailable: {e}"),
            ),
        }
    }

    /// `rpc`: the backend answers in a task of its own, so the client's
    /// other commands do not wait; the reply to `id` is queued when it comes.
    pub fn rpc(&self, method: String, data: Data, id: u64) {
        let started = Backend::spawn_rpc(self.node.clone(), self.shared.clone(), method, data, id);
        if let Err(r) = started {
            self.refuse(id, r);
        }
    }

    /// gRPC `Subscribe`/`Unsubscribe` for this client. Returns the close a
    /// gRPC `Disconnect` asks for.
    pub async fn control(&mut self, c: Control) -> Option<(u16, String)> {
        match c {
            Control::Subscribe(room) => {
                if !self.rooms.contains(&room) {
                    self.join(room, None, 0).await;
                }
            }
            Control::Unsubscribe(room) => {
                if self.rooms.contains(&room) {
                    self.leave(&room).await;
                    let f = self
                        .shared
                        .encode(0, &ServerEvent::Unsubscribed { room: &room });
                    self.reply_frame(f);
                }
            }
            Control::Close(code, reason) => return Some((code, reason)),
        }
        None
    }

    /// Leaves every room and the hub.
    pub async fn cleanup(&mut self) {
        let hub = self.node.hub.clone();
        let rooms: Vec<String> = self.rooms.drain().collect();
        for room in rooms {
            if hub.unsubscribe(&self.shared, &room).await {
                hub.announce(&room, PresenceEvent::Leave(self.shared.info(hub.node_id())))
                    .await;
            }
        }
        hub.remove_session(self.shared.id);
        Backend::notify_disconnected(&self.node, &self.shared, self.end_reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(valid_room("chat.lobby"));
        assert!(valid_room("a:b@c/d-e_f"));
        assert!(!valid_room(""));
        assert!(!valid_room("has space"));
        assert!(!valid_room(&"x".repeat(201)));
        assert!(valid_room(&"x".repeat(200)));
    }
}
