//! One Engine.IO session: a task that outlives its transports.
//!
//! Long-polling requests come and go as messages on the session's channel
//! ([`Input`]); a WebSocket arrives as a stream, either at the start or as
//! an upgrade (probe `2probe`/`3probe`, then `5`), after which the session
//! owns it. Whatever the transport, everything sent goes through the
//! session's [`OutboundQueue`] as WebSocket frames (the hub's shared bytes);
//! a poll reads the same frames back out as a payload.
//!
//! On top runs Socket.IO: each connected namespace is a [`Client`] with its
//! own socket id, so the hub and the control plane see socket.io sockets
//! like any other client.

use super::engineio::{self, Eio, Packet as EPacket};
use super::packet::{self, EncArg, Event, Kind, Packet as SPacket, Sio};
use super::{engine_frame, frames, polling, recovery, Dialect};
use crate::auth::Grant;
use crate::backend::{Backend, ConnectInput, Peer};
use crate::client::{Client, ClientShared};
use crate::config::OverflowPolicy;
use crate::outbound::{Control, Outbound, OutboundQueue};
use crate::pipeline::Outcome;
use crate::protocol::{Data, ErrorCode, Subprotocol};
use crate::server::ConnectionSlot;
use crate::ws::close;
use crate::ws::frame::{self, FrameReader, Message, OpCode};
use crate::Node;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use parking_lot::Mutex;
use roomcast_adapter::StreamPosition;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most frames written by one vectored write.
const MAX_IOV: usize = 64;
/// Before the first namespace connects, in conformance mode (the suites
/// wait two seconds for the close).
const CONFORMANCE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What reaches a session from outside its own transport.
pub enum Input {
    /// A long-polling GET waiting for a payload.
    Poll(oneshot::Sender<PollReply>),
    /// A long-polling POST's body.
    Post(Bytes, oneshot::Sender<Result<(), &'static str>>),
    /// A WebSocket for this session (an upgrade).
    Upgrade(TcpStream, Bytes),
}

/// The answer to a poll.
pub enum PollReply {
    /// 200 with this body.
    Payload(Vec<u8>),
    /// 400: the poll is refused (a second one while one waits, after an upgrade).
    Refused(&'static str),
}

/// Open sessions by id, for polling requests and upgrades.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<Arc<str>, mpsc::Sender<Input>>>,
    /// Where the other nodes are, for requests of their sessions.
    pub owners: super::forward::Owners,
}

impl Registry {
    /// The channel of session `sid`.
    pub fn get(&self, sid: &str) -> Option<mpsc::Sender<Input>> {
        self.sessions.lock().get(sid).cloned()
    }

    fn insert(&self, sid: Arc<str>, tx: mpsc::Sender<Input>) {
        self.sessions.lock().insert(sid, tx);
    }

    fn remove(&self, sid: &str) {
        self.sessions.lock().remove(sid);
    }

    /// Open sessions.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// socket.io for clients.
    SocketIo,
    /// The Socket.IO protocol suite's test server.
    ConformanceSocketIo,
    /// The Engine.IO protocol suite's echo server.
    ConformanceEngineIo,
}

/// Everything a new session starts with.
pub struct Start {
    /// Protocol revision.
    pub eio: Eio,
    /// What it serves.
    pub role: Role,
    /// The transport it opens on: a WebSocket, or long-polling (`None`).
    pub websocket: Option<(TcpStream, Bytes)>,
    /// Polls may be answered with v3 binary payloads (a v3 client that did
    /// not ask for `b64`).
    pub binary_payloads: bool,
    /// A grant from the `token` query parameter.
    pub grant: Option<Grant>,
    /// Counts against the node's connection limit while the session lives.
    pub slot: ConnectionSlot,
    /// Where the client connected from, for the backend.
    pub peer: Peer,
}

/// A WebSocket transport.
struct Ws {
    stream: TcpStream,
    rbuf: BytesMut,
    hint: usize,
    reader: FrameReader,
    /// Frames taken from the queue, not yet fully written.
    out: VecDeque<Outbound>,
    written: usize,
    /// Frames written completely since the last count.
    completed: u64,
    /// A close frame went out already.
    close_sent: bool,
    /// The client's Close came.
    peer_closed: bool,
}

impl Ws {
    fn new(stream: TcpStream, read_ahead: Bytes, max: usize) -> Self {
        Self {
            stream,
            rbuf: BytesMut::from(&read_ahead[..]),
            hint: 0,
            reader: FrameReader::new(max),
            out: VecDeque::new(),
            written: 0,
            completed: 0,
            close_sent: false,
            peer_closed: false,
        }
    }

    /// Reads what is there. `Ok(false)` at end of stream.
    fn read_some(&mut self) -> io::Result<bool> {
        self.rbuf.reserve(self.hint.clamp(16 * 1024, 256 * 1024));
        match self.stream.read_buf(&mut self.rbuf).now_or_never() {
            Some(Ok(0)) => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Writes what the socket takes; returns the bytes of finished and
    /// partly written frames, for the queue's accounting.
    fn write_some(&mut self, done: &mut Vec<(Arc<str>, u64)>) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, o) in self.out.iter().take(MAX_IOV).enumerate() {
            let start = if i == 0 { self.written } else { 0 };
            iov[n] = IoSlice::new(&o.frame[start..]);
            n += 1;
        }
        let mut left = self.stream.try_write_vectored(&iov[..n])?;
        let total = left;
        while left > 0 {
            let len = self.out[0].frame.len() - self.written;
            if left < len {
                self.written += left;
                break;
            }
            left -= len;
            self.written = 0;
            if let Some(o) = self.out.pop_front() {
                self.completed += 1;
                if let (Some(room), true) = (o.key, o.offset > 0) {
                    done.push((room, o.offset));
                }
            }
        }
        Ok(total)
    }

