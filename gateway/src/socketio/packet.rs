//! Socket.IO packets (protocol v5, and v4 for socket.io-client 2.x), carried
//! in Engine.IO messages. Decoding and encoding only: no I/O, fuzzed.
//!
//! `<type>[<attachments>-][<namespace>,][<ack id>][<JSON>]`, e.g.
//! `2["chat",{"text":"hi"}]`, `21["subscribe","room"]`, `3/admin,7[{}]`,
//! `51-["up",{"_placeholder":true,"num":0}]` followed by one binary message.

use bytes::Bytes;
use serde_json::Value;

/// The protocol revision: what the client's Engine.IO revision implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sio {
    /// Socket.IO v4 (socket.io-client 2.x, Engine.IO v3): the server
    /// connects `/` by itself, CONNECT carries no payload, errors are strings.
    V4,
    /// Socket.IO v5 (socket.io-client 3.x and 4.x).
    V5,
}

/// Packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `0`: connect to a namespace (with an auth payload in v5).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: an acknowledgement.
    Ack,
    /// `4`: a refused connect.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an acknowledgement with binary attachments.
    BinaryAck,
}

impl Kind {
    fn from_digit(d: u8) -> Option<Kind> {
        Some(match d {
            b'0' => Kind::Connect,
            b'1' => Kind::Disconnect,
            b'2' => Kind::Event,
            b'3' => Kind::Ack,
            b'4' => Kind::ConnectError,
            b'5' => Kind::BinaryEvent,
            b'6' => Kind::BinaryAck,
            _ => return None,
        })
    }

    fn digit(self) -> u8 {
        match self {
            Kind::Connect => b'0',
            Kind::Disconnect => b'1',
            Kind::Event => b'2',
            Kind::Ack => b'3',
            Kind::ConnectError => b'4',
            Kind::BinaryEvent => b'5',
            Kind::BinaryAck => b'6',
        }
    }
}

/// A decoded packet. Binary packets still hold their placeholders until
/// every attachment arrived ([`Packet::attach`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The type.
    pub kind: Kind,
    /// The namespace, `/` when absent.
    pub nsp: String,
    /// Query string after the namespace (v4 CONNECT: `/admin?token=…`).
    pub query: Option<String>,
    /// Acknowledgement id.
    pub id: Option<u64>,
    /// The JSON data, when present.
    pub data: Option<Value>,
    /// Binary attachments announced by a binary packet.
    pub attachments: usize,
}

/// A packet that is not Socket.IO: the session is closed, as the reference
/// server does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Socket.IO packet: {0}")]
pub struct DecodeError(pub &'static str);

/// Most attachments one packet may announce.
const MAX_ATTACHMENTS: usize = 64;

impl Packet {
    /// Decodes the text of an Engine.IO message.
    pub fn decode(text: &str) -> Result<Packet, DecodeError> {
        let b = text.as_bytes();
        let kind = b
            .first()
            .and_then(|&d| Kind::from_digit(d))
            .ok_or(DecodeError("unknown packet type"))?;
        let mut i = 1;
        let mut attachments = 0;
        if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || b.get(i) != Some(&b'-') {
                return Err(DecodeError("attachment count"));
            }
            attachments = text[start..i]
                .parse()
                .ok()
                .filter(|&n| n <= MAX_ATTACHMENTS)
                .ok_or(DecodeError("attachment count"))?;
            i += 1;
        }
        let mut nsp = "/".to_owned();
        let mut query = None;
        if b.get(i) == Some(&b'/') {
            let end = text[i..].find(',').map_or(b.len(), |e| i + e);
            let full = &text[i..end];
            match full.split_once('?') {
                Some((n, q)) => {
                    nsp = n.to_owned();
                    query = Some(q.to_owned());
                }
                None => nsp = full.to_owned(),
            }
            i = (end + 1).min(b.len());
        }
        let mut id = None;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i > start {
            id = Some(
                text[start..i]
                    .parse()
                    .map_err(|_| DecodeError("acknowledgement id"))?,
            );
        }
        let rest = &text[i..];
        let data = if rest.is_empty() {
            None
        } else {
            Some(serde_json::from_str::<Value>(rest).map_err(|_| DecodeError("JSON data"))?)
        };
        let valid = match kind {
            Kind::Connect => data.as_ref().is_none_or(Value::is_object),
            Kind::Disconnect => data.is_none(),
            Kind::Event | Kind::BinaryEvent => match &data {
                Some(Value::Array(a)) => a.first().is_some_and(Value::is_string),
                _ => false,
            },
            Kind::Ack | Kind::BinaryAck => id.is_some() && matches!(data, Some(Value::Array(_))),
            Kind::ConnectError => false, // only servers send it
        };
        if !valid {
            return Err(DecodeError("data for this packet type"));
        }
        Ok(Packet {
            kind,
            nsp,
            query,
            id,
            data,
            attachments,
        })
    }

    /// Joins a packet with its attachments. `Err` when a placeholder names
    /// an attachment that did not come.
    pub fn attach(self, attachments: Vec<Bytes>) -> Result<Event, DecodeError> {
        let Some(Value::Array(args)) = self.data else {
            return Err(DecodeError("binary packet without an array"));
        };
        fn check(v: &Value, n: usize) -> bool {
            match v {
                Value::Array(a) => a.iter().all(|v| check(v, n)),
                Value::Object(o) => match placeholder(v) {
                    Some(i) => i < n,
                    None => o.values().all(|v| check(v, n)),
                },
                _ => true,
            }
        }
        if !args.iter().all(|v| check(v, attachments.len())) {
            return Err(DecodeError("placeholder without attachment"));
        }
        Ok(Event {
            nsp: self.nsp,
            id: self.id,
            args,
            attachments,
        })
    }

    /// An event or ack without attachments as [`Event`].
    pub fn into_event(self) -> Event {
        let args = match self.data {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Event {
            nsp: self.nsp,
            id: self.id,
            args,
            attachments: Vec::new(),
        }
    }
}

/// An event or acknowledgement with its attachments.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Namespace.
    pub nsp: String,
    /// Ack id.
    pub id: Option<u64>,
    /// Arguments; for an event the first is its name. Binary values are
    /// still placeholders: see [`Event::binary`].
    pub args: Vec<Value>,
    /// The binary attachments.
    pub attachments: Vec<Bytes>,
}

