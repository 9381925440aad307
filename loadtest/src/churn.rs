//! The churn burst's clients: connections opened at a fixed rate, each
//! ending one of the ways real clients end (see [`Ending`]), run as tasks of
//! the coordinator while the long-lived subscribers sit in worker processes.
//!
//! Every client speaks raw bytes: the endings that matter here (a reset, a
//! half-sent upgrade, an unmasked frame) are what a WebSocket library will
//! not do.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::hist::Hist;
use crate::ws::find;

/// How long one client waits for anything from the server.
const WAIT: Duration = Duration::from_secs(10);

/// How a churn connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Sends a Close, reads the server's, waits for the end of the stream.
    Clean,
    /// Upgrades, then resets the connection (SO_LINGER 0).
    Reset,
    /// Upgrades, then ends its side (FIN) with no Close frame.
    Fin,
    /// Upgrades, then neither reads nor closes until the burst is over.
    HalfOpen,
    /// Sends half of an upgrade request and nothing more until the burst
    /// is over.
    AbandonedUpgrade,
    /// Sends an unmasked frame, so the server closes (1002); answers the
    /// server's Close at once and times the end of the stream.
    NodeClose,
}

impl Ending {
    /// Every ending, in the order connections take them.
    pub const ALL: [Ending; 6] = [
        Ending::Clean,
        Ending::Reset,
        Ending::Fin,
        Ending::HalfOpen,
        Ending::AbandonedUpgrade,
        Ending::NodeClose,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Ending::Clean => "clean",
            Ending::Reset => "reset",
            Ending::Fin => "fin",
            Ending::HalfOpen => "half_open",
            Ending::AbandonedUpgrade => "abandoned_upgrade",
            Ending::NodeClose => "node_close",
        }
    }
}

/// One burst.
#[derive(Debug, Clone)]
pub struct BurstPlan {
    /// Server.
    pub addr: SocketAddr,
    /// Request target of the WebSocket endpoint.
    pub path: String,
    /// Subprotocol to offer.
    pub subprotocol: Option<String>,
    /// New connections per second.
    pub rate: f64,
    /// How long connections are opened.
    pub duration: Duration,
    /// Loopback source addresses, used round-robin.
    pub source_ips: Vec<Ipv4Addr>,
    /// Most clients alive at once (each holds a file).
    pub max_open: usize,
}

/// What a burst measured.
#[derive(Debug, Clone, Default)]
pub struct BurstResult {
    /// Connections attempted.
    pub attempted: u64,
    /// Connections that ended the way they meant to, by ending.
    pub done: BTreeMap<&'static str, u64>,
    /// Connections that failed (refused upgrade, timeout, ...).
    pub failed: u64,
    /// First few failures.
    pub errors: Vec<String>,
    /// Wall seconds of the opening phase (until the last connection began).
    pub open_secs: f64,
    /// Node-initiated closes: from our Close to the end of the stream, ns.
    pub close_latency: Hist,
    /// Node-initiated closes whose server sent no Close frame.
    pub no_close: u64,
}

#[derive(Default)]
struct Tally {
    result: BurstResult,
}

impl Tally {
    fn ok(&mut self, e: Ending) {
        *self.result.done.entry(e.name()).or_default() += 1;
    }

    fn fail(&mut self, e: Ending, why: String) {
        self.result.failed += 1;
        if self.result.errors.len() < 5 {
            self.result.errors.push(format!("{}: {why}", e.name()));
        }
    }
}

/// Runs one burst: opens connections at `plan.rate` for `plan.duration`,
/// then releases the clients that hold on and waits for every client to
/// end.
pub async fn burst(plan: &BurstPlan) -> BurstResult {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (over_tx, over_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(plan.max_open.max(1)));
    let total = (plan.rate * plan.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(1e-3));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        // Finished clients are reaped as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let ending = Ending::ALL[i as usize % Ending::ALL.len()];
        let source = plan.source_ips[i as usize % plan.source_ips.len().max(1)];
        let plan = plan.clone();
        let tally = tally.clone();
        let over = over_rx.clone();
        tasks.spawn(async move {
            let r = client(&plan, source, ending, over).await;
            let mut t = tally.lock().expect("tally");
            match r {
                Ok(Some(latency)) => {
                    t.result.close_latency.record(latency.as_nanos() as u64);
                    t.ok(ending);
                }
                Ok(None) => t.ok(ending),
                Err(why) => {
                    if why == NO_CLOSE {
                        t.result.no_close += 1;
                    }
                    t.fail(ending, why);
                }
            }
            drop(slot);
        });
    }
    let open_secs = start.elapsed().as_secs_f64();
    let _ = over_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let mut t = tally.lock().expect("tally");
    t.result.attempted = total;
    t.result.open_secs = open_secs;
    std::mem::take(&mut t.result)
}