    async fn send_now(&mut self, frame: &[u8]) -> io::Result<()> {
        self.stream.write_all(frame).await
    }
}

enum Transport {
    Polling,
    WebSocket(Box<Ws>),
}

/// One connected namespace.
struct Namespace {
    client: Client,
    /// Its private id, when recovery is on.
    pid: Option<String>,
}

struct Session {
    node: Arc<Node>,
    sid: Arc<str>,
    eio: Eio,
    sio: Sio,
    role: Role,
    queue: Arc<OutboundQueue>,
    transport: Transport,
    /// A WebSocket being probed for an upgrade.
    probe: Option<Box<Ws>>,
    /// Polls are answered with noop from the probe on: data waits for the
    /// new transport.
    upgrading: bool,
    pending_poll: Option<oneshot::Sender<PollReply>>,
    /// Some namespace's pipeline was full at the last look (counts each
    /// time one fills).
    pipeline_full: bool,
    binary_payloads: bool,
    namespaces: HashMap<String, Namespace>,
    /// A binary packet still waiting for attachments.
    partial: Option<(SPacket, Vec<Bytes>)>,
    query_grant: Option<Grant>,
    /// Where the client connected from (the transport it opened on).
    peer: Peer,
    ping_interval: Duration,
    ping_timeout: Duration,
    /// v4: when our ping went out, until its pong.
    ping_sent: Option<Instant>,
    /// v4: when the next ping goes out. v3: by when the client must ping.
    next_ping: Instant,
    connect_deadline: Option<Instant>,
    /// The client closed over polling: the next poll gets a noop, then the
    /// session ends, by this time at the latest.
    closing_poll: Option<Instant>,
    /// Publications written while recovery is on, not yet confirmed by a
    /// pong: write number, room, offset.
    log: VecDeque<(u64, Arc<str>, u64)>,
    /// Writes so far.
    write_seq: u64,
    /// The write number the outstanding ping followed.
    ping_seq: Option<u64>,
    /// Per room, the newest offset the client confirmed having.
    confirmed: HashMap<Arc<str>, u64>,
    /// False once the log lost unconfirmed entries.
    log_complete: bool,
    /// The sockets' rooms or confirmed positions changed since their state
    /// was last kept for recovery.
    snapshot_due: bool,
    /// Why the session ended, once it has.
    ended: Option<&'static str>,
}

/// Starts a session and returns its id (the open packet is already queued).
pub fn start(node: Arc<Node>, start: Start) -> Arc<str> {
    let sid: Arc<str> = Arc::from(super::forward::new_sid(&node.config.node_id));
    let (tx, rx) = mpsc::channel(16);
    node.socketio.insert(sid.clone(), tx);
    let sio_cfg = &node.config.socketio;
    let ping_interval = sio_cfg.ping_interval.unwrap_or(node.config.ping_interval);
    let ping_timeout = sio_cfg.ping_timeout.unwrap_or(node.config.ping_timeout);
    let queue = Arc::new(OutboundQueue::new(node.config.max_queue_bytes));
    let now = Instant::now();
    let connect_timeout = match start.role {
        Role::ConformanceSocketIo => Some(CONFORMANCE_CONNECT_TIMEOUT),
        Role::SocketIo => Some(node.config.connect_timeout),
        Role::ConformanceEngineIo => None,
    };
    let max = sio_cfg.max_payload;
    let transport = match start.websocket {
        Some((stream, ahead)) => Transport::WebSocket(Box::new(Ws::new(stream, ahead, max))),
        None => Transport::Polling,
    };
    let s = Session {
        sid: sid.clone(),
        eio: start.eio,
        sio: match start.eio {
            Eio::V3 => Sio::V4,
            Eio::V4 => Sio::V5,
        },
        role: start.role,
        queue,
        upgrading: false,
        probe: None,
        pending_poll: None,
        pipeline_full: false,
        binary_payloads: start.binary_payloads,
        namespaces: HashMap::new(),
        partial: None,
        query_grant: start.grant,
        peer: start.peer,
        ping_interval,
        ping_timeout,
        ping_sent: None,
        next_ping: now
            + match start.eio {
                Eio::V4 => ping_interval,
                Eio::V3 => ping_interval + ping_timeout,
            },
        connect_deadline: connect_timeout.map(|t| now + t),
        closing_poll: None,
        log: VecDeque::new(),
        write_seq: 0,
        ping_seq: None,
        confirmed: HashMap::new(),
        log_complete: true,
        snapshot_due: false,
        ended: None,
        transport,
        node,
    };
    let upgrades = matches!(s.transport, Transport::Polling);
    let open = engineio::open_packet(
        s.eio,
        &sid,
        upgrades,
        ping_interval.as_millis() as u64,
        ping_timeout.as_millis() as u64,
        max,
    );
    s.send_engine(&EPacket::Open(open.slice(1..)));
    let slot = start.slot;
    tokio::spawn(async move {
        let _slot = slot;
        s.run(rx).await;
    });
    sid
}

/// A session id: 20 URL-safe characters, like the reference server's.
fn new_id() -> String {
    use base64::Engine as _;
    let bytes: [u8; 15] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Session {
    fn transport_name(&self) -> &'static str {
        match self.transport {
            Transport::Polling => "polling",
            Transport::WebSocket(_) => "websocket",
        }
    }

    /// Queues an Engine.IO packet of our own (never dropped by a policy).
    fn send_engine(&self, p: &EPacket) {
        self.queue.push(
            Outbound::reply(engine_frame(p, self.eio)),
            OverflowPolicy::Disconnect,
        );
    }

    /// Queues frames of our own.
    fn send_frames(&self, f: Bytes) {
        self.queue
            .push(Outbound::reply(f), OverflowPolicy::Disconnect);
    }

    fn send_packet(&self, p: &packet::Encoded) {
        self.send_frames(frames(self.eio, p));
    }

    fn end(&mut self, why: &'static str) {
        if self.ended.is_none() {
            self.ended = Some(why);
        }
    }

    /// When the heartbeat says the client is gone. A few milliseconds
    /// early: the timer wheel rounds deadlines up to its next tick, and a
    /// client that counts `pingInterval + pingTimeout` on its own clock must
    /// find the session closed by then, not a tick later.
    fn heartbeat_deadline(&self) -> Instant {
        const TIMER_SLACK: Duration = Duration::from_millis(3);
        match (self.eio, self.ping_sent) {
            (Eio::V4, Some(sent)) => sent + self.ping_timeout - TIMER_SLACK,
            (Eio::V4, None) => self.next_ping,
            (Eio::V3, _) => self.next_ping - TIMER_SLACK,
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut d = self.heartbeat_deadline();
        for t in [self.connect_deadline, self.closing_poll]
            .into_iter()
            .flatten()
        {
            d = d.min(t);
        }
        for ns in self.namespaces.values() {
            if let Some(e) = ns.client.expires {
                d = d.min(e);
            }
        }
        d
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        self.node.metrics.connections.inc();
        self.node.metrics.connections_accepted.increment(1);
        self.node
            .metrics
            .sessions
            .opened("socket.io", self.transport_name());
        if self.sio == Sio::V4 && self.role == Role::SocketIo {
            // Socket.IO v4 servers connect `/` by themselves.
            self.connect("/".into(), None, None).await;
        }
        let mut draining = self.node.draining();
        let drain = crate::wait_true(&mut draining);
        tokio::pin!(drain);
        let mut drained = false;
        let queue = self.queue.clone();
        let notified = queue.notified();
        tokio::pin!(notified);
        let timer = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(timer);
        self.deliver();
        if let Transport::WebSocket(ws) = &mut self.transport {
            if !ws.rbuf.is_empty() {
                self.on_ws_input().await;
            }
        }
        while self.ended.is_none() {
            if self.queue.overflowed() {
                self.end("slow_consumer");
                break;
            }
            self.deliver();
            if self.ended.is_some() {
                break;
            }
            if self.snapshot_due {
                self.snapshot().await;
            }
            let deadline = self.next_deadline();
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let want_write =
                matches!(&self.transport, Transport::WebSocket(ws) if !ws.out.is_empty());
            let in_flight = self
                .namespaces
                .values()
                .any(|ns| !ns.client.pipeline.is_empty());
            // A WebSocket client with a full pipeline is read no further
            // until an answer frees a place (long-polling POSTs, bounded in
            // size, are taken whole).
            let full = self.namespaces.values().any(|ns| ns.client.pipeline_full());
            if full && !self.pipeline_full {
                self.node.metrics.pending_full.increment(1);
            }
            self.pipeline_full = full;
            let want_read = !full;
            let namespaces = &mut self.namespaces;
            let transport = &self.transport;
            let probe = &self.probe;
            let pending = &mut self.pending_poll;
            tokio::select! {
                biased;
                _ = &mut drain, if !drained => {
                    drained = true;
                    self.end("draining");
                }
                r = std::future::poll_fn(|cx| match probe {
                    Some(p) => p.stream.poll_read_ready(cx),
                    None => Poll::Pending,
                }), if probe.is_some() => {
                    match r {
                        Ok(()) => self.on_probe_input().await,
                        Err(_) => self.probe = None,
                    }
                }
                // The oldest command in flight of some namespace finished.
                (nsp, outcome) = std::future::poll_fn(|cx| poll_outcomes(namespaces, cx)), if in_flight => {
                    if let Some(ns) = self.namespaces.get_mut(&nsp) {
                        let rooms_changed = matches!(outcome, Outcome::Joined { .. } | Outcome::Left { .. });
                        self.snapshot_due |= rooms_changed && ns.pid.is_some();
                        ns.client.apply(outcome);
                    }
                }
                input = rx.recv() => match input {
                    Some(i) => self.on_input(i).await,
                    None => self.end("normal"),
                },
                r = std::future::poll_fn(|cx| match transport {
                    Transport::WebSocket(ws) => ws.stream.poll_read_ready(cx),
                    Transport::Polling => Poll::Pending,
                }), if want_read && matches!(transport, Transport::WebSocket(_)) => {
                    match r {
                        Ok(()) => self.on_ws_input().await,
                        Err(_) => self.end("client_gone"),
                    }
                }
                _ = &mut notified => {
                    notified.set(queue.notified());
                    for (id, c) in self.queue.take_controls() {
                        self.control(id, c).await;
                    }
                }
                r = std::future::poll_fn(|cx| match transport {
                    Transport::WebSocket(ws) => ws.stream.poll_write_ready(cx),
                    Transport::Polling => Poll::Pending,
                }), if want_write => {
                    if r.is_err() {
                        self.end("client_gone");
                    }
                }
                _ = async { pending.as_mut().expect("guarded").closed().await }, if pending.is_some() => {
                    // The client gave up its poll: the reference server
                    // closes the session, and so do we.
                    self.pending_poll = None;
                    self.end("client_gone");
                }
                _ = &mut timer => self.on_timer(),
            }
        }
        self.finish(rx).await;
    }

    /// Moves queued frames to the transport: writes them on a WebSocket,
    /// answers a waiting poll.
    fn deliver(&mut self) {
        let mut done = Vec::new();
        self.deliver_into(&mut done);
        if !done.is_empty() {
            self.written(done);
        }
    }

    /// Logs the publications written, in order, while a socket may be
    /// recovered: with the client's offset string, the log tells exactly
    /// what it received in every room (see [`recovery`]).
    fn written(&mut self, done: Vec<(Arc<str>, u64)>) {
        if !self.namespaces.values().any(|ns| ns.pid.is_some()) {
            return;
        }
        for (room, offset) in done {
            self.write_seq += 1;
            self.log.push_back((self.write_seq, room, offset));
        }
        while self.log.len() > recovery::MAX_UNCONFIRMED {
            // Too much unconfirmed to know what the client saw.
            self.log.pop_front();
            self.log_complete = false;
        }
    }

    /// A pong answers the ping sent after write `seq`: the client had read
    /// everything written before it.
    fn confirm(&mut self, seq: u64) {
        while self.log.front().is_some_and(|(s, _, _)| *s <= seq) {
            let (_, room, offset) = self.log.pop_front().expect("checked");
            let c = self.confirmed.entry(room).or_default();
            *c = (*c).max(offset);
        }
    }

    fn deliver_into(&mut self, done: &mut Vec<(Arc<str>, u64)>) {
        match &mut self.transport {
            Transport::WebSocket(ws) => {
                if ws.out.is_empty() {
                    self.queue.take(&mut ws.out);
                }
                while !ws.out.is_empty() {
                    match ws.write_some(done) {
                        Ok(n) => {
                            self.queue.written(n);
                            self.node
                                .metrics
                                .messages_sent
                                .increment(std::mem::take(&mut ws.completed));
                            if ws.out.is_empty() {
                                self.queue.take(&mut ws.out);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            self.ended.get_or_insert("client_gone");
                            break;
                        }
                    }
                }
            }
            Transport::Polling => {
                if self.upgrading || self.pending_poll.is_none() {
                    return;
                }
                let mut taken = VecDeque::new();
                self.queue.take(&mut taken);
                if taken.is_empty() {
                    return;
                }
                let (body, bytes) = polling::payload(self.eio, &taken, self.binary_payloads);
                self.queue.written(bytes);
                self.node
                    .metrics
                    .messages_sent
                    .increment(taken.len() as u64);
                done.extend(
                    taken
                        .into_iter()
                        .filter(|o| o.offset > 0)
                        .filter_map(|o| o.key.map(|k| (k, o.offset))),
                );
                if let Some(tx) = self.pending_poll.take() {
                    let _ = tx.send(PollReply::Payload(body));
                }
            }
        }
    }

    async fn on_input(&mut self, input: Input) {
        match input {
            Input::Poll(tx) => {
                if self.probe.is_some() {
                    // The probe's `5` may be waiting in its socket: a poll
                    // after the upgrade is refused, one before gets a noop.
                    self.on_probe_input().await;
                }
                if !matches!(self.transport, Transport::Polling) {
                    let _ = tx.send(PollReply::Refused("the session was upgraded"));
                    return;
                }
                if let Some(waiting) = self.pending_poll.take() {
                    // Two polls at once: the reference server ends the
                    // session, answering the first with a close packet.
                    let _ = waiting.send(PollReply::Payload(close_payload(self.eio)));
                    let _ = tx.send(PollReply::Refused("overlapping polls"));
                    self.end("protocol_error");
                    return;
                }
                if self.upgrading || self.closing_poll.is_some() {
                    let _ = tx.send(PollReply::Payload(noop_payload(self.eio)));
                    if self.closing_poll.is_some() {
                        self.end("normal");
                    }
                    return;
                }
                self.pending_poll = Some(tx);
            }
            Input::Post(body, tx) => {
                if !matches!(self.transport, Transport::Polling) {
                    let _ = tx.send(Err("the session was upgraded"));
                    return;
                }
                match engineio::decode_payload(self.eio, body) {
                    Ok(packets) => {
                        let _ = tx.send(Ok(()));
                        for p in packets {
                            self.on_engine_packet(p).await;
                            if self.ended.is_some() {
                                break;
                            }
                        }
                    }
                    Err(_) => {
                        let _ = tx.send(Err("invalid payload"));
                        self.malformed();
                    }
                }
            }
            Input::Upgrade(stream, ahead) => {
                if self.probe.is_some() || !matches!(self.transport, Transport::Polling) {
                    // One upgrade per session: the newcomer is closed, on a
                    // task of its own, which waits for the client's Close.
                    let mut ws = Ws::new(stream, ahead, 0);
                    let node = self.node.clone();
                    tokio::spawn(async move {
                        let bye = frame::encode_close(1008, "already upgraded");
                        if ws.send_now(&bye).await.is_err() {
                            return;
                        }
                        let grace = node.config.close_grace;
                        let answer =
                            close::await_close(&ws.stream, &mut ws.rbuf, &mut ws.reader, grace)
                                .await;
                        if answer == close::Answer::Expired {
                            node.metrics.close_grace_expired.increment(1);
                        }
                    });
                    return;
                }
                let max = self.node.config.socketio.max_payload;
                self.probe = Some(Box::new(Ws::new(stream, ahead, max)));
                if self.probe.as_ref().is_some_and(|p| !p.rbuf.is_empty()) {
                    self.on_probe_input().await;
                }
            }
        }
    }

    /// Reads the WebSocket transport and handles every complete message.
    async fn on_ws_input(&mut self) {
        let Transport::WebSocket(ws) = &mut self.transport else {
            return;
        };
        match ws.read_some() {
            Ok(true) => {}
            Ok(false) => return self.end("client_gone"),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return self.end("client_gone"),
        }
        loop {
            let Transport::WebSocket(ws) = &mut self.transport else {
                return;
            };
            let msg = match ws.reader.next(&mut ws.rbuf, &mut ws.hint) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    ws.close_sent = true;
                    let _ = ws
                        .send_now(&frame::encode_close(e.close_code(), &e.to_string()))
                        .await;
                    return self.end(e.metric_reason());
                }
            };
            let packet = match msg {
                Message::Text(t) => EPacket::decode_text(t),
                Message::Binary(b) => EPacket::decode_binary(self.eio, b),
                Message::Ping(p) => {
                    self.send_frames(frame::encode(OpCode::Pong, &p));
                    continue;
                }
                Message::Pong(_) => continue,
                Message::Close(_) => {
                    ws.peer_closed = true;
                    ws.close_sent = true;
                    let _ = ws.send_now(&frame::encode_close(1000, "")).await;
                    return self.end("normal");
                }
            };
            match packet {
                Ok(p) => self.on_engine_packet(p).await,
                Err(_) => {
                    self.node.metrics.messages_received.increment(1);
                    return self.end("protocol_error");
                }
            }
            if self.ended.is_some() {
                return;
            }
        }
        if let Transport::WebSocket(ws) = &mut self.transport {
            if ws.rbuf.is_empty() {
                ws.rbuf = BytesMut::new();
            }
        }
    }

    /// The upgrade handshake on the probing WebSocket.
    async fn on_probe_input(&mut self) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        match probe.read_some() {
            Ok(true) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(false) | Err(_) => {
                self.probe = None;
                return;
            }
        }
        loop {
            let Some(probe) = self.probe.as_mut() else {
                return;
            };
            let msg = match probe.reader.next(&mut probe.rbuf, &mut probe.hint) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(_) => {
                    self.probe = None;
                    return;
                }
            };
            let Message::Text(t) = msg else {
                if matches!(msg, Message::Close(_)) {
                    self.probe = None;
                    return;
                }
                continue;
            };
            match EPacket::decode_text(t) {
                Ok(EPacket::Ping(d)) if &d[..] == b"probe" => {
                    let pong = EPacket::Pong(d).ws_payload(self.eio);
                    if probe
                        .send_now(&frame::encode(OpCode::Text, &pong))
                        .await
                        .is_err()
                    {
                        self.probe = None;
                        return;
                    }
                    // The waiting poll ends with a noop; data waits for
                    // the new transport.
                    self.upgrading = true;
                    if let Some(tx) = self.pending_poll.take() {
                        let _ = tx.send(PollReply::Payload(noop_payload(self.eio)));
                    }
                }
                Ok(EPacket::Upgrade) if self.upgrading => {
                    let ws = self.probe.take().expect("probing");
                    if let Some(tx) = self.pending_poll.take() {
                        let _ = tx.send(PollReply::Payload(noop_payload(self.eio)));
                    }
                    self.transport = Transport::WebSocket(ws);
                    self.upgrading = false;
                    self.node.metrics.socketio_upgrades.increment(1);
                    self.node.metrics.sessions.closed("socket.io", "polling");
                    self.node.metrics.sessions.opened("socket.io", "websocket");
                    if let Transport::WebSocket(ws) = &self.transport {
                        if !ws.rbuf.is_empty() {
                            Box::pin(self.on_ws_input()).await;
                        }
                    }
                    return;
                }
                _ => {
                    self.probe = None;
                    self.upgrading = false;
                    return;
                }
            }
        }
    }

    async fn on_engine_packet(&mut self, p: EPacket) {
        self.node.metrics.messages_received.increment(1);
        match p {
            EPacket::Ping(d) => {
                if self.eio == Eio::V3 {
                    self.next_ping = Instant::now() + self.ping_interval + self.ping_timeout;
                    self.send_engine(&EPacket::Pong(d));
                }
                // v4 clients do not ping; a stray ping is ignored.
            }
            EPacket::Pong(_) => {
                self.ping_sent = None;
                if let Some(seq) = self.ping_seq.take() {
                    self.confirm(seq);
                }
                // Also renews the kept state's lifetime.
                self.snapshot_due |= self.namespaces.values().any(|ns| ns.pid.is_some());
            }
            EPacket::Close => {
                if let Some(tx) = self.pending_poll.take() {
                    let _ = tx.send(PollReply::Payload(noop_payload(self.eio)));
                    self.end("normal");
                } else if matches!(self.transport, Transport::Polling) {
                    // The client's last poll may still be on its way: it
                    // gets a noop, then the session ends (or after a
                    // moment). The sockets go now: a recovering client may
                    // be back before then.
                    self.release_sockets("normal").await;
                    let wait = self.ping_timeout.min(Duration::from_secs(1));
                    self.closing_poll = Some(Instant::now() + wait);
                } else {
                    self.end("normal");
                }
            }
            EPacket::Message(m) => {
                let text = String::from_utf8(m.to_vec()).expect("checked by the decoder");
                self.on_message_text(text).await;
            }
            EPacket::Binary(b) => self.on_message_binary(b).await,
            EPacket::Open(_) | EPacket::Upgrade | EPacket::Noop => {}
        }
    }

    async fn on_message_text(&mut self, text: String) {
        if self.role == Role::ConformanceEngineIo {
            self.send_engine(&EPacket::Message(Bytes::from(text)));
            return;
        }
        if self.partial.is_some() {
            return self.malformed();
        }
        let p = match SPacket::decode(&text) {
            Ok(p) => p,
            Err(_) => return self.malformed(),
        };
        if p.attachments > 0 {
            self.partial = Some((p, Vec::new()));
            return;
        }
        self.on_packet(p, Vec::new()).await;
    }

    async fn on_message_binary(&mut self, b: Bytes) {
        if self.role == Role::ConformanceEngineIo {
            self.send_engine(&EPacket::Binary(b));
            return;
        }
        let Some((p, mut got)) = self.partial.take() else {
            return self.malformed();
        };
        got.push(b);
        if got.len() < p.attachments {
            self.partial = Some((p, got));
            return;
        }
        self.on_packet(p, got).await;
    }

    /// A packet that is not Socket.IO closes the session, as the reference
    /// server does; it is counted.
    fn malformed(&mut self) {
        self.node.metrics.socketio_malformed_packets.increment(1);
        self.end("protocol_error");
    }

    async fn on_packet(&mut self, p: SPacket, attachments: Vec<Bytes>) {
        match p.kind {
            Kind::Connect => {
                let query = p.query.clone();
                self.connect(p.nsp, p.data, query).await
            }
            Kind::Disconnect => {
                if let Some(mut ns) = self.namespaces.remove(&p.nsp) {
                    if let Some(pid) = &ns.pid {
                        self.forget_saved(pid).await;
                    }
                    ns.client.end_reason = "normal";
                    ns.client.cleanup().await;
                    self.node.metrics.socketio_sockets.dec();
                }
            }
            Kind::Event | Kind::BinaryEvent => {
                let event = if p.kind == Kind::BinaryEvent {
                    match p.attach(attachments) {
                        Ok(e) => e,
                        Err(_) => return self.malformed(),
                    }
                } else {
                    p.into_event()
                };
                if !self.namespaces.contains_key(&event.nsp) {
                    // Events for a namespace the socket did not join are
                    // dropped, as the reference server does.
                    return;
                }
                self.on_event(event);
            }
            // The server asks no acknowledgements.
            Kind::Ack | Kind::BinaryAck => {}
            Kind::ConnectError => self.malformed(),
        }
    }

    async fn connect(&mut self, nsp: String, auth: Option<Value>, query: Option<String>) {
        let cfg = &self.node.config.socketio;
        let Some(index) = cfg.namespaces.iter().position(|n| *n == nsp) else {
            self.send_frames(frames_text(
                self.eio,
                packet::connect_error(self.sio, &nsp, "Invalid namespace"),
            ));
            return;
        };
        if self.namespaces.contains_key(&nsp) {
            return;
        }
        let mut grant = self.query_grant.clone();
        let node = self.node.clone();
        let token = auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| query.as_deref().and_then(crate::server::query_param_token));
        if let Some(authn) = &node.auth {
            if self.role == Role::SocketIo {
                match token.as_ref().map(|t| authn.verify(t)) {
                    Some(Ok(g)) => grant = Some(g),
                    Some(Err(e)) => {
                        self.refuse_connect(&nsp, &format!("unauthorized: {e}"));
                        return;
                    }
                    None if grant.is_none() => {
                        self.refuse_connect(&nsp, "unauthorized: a token is required");
                        return;
                    }
                    None => {}
                }
            }
        }
        let offsets = self.sio == Sio::V5
            && self.role == Role::SocketIo
            && self.node.config.socketio.recovery.is_some();
        // A returning socket: its private id and, if it got any, the offset
        // string of the last publication it saw.
        let last_seen = auth
            .as_ref()
            .and_then(|a| a.get("offset"))
            .and_then(Value::as_str)
            .and_then(recovery::parse_offset);
        let asked = offsets
            .then(|| auth.as_ref()?.get("pid")?.as_str().map(str::to_owned))
            .flatten();
        let kept = match asked {
            Some(pid) => self.take_saved(&pid, &nsp).await.map(|saved| (pid, saved)),
            None => None,
        };
        let restored = match kept {
            Some((pid, saved)) => {
                let rooms = saved.positions(last_seen.as_ref());
                self.recoverable(&rooms)
                    .await
                    .then_some((pid, saved.client_id, saved.grant, rooms))
            }
            None => None,
        };
        let client_id = match (&restored, self.sio) {
            (Some((_, id, _, _)), _) => id.clone(),
            (None, Sio::V5) => new_id(),
            // socket.io-client 2.x derives the socket id from the session's.
            (None, Sio::V4) if nsp == "/" => self.sid.to_string(),
            (None, Sio::V4) => format!("{nsp}#{}", self.sid),
        };
        let pid = match &restored {
            Some((pid, ..)) => Some(pid.clone()),
            None => offsets.then(new_id),
        };
        if grant.is_none() {
            grant = restored.as_ref().and_then(|(_, _, g, _)| g.clone());
        }
        let dialect = Dialect {
            v3: self.eio == Eio::V3,
            nsp: index as u16,
            offsets,
        };
        let shared = Arc::new(ClientShared::with_queue(
            self.node.next_session_id(),
            client_id.clone(),
            Subprotocol::SocketIo(dialect),
            Arc::from(nsp.as_str()),
            self.queue.clone(),
        ));
        shared.set_peer(self.peer.clone());
        // The backend's Connect hook decides before the socket exists.
        let mut backend_rooms = Vec::new();
        if let Some(b) = node
            .backend
            .as_ref()
            .filter(|_| node.config.backend.connect)
        {
            let input = ConnectInput {
                token: token.unwrap_or_else(|| self.peer.token.clone()),
                client: String::new(),
                auth: auth
                    .as_ref()
                    .map(|a| Bytes::from(a.to_string()))
                    .unwrap_or_default(),
                user: grant.as_ref().map(|g| g.user.clone()).unwrap_or_default(),
            };
            match Box::pin(b.connect(&node, &shared, input)).await {
                Ok(outcome) => match outcome.admit(&shared, grant.take()) {
                    Ok((g, rooms)) => {
                        grant = Some(g);
                        backend_rooms = rooms;
                    }
                    Err((_, reason)) => return self.refuse_connect(&nsp, &reason),
                },
                Err(e) => {
                    self.node
                        .metrics
                        .command_error(ErrorCode::Internal.as_str());
                    self.send_frames(frames_text(
                        self.eio,
                        packet::connect_error(self.sio, &nsp, &format!("internal: {e}")),
                    ));
                    return;
                }
            }
        }
        let mut client = Client::new(self.node.clone(), shared);
        if let Some(g) = grant {
            client.authenticate(g);
        }
        self.connect_deadline = None;
        let ok = packet::connect_ok(self.sio, &nsp, &client_id, pid.as_deref());
        // v4 announces `/` without a payload: the client already assumes it.
        self.send_frames(frames_text(self.eio, ok));
        match self.role {
            Role::ConformanceSocketIo => {
                let payload = auth.unwrap_or_else(|| serde_json::json!({})).to_string();
                self.send_packet(&packet::encode(
                    Kind::Event,
                    &nsp,
                    None,
                    &[EncArg::Json(b"\"auth\""), EncArg::Json(payload.as_bytes())],
                ));
            }
            Role::SocketIo => match restored {
                Some((_, _, _, rooms)) => {
                    self.node.metrics.socketio_recoveries.increment(1);
                    for (room, since) in rooms {
                        client.join(room, Some(since), 0);
                    }
                    client.settle().await;
                }
                None => {
                    for room in self.node.config.socketio.join.clone() {
                        client.join(room, None, 0);
                    }
                    client.settle().await;
                }
            },
            Role::ConformanceEngineIo => {}
        }
        for room in backend_rooms {
            if !client.is_member(&room) {
                client.join(room, None, 0);
            }
        }
        self.snapshot_due |= pid.is_some();
        self.namespaces.insert(nsp, Namespace { client, pid });
        self.node.metrics.socketio_sockets.inc();
    }

    /// Takes a socket's kept state from the adapter's store (whichever
    /// node kept it), if it is there and is of `nsp`.
    async fn take_saved(&self, pid: &str, nsp: &str) -> Option<recovery::Saved> {
        match self.node.hub.adapter().take_kept(&recovery::key(pid)).await {
            Ok(kept) => kept
                .and_then(|b| recovery::Saved::decode(&b))
                .filter(|s| s.nsp == nsp),
            Err(e) => {
                tracing::warn!(error = %e, "socket.io recovery: cannot read kept state");
                self.node
                    .metrics
                    .socketio_recovery_store_errors
                    .increment(1);
                None
            }
        }
    }

    /// Keeps a socket's state in the adapter's store for `ttl`.
    async fn keep_saved(&self, pid: &str, saved: &recovery::Saved, ttl: Duration) {
        let adapter = self.node.hub.adapter();
        if let Err(e) = adapter.keep(&recovery::key(pid), saved.encode(), ttl).await {
            tracing::debug!(error = %e, "socket.io recovery: cannot keep state");
            self.node
                .metrics
                .socketio_recovery_store_errors
                .increment(1);
        }
    }

    /// Drops a socket's kept state: it disconnected on purpose.
    async fn forget_saved(&self, pid: &str) {
        if let Err(e) = self
            .node
            .hub
            .adapter()
            .forget_kept(&recovery::key(pid))
            .await
        {
            tracing::debug!(error = %e, "socket.io recovery: cannot drop kept state");
            self.node
                .metrics
                .socketio_recovery_store_errors
                .increment(1);
        }
    }

    /// A socket's state as kept for recovery: its rooms at the positions
    /// the client confirmed (or where it joined), and with `log`, the
    /// publications written since, in order.
    fn saved_state(&self, nsp: &str, ns: &Namespace, log: bool) -> recovery::Saved {
        let rooms = ns
            .client
            .rooms
            .iter()
            .filter_map(|r| {
                let p = ns.client.positions.get(r)?;
                let confirmed = self.confirmed.get(r.as_str()).copied().unwrap_or(0);
                Some((r.clone(), p.epoch.clone(), p.offset.max(confirmed)))
            })
            .collect();
        let unconfirmed = if log {
            self.log
                .iter()
                .filter(|(_, room, _)| ns.client.rooms.contains(&**room))
                .map(|(_, room, offset)| (room.to_string(), *offset))
                .collect()
        } else {
            Vec::new()
        };
        recovery::Saved {
            client_id: ns.client.shared.client_id.clone(),
            nsp: nsp.to_owned(),
            grant: ns.client.grant.clone(),
            rooms,
            unconfirmed,
        }
    }

    /// Keeps every recoverable socket's current state, for as long as its
    /// client may take to notice a dead node and come back.
    async fn snapshot(&mut self) {
        self.snapshot_due = false;
        let Some(keep) = self.node.config.socketio.recovery else {
            return;
        };
        let ttl = keep + self.ping_interval + self.ping_timeout;
        for (nsp, ns) in &self.namespaces {
            if let Some(pid) = &ns.pid {
                let saved = self.saved_state(nsp, ns, false);
                self.keep_saved(pid, &saved, ttl).await;
            }
        }
    }

    /// Whether every room can give back what was missed since these
    /// positions: rooms without history cannot, nor rooms whose history
    /// restarted or was trimmed past them. Otherwise the client gets a new
    /// socket (`recovered` false), as socket.io does.
    async fn recoverable(&self, rooms: &[(String, StreamPosition)]) -> bool {
        for (room, since) in rooms {
            let history = self.node.hub.namespaces().for_room(room).history();
            if !history.enabled() {
                return false;
            }
            let query = roomcast_adapter::HistoryQuery {
                since: Some(since.clone()),
                limit: Some(0),
                options: history,
            };
            match self.node.hub.adapter().history(room, query).await {
                Ok(h) if h.recovered => {}
                _ => return false,
            }
        }
        true
    }

    fn refuse_connect(&mut self, nsp: &str, message: &str) {
        self.node
            .metrics
            .command_error(ErrorCode::Unauthorized.as_str());
        self.send_frames(frames_text(
            self.eio,
            packet::connect_error(self.sio, nsp, message),
        ));
    }

    fn on_event(&mut self, e: Event) {
        let reply_id = e.id.map_or(0, |a| a + 1);
        if self.role == Role::ConformanceSocketIo {
            let args = e.echo_args(1);
            let enc: Vec<EncArg<'_>> = args
                .iter()
                .map(|(j, b)| match (j, b) {
                    (Some(j), _) => EncArg::Json(j.as_bytes()),
                    (None, Some(b)) => EncArg::Binary(b.clone()),
                    (None, None) => EncArg::Json(b"null"),
                })
                .collect();
            match e.name() {
                Some("message") => {
                    let mut all = vec![EncArg::Json(b"\"message-back\"")];
                    all.extend(enc);
                    self.send_packet(&packet::encode(Kind::Event, &e.nsp, None, &all));
                }
                Some("message-with-ack") if e.id.is_some() => {
                    self.send_packet(&packet::encode(Kind::Ack, &e.nsp, e.id, &enc));
                }
                _ => {}
            }
            return;
        }
        let routes = &self.node.config.socketio.events;
        let name = e.name().unwrap_or_default().to_owned();
        let route = routes.get(&name).cloned();
        let Some(ns) = self.namespaces.get_mut(&e.nsp) else {
            return;
        };
        let c = &mut ns.client;
        if !c.allow_command() {
            return c.error(
                reply_id,
                ErrorCode::TooManyRequests,
                "command rate limit exceeded",
            );
        }
        let arg = e.args.get(1).cloned().unwrap_or(Value::Null);
        let data_of = |v: &Value| -> Data {
            match e.binary(v) {
                Some(b) => Data {
                    bytes: b.clone(),
                    binary: true,
                },
                None => Data {
                    bytes: Bytes::from(v.to_string()),
                    binary: false,
                },
            }
        };
        if let Some(route) = route {
            let event = route.as_event.clone().unwrap_or_else(|| name.clone());
            c.publish_unchecked(route.room.clone(), event, data_of(&arg), reply_id);
            return;
        }
        let room_arg = |v: &Value| -> Option<String> {
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("room").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            }
        };
        match name.as_str() {
            "subscribe" => {
                let Some(room) = room_arg(&arg) else {
                    return c.error(
                        reply_id,
                        ErrorCode::BadRequest,
                        "subscribe takes a room name",
                    );
                };
                let since = match arg.get("since").map(parse_since) {
                    None => None,
                    Some(Some(p)) => Some(p),
                    Some(None) => {
                        return c.error(
                            reply_id,
                            ErrorCode::BadRequest,
                            "since is {\"epoch\":\"…\",\"offset\":N}",
                        )
                    }
                };
                c.subscribe(room, since, reply_id);
            }
            "unsubscribe" => match room_arg(&arg) {
                Some(room) => c.unsubscribe(&room, reply_id),
                None => c.error(
                    reply_id,
                    ErrorCode::BadRequest,
                    "unsubscribe takes a room name",
                ),
            },
            "presence" => match room_arg(&arg) {
                Some(room) => c.presence(room, reply_id),
                None => c.error(
                    reply_id,
                    ErrorCode::BadRequest,
                    "presence takes a room name",
                ),
            },
            "publish" => {
                let Some(room) = arg.get("room").and_then(Value::as_str).map(str::to_owned) else {
                    return c.error(
                        reply_id,
                        ErrorCode::BadRequest,
                        "publish takes {\"room\":\"…\",\"event\":\"…\",\"data\":…}",
                    );
                };
                let event = match arg.get("event") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(e)) => e.clone(),
                    Some(_) => {
                        return c.error(reply_id, ErrorCode::BadRequest, "event must be a string")
                    }
                };
                let data = data_of(arg.get("data").unwrap_or(&Value::Null));
                if !data.binary && data.bytes.len() > self.node.config.max_message_bytes {
                    return c.error(reply_id, ErrorCode::PayloadTooLarge, "data too large");
                }
                c.publish(room, event, data, reply_id);
            }
            // Neither built in nor routed: the backend's, when it takes it.
            _ if Backend::serves_rpc(&self.node, &name) => c.rpc(name, data_of(&arg), reply_id),
            _ => {
                let message = format!("no handler for the event {name:?}");
                if reply_id != 0 {
                    c.error(reply_id, ErrorCode::NotFound, &message);
                } else {
                    // Unacknowledged and unrouted: dropped, and counted.
                    self.node
                        .metrics
                        .command_error(ErrorCode::NotFound.as_str());
                }
            }
        }
    }

    async fn control(&mut self, id: u64, c: Control) {
        let Some(nsp) = self
            .namespaces
            .iter()
            .find(|(_, ns)| ns.client.shared.id == id)
            .map(|(n, _)| n.clone())
        else {
            return;
        };
        let ns = self.namespaces.get_mut(&nsp).expect("found");
        if let Some((_code, _reason)) = ns.client.control(c) {
            // A server-side disconnect of this socket: the client does not
            // reconnect by itself (socket.io's "io server disconnect").
            let mut ns = self.namespaces.remove(&nsp).expect("found");
            ns.client.end_reason = "disconnected";
            ns.client.cleanup().await;
            self.node.metrics.socketio_sockets.dec();
            self.send_frames(frames_text(self.eio, packet::disconnect(&nsp)));
            if self.namespaces.is_empty() {
                self.end("disconnected");
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.closing_poll.is_some_and(|t| now >= t) {
            self.end("normal");
            return;
        }
        if self.connect_deadline.is_some_and(|t| now >= t) {
            self.end("unauthorized");
            return;
        }
        let expired: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, ns)| ns.client.expires.is_some_and(|t| now >= t))
            .map(|(n, _)| n.clone())
            .collect();
        if !expired.is_empty() {
            for nsp in &expired {
                self.send_frames(frames_text(self.eio, packet::disconnect(nsp)));
            }
            self.end("unauthorized");
            return;
        }
        match self.eio {
            Eio::V4 => {
                if self.ping_sent.is_some() {
                    if now >= self.heartbeat_deadline() {
                        self.end("ping_timeout");
                    }
                } else if now >= self.next_ping {
                    self.send_engine(&EPacket::Ping(Bytes::new()));
                    // Timed from when the ping was due (timers fire a little
                    // late), so the timeout falls where the client expects it.
                    let due = self.next_ping.max(now - Duration::from_millis(5));
                    self.ping_sent = Some(due);
                    self.ping_seq = Some(self.write_seq);
                    self.next_ping = due + self.ping_interval;
                }
            }
            Eio::V3 => {
                if now >= self.heartbeat_deadline() {
                    self.end("ping_timeout");
                }
            }
        }
    }

    /// The sockets leave their rooms and the hub, their state kept for
    /// recovery unless the end was an explicit disconnect. Done once, as
    /// soon as the client is known to be gone.
    async fn release_sockets(&mut self, why: &'static str) {
        let recoverable = why != "disconnected" && self.log_complete;
        if let Some(keep) = self.node.config.socketio.recovery {
            // Every end but an explicit disconnect may be recovered from:
            // the exact state replaces the last snapshot.
            for (nsp, ns) in &self.namespaces {
                let Some(pid) = &ns.pid else { continue };
                if recoverable {
                    let saved = self.saved_state(nsp, ns, true);
                    self.keep_saved(pid, &saved, keep).await;
                } else {
                    self.forget_saved(pid).await;
                }
            }
        }
        for (_, mut ns) in self.namespaces.drain() {
            ns.client.end_reason = why;
            ns.client.cleanup().await;
            self.node.metrics.socketio_sockets.dec();
        }
    }

    /// Ends the session: sockets leave their rooms, the transport is closed
    /// (after a close packet where the client should reconnect).
    async fn finish(mut self, mut rx: mpsc::Receiver<Input>) {
        let why = self.ended.unwrap_or("normal");
        tracing::debug!(sid = %self.sid, transport = self.transport_name(), why, "socket.io session ended");
        self.node.socketio.remove(&self.sid);
        rx.close();
        // Requests that raced the end get the answer of an unknown session.
        while let Ok(i) = rx.try_recv() {
            match i {
                Input::Poll(tx) => {
                    let _ = tx.send(PollReply::Refused("session closed"));
                }
                Input::Post(_, tx) => {
                    let _ = tx.send(Err("session closed"));
                }
                Input::Upgrade(..) => {}
            }
        }
        let announce = matches!(
            why,
            "draining" | "ping_timeout" | "slow_consumer" | "unauthorized"
        );
        if announce && why != "slow_consumer" {
            self.send_engine(&EPacket::Close);
        }
        match &mut self.transport {
            Transport::WebSocket(ws) => {
                if why != "slow_consumer" {
                    let mut rest = VecDeque::new();
                    self.queue.take(&mut rest);
                    ws.out.extend(rest);
                }
                let code = match why {
                    "draining" => 1001,
                    "slow_consumer" => 4008,
                    "ping_timeout" => 4009,
                    "unauthorized" => 4001,
                    _ => 1000,
                };
                if why == "slow_consumer" {
                    let keep = usize::from(ws.written > 0);
                    ws.out.truncate(keep);
                }
                if !ws.close_sent {
                    ws.out
                        .push_back(Outbound::reply(frame::encode_close(code, why)));
                }
                let grace = self.node.config.close_grace;
                let deadline = Instant::now() + grace;
                let mut done = Vec::new();
                // Whether the client may still answer our close with its own.
                let mut wait = why != "client_gone" && !ws.peer_closed;
                while !ws.out.is_empty() {
                    match ws.write_some(&mut done) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if tokio::time::timeout_at(deadline, ws.stream.writable())
                                .await
                                .is_err()
                            {
                                if wait {
                                    self.node.metrics.close_grace_expired.increment(1);
                                }
                                wait = false;
                                break;
                            }
                        }
                        Err(_) => {
                            wait = false;
                            break;
                        }
                    }
                }
                if wait {
                    // Our close is out: the client's Close (or EOF) ends the
                    // connection at once, a client that never answers is cut
                    // off after the grace.
                    let answer =
                        close::await_close(&ws.stream, &mut ws.rbuf, &mut ws.reader, grace).await;
                    if answer == close::Answer::Expired {
                        self.node.metrics.close_grace_expired.increment(1);
                    }
                }
                let _ = ws.stream.shutdown().await;
            }
            Transport::Polling => {
                if let Some(tx) = self.pending_poll.take() {
                    let mut taken = VecDeque::new();
                    self.queue.take(&mut taken);
                    let body = if taken.is_empty() {
                        close_payload(self.eio)
                    } else {
                        polling::payload(self.eio, &taken, self.binary_payloads).0
                    };
                    let _ = tx.send(PollReply::Payload(body));
                }
            }
        }
        self.queue.close();
        self.release_sockets(why).await;
        self.node.metrics.disconnect(why);
        if why == "ping_timeout" {
            self.node.metrics.ping_timeouts.increment(1);
        }
        self.node.metrics.connections.dec();
        self.node
            .metrics
            .sessions
            .closed("socket.io", self.transport_name());
    }
}

