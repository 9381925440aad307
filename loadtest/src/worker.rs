//! Generator processes. The harness re-executes itself as
//! `roomcast-loadtest worker` to hold more connections than one process may
//! (20,000 open files each) and to keep each generator single-threaded and
//! cheap. The coordinator writes a [`Plan`] and then [`Command`]s as JSON
//! lines on the worker's stdin; the worker answers with [`Event`] lines on
//! stdout. [`run_worker`] is the worker side, [`Pool`] the coordinator side.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::dialect::{scan_u64, Dialect};
use crate::hist::Hist;
use crate::sys;
use crate::ws::{ConnectOptions, Message, WsConn};

/// What a worker's connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Connect and hold; answer pings; nothing else.
    Hold,
    /// Subscribe to a room and check every delivery.
    Subscribe,
    /// Closed-loop round trips, one outstanding per connection.
    Echo,
}

/// One server a worker connects to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Endpoint {
    /// Listener address.
    pub addr: SocketAddr,
    /// How to speak to it.
    pub dialect: Dialect,
}

/// Everything a worker needs to know, sent as its first stdin line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// What the connections do.
    pub mode: Mode,
    /// Connection with global index `i` goes to `endpoints[i % len]`.
    pub endpoints: Vec<Endpoint>,
    /// Global index of this worker's first connection.
    pub first: usize,
    /// Connections this worker opens.
    pub count: usize,
    /// Loopback source addresses, used round-robin by global index.
    pub source_ips: Vec<Ipv4Addr>,
    /// Connection `i` subscribes to `rooms[i % len]` (mode `Subscribe`).
    pub rooms: Vec<String>,
    /// Every `slow_every`-th connection subscribes and then stops reading
    /// (0: none).
    pub slow_every: usize,
    /// Rooms nobody publishes to that every subscriber also joins
    /// (`lt.extra.0` …), to measure what a subscription costs.
    #[serde(default)]
    pub extra_rooms: usize,
    /// Handshakes in flight at once; 0 means all at once (a storm).
    pub connect_parallel: usize,
    /// Echo payload bytes (mode `Echo`).
    pub echo_payload: usize,
    /// Echo through the raw `/echo` endpoint rather than the echo command.
    pub echo_raw: bool,
    /// Echo through the `rpc` command (answered by the node's backend)
    /// rather than the echo command.
    #[serde(default)]
    pub echo_rpc: bool,
    /// Bytes asked of the kernel per read.
    pub read_size: usize,
}

/// Coordinator to worker, after the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Start the echo loop for `duration_ms`.
    Go {
        /// How long to run.
        duration_ms: u64,
    },
    /// Publishing is over: wait until each room's `expected` count has
    /// arrived (or nothing has moved for `grace_ms`), then report.
    Finish {
        /// Publications sent per room.
        expected: BTreeMap<String, u64>,
        /// Give up waiting after this long without progress.
        grace_ms: u64,
    },
}

/// Worker to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Every connection is set up (or failed).
    Ready(ReadyInfo),
    /// Cumulative counters, about every 20 ms (they pace the max-rate publisher).
    Progress {
        /// Messages delivered so far (subscribe mode).
        delivered: u64,
        /// Round trips done so far (echo mode).
        roundtrips: u64,
        /// Connections set up so far.
        connected: u64,
    },
    /// The final result.
    Done(Box<WorkerResult>),
}

/// Setup outcome of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadyInfo {
    /// Connections that completed the handshake (and subscribe).
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// First few failure reasons.
    pub errors: Vec<String>,
    /// WebSocket handshake time (TCP connect to 101), ns.
    pub handshake: Hist,
    /// Subscribe round trip, ns.
    pub subscribe: Hist,
    /// Wall time of the whole setup phase, seconds.
    pub setup_secs: f64,
}

