//! One task per WebSocket session: a single `select!` over reading, the
//! outbound queue, the heartbeat and other timers, and node shutdown.
//!
//! The task owns the raw `TcpStream` and uses readiness (`readable`,
//! `writable`, `try_read`, `try_write_vectored`), so no buffer is held while
//! the session is idle and everything queued is written with one vectored
//! write. Control frames (pong, ping, close) go out before queued data, never
//! behind a backlog, but never inside a frame already half written.

use crate::auth::Grant;
use crate::backend::{ConnectInput, Peer};
use crate::client::{Client, ClientShared};
use crate::outbound::Outbound;
use crate::protocol::{Command, CommandError, CommandKind, ErrorCode, ServerEvent, Subprotocol};
use crate::server::ConnectionSlot;
use crate::ws::close;
use crate::ws::frame::{self, FrameReader, Message, OpCode};
use crate::Node;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Most frames written by one vectored write.
const MAX_IOV: usize = 64;
/// Smallest read: most messages fit whole, and the buffer is only held
/// while a frame is incomplete.
const READ_CHUNK: usize = 16 * 1024;
/// Largest read.
const READ_MAX: usize = 256 * 1024;

/// What the session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The roomcast.v1 protocol.
    Roomcast,
    /// Raw echo (`/echo`).
    Echo,
}

/// Why a session ends: close code, reason text, metric label.
#[derive(Debug, Clone)]
struct Close {
    code: u16,
    reason: String,
    label: &'static str,
    /// Queued data is still sent before the close frame.
    flush: bool,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>, label: &'static str) -> Self {
        Self {
            code,
            reason: reason.into(),
            label,
            flush: false,
        }
    }
}

/// Everything a session starts with, decided during the HTTP upgrade.
pub struct Start {
    /// The upgraded connection.
    pub stream: TcpStream,
    /// Bytes the HTTP layer read past the request.
    pub read_ahead: Bytes,
    /// Protocol or echo.
    pub mode: Mode,
    /// Subprotocol.
    pub proto: Subprotocol,
    /// Grant from a `token` query parameter, if valid.
    pub grant: Option<Grant>,
    /// A `token` query parameter was given and refused.
    pub bad_token: bool,
    /// Where the client connected from, for the backend.
    pub peer: Peer,
}

struct Session {
    node: Arc<Node>,
    client: Client,
    shared: Arc<ClientShared>,
    stream: TcpStream,
    mode: Mode,
    reader: FrameReader,
    rbuf: BytesMut,
    /// Bytes the frame in progress still needs.
    read_hint: usize,
    /// Data frames taken from the queue, not yet fully written.
    data: VecDeque<Outbound>,
    data_written: usize,
    /// Control frames, written before `data` (after a half-written frame).
    ctrl: VecDeque<Bytes>,
    ctrl_written: usize,
    connected: bool,
    ping_sent: Option<Instant>,
    next_ping: Instant,
    auth_deadline: Option<Instant>,
    /// Sending our close frame; then waiting for the client's.
    closing: Option<Close>,
    /// A close that waits for the commands in flight to be answered first.
    close_after: Option<Close>,
    /// The pipeline was full at the last look (counts each time it fills).
    pipeline_full: bool,
    client_closed: bool,
    /// A `token` query parameter was given and refused: close at once.
    bad_token: bool,
    /// Counts the session against `max_connections` until it is dropped.
    _slot: ConnectionSlot,
}

/// Starts a session's task.
///
/// The session is built here, outside the task, and the task's future owns
/// it and the state of its loop and nothing else: everything the upgrade
/// held (the request's leftovers, the grant, the peer) is gone before the
/// first poll, so an idle session costs what its loop needs (see
/// docs/capacity.md for the figures). The close and its wait for the
/// client's Close run boxed, so their state is only paid for while a
/// session closes.
pub fn spawn(node: Arc<Node>, start: Start, slot: ConnectionSlot) {
    let session = Session::new(node, start, slot);
    let task = session.run();
    tracing::trace!(bytes = std::mem::size_of_val(&task), "session task");
    tokio::spawn(task);
}

