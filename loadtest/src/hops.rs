//! `hops`: what a socket.io request costs when it lands on a node that does
//! not own its session (no sticky sessions), against the same request on
//! the owner, in one run on one two-node Roomcast cluster.
//!
//! Every session opens on node 0 (it owns them). Each then makes closed-loop
//! round trips: an acknowledged event that the node answers at once (an
//! unknown event, acknowledged `not_found`, so neither the adapter nor Redis
//! is in the way) and its acknowledgement. Four variants:
//!
//! - `polling direct`: POST the event and GET the ack, both to node 0;
//! - `polling forwarded`: both to node 1, which sends them on to node 0;
//! - `websocket direct`: the session upgraded on node 0;
//! - `websocket relayed`: upgraded through node 1, which relays the bytes.
//!
//! The generator runs in the harness process itself (these are a few dozen
//! sessions, not thousands).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::hist::Hist;
use crate::report::Run;
use crate::scenarios::{Ctx, Sizes};
use crate::targets::{Kind, Layout, Target};
use crate::ws::{ConnectOptions, Message, WsConn};

/// The acknowledged event each round trip sends.
const EVENT: &[u8] = br#"421["hop","x"]"#;
/// The start of its acknowledgement.
const ACK: &[u8] = b"431";

/// Runs the four variants.
pub async fn run(ctx: &Ctx, sizes: &Sizes) -> Result<Vec<Run>> {
    let mut target = Target::start(Kind::RoomcastSocketio, Layout::nodes(2), &ctx.programs).await?;
    let owner = target.nodes[0].ws;
    let other = target.nodes[1].ws;
    // The owner's address reaches the other node through the node list.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut runs = Vec::new();
    for (variant, via, ws) in [
        ("polling direct", owner, false),
        ("polling forwarded", other, false),
        ("websocket direct", owner, true),
        ("websocket relayed", other, true),
    ] {
        let pb = ctx.bar(format!("hops {variant}"), sizes.duration.as_millis() as u64);
        let run = variant_run(variant, owner, via, ws, sizes).await;
        pb.finish_and_clear();
        target.check_alive()?;
        runs.push(run?);
    }
    for pair in [0, 2] {
        let (direct, hop) = (&runs[pair], &runs[pair + 1]);
        let mut added = Vec::new();
        for q in ["p50", "p99"] {
            if let (Some(a), Some(b)) = (direct.latency_ms.get(q), hop.latency_ms.get(q)) {
                added.push((format!("hop_{q}_added_ms"), b - a));
            }
        }
        let ratio = match (
            direct.metrics.get("roundtrips_per_s"),
            hop.metrics.get("roundtrips_per_s"),
        ) {
            (Some(a), Some(b)) if *a > 0.0 => Some(b / a),
            _ => None,
        };
        let hop = &mut runs[pair + 1];
        for (k, v) in added {
            hop.set(&k, v);
        }
        if let Some(r) = ratio {
            hop.set("vs_direct", r);
        }
    }
    target.stop().await;
    Ok(runs)
}

async fn variant_run(
    variant: &str,
    owner: SocketAddr,
    via: SocketAddr,
    ws: bool,
    sizes: &Sizes,
) -> Result<Run> {
    let mut run = Run::new("hops", Kind::RoomcastSocketio.name(), variant);
    let stop = Arc::new(AtomicBool::new(false));
    let sessions = sizes.connections.max(1);
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if ws {
                websocket_loop(owner, via, &stop).await
            } else {
                polling_loop(owner, via, &stop).await
            }
        }));
    }
    tokio::time::sleep(sizes.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = Hist::default();
    let mut roundtrips = 0u64;
    let mut errors = Vec::new();
    for t in tasks {
        match t.await.context("session task")? {
            Ok(h) => {
                roundtrips += h.total;
                hist.merge(&h);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    let secs = sizes.duration.as_secs_f64();
    run.set("sessions", sessions as f64);
    run.set("roundtrips", roundtrips as f64);
    run.set("roundtrips_per_s", roundtrips as f64 / secs);
    run.set("errors", errors.len() as f64);
    for e in errors.iter().take(3) {
        run.notes.push(format!("error: {e}"));
    }
    if roundtrips == 0 {
        bail!("hops {variant}: no round trip completed ({errors:?})");
    }
    run.set_latency(hist);
    Ok(run)
}

/// An HTTP/1.1 connection for a session's polling requests.
async fn http(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn call(
    send: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    query: &str,
    body: &'static [u8],
) -> Result<Bytes> {
    send.ready().await?;
    let req = Request::builder()
        .method(method)
        .uri(format!("/socket.io/?EIO=4&transport=polling{query}"))
        .header("host", addr.to_string())
        .body(Full::new(Bytes::from_static(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "{method} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Opens a session on `owner` (handshake and CONNECT of `/`), returns its id.
async fn open(owner: SocketAddr) -> Result<String> {
    let mut send = http(owner).await?;
    let open = call(&mut send, owner, "GET", "", b"").await?;
    let v: serde_json::Value =
        serde_json::from_slice(open.get(1..).unwrap_or_default()).context("open packet")?;
    let sid = v["sid"].as_str().context("sid")?.to_owned();
    let q = format!("&sid={sid}");
    call(&mut send, owner, "POST", &q, b"40").await?;
    let reply = call(&mut send, owner, "GET", &q, b"").await?;
    if !reply.starts_with(b"40") {
        bail!("CONNECT answered {}", String::from_utf8_lossy(&reply));
    }
    Ok(sid)
}

async fn polling_loop(owner: SocketAddr, via: SocketAddr, stop: &AtomicBool) -> Result<Hist> {
    let sid = open(owner).await?;
    let q = format!("&sid={sid}");
    let mut send = http(via).await?;
    let mut hist = Hist::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        call(&mut send, via, "POST", &q, EVENT).await?;
        loop {
            let body = call(&mut send, via, "GET", &q, b"").await?;
            // The payload may also hold a ping: answered, and read on.
            let mut acked = false;
            for packet in body.split(|b| *b == 0x1e) {
                if packet.starts_with(ACK) {
                    acked = true;
                } else if packet == b"2" {
                    call(&mut send, via, "POST", &q, b"3").await?;
                }
            }
            if acked {
                break;
            }
        }
        hist.record(t0.elapsed().as_nanos() as u64);
    }
    Ok(hist)
}

async fn websocket_loop(owner: SocketAddr, via: SocketAddr, stop: &AtomicBool) -> Result<Hist> {
    let sid = open(owner).await?;
    let mut conn = WsConn::connect(&ConnectOptions {
        addr: via,
        source_ip: None,
        path: format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
        subprotocol: None,
        read_size: 16 * 1024,
        timeout: Duration::from_secs(10),
    })
    .await?;
    conn.send_text(b"2probe").await?;
    expect(&mut conn, b"3probe").await?;
    conn.send_text(b"5").await?;
    let mut hist = Hist::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        conn.send_text(EVENT).await?;
        expect(&mut conn, ACK).await?;
        hist.record(t0.elapsed().as_nanos() as u64);
    }
    Ok(hist)
}

/// Reads until a text message starting with `prefix`, answering pings and
/// skipping noops.
async fn expect(conn: &mut WsConn, prefix: &[u8]) -> Result<()> {
    loop {
        match conn.next_message().await? {
            Message::Data(m) if m.starts_with(prefix) => return Ok(()),
            Message::Data(m) if &m[..] == b"2" => conn.send_text(b"3").await?,
            Message::Data(_) => {}
            Message::Close(code) => bail!("closed with {code}"),
        }
    }
}