/// What a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Messages received by reading (not slow) subscribers.
    pub delivered: u64,
    /// Publications a reading subscriber never received.
    pub lost: u64,
    /// Deliveries that arrived after a later one.
    pub out_of_order: u64,
    /// Publish-to-deliver latency (subscribe) or round-trip time (echo), ns.
    pub latency: Hist,
    /// Round trips completed (echo).
    pub roundtrips: u64,
    /// Echo replies that did not match what was sent.
    pub bad_replies: u64,
    /// Reading connections the server closed, by close code ("eof" for none).
    pub fast_closed: BTreeMap<String, u64>,
    /// Slow connections the server closed, by close code.
    pub slow_closed: BTreeMap<String, u64>,
    /// Slow connections (never read after subscribing).
    pub slow: u64,
    /// CPU seconds this worker used during the measured phase.
    pub cpu_secs: f64,
    /// Wall seconds of the measured phase.
    pub wall_secs: f64,
    /// First few errors.
    pub errors: Vec<String>,
}

/// Per-connection delivery state, shared between the reading task and the
/// finish check (all on one thread).
#[derive(Debug, Clone, Default)]
struct ConnState {
    room: usize,
    next: u64,
    gaps: u64,
    out_of_order: u64,
    closed: Option<String>,
    slow: bool,
}

struct Shared {
    delivered: u64,
    roundtrips: u64,
    bad_replies: u64,
    connected: u64,
    latency: Hist,
    conns: Vec<ConnState>,
    errors: Vec<String>,
}

impl Shared {
    fn error(&mut self, e: String) {
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
}

fn emit(ev: &Event) {
    use std::io::Write;
    let line = serde_json::to_string(ev).expect("events serialise");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Entry point of `roomcast-loadtest worker`: reads the plan from stdin,
/// runs it on a single-threaded runtime, reports on stdout.
pub fn run_worker() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, worker_main())
}

