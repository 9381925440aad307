//! The `roomcast.v1.json` subprotocol: one JSON object per text frame.

use super::{Command, CommandError, CommandKind, Data, ServerEvent};
use base64::Engine;
use bytes::Bytes;
use roomcast_adapter::StreamPosition;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct RawSince {
    #[serde(default)]
    epoch: String,
    #[serde(default)]
    offset: u64,
}

/// Every field any command may carry; which ones matter depends on `op`.
#[derive(Deserialize)]
struct RawCommand<'a> {
    op: Option<String>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    room: Option<String>,
    event: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    token: Option<String>,
    client: Option<String>,
    since: Option<RawSince>,
    method: Option<String>,
}

/// Reads the id of a command whose other fields failed, so the error can
/// still be matched by the client.
fn salvage_id(payload: &[u8]) -> u64 {
    #[derive(Deserialize)]
    struct OnlyId {
        id: Option<u64>,
    }
    serde_json::from_slice::<OnlyId>(payload)
        .ok()
        .and_then(|c| c.id)
        .unwrap_or(0)
}

/// Decodes one command.
pub fn decode(payload: &[u8]) -> Result<Command, CommandError> {
    let raw: RawCommand<'_> = serde_json::from_slice(payload).map_err(|e| {
        CommandError::bad_request(salvage_id(payload), format!("invalid command: {e}"))
    })?;
    let id = match raw.id {
        None => 0,
        Some(v) => match v.get().parse::<u64>() {
            Ok(n) => n,
            Err(_) if v.get() == "null" => 0,
            Err(_) => {
                return Err(CommandError::bad_request(
                    0,
                    "id must be an unsigned integer",
                ))
            }
        },
    };
    let room =
        |r: Option<String>| r.ok_or_else(|| CommandError::bad_request(id, "missing field `room`"));
    let data = |d: Option<&RawValue>| {
        let text = d.map_or("null", |v| v.get());
        if has_lone_surrogate(text) {
            return Err(CommandError::bad_request(
                id,
                "invalid `data`: a \\u escape names a lone UTF-16 surrogate",
            ));
        }
        Ok(Data {
            bytes: Bytes::copy_from_slice(text.as_bytes()),
            binary: false,
        })
    };
    let op = raw
        .op
        .ok_or_else(|| CommandError::bad_request(id, "missing field `op`"))?;
    let kind = match op.as_str() {
        "connect" => CommandKind::Connect {
            token: raw.token.unwrap_or_default(),
            client: raw.client.unwrap_or_default(),
        },
        "subscribe" => CommandKind::Subscribe {
            room: room(raw.room)?,
            since: raw.since.map(|s| StreamPosition {
                epoch: s.epoch,
                offset: s.offset,
            }),
        },
        "unsubscribe" => CommandKind::Unsubscribe {
            room: room(raw.room)?,
        },
        "publish" => CommandKind::Publish {
            room: room(raw.room)?,
            event: raw.event.unwrap_or_default(),
            data: data(raw.data)?,
        },
        "presence" => CommandKind::Presence {
            room: room(raw.room)?,
        },
        "ping" => CommandKind::Ping,
        "echo" => CommandKind::Echo {
            data: data(raw.data)?,
        },
        "rpc" => CommandKind::Rpc {
            method: raw
                .method
                .ok_or_else(|| CommandError::bad_request(id, "missing field `method`"))?,
            data: data(raw.data)?,
        },
        other => {
            return Err(CommandError::bad_request(
                id,
                format!(
                    "unknown op `{}`",
                    other.chars().take(64).collect::<String>()
                ),
            ))
        }
    };
    Ok(Command { id, kind })
}