impl Event {
    /// The event name (the first argument).
    pub fn name(&self) -> Option<&str> {
        self.args.first().and_then(Value::as_str)
    }

    /// The attachment a value stands for, when it is a placeholder.
    pub fn binary(&self, v: &Value) -> Option<&Bytes> {
        placeholder(v).and_then(|n| self.attachments.get(n))
    }

    /// Arguments from `skip` on, ready to send back: JSON as JSON text,
    /// top-level binary values as binary.
    pub fn echo_args(&self, skip: usize) -> Vec<(Option<String>, Option<Bytes>)> {
        self.args
            .iter()
            .skip(skip)
            .map(|v| match self.binary(v) {
                Some(b) => (None, Some(b.clone())),
                None => (Some(v.to_string()), None),
            })
            .collect()
    }
}

fn placeholder(v: &Value) -> Option<usize> {
    let o = v.as_object()?;
    if o.get("_placeholder") != Some(&Value::Bool(true)) {
        return None;
    }
    o.get("num")?.as_u64().map(|n| n as usize)
}

fn prefix(out: &mut Vec<u8>, kind: Kind, attachments: usize, nsp: &str, id: Option<u64>) {
    out.push(kind.digit());
    if attachments > 0 {
        out.extend_from_slice(attachments.to_string().as_bytes());
        out.push(b'-');
    }
    if nsp != "/" {
        out.extend_from_slice(nsp.as_bytes());
        out.push(b',');
    }
    if let Some(id) = id {
        out.extend_from_slice(id.to_string().as_bytes());
    }
}

/// An encoded packet: the text message, then its binary attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The packet's text.
    pub text: Bytes,
    /// Binary messages that follow it.
    pub attachments: Vec<Bytes>,
}