/// The next outcome of any namespace's pipeline, with the namespace.
fn poll_outcomes(
    namespaces: &mut HashMap<String, Namespace>,
    cx: &mut std::task::Context<'_>,
) -> Poll<(String, Outcome)> {
    for (nsp, ns) in namespaces.iter_mut() {
        if let Poll::Ready(Some(outcome)) = ns.client.pipeline.poll_next(cx) {
            return Poll::Ready((nsp.clone(), outcome));
        }
    }
    Poll::Pending
}

fn frames_text(eio: Eio, text: Bytes) -> Bytes {
    frames(
        eio,
        &packet::Encoded {
            text,
            attachments: Vec::new(),
        },
    )
}

fn noop_payload(eio: Eio) -> Vec<u8> {
    let mut out = Vec::new();
    engineio::encode_record(eio, &mut out, true, engineio::Record::Text(b"6"));
    out
}

fn close_payload(eio: Eio) -> Vec<u8> {
    let mut out = Vec::new();
    engineio::encode_record(eio, &mut out, true, engineio::Record::Text(b"1"));
    out
}

fn parse_since(v: &Value) -> Option<StreamPosition> {
    Some(StreamPosition {
        epoch: v.get("epoch")?.as_str()?.to_owned(),
        offset: v.get("offset")?.as_u64()?,
    })
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Input::Poll(_) => "Poll",
            Input::Post(..) => "Post",
            Input::Upgrade(..) => "Upgrade",
        })
    }
}