/// Whether JSON text holds a `\u` escape of a lone UTF-16 surrogate.
///
/// `data` is kept as raw JSON and sent to subscribers as it came, never
/// decoded here, so serde does not refuse such an escape as it does in every
/// decoded string; but strict parsers (serde_json, I-JSON) refuse the whole
/// message. Without this check one publisher could send a room messages its
/// subscribers cannot read. `json` must be valid JSON: every backslash then
/// starts an escape inside a string.
fn has_lone_surrogate(json: &str) -> bool {
    let b = json.as_bytes();
    let unit = |at: usize| {
        json.get(at..at + 4)
            .and_then(|h| u16::from_str_radix(h, 16).ok())
    };
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'\\') {
        i += off;
        if b.get(i + 1) != Some(&b'u') {
            i += 2;
            continue;
        }
        let Some(u) = unit(i + 2) else { return true };
        i += 6;
        match u {
            0xD800..=0xDBFF => {
                let low = b.get(i) == Some(&b'\\') && b.get(i + 1) == Some(&b'u');
                if !(low && matches!(unit(i + 2), Some(0xDC00..=0xDFFF))) {
                    return true;
                }
                i += 6;
            }
            0xDC00..=0xDFFF => return true,
            _ => {}
        }
    }
    false
}

/// Writes JSON-escaped `s` with quotes.
fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn data(out: &mut Vec<u8>, d: &[u8], binary: bool) {
    if binary {
        out.extend_from_slice(b"\"data\":\"");
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(d)
                .as_bytes(),
        );
        out.extend_from_slice(b"\",\"binary\":true");
    } else {
        out.extend_from_slice(b"\"data\":");
        out.extend_from_slice(d);
    }
}

fn op(out: &mut Vec<u8>, id: u64, name: &str) {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(name.as_bytes());
    out.push(b'"');
    if id != 0 {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    }
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    string(out, value);
}