impl Session {
    fn new(node: Arc<Node>, start: Start, slot: ConnectionSlot) -> Self {
        let Start {
            stream,
            read_ahead,
            mode,
            proto,
            grant,
            bad_token,
            peer,
        } = start;
        // The read-ahead is a view into the HTTP layer's whole read buffer:
        // copy what it holds (usually nothing) and let the buffer go, or every
        // idle session would keep one alive.
        let rbuf = BytesMut::from(&read_ahead[..]);
        drop(read_ahead);
        let id = node.next_session_id();
        let shared = Arc::new(ClientShared::new(id, proto, node.config.max_queue_bytes));
        shared.set_peer(peer);
        let now = Instant::now();
        // The backend's Connect hook needs a `connect` command, like JWT auth.
        let backend_connect = node.backend.is_some() && node.config.backend.connect;
        let auth_required = (node.auth.is_some() || backend_connect) && mode == Mode::Roomcast;
        let mut s = Session {
            reader: FrameReader::new(node.config.max_message_bytes),
            rbuf,
            read_hint: 0,
            data: VecDeque::new(),
            data_written: 0,
            ctrl: VecDeque::new(),
            ctrl_written: 0,
            connected: false,
            ping_sent: None,
            next_ping: now + node.config.ping_interval,
            auth_deadline: (auth_required && (grant.is_none() || backend_connect))
                .then(|| now + node.config.connect_timeout),
            closing: None,
            close_after: None,
            pipeline_full: false,
            client_closed: false,
            bad_token,
            mode,
            stream,
            client: Client::new(node.clone(), shared.clone()),
            shared,
            node,
            _slot: slot,
        };
        match grant {
            // The backend names the user at `connect`: keep the URL token's
            // grant until then, unapplied.
            Some(g) if backend_connect => s.client.grant = Some(g),
            Some(g) => s.client.authenticate(g),
            None => {}
        }
        s
    }

    /// The session's metric label.
    fn kind(&self) -> &'static str {
        match self.mode {
            Mode::Echo => "echo",
            Mode::Roomcast => self.shared.proto.name(),
        }
    }

    /// Runs the session to its end. The future captures `self` and uses it
    /// in place (an `async fn` taking `self` would hold it twice).
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn run(mut self) -> impl std::future::Future<Output = ()> + Send {
        async move {
            self.node.metrics.connections.inc();
            self.node.metrics.connections_accepted.increment(1);
            self.node.metrics.sessions.opened(self.kind(), "websocket");
            let label = if self.bad_token {
                self.begin_close(Close::new(4001, "invalid token", "unauthorized"));
                Box::pin(self.finish()).await
            } else {
                self.main_loop().await
            };
            self.node.metrics.disconnect(label);
            if label == "ping_timeout" {
                self.node.metrics.ping_timeouts.increment(1);
            }
            self.client.end_reason = label;
            self.cleanup().await;
            self.node.metrics.connections.dec();
            self.node.metrics.sessions.closed(self.kind(), "websocket");
        }
    }
}

impl Session {
    fn authenticate(&mut self, g: Grant) {
        self.client.authenticate(g);
        self.auth_deadline = None;
    }

    fn next_deadline(&self) -> Instant {
        let mut d = match self.ping_sent {
            Some(sent) => sent + self.node.config.ping_timeout,
            None => self.next_ping,
        };
        for t in [self.auth_deadline, self.client.expires]
            .into_iter()
            .flatten()
        {
            d = d.min(t);
        }
        d
    }

    fn has_output(&self) -> bool {
        !self.ctrl.is_empty() || !self.data.is_empty()
    }