const NO_CLOSE: &str = "the server ended the stream without a Close";

/// Runs one client; for a node-initiated close, returns its close latency.
async fn client(
    plan: &BurstPlan,
    source: Ipv4Addr,
    ending: Ending,
    mut over: watch::Receiver<bool>,
) -> Result<Option<Duration>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .map_err(|e| e.to_string())?;
    let mut stream = tokio::time::timeout(WAIT, socket.connect(plan.addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let request = upgrade_request(plan);
    if ending == Ending::AbandonedUpgrade {
        let half = &request.as_bytes()[..request.len() / 2];
        stream.write_all(half).await.map_err(|e| e.to_string())?;
        // The server may give up on it first (its handshake timeout).
        let mut scratch = [0u8; 256];
        tokio::select! {
            _ = over.wait_for(|o| *o) => {}
            _ = stream.read(&mut scratch) => {}
        }
        return Ok(None);
    }
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(512);
    read_head(&mut stream, &mut buf).await?;
    match ending {
        Ending::Clean => {
            stream
                .write_all(&masked(0x8, &1000u16.to_be_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            read_to_end(&mut stream).await?;
            Ok(None)
        }
        Ending::Reset => {
            stream.set_zero_linger().map_err(|e| e.to_string())?;
            drop(stream);
            Ok(None)
        }
        Ending::Fin => {
            stream.shutdown().await.map_err(|e| e.to_string())?;
            read_to_end(&mut stream).await?;
            Ok(None)
        }
        Ending::HalfOpen => {
            let _ = over.wait_for(|o| *o).await;
            Ok(None)
        }
        Ending::NodeClose => {
            // Unmasked: a protocol error the server must close on.
            let mut bad = vec![0x81, 4];
            bad.extend_from_slice(b"oops");
            stream.write_all(&bad).await.map_err(|e| e.to_string())?;
            let code = read_close(&mut stream, &mut buf).await?;
            let answered = Instant::now();
            stream
                .write_all(&masked(0x8, &code.to_be_bytes()))
                .await
                .map_err(|e| e.to_string())?;
            read_to_end(&mut stream).await?;
            Ok(Some(answered.elapsed()))
        }
        Ending::AbandonedUpgrade => unreachable!("returned above"),
    }
}

fn upgrade_request(plan: &BurstPlan) -> String {
    let key: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        plan.path, plan.addr
    );
    if let Some(p) = &plan.subprotocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Reads the response head; what follows it stays in `buf`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = read(stream, &mut chunk).await?;
        if n == 0 {
            return Err("closed during the upgrade".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&buf[..end]);
        return Err(format!(
            "upgrade refused: {}",
            line.lines().next().unwrap_or("")
        ));
    }
    buf.drain(..end);
    Ok(())
}

/// Reads frames until a Close; returns its code (1005 when it has none).
async fn read_close(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    let mut chunk = [0u8; 4096];
    loop {
        while let Some((op, start, end)) = frame_at(buf) {
            if op == 0x8 {
                let p = &buf[start..end];
                return Ok(if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                });
            }
            buf.drain(..end);
        }
        let n = read(stream, &mut chunk).await?;
        if n == 0 {
            return Err(NO_CLOSE.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The first complete server frame of `buf`: (opcode, payload start, end).
fn frame_at(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (head, len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize),
        126 | 127 => return None,
        n => (2, n as usize),
    };
    (buf.len() >= head + len).then_some((buf[0] & 0x0f, head, head + len))
}

/// Reads and discards until the end of the stream (a reset counts).
async fn read_to_end(stream: &mut TcpStream) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Err(_) => return Err("the server kept the connection open".into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

async fn read(stream: &mut TcpStream, chunk: &mut [u8]) -> Result<usize, String> {
    tokio::time::timeout(WAIT, stream.read(chunk))
        .await
        .map_err(|_| "timed out waiting for the server".to_string())?
        .map_err(|e| e.to_string())
}

/// One masked client frame with a short payload.
fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() < 126);
    let key: [u8; 4] = rand::random();
    let mut f = vec![0x80 | op, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_are_found_whole_or_not_at_all() {
        assert_eq!(frame_at(&[0x88, 2, 3, 0xea]), Some((0x8, 2, 4)));
        assert_eq!(frame_at(&[0x88, 2, 3]), None);
        let mut long = vec![0x81, 126, 0, 200];
        long.extend(std::iter::repeat_n(b'x', 200));
        assert_eq!(frame_at(&long), Some((0x1, 4, 204)));
        assert_eq!(frame_at(&long[..100]), None);
    }
}
