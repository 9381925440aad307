//! The HTTP side of socket.io: the handshake, long-polling requests, CORS,
//! the errors the reference server answers with, and WebSocket upgrades
//! (new sessions or the upgrade of a polling one).
//!
//! A poll is answered from the session's queue, whose entries are
//! WebSocket frames (the bytes the hub shares between clients): the
//! payloads are read back out of those frames here.

use super::engineio::{self, Eio, Record};
use super::forward;
use super::socket::{self, Input, PollReply, Role, Start};
use crate::backend::Peer;
use crate::outbound::Outbound;
use crate::server::{self, Body, ConnectionSlot};
use crate::Node;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The Engine.IO error codes of the reference server.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedVersion,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::UnknownTransport => 0,
            Refusal::UnknownSid => 1,
            Refusal::BadHandshakeMethod => 2,
            Refusal::BadRequest => 3,
            Refusal::Forbidden => 4,
            Refusal::UnsupportedVersion => 5,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::UnknownTransport => "Transport unknown",
            Refusal::UnknownSid => "Session ID unknown",
            Refusal::BadHandshakeMethod => "Bad handshake method",
            Refusal::BadRequest => "Bad request",
            Refusal::Forbidden => "Forbidden",
            Refusal::UnsupportedVersion => "Unsupported protocol version",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refusal::UnknownTransport => "socketio_unknown_transport",
            Refusal::UnknownSid => "socketio_unknown_sid",
            Refusal::BadHandshakeMethod => "socketio_bad_method",
            Refusal::BadRequest => "socketio_bad_request",
            Refusal::Forbidden => "origin",
            Refusal::UnsupportedVersion => "socketio_unsupported_version",
        }
    }
}

/// The query parameters Engine.IO uses.
#[derive(Debug, Default)]
struct Query {
    eio: Option<String>,
    transport: Option<String>,
    sid: Option<String>,
    token: Option<String>,
    /// The client cannot take binary payloads (`b64=1`, v3 only).
    b64: bool,
}

fn query(req: &Request<Incoming>) -> Query {
    let mut q = Query::default();
    for kv in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let v = server::percent_decode(v);
        match k {
            "EIO" => q.eio = Some(v),
            "transport" => q.transport = Some(v),
            "sid" => q.sid = Some(v),
            "token" => q.token = Some(v),
            "b64" => q.b64 = !v.is_empty() && v != "0" && v != "false",
            _ => {}
        }
    }
    q
}

/// Serves one request under the socket.io path (or the Engine.IO suite's).
pub async fn handle(node: Arc<Node>, req: Request<Incoming>, role: Role) -> Response<Body> {
    let origin = req
        .headers()
        .get("origin")
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let mut cors = Cors::for_origin(&node, origin.as_deref(), role);
    // socket.io-client 2.x polls with credentials whatever it is told, and
    // its servers answered so: without the header browsers refuse the poll.
    let eio3 = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "EIO=3"));
    cors.credentials |= eio3;
    if req.method() == Method::OPTIONS {
        let mut r = empty(StatusCode::NO_CONTENT);
        cors.apply(&mut r, &req);
        return r;
    }
    let mut r = serve(&node, req, role, &cors, origin.as_deref()).await;
    cors.apply_simple(&mut r);
    r
}

async fn serve(
    node: &Arc<Node>,
    req: Request<Incoming>,
    role: Role,
    cors: &Cors,
    origin: Option<&str>,
) -> Response<Body> {
    let q = query(&req);
    let Some(eio) = q.eio.as_deref().and_then(Eio::from_query) else {
        return refuse(node, Refusal::UnsupportedVersion);
    };
    let websocket = match q.transport.as_deref() {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return refuse(node, Refusal::UnknownTransport),
    };
    if !cors.allowed && origin.is_some() {
        return refuse(node, Refusal::Forbidden);
    }
    if websocket {
        return upgrade(node, req, eio, role, q).await;
    }
    if let Some(sid) = &q.sid {
        if node.socketio.get(sid).is_none() && matches!(*req.method(), Method::GET | Method::POST) {
            // Another node's session (no sticky sessions): it answers.
            return match forward::request(node, sid, req).await {
                Ok(r) => r,
                Err(_) => refuse(node, Refusal::UnknownSid),
            };
        }
    }
    match (&q.sid, req.method()) {
        (None, &Method::GET) => {
            let peer =
                Peer::from_request(node, server::remote_addr(&req), "polling", req.headers());
            open_polling(node, eio, role, q, peer).await
        }
        (None, _) => refuse(node, Refusal::BadHandshakeMethod),
        (Some(sid), &Method::GET) => poll(node, sid, Refusal::UnknownSid).await,
        (Some(sid), &Method::POST) => {
            let Some(tx) = node.socketio.get(sid) else {
                return refuse(node, Refusal::UnknownSid);
            };
            let limit = node.config.socketio.max_payload;
            let body = match Limited::new(req.into_body(), limit).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    node.metrics.reject("socketio_payload_too_large");
                    return text(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
                }
            };
            let (reply, rx) = oneshot::channel();
            if tx.send(Input::Post(body, reply)).await.is_err() {
                return refuse(node, Refusal::UnknownSid);
            }
            match rx.await {
                Ok(Ok(())) => text(StatusCode::OK, "ok"),
                Ok(Err(_)) | Err(_) => refuse(node, Refusal::BadRequest),
            }
        }
        (Some(_), _) => refuse(node, Refusal::BadHandshakeMethod),
    }
}

