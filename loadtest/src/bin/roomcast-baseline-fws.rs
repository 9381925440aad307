//! `roomcast-baseline-fws`: the smallest reasonable echo and broadcast server
//! on fastwebsockets + hyper, the library Roomcast is built on. It speaks the
//! baseline contract of `loadtest/baselines/README.md` and marks the ceiling
//! of the library on this machine: no auth, no metrics, no history, no
//! heartbeat, one `Mutex<HashMap>` of rooms.
//!
//! Broadcast: each publication is serialised once into `Bytes`, and every
//! subscriber's writer task gets a refcounted clone through a bounded queue;
//! a subscriber whose queue is full loses the message (the harness would
//! report it), as a real server would have to disconnect it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use clap::Parser;
use fastwebsockets::{upgrade, FragmentCollectorRead, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::BufWriter;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Bare fastwebsockets echo/broadcast server (load-test baseline)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Per-subscriber send queue, in messages.
    #[arg(long, default_value_t = 4096)]
    queue: usize,
}

/// What a session's writer task sends.
enum Out {
    Text(Bytes),
    Pong(Vec<u8>),
    Close,
}

type Subscribers = Vec<(u64, mpsc::Sender<Out>)>;

struct State {
    rooms: Mutex<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
    queue: usize,
}

#[derive(Deserialize)]
struct Cmd<'a> {
    op: &'a str,
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    room: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let state = Arc::new(State {
            rooms: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: args.queue,
        });
        let listener = TcpListener::bind(args.listen).await?;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => {
                    // Out of file descriptors or similar: back off briefly.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| route(req, state.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

async fn route(
    mut req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let reply = |code: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = code;
        Ok(r)
    };
    match path.as_str() {
        "/healthz" => reply(StatusCode::OK, "ok\n"),
        "/ws" | "/echo" => {
            let Ok((resp, fut)) = upgrade::upgrade(&mut req) else {
                return reply(StatusCode::BAD_REQUEST, "bad upgrade\n");
            };
            tokio::spawn(async move {
                let Ok(ws) = fut.await else { return };
                if path == "/echo" {
                    let _ = echo(ws).await;
                } else {
                    session(ws, state).await;
                }
            });
            let (parts, _) = resp.into_parts();
            Ok(Response::from_parts(parts, Full::new(Bytes::new())))
        }
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    }
}

type Ws = fastwebsockets::WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

async fn echo(ws: Ws) -> Result<(), WebSocketError> {
    let mut ws = fastwebsockets::FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn session(ws: Ws, state: Arc<State>) {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (rx, wx) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::with_capacity(64 * 1024, w))
    });
    let mut rx = FragmentCollectorRead::new(rx);
    let (tx, mut out) = mpsc::channel::<Out>(state.queue);

    // Writer: drains the queue into a buffered stream and flushes when the
    // queue is momentarily empty, so a burst costs one syscall.
    let writer = tokio::spawn(async move {
        let mut wx = wx;
        while let Some(first) = out.recv().await {
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                let r = match msg {
                    Out::Text(b) => wx.write_frame(Frame::text(Payload::Borrowed(&b))).await,
                    Out::Pong(p) => wx.write_frame(Frame::pong(Payload::Owned(p))).await,
                    Out::Close => {
                        let _ = wx.write_frame(Frame::close(1000, b"")).await;
                        return;
                    }
                };
                if r.is_err() {
                    return;
                }
                next = out.try_recv().ok();
            }
            if wx.flush().await.is_err() {
                return;
            }
        }
    });

    let mut joined: Vec<String> = Vec::new();
    loop {
        let txc = tx.clone();
        let frame = rx
            .read_frame::<_, WebSocketError>(&mut move |f: Frame<'_>| {
                let txc = txc.clone();
                let msg = if f.opcode == OpCode::Close {
                    Out::Close
                } else {
                    Out::Pong(f.payload.to_vec())
                };
                async move {
                    let _ = txc.send(msg).await;
                    Ok(())
                }
            })
            .await;
        let Ok(frame) = frame else { break };
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text => {
                if let Some(reply) = command(&frame.payload, id, &tx, &state, &mut joined) {
                    if tx.send(Out::Text(reply)).await.is_err() {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    {
        let mut rooms = state.rooms.lock().expect("rooms lock");
        for room in &joined {
            if let Some(subs) = rooms.get_mut(room) {
                subs.retain(|(sid, _)| *sid != id);
                if subs.is_empty() {
                    rooms.remove(room);
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

fn json_reply(v: serde_json::Value) -> Option<Bytes> {
    Some(Bytes::from(v.to_string()))
}

fn command(
    payload: &[u8],
    id: u64,
    tx: &mpsc::Sender<Out>,
    state: &State,
    joined: &mut Vec<String>,
) -> Option<Bytes> {
    let Ok(cmd) = serde_json::from_slice::<Cmd<'_>>(payload) else {
        return json_reply(
            serde_json::json!({"op":"error","code":"bad_request","message":"invalid JSON"}),
        );
    };
    match cmd.op {
        "subscribe" => {
            let room = cmd.room?;
            state
                .rooms
                .lock()
                .expect("rooms lock")
                .entry(room.clone())
                .or_default()
                .push((id, tx.clone()));
            joined.push(room.clone());
            json_reply(serde_json::json!({"op":"subscribed","id":cmd.id,"room":room}))
        }
        "publish" => {
            let room = cmd.room?;
            let data = cmd.data.map(RawValue::get).unwrap_or("null");
            let room_json = serde_json::to_string(&room).ok()?;
            let msg = Bytes::from(format!(
                r#"{{"op":"message","room":{room_json},"data":{data}}}"#
            ));
            // try_send never waits, so the lock is held only for the loop.
            if let Some(subs) = state.rooms.lock().expect("rooms lock").get(&room) {
                for (_, sub) in subs {
                    let _ = sub.try_send(Out::Text(msg.clone()));
                }
            }
            cmd.id
                .and_then(|i| json_reply(serde_json::json!({"op":"published","id":i,"room":room})))
        }
        "echo" => {
            let data = cmd.data.map(RawValue::get).unwrap_or("null");
            let id_part = cmd.id.map(|i| format!(r#""id":{i},"#)).unwrap_or_default();
            Some(Bytes::from(format!(
                r#"{{"op":"echo",{id_part}"data":{data}}}"#
            )))
        }
        "ping" => json_reply(serde_json::json!({"op":"pong","id":cmd.id})),
        _ => json_reply(
            serde_json::json!({"op":"error","id":cmd.id,"code":"bad_request","message":"unknown op"}),
        ),
    }
}