fn field_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Encodes one event as a JSON object.
pub fn encode(id: u64, event: &ServerEvent<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match event {
        ServerEvent::Connected {
            client_id,
            node,
            ping_interval_ms,
        } => {
            op(&mut out, id, "connected");
            field_str(&mut out, "client_id", client_id);
            field_str(&mut out, "node", node);
            field_u64(&mut out, "ping_interval_ms", *ping_interval_ms);
        }
        ServerEvent::Subscribed {
            room,
            position,
            recovered,
        } => {
            op(&mut out, id, "subscribed");
            field_str(&mut out, "room", room);
            field_str(&mut out, "epoch", &position.epoch);
            field_u64(&mut out, "offset", position.offset);
            out.extend_from_slice(if *recovered {
                b",\"recovered\":true"
            } else {
                b",\"recovered\":false"
            });
        }
        ServerEvent::Unsubscribed { room } => {
            op(&mut out, id, "unsubscribed");
            field_str(&mut out, "room", room);
        }
        ServerEvent::Published { room, offset } => {
            op(&mut out, id, "published");
            field_str(&mut out, "room", room);
            field_u64(&mut out, "offset", *offset);
        }
        ServerEvent::Presence { room, clients } => {
            op(&mut out, id, "presence");
            field_str(&mut out, "room", room);
            out.extend_from_slice(b",\"clients\":[");
            for (i, c) in clients.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"client_id\":");
                string(&mut out, &c.client_id);
                out.extend_from_slice(b",\"user\":");
                string(&mut out, &c.user);
                if !c.info.is_empty() {
                    // Checked to be JSON when the backend gave it.
                    out.extend_from_slice(b",\"info\":");
                    out.extend_from_slice(c.info.as_bytes());
                }
                out.push(b'}');
            }
            out.push(b']');
        }
        ServerEvent::Pong => op(&mut out, id, "pong"),
        ServerEvent::Echo { data: d } => {
            op(&mut out, id, "echo");
            out.push(b',');
            data(&mut out, &d.bytes, d.binary);
        }
        ServerEvent::Rpc { data: d } => {
            op(&mut out, id, "rpc");
            out.push(b',');
            data(&mut out, &d.bytes, d.binary);
        }
        ServerEvent::Message {
            room, publication, ..
        } => {
            op(&mut out, id, "message");
            field_str(&mut out, "room", room);
            if !publication.event.is_empty() {
                field_str(&mut out, "event", &publication.event);
            }
            out.push(b',');
            data(&mut out, &publication.data, publication.binary);
            if publication.offset != 0 {
                field_u64(&mut out, "offset", publication.offset);
            }
        }
        ServerEvent::Join { room, client } | ServerEvent::Leave { room, client } => {
            let name = if matches!(event, ServerEvent::Join { .. }) {
                "join"
            } else {
                "leave"
            };
            op(&mut out, id, name);
            field_str(&mut out, "room", room);
            field_str(&mut out, "client_id", &client.client_id);
            field_str(&mut out, "user", &client.user);
        }
        ServerEvent::Error { code, message } => {
            op(&mut out, id, "error");
            field_str(&mut out, "code", code.as_str());
            field_str(&mut out, "message", message);
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;
    use roomcast_adapter::Publication;

    #[test]
    fn decodes_every_command() {
        let c = decode(
            br#"{"op":"subscribe","id":7,"room":"chat.a","since":{"epoch":"e","offset":3}}"#,
        )
        .unwrap();
        assert_eq!(c.id, 7);
        assert_eq!(
            c.kind,
            CommandKind::Subscribe {
                room: "chat.a".into(),
                since: Some(StreamPosition {
                    epoch: "e".into(),
                    offset: 3
                })
            }
        );
        let p = decode(br#"{"op":"publish","room":"r","data":{"a":[1, 2]}}"#).unwrap();
        assert_eq!(
            p.kind,
            CommandKind::Publish {
                room: "r".into(),
                event: String::new(),
                data: Data {
                    bytes: Bytes::from_static(br#"{"a":[1, 2]}"#),
                    binary: false
                }
            }
        );
        assert_eq!(decode(br#"{"op":"ping"}"#).unwrap().kind, CommandKind::Ping);
        let r = decode(br#"{"op":"rpc","id":2,"method":"chat.history","data":{"n":5}}"#).unwrap();
        assert_eq!(
            r.kind,
            CommandKind::Rpc {
                method: "chat.history".into(),
                data: Data {
                    bytes: Bytes::from_static(br#"{"n":5}"#),
                    binary: false
                }
            }
        );
        let e = decode(br#"{"op":"rpc","id":3}"#).unwrap_err();
        assert_eq!(e.id, 3);
        assert!(e.message.contains("method"));
    }

    #[test]
    fn bad_commands_keep_their_id() {
        let e = decode(br#"{"op":"nope","id":3}"#).unwrap_err();
        assert_eq!((e.id, e.code), (3, ErrorCode::BadRequest));
        let e = decode(br#"{"op":"subscribe","id":4}"#).unwrap_err();
        assert_eq!(e.id, 4);
        assert!(e.message.contains("room"));
        let e = decode(br#"{"op":"ping","id":-1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(decode(b"not json").is_err());
    }

    #[test]
    fn data_with_a_lone_surrogate_escape_is_refused() {
        for bad in [
            r#"{"op":"publish","id":2,"room":"r","data":"a\udd1e"}"#,
            r#"{"op":"echo","id":2,"data":["\ud834"]}"#,
            r#"{"op":"echo","id":2,"data":"\ud834\u0041"}"#,
            r#"{"op":"echo","id":2,"data":{"k":"\\\udc00"}}"#,
        ] {
            let e = decode(bad.as_bytes()).unwrap_err();
            assert_eq!((e.id, e.code), (2, ErrorCode::BadRequest), "{bad}");
        }
        for good in [
            r#"{"op":"echo","data":"\ud834\udd1e \u00e9 \\udc00 \\\\u0041"}"#,
            r#"{"op":"echo","data":{"\udbff\udfff":[1,"\n\u0000"]}}"#,
        ] {
            assert!(decode(good.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn encodes_messages_with_raw_and_binary_data() {
        let publication = Publication {
            offset: 5,
            event: "quote".into(),
            data: Bytes::from_static(br#"{"p":1}"#),
            binary: false,
            time_unix_micros: 0,
        };
        let out = encode(
            0,
            &ServerEvent::Message {
                room: "q.A",
                epoch: "e",
                publication: &publication,
            },
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"op":"message","room":"q.A","event":"quote","data":{"p":1},"offset":5}"#
        );
        let bin = Publication {
            offset: 0,
            event: String::new(),
            data: Bytes::from_static(b"\x00\x01"),
            binary: true,
            time_unix_micros: 0,
        };
        let out = encode(
            0,
            &ServerEvent::Message {
                room: "r",
                epoch: "e",
                publication: &bin,
            },
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"op":"message","room":"r","data":"AAE=","binary":true}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&encode(
            9,
            &ServerEvent::Error {
                code: ErrorCode::Forbidden,
                message: "no \"way\"",
            },
        ))
        .unwrap();
        assert_eq!(v["id"], 9);
        assert_eq!(v["message"], "no \"way\"");
    }
}