/// Room in the node's connection budget for a new session.
fn admit(node: &Arc<Node>) -> Result<ConnectionSlot, Box<Response<Body>>> {
    if node.is_draining() {
        node.metrics.reject("draining");
        return Err(Box::new(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "node draining; connect to another node",
        )));
    }
    server::admit(node)
}

async fn open_polling(
    node: &Arc<Node>,
    eio: Eio,
    role: Role,
    q: Query,
    peer: Peer,
) -> Response<Body> {
    let slot = match admit(node) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let grant = match grant(node, role, q.token.as_deref()) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let sid = socket::start(
        node.clone(),
        Start {
            eio,
            role,
            websocket: None,
            binary_payloads: eio == Eio::V3 && !q.b64,
            grant,
            slot,
            peer,
        },
    );
    // The open packet is already queued: this poll is answered at once.
    poll(node, &sid, Refusal::BadRequest).await
}

/// One poll of session `sid`: its payload, or 400 (`missing` when the
/// session is not there).
async fn poll(node: &Arc<Node>, sid: &str, missing: Refusal) -> Response<Body> {
    let Some(tx) = node.socketio.get(sid) else {
        return refuse(node, missing);
    };
    let (reply, rx) = oneshot::channel();
    if tx.send(Input::Poll(reply)).await.is_err() {
        return refuse(node, missing);
    }
    match rx.await {
        Ok(PollReply::Payload(body)) => payload_response(body),
        Ok(PollReply::Refused(_)) | Err(_) => refuse(node, Refusal::BadRequest),
    }
}

fn grant(
    node: &Arc<Node>,
    role: Role,
    token: Option<&str>,
) -> Result<Option<crate::auth::Grant>, Box<Response<Body>>> {
    match (&node.auth, token) {
        (Some(auth), Some(t)) if role == Role::SocketIo => match auth.verify(t) {
            Ok(g) => Ok(Some(g)),
            Err(e) => {
                node.metrics.reject("unauthorized");
                Err(Box::new(text(
                    StatusCode::FORBIDDEN,
                    &format!("unauthorized: {e}"),
                )))
            }
        },
        _ => Ok(None),
    }
}