async fn worker_main() -> Result<()> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let plan: Plan = serde_json::from_str(&lines.next_line().await?.context("no plan on stdin")?)
        .context("bad plan")?;
    let shared = Rc::new(RefCell::new(Shared {
        delivered: 0,
        roundtrips: 0,
        bad_replies: 0,
        connected: 0,
        latency: Hist::default(),
        conns: vec![ConnState::default(); plan.count],
        errors: Vec::new(),
    }));

    // Progress ticker.
    {
        let shared = shared.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                let s = shared.borrow();
                emit(&Event::Progress {
                    delivered: s.delivered,
                    roundtrips: s.roundtrips,
                    connected: s.connected,
                });
            }
        });
    }

    // Setup: connect (and subscribe) every connection.
    let setup_start = Instant::now();
    let parallel = if plan.connect_parallel == 0 {
        plan.count.max(1)
    } else {
        plan.connect_parallel
    };
    let sem = Rc::new(Semaphore::new(parallel));
    let (go_tx, go_rx) = watch::channel::<Option<(Instant, Duration)>>(None);
    let (fin_tx, fin_rx) = watch::channel(false);
    let mut slow_handles = Vec::new();
    let mut ready = ReadyInfo::default();
    let mut setups = Vec::with_capacity(plan.count);
    for k in 0..plan.count {
        let plan = plan.clone();
        let sem = sem.clone();
        setups.push(tokio::task::spawn_local(async move {
            let _permit = sem.acquire().await.expect("semaphore open");
            setup_conn(&plan, k).await
        }));
    }
    let mut handles = Vec::new();
    for (k, s) in setups.into_iter().enumerate() {
        match s.await.expect("setup task") {
            Ok((conn, hs_ns, sub_ns)) => {
                ready.connected += 1;
                ready.handshake.record(hs_ns);
                if let Some(ns) = sub_ns {
                    ready.subscribe.record(ns);
                }
                shared.borrow_mut().connected += 1;
                let g = plan.first + k;
                let slow = plan.slow_every > 0 && g % plan.slow_every == plan.slow_every - 1;
                {
                    let mut s = shared.borrow_mut();
                    let st = &mut s.conns[k];
                    st.room = if plan.rooms.is_empty() {
                        0
                    } else {
                        g % plan.rooms.len()
                    };
                    st.next = 1;
                    st.slow = slow;
                }
                let shared = shared.clone();
                let plan = plan.clone();
                if slow {
                    let fin_rx = fin_rx.clone();
                    slow_handles.push(tokio::task::spawn_local(async move {
                        run_slow(conn, k, shared, fin_rx).await;
                    }));
                } else {
                    let go_rx = go_rx.clone();
                    handles.push(tokio::task::spawn_local(async move {
                        run_conn(conn, &plan, k, shared, go_rx).await;
                    }));
                }
            }
            Err(e) => {
                ready.failed += 1;
                if ready.errors.len() < 5 {
                    ready.errors.push(format!("{e:#}"));
                }
            }
        }
    }
    ready.setup_secs = setup_start.elapsed().as_secs_f64();
    emit(&Event::Ready(ready));

    let cpu0 = sys::cpu_seconds("self").unwrap_or(0.0);
    let mut t0 = Instant::now();
    let mut result = WorkerResult::default();
    // One command ends the run: Go (echo) or Finish; stdin closing too.
    if let Some(line) = lines.next_line().await? {
        let cmd: Command = serde_json::from_str(&line).context("bad command")?;
        match cmd {
            Command::Go { duration_ms } => {
                t0 = Instant::now();
                let _ = go_tx.send(Some((t0, Duration::from_millis(duration_ms))));
                tokio::time::sleep(Duration::from_millis(duration_ms + 50)).await;
            }
            Command::Finish { expected, grace_ms } => {
                let expected: Vec<u64> = plan
                    .rooms
                    .iter()
                    .map(|r| expected.get(r).copied().unwrap_or(0))
                    .collect();
                wait_delivered(&shared, &expected, Duration::from_millis(grace_ms)).await;
                let _ = fin_tx.send(true);
                let drain = futures::future::join_all(slow_handles.drain(..));
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                let s = shared.borrow();
                for st in &s.conns {
                    if st.slow {
                        continue;
                    }
                    let want = expected.get(st.room).copied().unwrap_or(0);
                    let got_upto = st.next.saturating_sub(1);
                    result.lost += st.gaps + want.saturating_sub(got_upto);
                    result.out_of_order += st.out_of_order;
                }
            }
        }
    }
    for h in handles.iter().chain(&slow_handles) {
        h.abort();
    }
    let s = shared.borrow();
    result.wall_secs = t0.elapsed().as_secs_f64();
    result.cpu_secs = sys::cpu_seconds("self").unwrap_or(0.0) - cpu0;
    result.delivered = s.delivered;
    result.roundtrips = s.roundtrips;
    result.bad_replies = s.bad_replies;
    result.latency = s.latency.clone();
    result.errors = s.errors.clone();
    for st in &s.conns {
        if st.slow {
            result.slow += 1;
        }
        if let Some(code) = &st.closed {
            let map = if st.slow {
                &mut result.slow_closed
            } else {
                &mut result.fast_closed
            };
            *map.entry(code.clone()).or_default() += 1;
        }
    }
    emit(&Event::Done(Box::new(result)));
    Ok(())
}