    /// Returns the disconnect label.
    async fn main_loop(&mut self) -> &'static str {
        let mut draining = self.node.draining();
        // The futures that wait for the node to drain and for the queue's
        // wake-ups live across turns of the loop: each turn only polls them,
        // instead of registering and dropping a waiter every time.
        let drain = crate::wait_true(&mut draining);
        tokio::pin!(drain);
        let mut drained = false;
        let shared = self.shared.clone();
        let notified = shared.queue.notified();
        tokio::pin!(notified);
        let timer = tokio::time::sleep_until(self.next_deadline());
        tokio::pin!(timer);
        // Bytes the HTTP layer read ahead may already hold frames.
        if !self.rbuf.is_empty() {
            if let Err(close) = self.process_input().await {
                self.begin_close(close);
            }
        }
        loop {
            if self.close_after.is_some() && self.client.pipeline.is_empty() {
                let close = self.close_after.take().expect("checked");
                self.begin_close(close);
            }
            if self.closing.is_some() {
                return Box::pin(self.finish()).await;
            }
            if self.data.is_empty() {
                self.shared.queue.take(&mut self.data);
            }
            if self.shared.queue.overflowed() {
                self.begin_close(Close::new(4008, "slow consumer", "slow_consumer"));
                continue;
            }
            if self.has_output() {
                match self.write_some() {
                    // Everything taken was written: frames queued meanwhile
                    // may have no wake-up left (it was spent while the
                    // socket was blocked), so look at the queue again now.
                    Ok(_) if !self.has_output() => continue,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return "client_gone",
                }
            }
            let want_write = self.has_output();
            let want_read = self.close_after.is_none() && !self.is_full();
            let in_flight = !self.client.pipeline.is_empty();
            let deadline = self.next_deadline();
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                _ = &mut drain, if !drained => {
                    drained = true;
                    let mut c = Close::new(1001, "node draining", "draining");
                    c.flush = true;
                    self.begin_close(c);
                }
                // The stream's own reader and writer wake-up slots: only
                // this task waits on them, so no waiter list is involved.
                // The oldest command in flight finished: its reply goes out,
                // and commands read but not yet handled may go on.
                Some(outcome) = self.client.pipeline.next(), if in_flight => {
                    self.client.apply(outcome);
                    if !self.rbuf.is_empty() && self.close_after.is_none() && !self.is_full() {
                        if let Err(close) = self.process_input().await {
                            self.begin_close(close);
                        }
                    }
                }
                r = std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)), if want_read => {
                    if r.is_err() {
                        return "client_gone";
                    }
                    match self.read_some() {
                        Ok(true) => {}
                        Ok(false) => return "client_gone",
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(_) => return "client_gone",
                    }
                    if let Err(close) = self.process_input().await {
                        self.begin_close(close);
                    }
                }
                // Always armed: an overflow or a control must be seen even
                // while the socket is blocked.
                _ = &mut notified => {
                    notified.set(shared.queue.notified());
                    for (_, c) in self.shared.queue.take_controls() {
                        if let Some((code, reason)) = self.client.control(c) {
                            self.begin_close(Close::new(code, reason, "disconnected"));
                        }
                    }
                }
                r = std::future::poll_fn(|cx| self.stream.poll_write_ready(cx)), if want_write => {
                    if r.is_err() {
                        return "client_gone";
                    }
                }
                _ = &mut timer => self.on_timer(),
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.client.expires.is_some_and(|t| now >= t) {
            self.begin_close(Close::new(4001, "token expired", "unauthorized"));
        } else if self.auth_deadline.is_some_and(|t| now >= t) {
            self.begin_close(Close::new(
                4001,
                "not authenticated in time",
                "unauthorized",
            ));
        } else if let Some(sent) = self.ping_sent {
            if now >= sent + self.node.config.ping_timeout {
                self.begin_close(Close::new(4009, "ping timeout", "ping_timeout"));
            }
        } else if now >= self.next_ping {
            // A session quiet since a burst took no batch that would have
            // cut its buffers back: the ping's turn does.
            self.shared.queue.release_idle(&mut self.data);
            self.ctrl.push_back(frame::encode(OpCode::Ping, b""));
            self.ping_sent = Some(now);
            self.next_ping = now + self.node.config.ping_interval;
        }
    }

    /// Reads what is available. `Ok(false)` on end of stream.
    fn read_some(&mut self) -> io::Result<bool> {
        // Enough for the rest of the frame in progress, so a large message
        // is read in as few calls as its arrival allows.
        let want = self.read_hint.clamp(READ_CHUNK, READ_MAX);
        self.rbuf.reserve(want);
        // One poll with no waker: it reads only what is there, and after a
        // short read tokio marks the socket drained, so the next turn waits
        // for the kernel's wake-up instead of spending a `recv` on EAGAIN.
        let n = match self.stream.read_buf(&mut self.rbuf).now_or_never() {
            Some(r) => r?,
            None => return Err(io::ErrorKind::WouldBlock.into()),
        };
        if n == 0 {
            return Ok(false);
        }
        // Anything at all from the client answers an outstanding ping.
        self.ping_sent = None;
        Ok(true)
    }

    /// Whether the client has as many commands in flight as it may; counts
    /// each time it becomes so.
    fn is_full(&mut self) -> bool {
        let full = self.client.pipeline_full();
        if full && !self.pipeline_full {
            self.node.metrics.pending_full.increment(1);
        }
        self.pipeline_full = full;
        full
    }

    /// Handles the complete messages in the read buffer, until the client's
    /// pipeline is full.
    async fn process_input(&mut self) -> Result<(), Close> {
        loop {
            if self.is_full() {
                return Ok(());
            }
            let msg = match self.reader.next(&mut self.rbuf, &mut self.read_hint) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let mut close = Close::new(e.close_code(), e.to_string(), e.metric_reason());
                    // Replies to the frames before the bad one still go out.
                    close.flush = true;
                    return Err(close);
                }
            };
            match msg {
                Message::Ping(p) => self.ctrl.push_back(frame::encode(OpCode::Pong, &p)),
                Message::Pong(_) => {}
                Message::Close(c) => {
                    self.client_closed = true;
                    let code = c.as_ref().map_or(1000, |(code, _)| *code);
                    let mut close = Close::new(code, "", "normal");
                    // Replies to what the client sent before its close go out
                    // before ours (RFC 6455 §5.5.1 allows the wait).
                    close.flush = true;
                    self.begin_close(close);
                    return Ok(());
                }
                Message::Text(t) => self.on_message(t, true).await?,
                Message::Binary(b) => self.on_message(b, false).await?,
            }
            if self.closing.is_some() {
                break;
            }
        }
        if self.rbuf.is_empty() {
            // Idle sessions hold no read buffer.
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    async fn on_message(&mut self, payload: Bytes, text: bool) -> Result<(), Close> {
        self.node.metrics.messages_received.increment(1);
        if self.mode == Mode::Echo {
            // Nothing else writes to an echo session: the reply goes straight
            // to the writer, still counted against the session's limit. A
            // reply that does not fit marks the queue overflowed, and the
            // session loop closes it as a slow consumer like any other.
            let op = if text { OpCode::Text } else { OpCode::Binary };
            let f = frame::encode(op, &payload);
            if self.shared.queue.hold(f.len()) {
                self.data.push_back(Outbound::reply(f));
            }
            return Ok(());
        }
        let proto = self.shared.proto;
        if text != (proto == Subprotocol::Json) {
            return Err(Close::new(
                1003,
                if text {
                    "text frame on roomcast.v1.proto"
                } else {
                    "binary frame on roomcast.v1.json"
                },
                "unsupported_data",
            ));
        }
        if !self.client.allow_command() {
            let id = proto.decode(&payload).map(|c| c.id).unwrap_or(0);
            self.error(
                id,
                ErrorCode::TooManyRequests,
                "command rate limit exceeded",
            );
            return Ok(());
        }
        match proto.decode(&payload) {
            // The only command that waits (for the backend): boxed, so the
            // wait's state is not part of every session's.
            Ok(Command {
                id,
                kind: CommandKind::Connect { token, client },
            }) => Box::pin(self.connect(id, token, client)).await,
            Ok(cmd) => self.command(cmd),
            Err(CommandError { id, code, message }) => {
                if self.auth_deadline.is_some() {
                    return Err(Close::new(
                        4001,
                        "the first command must be connect",
                        "unauthorized",
                    ));
                }
                self.error(id, code, &message);
                Ok(())
            }
        }
    }

    fn error(&mut self, id: u64, code: ErrorCode, message: &str) {
        self.client.error(id, code, message);
    }

    /// The `connect` command.
    async fn connect(&mut self, id: u64, token: String, client: String) -> Result<(), Close> {
        let c = &mut self.client;
        if self.connected {
            c.error(id, ErrorCode::BadRequest, "already connected");
            return Ok(());
        }
        let mut grant = None;
        if let Some(auth) = &self.node.auth {
            if c.grant.is_none() || !token.is_empty() {
                match auth.verify(&token) {
                    Ok(g) => grant = Some(g),
                    Err(e) => return Err(Close::new(4001, e.to_string(), "unauthorized")),
                }
            }
        }
        let (grant, rooms) = self.backend_connect(grant, token, client).await?;
        if let Some(g) = grant {
            self.authenticate(g);
        }
        self.auth_deadline = None;
        self.connected = true;
        let ping_interval_ms = self.node.config.ping_interval.as_millis() as u64;
        self.client.reply(
            id,
            &ServerEvent::Connected {
                client_id: &self.shared.client_id,
                node: self.node.hub.node_id(),
                ping_interval_ms,
            },
        );
        for room in rooms {
            if !self.client.is_member(&room) {
                self.client.join(room, None, 0);
            }
        }
        Ok(())
    }

    /// Every command but `connect`: none waits.
    fn command(&mut self, cmd: Command) -> Result<(), Close> {
        let id = cmd.id;
        if self.auth_deadline.is_some() {
            return Err(Close::new(
                4001,
                "the first command must be connect",
                "unauthorized",
            ));
        }
        let c = &mut self.client;
        match cmd.kind {
            CommandKind::Connect { .. } => unreachable!("handled by Session::connect"),
            CommandKind::Subscribe { room, since } => c.subscribe(room, since, id),
            CommandKind::Unsubscribe { room } => c.unsubscribe(&room, id),
            CommandKind::Publish { room, event, data } => c.publish(room, event, data, id),
            CommandKind::Presence { room } => c.presence(room, id),
            CommandKind::Ping => c.reply(id, &ServerEvent::Pong),
            CommandKind::Echo { data } => {
                // Echo always answers: it is what the command is for.
                c.reply_frame(self.shared.encode(id, &ServerEvent::Echo { data: &data }));
            }
            CommandKind::Rpc { method, data } => c.rpc(method, data, id),
        }
        Ok(())
    }

    /// The backend's Connect hook, when it is on: the grant to take (the
    /// JWT's, with the backend's user and expiry) and the rooms to join, or
    /// the close that refuses the client.
    async fn backend_connect(
        &mut self,
        grant: Option<Grant>,
        token: String,
        client: String,
    ) -> Result<(Option<Grant>, Vec<String>), Close> {
        let Some(b) = self.node.backend.clone() else {
            return Ok((grant, Vec::new()));
        };
        if !self.node.config.backend.connect {
            return Ok((grant, Vec::new()));
        }
        let known = grant.as_ref().or(self.client.grant.as_ref());
        // A token given only in the URL is the one the backend sees.
        let token = match (token.is_empty(), self.shared.peer()) {
            (true, Some(p)) => p.token.clone(),
            _ => token,
        };
        let input = ConnectInput {
            token,
            client,
            auth: Bytes::new(),
            user: known.map(|g| g.user.clone()).unwrap_or_default(),
        };
        match b.connect(&self.node, &self.shared, input).await {
            Ok(outcome) => match outcome.admit(&self.shared, known.cloned()) {
                Ok((grant, rooms)) => Ok((Some(grant), rooms)),
                Err((code, reason)) => Err(Close::new(code, reason, "backend_denied")),
            },
            Err(e) => Err(Close::new(e.close_code(), e.to_string(), "backend_error")),
        }
    }

    fn begin_close(&mut self, close: Close) {
        if self.closing.is_some() || self.close_after.is_some() {
            return;
        }
        if close.flush && !self.client.pipeline.is_empty() {
            // The replies to commands in flight go out before the close.
            self.close_after = Some(close);
            return;
        }
        if close.flush {
            // Before closing the queue: closing drops what it holds.
            self.shared.queue.take(&mut self.data);
        }
        self.shared.queue.close();
        if !close.flush {
            // Keep only a half-written frame: the stream must stay well-formed.
            let keep = if self.data_written > 0 { 1 } else { 0 };
            self.data.truncate(keep);
        }
        self.data.push_back(Outbound::reply(frame::encode_close(
            close.code,
            &close.reason,
        )));
        self.closing = Some(close);
    }

    /// Sends what is left (with the close frame), waits for the client's
    /// close (at most the close grace), and returns the disconnect label.
    async fn finish(&mut self) -> &'static str {
        let label = self.closing.as_ref().map_or("normal", |c| c.label);
        let grace = self.node.config.close_grace;
        let flushing = self.closing.as_ref().is_some_and(|c| c.flush);
        let flush_for = if flushing {
            self.node.config.drain_timeout.min(Duration::from_secs(5))
        } else {
            grace
        };
        let deadline = Instant::now() + flush_for;
        while self.has_output() {
            match self.write_some() {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if tokio::time::timeout_at(deadline, self.stream.writable())
                        .await
                        .is_err()
                    {
                        if !flushing {
                            // The close frame itself waited out the grace.
                            self.node.metrics.close_grace_expired.increment(1);
                        }
                        return label;
                    }
                }
                Err(_) => return label,
            }
        }
        if self.client_closed {
            return label;
        }
        // The client's Close (or EOF) ends the connection at once.
        let answer =
            close::await_close(&self.stream, &mut self.rbuf, &mut self.reader, grace).await;
        if answer == close::Answer::Expired {
            self.node.metrics.close_grace_expired.increment(1);
        }
        label
    }

    /// Writes as much queued output as the socket takes. Order: the rest of
    /// a half-written data frame, then control frames, then data frames.
    fn write_some(&mut self) -> io::Result<usize> {
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        let mut data_iter = self.data.iter();
        if self.data_written > 0 {
            let first = data_iter.next().expect("a half-written frame exists");
            iov[n] = IoSlice::new(&first.frame[self.data_written..]);
            n += 1;
        }
        for (i, c) in self.ctrl.iter().enumerate() {
            if n == MAX_IOV {
                break;
            }
            let start = if i == 0 { self.ctrl_written } else { 0 };
            iov[n] = IoSlice::new(&c[start..]);
            n += 1;
        }
        for d in data_iter {
            if n == MAX_IOV {
                break;
            }
            iov[n] = IoSlice::new(&d.frame);
            n += 1;
        }
        let written = self.stream.try_write_vectored(&iov[..n])?;
        self.consume(written);
        Ok(written)
    }

    fn consume(&mut self, mut written: usize) {
        let mut data_bytes = 0;
        let mut frames = 0u64;
        // The oldest publication completed by this write: one histogram
        // observation per write keeps the (locked) histogram off the
        // per-frame path and records the batch's worst latency.
        let mut oldest = i64::MAX;
        if self.data_written > 0 {
            let len = self.data[0].frame.len() - self.data_written;
            if written < len {
                self.data_written += written;
                self.shared.queue.written(written);
                return;
            }
            written -= len;
            data_bytes += len;
            let done = self.data.pop_front().expect("exists");
            frames += 1;
            oldest = oldest.min(accepted(&done));
            self.data_written = 0;
        }
        while written > 0 {
            let Some(c) = self.ctrl.front() else { break };
            let len = c.len() - self.ctrl_written;
            if written < len {
                self.ctrl_written += written;
                written = 0;
                break;
            }
            written -= len;
            self.ctrl_written = 0;
            self.ctrl.pop_front();
        }
        while written > 0 {
            let len = self.data[0].frame.len();
            if written < len {
                self.data_written = written;
                data_bytes += written;
                break;
            }
            written -= len;
            data_bytes += len;
            let done = self.data.pop_front().expect("exists");
            frames += 1;
            oldest = oldest.min(accepted(&done));
        }
        self.shared.queue.written(data_bytes);
        if frames > 0 {
            self.node.metrics.messages_sent.increment(frames);
        }
        if oldest != i64::MAX {
            let secs = (roomcast_adapter::now_unix_micros() - oldest).max(0) as f64 / 1e6;
            self.node.metrics.delivery_seconds.record(secs);
        }
    }

    async fn cleanup(&mut self) {
        self.shared.queue.close();
        self.client.cleanup().await;
    }
}

/// When a frame's publication was accepted; `i64::MAX` for replies.
fn accepted(o: &Outbound) -> i64 {
    if o.accepted_us == 0 {
        i64::MAX
    } else {
        o.accepted_us
    }
}