async fn upgrade(
    node: &Arc<Node>,
    mut req: Request<Incoming>,
    eio: Eio,
    role: Role,
    q: Query,
) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return refuse(node, Refusal::BadRequest);
    }
    let existing = match &q.sid {
        Some(sid) => match node.socketio.get(sid) {
            Some(tx) => Some(tx),
            // Another node's session: relayed there.
            None => {
                return match forward::relay(node, sid, req).await {
                    Ok(r) => r,
                    Err(_) => refuse(node, Refusal::UnknownSid),
                }
            }
        },
        None => None,
    };
    let slot = if existing.is_none() {
        match admit(node) {
            Ok(s) => Some(s),
            Err(r) => return *r,
        }
    } else {
        None
    };
    let grant = match grant(node, role, q.token.as_deref()) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(_) => return refuse(node, Refusal::BadRequest),
    };
    let peer = Peer::from_request(node, server::remote_addr(&req), "websocket", req.headers())
        .with_token(q.token.clone());
    let node = node.clone();
    tokio::spawn(async move {
        let Some((stream, ahead)) = server::upgraded_stream(fut).await else {
            return;
        };
        match (existing, slot) {
            (Some(tx), _) => {
                let _ = tx.send(Input::Upgrade(stream, ahead)).await;
            }
            (None, Some(slot)) => {
                socket::start(
                    node,
                    Start {
                        eio,
                        role,
                        websocket: Some((stream, ahead)),
                        binary_payloads: false,
                        grant,
                        slot,
                        peer,
                    },
                );
            }
            (None, None) => {}
        }
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// CORS for long-polling: the configured origins (or the node's allowed
/// origins; any when both are empty).
struct Cors {
    origin: Option<String>,
    allowed: bool,
    credentials: bool,
}

impl Cors {
    fn for_origin(node: &Node, origin: Option<&str>, role: Role) -> Self {
        let cfg = &node.config.socketio;
        let list = if cfg.cors_origins.is_empty() {
            &node.config.allowed_origins
        } else {
            &cfg.cors_origins
        };
        let allowed = role != Role::SocketIo
            || list.is_empty()
            || origin.is_some_and(|o| list.iter().any(|a| a == o));
        Self {
            origin: origin.map(str::to_owned),
            allowed,
            credentials: cfg.cors_credentials,
        }
    }

    fn apply_simple(&self, r: &mut Response<Body>) {
        let (true, Some(o)) = (self.allowed, &self.origin) else {
            return;
        };
        let h = r.headers_mut();
        if let Ok(v) = HeaderValue::from_str(o) {
            h.insert("access-control-allow-origin", v);
            h.insert("vary", HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }

    fn apply(&self, r: &mut Response<Body>, req: &Request<Incoming>) {
        self.apply_simple(r);
        if !self.allowed {
            return;
        }
        let h = r.headers_mut();
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        if let Some(asked) = req.headers().get("access-control-request-headers") {
            h.insert("access-control-allow-headers", asked.clone());
        }
        h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    r
}

fn refuse(node: &Node, why: Refusal) -> Response<Body> {
    node.metrics.reject(why.label());
    let body = format!(r#"{{"code":{},"message":"{}"}}"#, why.code(), why.message());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = why.status();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn payload_response(body: Vec<u8>) -> Response<Body> {
    // A v3 binary payload starts with a 0 or 1 byte; text payloads with a
    // digit or a packet type character.
    let binary = matches!(body.first(), Some(0 | 1));
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(if binary {
            "application/octet-stream"
        } else {
            "text/plain; charset=UTF-8"
        }),
    );
    r
}

/// Reads the WebSocket frames of queued entries back into one polling
/// payload. Returns the body and the bytes of frames it consumed. With
/// `binary` (a v3 client that takes binary payloads), a payload holding
/// binary messages is written in v3's binary encoding, as the socket.io 2
/// server did; otherwise binary goes as base64 records.
pub fn payload(eio: Eio, taken: &VecDeque<Outbound>, binary: bool) -> (Vec<u8>, usize) {
    let mut records = Vec::new();
    let mut consumed = 0;
    for o in taken {
        consumed += o.frame.len();
        let mut rest = &o.frame[..];
        while let Some((opcode, payload, next)) = split_frame(rest) {
            rest = next;
            match opcode {
                0x1 => records.push(Record::Text(payload)),
                0x2 => records.push(match eio {
                    Eio::V4 => Record::Binary(payload),
                    // v3 binary frames lead with the message type.
                    Eio::V3 => Record::Binary(payload.get(1..).unwrap_or_default()),
                }),
                // Control frames (pongs to WebSocket pings) have no polling form.
                _ => {}
            }
        }
    }
    let any_binary = records.iter().any(|r| matches!(r, Record::Binary(_)));
    let out = if binary && eio == Eio::V3 && any_binary {
        engineio::encode_v3_binary_payload(&records)
    } else {
        let mut out = Vec::new();
        for (i, r) in records.into_iter().enumerate() {
            engineio::encode_record(eio, &mut out, i == 0, r);
        }
        out
    };
    (out, consumed)
}

/// One unmasked server frame: opcode, payload, and what follows it.
fn split_frame(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let opcode = b.first()? & 0x0f;
    let len7 = b.get(1)? & 0x7f;
    let (len, head): (usize, usize) = match len7 {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(b.get(2..10)?);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let end = head.checked_add(len)?;
    Some((opcode, b.get(head..end)?, &b[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::{encode, OpCode};

    #[test]
    fn frames_read_back_as_payloads() {
        let big = "x".repeat(70_000);
        let mut text = b"4".to_vec();
        text.extend_from_slice(big.as_bytes());
        let mut both = encode(OpCode::Text, b"42[\"a\"]").to_vec();
        both.extend_from_slice(&encode(OpCode::Binary, &[1, 2]));
        let q: VecDeque<Outbound> = [
            Outbound::reply(encode(OpCode::Text, b"2")),
            Outbound::reply(Bytes::from(both)),
            Outbound::reply(encode(OpCode::Text, &text)),
        ]
        .into_iter()
        .collect();
        let (body, n) = payload(Eio::V4, &q, false);
        assert_eq!(n, q.iter().map(|o| o.frame.len()).sum::<usize>());
        let expected = format!("2\x1e42[\"a\"]\x1ebAQI=\x1e4{big}");
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }
}