async fn wait_delivered(shared: &Rc<RefCell<Shared>>, expected: &[u64], grace: Duration) {
    let mut last = u64::MAX;
    let mut last_change = Instant::now();
    loop {
        {
            let s = shared.borrow();
            let all = s.conns.iter().all(|st| {
                st.slow
                    || st.closed.is_some()
                    || st.next.saturating_sub(1) >= expected.get(st.room).copied().unwrap_or(0)
            });
            if all {
                return;
            }
            if s.delivered != last {
                last = s.delivered;
                last_change = Instant::now();
            } else if last_change.elapsed() > grace {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn setup_conn(plan: &Plan, k: usize) -> Result<(WsConn, u64, Option<u64>)> {
    let g = plan.first + k;
    let ep = &plan.endpoints[g % plan.endpoints.len()];
    let raw_echo = plan.mode == Mode::Echo && plan.echo_raw;
    let opts = ConnectOptions {
        addr: ep.addr,
        source_ip: (!plan.source_ips.is_empty())
            .then(|| plan.source_ips[g % plan.source_ips.len()]),
        path: if raw_echo {
            "/echo".to_string()
        } else {
            ep.dialect.path().to_string()
        },
        subprotocol: if raw_echo {
            None
        } else {
            ep.dialect.subprotocol()
        },
        read_size: plan.read_size,
        timeout: Duration::from_secs(30),
    };
    let t = Instant::now();
    let mut conn = WsConn::connect(&opts)
        .await
        .with_context(|| format!("connect {}", ep.addr))?;
    if !raw_echo {
        ep.dialect.open(&mut conn).await?;
    }
    let hs = t.elapsed().as_nanos() as u64;
    if plan.mode != Mode::Subscribe {
        return Ok((conn, hs, None));
    }
    let room = &plan.rooms[g % plan.rooms.len()];
    let t = Instant::now();
    conn.send_text(ep.dialect.subscribe(room).as_bytes())
        .await?;
    loop {
        match conn.next_message().await? {
            Message::Data(m) => {
                if ep.dialect.is_subscribed(&m) {
                    break;
                }
                if let Some(r) = ep.dialect.keepalive_reply(&m) {
                    conn.send_text(r).await?;
                    continue;
                }
                if ep.dialect.is_error(&m) {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(&m));
                }
            }
            Message::Close(code) => bail!("closed with {code} while subscribing"),
        }
    }
    // Extra rooms: all asked at once, then every answer awaited.
    for j in 0..plan.extra_rooms {
        conn.send_text(ep.dialect.subscribe(&format!("lt.extra.{j}")).as_bytes())
            .await?;
    }
    let mut answered = 0;
    while answered < plan.extra_rooms {
        match conn.next_message().await? {
            Message::Data(m) => {
                if ep.dialect.is_subscribed(&m) {
                    answered += 1;
                } else if let Some(r) = ep.dialect.keepalive_reply(&m) {
                    conn.send_text(r).await?;
                } else if ep.dialect.is_error(&m) {
                    bail!("subscribe refused: {}", String::from_utf8_lossy(&m));
                }
            }
            Message::Close(code) => bail!("closed with {code} while subscribing"),
        }
    }
    Ok((conn, hs, Some(t.elapsed().as_nanos() as u64)))
}

/// A slow consumer: holds the socket without reading it, so the server's
/// send queue for this session fills up. When publishing is over it drains
/// what the kernel kept, to learn whether (and with which code) the server
/// closed it.
async fn run_slow(
    mut conn: WsConn,
    k: usize,
    shared: Rc<RefCell<Shared>>,
    mut fin: watch::Receiver<bool>,
) {
    while !*fin.borrow_and_update() {
        if fin.changed().await.is_err() {
            return;
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match conn.next_message().await {
                Ok(Message::Data(_)) => {}
                Ok(Message::Close(code)) => return code.to_string(),
                Err(_) => return "eof".to_string(),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "open".to_string());
    shared.borrow_mut().conns[k].closed = Some(closed);
}

async fn run_conn(
    mut conn: WsConn,
    plan: &Plan,
    k: usize,
    shared: Rc<RefCell<Shared>>,
    mut go: watch::Receiver<Option<(Instant, Duration)>>,
) {
    let g = plan.first + k;
    let dialect = plan.endpoints[g % plan.endpoints.len()].dialect;
    match plan.mode {
        Mode::Hold | Mode::Subscribe => loop {
            match conn.next_message().await {
                Ok(Message::Data(m)) => {
                    if let Some(r) = dialect.keepalive_reply(&m) {
                        let _ = conn.send_text(r).await;
                        continue;
                    }
                    let Some(seq) = scan_u64(&m, b"\"s\":") else {
                        continue;
                    };
                    let now = sys::now_ns();
                    let mut s = shared.borrow_mut();
                    s.delivered += 1;
                    if let Some(t) = scan_u64(&m, b"\"t\":") {
                        s.latency.record(now.saturating_sub(t));
                    }
                    let st = &mut s.conns[k];
                    if seq == st.next {
                        st.next += 1;
                    } else if seq > st.next {
                        st.gaps += seq - st.next;
                        st.next = seq + 1;
                    } else {
                        st.out_of_order += 1;
                    }
                }
                Ok(Message::Close(code)) => {
                    shared.borrow_mut().conns[k].closed = Some(code.to_string());
                    return;
                }
                Err(e) => {
                    let mut s = shared.borrow_mut();
                    s.conns[k].closed = Some("eof".to_string());
                    s.error(format!("read: {e}"));
                    return;
                }
            }
        },
        Mode::Echo => {
            let (start, dur) = loop {
                if let Some(v) = *go.borrow_and_update() {
                    break v;
                }
                if go.changed().await.is_err() {
                    return;
                }
            };
            let body: String = "x".repeat(plan.echo_payload);
            let frame = if plan.echo_raw {
                body.clone()
            } else if plan.echo_rpc {
                dialect.rpc("echo", &body)
            } else {
                dialect.echo(&body)
            };
            let want_len = frame.len();
            while start.elapsed() < dur {
                let t = Instant::now();
                if let Err(e) = conn.send_text(frame.as_bytes()).await {
                    shared.borrow_mut().error(format!("echo send: {e}"));
                    return;
                }
                let reply = loop {
                    match conn.next_message().await {
                        Ok(Message::Data(m)) => {
                            if let Some(r) = dialect.keepalive_reply(&m) {
                                let _ = conn.send_text(r).await;
                                continue;
                            }
                            break m;
                        }
                        Ok(Message::Close(code)) => {
                            shared.borrow_mut().conns[k].closed = Some(code.to_string());
                            return;
                        }
                        Err(e) => {
                            let mut s = shared.borrow_mut();
                            s.conns[k].closed = Some("eof".to_string());
                            s.error(format!("echo read: {e}"));
                            return;
                        }
                    }
                };
                let rtt = t.elapsed().as_nanos() as u64;
                let mut s = shared.borrow_mut();
                s.roundtrips += 1;
                s.latency.record(rtt);
                // Raw echo returns the frame unchanged; the command forms
                // wrap the same data in a reply of similar size.
                if (plan.echo_raw && reply.len() != want_len) || reply.len() < plan.echo_payload {
                    s.bad_replies += 1;
                }
            }
        }
    }
}

/// Coordinator side: a set of worker processes sharing one plan.
pub struct Pool {
    children: Vec<(Child, ChildStdin)>,
    events: mpsc::UnboundedReceiver<(usize, Event)>,
    /// Latest cumulative progress of each worker.
    progress: Vec<(u64, u64, u64)>,
}

/// How the coordinator starts workers.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// Most connections per worker process.
    pub max_per_worker: usize,
    /// CPU list for `taskset -c`, when pinning.
    pub pin: Option<String>,
}

impl Pool {
    /// Starts enough workers for `plan.count` connections, splitting the
    /// global index range between them.
    pub async fn start(plan: &Plan, spawn: &Spawn) -> Result<Pool> {
        let exe = std::env::current_exe().context("own executable")?;
        let n = plan.count.div_ceil(spawn.max_per_worker.max(1)).max(1);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut children = Vec::new();
        let mut first = plan.first;
        for w in 0..n {
            let count = plan.count / n + usize::from(w < plan.count % n);
            let mut p = plan.clone();
            p.first = first;
            p.count = count;
            first += count;
            let mut cmd = match &spawn.pin {
                Some(cpus) => {
                    let mut c = tokio::process::Command::new("taskset");
                    c.arg("-c").arg(cpus).arg(&exe);
                    c
                }
                None => tokio::process::Command::new(&exe),
            };
            cmd.arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            let mut child = cmd.spawn().context("spawn worker")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            stdin
                .write_all(format!("{}\n", serde_json::to_string(&p)?).as_bytes())
                .await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Event>(&line) {
                        Ok(ev) => {
                            if tx.send((w, ev)).is_err() {
                                break;
                            }
                        }
                        Err(e) => eprintln!("worker {w}: unreadable event ({e}): {line:.200}"),
                    }
                }
            });
            children.push((child, stdin));
        }
        Ok(Pool {
            progress: vec![(0, 0, 0); children.len()],
            children,
            events: rx,
        })
    }

    /// Sum of the latest progress: (delivered, roundtrips, connected).
    pub fn progress(&self) -> (u64, u64, u64) {
        self.progress
            .iter()
            .fold((0, 0, 0), |a, p| (a.0 + p.0, a.1 + p.1, a.2 + p.2))
    }

    /// Takes events that arrived, updating progress; returns any others.
    pub fn poll(&mut self) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        while let Ok((w, ev)) = self.events.try_recv() {
            self.note(w, ev, &mut out);
        }
        out
    }

    fn note(&mut self, w: usize, ev: Event, out: &mut Vec<(usize, Event)>) {
        match ev {
            Event::Progress {
                delivered,
                roundtrips,
                connected,
            } => self.progress[w] = (delivered, roundtrips, connected),
            other => out.push((w, other)),
        }
    }

    /// Waits for one non-progress event from every worker, calling `tick`
    /// about every 100 ms meanwhile (for progress bars and samplers).
    pub async fn collect<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(Event) -> Option<T>,
        mut tick: impl FnMut(&Pool),
    ) -> Result<Vec<T>> {
        let deadline = Instant::now() + timeout;
        let mut got: Vec<Option<T>> = (0..self.children.len()).map(|_| None).collect();
        while got.iter().any(Option::is_none) {
            if Instant::now() > deadline {
                bail!("workers did not answer within {timeout:?}");
            }
            let mut others = Vec::new();
            match tokio::time::timeout(Duration::from_millis(100), self.events.recv()).await {
                Ok(Some((w, ev))) => self.note(w, ev, &mut others),
                Ok(None) => bail!("workers exited"),
                Err(_) => {}
            }
            for (w, ev) in others {
                if let Some(v) = pick(ev) {
                    got[w] = Some(v);
                }
            }
            tick(self);
        }
        Ok(got.into_iter().map(|v| v.expect("all collected")).collect())
    }

    /// Sends a command to every worker.
    pub async fn send(&mut self, cmd: &Command) -> Result<()> {
        let line = format!("{}\n", serde_json::to_string(cmd)?);
        for (_, stdin) in &mut self.children {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await?;
        }
        Ok(())
    }

    /// Waits for the workers to exit (they do after reporting).
    pub async fn shutdown(mut self) {
        for (child, stdin) in &mut self.children {
            let _ = stdin.shutdown().await;
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
}

/// Merged setup results of several workers.
pub fn merge_ready(all: &[ReadyInfo]) -> ReadyInfo {
    let mut m = ReadyInfo::default();
    for r in all {
        m.connected += r.connected;
        m.failed += r.failed;
        m.handshake.merge(&r.handshake);
        m.subscribe.merge(&r.subscribe);
        m.setup_secs = m.setup_secs.max(r.setup_secs);
        for e in &r.errors {
            if m.errors.len() < 5 {
                m.errors.push(e.clone());
            }
        }
    }
    m
}

/// Merged final results of several workers.
pub fn merge_results(all: &[WorkerResult]) -> WorkerResult {
    let mut m = WorkerResult::default();
    for r in all {
        m.delivered += r.delivered;
        m.lost += r.lost;
        m.out_of_order += r.out_of_order;
        m.latency.merge(&r.latency);
        m.roundtrips += r.roundtrips;
        m.bad_replies += r.bad_replies;
        m.slow += r.slow;
        m.cpu_secs += r.cpu_secs;
        m.wall_secs = m.wall_secs.max(r.wall_secs);
        for (k, v) in &r.fast_closed {
            *m.fast_closed.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.slow_closed {
            *m.slow_closed.entry(k.clone()).or_default() += v;
        }
        for e in &r.errors {
            if m.errors.len() < 5 {
                m.errors.push(e.clone());
            }
        }
    }
    m
}