/// Encodes an event or ack whose arguments are JSON texts (`args`, already
/// valid JSON, copied as they are) or binary values.
pub fn encode(kind: Kind, nsp: &str, id: Option<u64>, args: &[EncArg<'_>]) -> Encoded {
    let attachments: Vec<Bytes> = args
        .iter()
        .filter_map(|a| match a {
            EncArg::Binary(b) => Some(b.clone()),
            EncArg::Json(_) => None,
        })
        .collect();
    let kind = match (kind, attachments.is_empty()) {
        (Kind::Event, false) => Kind::BinaryEvent,
        (Kind::Ack, false) => Kind::BinaryAck,
        (k, _) => k,
    };
    let json_len: usize = args
        .iter()
        .map(|a| match a {
            EncArg::Json(j) => j.len() + 1,
            EncArg::Binary(_) => 32,
        })
        .sum();
    let mut out = Vec::with_capacity(json_len + nsp.len() + 16);
    prefix(&mut out, kind, attachments.len(), nsp, id);
    out.push(b'[');
    let mut num = 0;
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match a {
            EncArg::Json(j) => out.extend_from_slice(j),
            EncArg::Binary(_) => {
                out.extend_from_slice(format!(r#"{{"_placeholder":true,"num":{num}}}"#).as_bytes());
                num += 1;
            }
        }
    }
    out.push(b']');
    Encoded {
        text: Bytes::from(out),
        attachments,
    }
}

/// One argument to [`encode`].
#[derive(Debug, Clone)]
pub enum EncArg<'a> {
    /// Valid JSON text.
    Json(&'a [u8]),
    /// A binary value.
    Binary(Bytes),
}

/// The reply to a CONNECT: v5 carries the socket id (and the private id
/// recovery uses); v4 carries nothing.
pub fn connect_ok(sio: Sio, nsp: &str, sid: &str, pid: Option<&str>) -> Bytes {
    let mut out = Vec::new();
    prefix(&mut out, Kind::Connect, 0, nsp, None);
    if sio == Sio::V5 {
        let mut o = serde_json::Map::new();
        o.insert("sid".into(), sid.into());
        if let Some(pid) = pid {
            o.insert("pid".into(), pid.into());
        }
        out.extend_from_slice(Value::Object(o).to_string().as_bytes());
    }
    Bytes::from(out)
}

/// A refused CONNECT (or a server-side error in v4).
pub fn connect_error(sio: Sio, nsp: &str, message: &str) -> Bytes {
    let mut out = Vec::new();
    prefix(&mut out, Kind::ConnectError, 0, nsp, None);
    let data = match sio {
        Sio::V5 => serde_json::json!({ "message": message }),
        Sio::V4 => Value::String(message.to_owned()),
    };
    out.extend_from_slice(data.to_string().as_bytes());
    Bytes::from(out)
}

/// A DISCONNECT from the server.
pub fn disconnect(nsp: &str) -> Bytes {
    let mut out = Vec::new();
    prefix(&mut out, Kind::Disconnect, 0, nsp, None);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_protocol_examples() {
        let p = Packet::decode("0").unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.data), (Kind::Connect, "/", None));
        let p = Packet::decode(r#"0/admin,{"token":"123"}"#).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, Some(json!({"token": "123"})));
        let p = Packet::decode("0/custom").unwrap();
        assert_eq!(p.nsp, "/custom");
        let p = Packet::decode("0/admin?token=abc").unwrap();
        assert_eq!(
            (p.nsp.as_str(), p.query.as_deref()),
            ("/admin", Some("token=abc"))
        );
        let p = Packet::decode(r#"2456["message-with-ack",1,"2"]"#).unwrap();
        assert_eq!((p.kind, p.id), (Kind::Event, Some(456)));
        let p = Packet::decode(r#"3/admin,7[{"ok":true}]"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (Kind::Ack, "/admin", Some(7))
        );
        let p = Packet::decode(
            r#"52-789["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (Kind::BinaryEvent, 2, Some(789))
        );
        let e = p
            .attach(vec![Bytes::from_static(&[1]), Bytes::from_static(&[2])])
            .unwrap();
        assert_eq!(e.name(), Some("m"));
        assert_eq!(e.binary(&e.args[2]), Some(&Bytes::from_static(&[2])));
    }

    #[test]
    fn arguments_sent_back_are_the_values_that_came() {
        // Found by fuzzing: a number past u64 is a float, which must read
        // back as the same float after the node writes it out again.
        for text in [
            r#"2["m",17707777777777777777777]"#,
            r#"2["m",0.1,-2.5e-308,1e308,{"a":[1.7976931348623157e308]}]"#,
        ] {
            let e = Packet::decode(text).unwrap().into_event();
            let args: Vec<String> = e.args.iter().map(Value::to_string).collect();
            let enc: Vec<EncArg<'_>> = args.iter().map(|a| EncArg::Json(a.as_bytes())).collect();
            let again = encode(Kind::Event, "/", None, &enc);
            let back = Packet::decode(std::str::from_utf8(&again.text).unwrap()).unwrap();
            assert_eq!(back.into_event().args, e.args, "{text}");
        }
    }

    #[test]
    fn refuses_what_the_reference_server_refuses() {
        for bad in [
            "",
            "abc",
            "7",
            "2{}",
            "2[]",
            "2[1]",
            r#"2abc["m"]"#,
            "1{}",
            r#"0"str""#,
            "3[]",
            r#"5["m"]"#,
            r#"5x-["m"]"#,
            r#"4{"message":"x"}"#,
            r#"2["m""#,
        ] {
            assert!(Packet::decode(bad).is_err(), "{bad:?} should be refused");
        }
        let p = Packet::decode(r#"51-["m",{"_placeholder":true,"num":3}]"#).unwrap();
        assert!(p.attach(vec![Bytes::new()]).is_err());
    }

    #[test]
    fn encodes_events_acks_and_connects() {
        let e = encode(
            Kind::Event,
            "/",
            None,
            &[EncArg::Json(br#""news""#), EncArg::Json(br#"{"a":1}"#)],
        );
        assert_eq!(&e.text[..], br#"2["news",{"a":1}]"#);
        let e = encode(
            Kind::Ack,
            "/admin",
            Some(12),
            &[EncArg::Binary(Bytes::from_static(&[1, 2]))],
        );
        assert_eq!(
            &e.text[..],
            br#"61-/admin,12[{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(e.attachments, vec![Bytes::from_static(&[1, 2])]);
        assert_eq!(
            &connect_ok(Sio::V5, "/", "abc", None)[..],
            br#"0{"sid":"abc"}"#
        );
        assert_eq!(&connect_ok(Sio::V4, "/chat", "abc", None)[..], b"0/chat,");
        assert_eq!(
            &connect_error(Sio::V5, "/random", "Invalid namespace")[..],
            br#"4/random,{"message":"Invalid namespace"}"#
        );
        assert_eq!(&connect_error(Sio::V4, "/", "no")[..], br#"4"no""#);
        assert_eq!(&disconnect("/x")[..], b"1/x,");
    }
}
