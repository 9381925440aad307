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
use crate::pipeline::{Outcome, Pipeline};
use crate::protocol::{Data, ErrorCode, ServerEvent, Subprotocol};
use crate::Node;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
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

/// Membership changes in flight for one room.
struct PendingRoom {
    /// Whether the client is in the room once they have all run.
    member: bool,
    /// How many are in flight.
    ops: u32,
}

/// The state of one client that its front-end task owns.
pub struct Client {
    /// The node.
    pub node: Arc<Node>,
    /// What the hub sees.
    pub shared: Arc<ClientShared>,
    /// Rooms it is subscribed to (as of the last finished operation).
    pub rooms: HashSet<String>,
    /// Where each room stood when the client joined it (the front-end
    /// moves these on as it writes publications, when it tracks them).
    pub positions: HashMap<String, StreamPosition>,
    /// Its token's grant, when auth is on and it authenticated.
    pub grant: Option<Grant>,
    /// When its token expires.
    pub expires: Option<Instant>,
    /// Commands waiting on the adapter. The front-end polls
    /// [`Pipeline::next`] (or `poll_next`) and hands each outcome to
    /// [`Client::apply`].
    pub pipeline: Pipeline,
    /// Subscribes and unsubscribes still in the pipeline, by room: the
    /// checks of later commands see the rooms as they will be.
    pending_rooms: HashMap<String, PendingRoom>,
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
            pipeline: Pipeline::default(),
            pending_rooms: HashMap::new(),
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

    /// Whether the pipeline is full: the front-end reads no more commands
    /// until an outcome frees a place. Counts the first time it fills.
    pub fn pipeline_full(&self) -> bool {
        self.pipeline.len() >= self.node.config.max_pending_commands
    }

    /// Queues a reply frame (replies are never dropped by a policy), behind
    /// the commands still in flight.
    pub fn reply_frame(&mut self, f: Bytes) {
        if f.is_empty() {
            return;
        }
        if self.pipeline.is_empty() {
            self.push_reply(f);
        } else {
            self.pipeline.push_reply(f);
        }
    }

    fn push_reply(&self, f: Bytes) {
        if !f.is_empty() {
            self.shared
                .queue
                .push(Outbound::reply(f), OverflowPolicy::Disconnect);
        }
    }

    /// Queues a reply to command `id` (none for 0).
    pub fn reply(&mut self, id: u64, event: &ServerEvent<'_>) {
        if id != 0 {
            let f = self.shared.encode(id, event);
            self.reply_frame(f);
        }
    }

    /// Counts and queues an error reply.
    pub fn error(&mut self, id: u64, code: ErrorCode, message: &str) {
        let f = error_frame(&self.node, &self.shared, id, code, message);
        self.reply_frame(f);
    }

