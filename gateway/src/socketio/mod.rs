//! The socket.io front-end: Engine.IO v3/v4 over WebSocket and long-polling,
//! with the Socket.IO protocol (v4/v5) on top.

pub mod emitter;
pub mod engineio;
pub mod forward;
pub mod packet;

pub mod polling;
pub mod recovery;
pub mod socket;

use crate::protocol::{ErrorCode, ServerEvent};
use crate::ws::frame::{self, OpCode};
use bytes::{BufMut, Bytes, BytesMut};
use engineio::Eio;
use packet::{EncArg, Kind};
use serde_json::json;

pub use socket::Registry;

/// How a socket.io client's frames are spelled: what the hub encodes once
/// per publication for all clients that share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dialect {
    /// Engine.IO v3 / Socket.IO v4 (socket.io-client 2.x) rather than
    /// Engine.IO v4 / Socket.IO v5.
    pub v3: bool,
    /// Index of the client's namespace in the configured list (0 is `/`).
    pub nsp: u16,
    /// Publications carry their room's position as a last argument, the
    /// offset socket.io 4.6+ clients hand back to recover.
    pub offsets: bool,
}

impl Dialect {
    /// The first namespace: the hub keeps these in fixed slots.
    pub fn is_common(self) -> bool {
        self.nsp == 0
    }

    /// The hub's slot for a common dialect.
    pub fn slot(self) -> usize {
        match (self.v3, self.offsets) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 2,
        }
    }

    /// The Engine.IO revision.
    pub fn eio(self) -> Eio {
        if self.v3 {
            Eio::V3
        } else {
            Eio::V4
        }
    }
}

/// Appends one Engine.IO message (a Socket.IO packet's text, or one of its
/// attachments) as a WebSocket frame. Long-polling reads the same frames
/// back out ([`polling`]), so the hub's shared bytes serve both transports.
fn push_message(out: &mut BytesMut, eio: Eio, text: Option<&[u8]>, binary: Option<&[u8]>) {
    if let Some(t) = text {
        let mut payload = Vec::with_capacity(t.len() + 1);
        payload.push(b'4');
        payload.extend_from_slice(t);
        out.put_slice(&frame::encode(OpCode::Text, &payload));
    }
    if let Some(b) = binary {
        let f = match eio {
            Eio::V4 => frame::encode(OpCode::Binary, b),
            Eio::V3 => {
                let mut p = Vec::with_capacity(b.len() + 1);
                p.push(4);
                p.extend_from_slice(b);
                frame::encode(OpCode::Binary, &p)
            }
        };
        out.put_slice(&f);
    }
}

/// Frames of one Socket.IO packet and its attachments.
pub fn frames(eio: Eio, p: &packet::Encoded) -> Bytes {
    let mut out = BytesMut::with_capacity(p.text.len() + 16);
    push_message(&mut out, eio, Some(&p.text), None);
    for a in &p.attachments {
        push_message(&mut out, eio, None, Some(a));
    }
    out.freeze()
}

/// A plain Engine.IO packet (ping, pong, noop, close) as a frame.
pub fn engine_frame(p: &engineio::Packet, eio: Eio) -> Bytes {
    let op = if p.is_binary() {
        OpCode::Binary
    } else {
        OpCode::Text
    };
    frame::encode(op, &p.ws_payload(eio))
}

/// Encodes what the hub and the client's commands send into socket.io
/// frames. Replies go out as acknowledgements of `id - 1` (socket.io ack
/// ids start at 0; 0 here means nothing asked for one); a reply nobody
/// asked for becomes an event named like the roomcast.v1 op when it tells
/// the client something (`subscribed`, `unsubscribed`, `error`), else nothing.
pub fn encode_event(d: Dialect, nsp: &str, id: u64, event: &ServerEvent<'_>) -> Bytes {
    let ack = id.checked_sub(1);
    let reply = |value: serde_json::Value, op: &str| -> Bytes {
        let text = value.to_string();
        let p = match ack {
            Some(a) => packet::encode(Kind::Ack, nsp, Some(a), &[EncArg::Json(text.as_bytes())]),
            None if ["subscribed", "unsubscribed", "error"].contains(&op) => {
                let name = json!(op).to_string();
                packet::encode(
                    Kind::Event,
                    nsp,
                    None,
                    &[EncArg::Json(name.as_bytes()), EncArg::Json(text.as_bytes())],
                )
            }
            None => return Bytes::new(),
        };
        frames(d.eio(), &p)
    };
    match event {
        ServerEvent::Message {
            room,
            epoch,
            publication,
        } => {
            let name = if publication.event.is_empty() {
                "\"message\"".to_owned()
            } else {
                json!(publication.event).to_string()
            };
            let data = if publication.binary {
                EncArg::Binary(publication.data.clone())
            } else {
                EncArg::Json(&publication.data)
            };
            let position;
            let mut args = vec![EncArg::Json(name.as_bytes()), data];
            if d.offsets && publication.offset > 0 {
                position =
                    json!(recovery::offset_string(room, epoch, publication.offset)).to_string();
                args.push(EncArg::Json(position.as_bytes()));
            }
            let p = packet::encode(Kind::Event, nsp, None, &args);
            frames(d.eio(), &p)
        }
        ServerEvent::Join { room, client } | ServerEvent::Leave { room, client } => {
            let name = if matches!(event, ServerEvent::Join { .. }) {
                "\"join\""
            } else {
                "\"leave\""
            };
            let body = json!({"room": room, "client_id": client.client_id, "user": client.user})
                .to_string();
            let p = packet::encode(
                Kind::Event,
                nsp,
                None,
                &[EncArg::Json(name.as_bytes()), EncArg::Json(body.as_bytes())],
            );
            frames(d.eio(), &p)
        }
        ServerEvent::Connected { .. } => Bytes::new(),
        ServerEvent::Subscribed {
            room,
            position,
            recovered,
        } => reply(
            json!({"room": room, "epoch": position.epoch, "offset": position.offset, "recovered": recovered}),
            "subscribed",
        ),
        ServerEvent::Unsubscribed { room } => reply(json!({ "room": room }), "unsubscribed"),
        ServerEvent::Published { room, offset } => {
            reply(json!({"room": room, "offset": offset}), "published")
        }
        ServerEvent::Presence { room, clients } => {
            let clients: Vec<_> = clients
                .iter()
                .map(|c| {
                    let mut v = json!({"client_id": c.client_id, "user": c.user});
                    if let Ok(info) = serde_json::from_str::<serde_json::Value>(&c.info) {
                        v["info"] = info;
                    }
                    v
                })
                .collect();
            reply(json!({"room": room, "clients": clients}), "presence")
        }
        ServerEvent::Pong => reply(json!({}), "pong"),
        ServerEvent::Echo { data } | ServerEvent::Rpc { data } => {
            if data.binary {
                let Some(a) = ack else {
                    return Bytes::new();
                };
                let p = packet::encode(
                    Kind::Ack,
                    nsp,
                    Some(a),
                    &[EncArg::Binary(data.bytes.clone())],
                );
                frames(d.eio(), &p)
            } else {
                let v: serde_json::Value =
                    serde_json::from_slice(&data.bytes).unwrap_or(serde_json::Value::Null);
                reply(v, "echo")
            }
        }
        ServerEvent::Error { code, message } => reply(error_value(*code, message), "error"),
    }
}

/// `{"error":{"code":…,"message":…}}`, how socket.io acks carry errors.
pub fn error_value(code: ErrorCode, message: &str) -> serde_json::Value {
    json!({"error": {"code": code.as_str(), "message": message}})
}