    fn refuse(&mut self, id: u64, (code, message): Refusal) {
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

    /// Whether the client is in `room` once the commands in flight have run.
    pub fn is_member(&self, room: &str) -> bool {
        match self.pending_rooms.get(room) {
            Some(p) => p.member,
            None => self.rooms.contains(room),
        }
    }

    fn member_count(&self) -> usize {
        let joining = self
            .pending_rooms
            .iter()
            .filter(|(r, p)| p.member && !self.rooms.contains(*r))
            .count();
        let leaving = self
            .pending_rooms
            .iter()
            .filter(|(r, p)| !p.member && self.rooms.contains(*r))
            .count();
        self.rooms.len() + joining - leaving
    }

    fn plan_membership(&mut self, room: &str, member: bool) {
        let p = self
            .pending_rooms
            .entry(room.to_owned())
            .or_insert(PendingRoom { member, ops: 0 });
        p.member = member;
        p.ops += 1;
    }

    fn settle_membership(&mut self, room: &str) {
        if let Some(p) = self.pending_rooms.get_mut(room) {
            p.ops -= 1;
            if p.ops == 0 {
                self.pending_rooms.remove(room);
            }
        }
    }

    /// Starts an operation, or queues it behind what it must follow. One
    /// that can finish at once (the memory adapter) is applied at once.
    fn start(
        &mut self,
        exclusive: bool,
        start: impl FnOnce() -> BoxFuture<'static, Outcome> + Send + 'static,
    ) {
        if !self.pipeline.may_start_now(exclusive) {
            self.pipeline.push(exclusive, start);
            return;
        }
        let mut fut = start();
        if self.pipeline.is_empty() {
            if let Some(outcome) = (&mut fut).now_or_never() {
                self.apply(outcome);
                return;
            }
        }
        self.pipeline.push_started(exclusive, fut);
    }

    /// Applies what a finished operation left: its reply, and the change
    /// to the client's rooms.
    pub fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Reply(f) => self.push_reply(f),
            Outcome::Joined { room, result, id } => {
                self.settle_membership(&room);
                match result {
                    Ok(start) => {
                        self.positions.insert(room.clone(), start);
                        self.rooms.insert(room);
                    }
                    Err((code, message)) => {
                        let f = error_frame(&self.node, &self.shared, id, code, &message);
                        self.push_reply(f);
                    }
                }
            }
            Outcome::Left { room, frame } => {
                self.settle_membership(&room);
                self.rooms.remove(&room);
                self.positions.remove(&room);
                self.push_reply(frame);
            }
        }
    }

    /// Runs the pipeline to its end, applying every outcome (front-ends
    /// that handle one command at a time, and the end of a session).
    pub async fn settle(&mut self) {
        while let Some(outcome) = self.pipeline.next().await {
            self.apply(outcome);
        }
    }

    /// `subscribe`: checks, then joins; the hub queues the reply and what
    /// the client missed.
    pub fn subscribe(&mut self, room: String, since: Option<StreamPosition>, id: u64) {
        if let Err(r) = self.check_room(&room, |g, r| g.may_subscribe(r)) {
            return self.refuse(id, r);
        }
        if self.is_member(&room) {
            return self.error(id, ErrorCode::BadRequest, "already subscribed");
        }
        if self.member_count() >= self.node.config.max_rooms_per_session {
            let msg = format!(
                "at most {} rooms per session",
                self.node.config.max_rooms_per_session
            );
            return self.error(id, ErrorCode::TooManyRequests, &msg);
        }
        self.join_with(room, since, id, true);
    }

    /// Joins a room without the checks of a client command (the node's own
    /// decisions: gRPC `Subscribe`, socket.io `join` lists, the backend's
    /// Connect).
    pub fn join(&mut self, room: String, since: Option<StreamPosition>, id: u64) {
        self.join_with(room, since, id, false);
    }

    /// Joins a room, first asking the backend's Subscribe hook when `hook`
    /// and the room's namespace has one.
    fn join_with(&mut self, room: String, since: Option<StreamPosition>, id: u64, hook: bool) {
        if self.is_member(&room) {
            return self.error(id, ErrorCode::BadRequest, "already subscribed");
        }
        let hook = hook && Backend::subscribe_hook_on(&self.node, &room);
        self.plan_membership(&room, true);
        let node = self.node.clone();
        let shared = self.shared.clone();
        self.start(true, move || {
            async move {
                if hook {
                    let asked =
                        Backend::check_subscribe(node.clone(), shared.clone(), room.clone());
                    if let Err(refusal) = asked.await {
                        return Outcome::Joined {
                            room,
                            result: Err(refusal),
                            id,
                        };
                    }
                }
                let hub = &node.hub;
                let result = match hub.subscribe(&shared, &room, since, id).await {
                    Ok(start) => {
                        hub.announce(&room, PresenceEvent::Join(shared.info(hub.node_id())))
                            .await;
                        Ok(start)
                    }
                    Err(e) => Err((e.code(), e.to_string())),
                };
                Outcome::Joined { room, result, id }
            }
            .boxed()
        });
    }

    /// `unsubscribe`.
    pub fn unsubscribe(&mut self, room: &str, id: u64) {
        if !self.is_member(room) {
            return self.error(id, ErrorCode::NotFound, "not subscribed");
        }
        let frame = if id == 0 {
            Bytes::new()
        } else {
            self.shared.encode(id, &ServerEvent::Unsubscribed { room })
        };
        self.leave(room, frame);
    }

    /// Leaves a room, then sends `frame` (may be empty).
    pub fn leave(&mut self, room: &str, frame: Bytes) {
        self.plan_membership(room, false);
        let hub = self.node.hub.clone();
        let shared = self.shared.clone();
        let room = room.to_owned();
        self.start(true, move || {
            async move {
                if hub.unsubscribe(&shared, &room).await {
                    hub.announce(&room, PresenceEvent::Leave(shared.info(hub.node_id())))
                        .await;
                }
                Outcome::Left { room, frame }
            }
            .boxed()
        });
    }

    /// `publish`: checks, then hands the publication to the adapter; the
    /// reply follows when the adapter has accepted it.
    pub fn publish(&mut self, room: String, event: String, data: Data, id: u64) {
        if let Err(r) = self.check_room(&room, |g, r| g.may_publish(r)) {
            return self.refuse(id, r);
        }
        let ns = self.node.hub.namespaces().for_room(&room);
        if !ns.client_publish {
            return self.error(
                id,
                ErrorCode::Forbidden,
                "clients may not publish in this namespace",
            );
        }
        self.publish_unchecked(room, event, data, id);
    }

    /// Publishes without the client-publish checks (a socket.io event the
    /// configuration routes to a room).
    pub fn publish_unchecked(&mut self, room: String, event: String, data: Data, id: u64) {
        let node = self.node.clone();
        let shared = self.shared.clone();
        if Backend::publish_hook_on(&self.node, &room) {
            // The backend may refuse or rewrite each publication, so each is
            // decided before the next starts: none overtakes another.
            self.start(true, move || {
                async move {
                    let asked = Backend::check_publish(
                        node.clone(),
                        shared.clone(),
                        room.clone(),
                        event.clone(),
                        data.clone(),
                    );
                    match asked.await {
                        Ok(replaced) => {
                            let data = replaced.unwrap_or(data);
                            accept(&node, shared, room, event, data, id).await
                        }
                        Err((code, message)) => {
                            Outcome::Reply(error_frame(&node, &shared, id, code, &message))
                        }
                    }
                }
                .boxed()
            });
            return;
        }
        self.start(false, move || {
            accept(&node, shared, room, event, data, id).boxed()
        });
    }

    /// `rpc`: the backend's answer is the reply, in command order; the
    /// client's other commands go on meanwhile.
    pub fn rpc(&mut self, method: String, data: Data, id: u64) {
        let permit = match Backend::rpc_permit(&self.node, &self.shared, &method) {
            Ok(permit) => permit,
            Err(r) => return self.refuse(id, r),
        };
        let node = self.node.clone();
        let shared = self.shared.clone();
        self.start(false, move || {
            async move {
                let frame =
                    match Backend::rpc_with(node.clone(), shared.clone(), method, data, permit)
                        .await
                    {
                        Ok(data) if id != 0 => shared.encode(id, &ServerEvent::Rpc { data: &data }),
                        Ok(_) => Bytes::new(),
                        Err((code, message)) => error_frame(&node, &shared, id, code, &message),
                    };
                Outcome::Reply(frame)
            }
            .boxed()
        });
    }

    /// `presence`.
    pub fn presence(&mut self, room: String, id: u64) {
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
        let node = self.node.clone();
        let shared = self.shared.clone();
        self.start(false, move || {
            async move {
                let asked = node
                    .hub
                    .adapter()
                    .survey(NodeRequest::Presence { room: room.clone() });
                let frame = match asked.await {
                    Ok(replies) => {
                        let clients = merge_presence(replies);
                        shared.encode(
                            id,
                            &ServerEvent::Presence {
                                room: &room,
                                clients: &clients,
                            },
                        )
                    }
                    Err(e) => error_frame(
                        &node,
                        &shared,
                        id,
                        ErrorCode::Internal,
                        &format!("presence unavailable: {e}"),
                    ),
                };
                Outcome::Reply(frame)
            }
            .boxed()
        });
    }

    /// gRPC `Subscribe`/`Unsubscribe` for this client. Returns the close a
    /// gRPC `Disconnect` asks for.
    pub fn control(&mut self, c: Control) -> Option<(u16, String)> {
        match c {
            Control::Subscribe(room) => {
                if !self.is_member(&room) {
                    self.join(room, None, 0);
                }
            }
            Control::Unsubscribe(room) => {
                if self.is_member(&room) {
                    let f = self
                        .shared
                        .encode(0, &ServerEvent::Unsubscribed { room: &room });
                    self.leave(&room, f);
                }
            }
            Control::Close(code, reason) => return Some((code, reason)),
        }
        None
    }

    /// Lets what is in flight finish, then leaves every room and the hub.
    pub async fn cleanup(&mut self) {
        self.settle().await;
        let hub = self.node.hub.clone();
        let rooms: Vec<String> = self.rooms.drain().collect();
        self.positions.clear();
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

/// Hands a publication to the adapter (which fixes its place in its
/// room's order now) and returns the future of its reply.
fn accept(
    node: &Arc<Node>,
    shared: Arc<ClientShared>,
    room: String,
    event: String,
    data: Data,
    id: u64,
) -> impl std::future::Future<Output = Outcome> + Send + 'static {
    let ns = node.hub.namespaces().for_room(&room);
    let request = PublishRequest {
        room,
        event,
        data: data.bytes,
        binary: data.binary,
        exclude_client_id: String::new(),
        idempotency_key: String::new(),
        history: ns.history(),
    };
    let room = request.room.clone();
    let accepted = node.hub.adapter().publish(request);
    let node = node.clone();
    async move {
        let frame = match accepted.await {
            Ok(res) => {
                node.metrics.publication("client");
                if id == 0 {
                    Bytes::new()
                } else {
                    shared.encode(
                        id,
                        &ServerEvent::Published {
                            room: &room,
                            offset: res.offset,
                        },
                    )
                }
            }
            Err(e) => {
                tracing::warn!(room, error = %e, "client publish failed");
                error_frame(
                    &node,
                    &shared,
                    id,
                    ErrorCode::Internal,
                    "publication not accepted: adapter unavailable",
                )
            }
        };
        Outcome::Reply(frame)
    }
}

/// Counts an error and encodes its reply.
fn error_frame(
    node: &Node,
    shared: &ClientShared,
    id: u64,
    code: ErrorCode,
    message: &str,
) -> Bytes {
    node.metrics.command_error(code.as_str());
    shared.encode(id, &ServerEvent::Error { code, message })
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
