//! Engine.IO packets and polling payloads, v3 and v4. Decoding and encoding
//! only: no I/O, no clock, fuzzed like the other codecs.
//!
//! A packet is a type digit and data. Over WebSocket each packet is one
//! frame (text, or binary for a binary message: raw in v4, behind a `4`
//! type byte in v3). Over long-polling a payload carries several packets:
//! v4 separates them with `\x1e` and writes binary as `b` + base64; v3
//! prefixes each with its length in UTF-16 units and a colon (`5:4hello`),
//! and may send binary payloads (`\x00`/`\x01`, length digits, `\xff`).

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// The protocol revision a client speaks (the `EIO` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eio {
    /// Engine.IO v3: socket.io-client 2.x. The client pings, the server answers.
    V3,
    /// Engine.IO v4: socket.io-client 3.x and 4.x. The server pings.
    V4,
}

impl Eio {
    /// From the `EIO` query parameter.
    pub fn from_query(v: &str) -> Option<Self> {
        match v {
            "3" => Some(Self::V3),
            "4" => Some(Self::V4),
            _ => None,
        }
    }
}

/// One Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: the handshake (server to client), JSON.
    Open(Bytes),
    /// `1`: close the session.
    Close,
    /// `2`: ping, with optional data (`probe` during an upgrade).
    Ping(Bytes),
    /// `3`: pong, echoing the ping's data.
    Pong(Bytes),
    /// `4`: a text message (UTF-8).
    Message(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// `5`: the upgrade is complete.
    Upgrade,
    /// `6`: nothing (ends a pending poll during an upgrade).
    Noop,
}

/// A packet or payload that is not Engine.IO.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Engine.IO {0}")]
pub struct DecodeError(pub &'static str);

impl Packet {
    /// Decodes a text packet (a WebSocket text frame, or one record of a
    /// polling payload without the `b` prefix).
    pub fn decode_text(p: Bytes) -> Result<Packet, DecodeError> {
        let Some(&t) = p.first() else {
            return Err(DecodeError("empty packet"));
        };
        // Text packets are strings, whatever carried them.
        if std::str::from_utf8(&p).is_err() {
            return Err(DecodeError("text packet: not UTF-8"));
        }
        let data = p.slice(1..);
        Ok(match t {
            b'0' => Packet::Open(data),
            b'1' => Packet::Close,
            b'2' => Packet::Ping(data),
            b'3' => Packet::Pong(data),
            b'4' => Packet::Message(data),
            b'5' => Packet::Upgrade,
            b'6' => Packet::Noop,
            _ => return Err(DecodeError("packet type")),
        })
    }

    /// Decodes a WebSocket binary frame.
    pub fn decode_binary(eio: Eio, p: Bytes) -> Result<Packet, DecodeError> {
        match eio {
            Eio::V4 => Ok(Packet::Binary(p)),
            Eio::V3 => match p.first() {
                Some(4) => Ok(Packet::Binary(p.slice(1..))),
                _ => Err(DecodeError("binary packet type")),
            },
        }
    }

    fn type_digit(&self) -> u8 {
        match self {
            Packet::Open(_) => b'0',
            Packet::Close => b'1',
            Packet::Ping(_) => b'2',
            Packet::Pong(_) => b'3',
            Packet::Message(_) | Packet::Binary(_) => b'4',
            Packet::Upgrade => b'5',
            Packet::Noop => b'6',
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Packet::Open(d) | Packet::Ping(d) | Packet::Pong(d) | Packet::Message(d) => d,
            Packet::Binary(d) => d,
            Packet::Close | Packet::Upgrade | Packet::Noop => b"",
        }
    }

    /// Whether this packet goes in a binary WebSocket frame.
    pub fn is_binary(&self) -> bool {
        matches!(self, Packet::Binary(_))
    }

    /// The payload of this packet's WebSocket frame.
    pub fn ws_payload(&self, eio: Eio) -> Bytes {
        match (self, eio) {
            (Packet::Binary(d), Eio::V4) => d.clone(),
            (Packet::Binary(d), Eio::V3) => {
                let mut b = BytesMut::with_capacity(d.len() + 1);
                b.put_u8(4);
                b.put_slice(d);
                b.freeze()
            }
            _ => {
                let d = self.data();
                let mut b = BytesMut::with_capacity(d.len() + 1);
                b.put_u8(self.type_digit());
                b.put_slice(d);
                b.freeze()
            }
        }
    }
}

/// Text packets written into a polling response: `text` is the packet as a
/// WebSocket text frame would carry it (`4hello`), `binary` a binary message.
#[derive(Debug, Clone)]
pub enum Record<'a> {
    /// A text packet, type digit first.
    Text(&'a [u8]),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Appends one record to a polling response body.
pub fn encode_record(eio: Eio, out: &mut Vec<u8>, first: bool, r: Record<'_>) {
    match eio {
        Eio::V4 => {
            if !first {
                out.push(0x1e);
            }
            match r {
                Record::Text(t) => out.extend_from_slice(t),
                Record::Binary(b) => {
                    out.push(b'b');
                    let encoded = base64::engine::general_purpose::STANDARD.encode(b);
                    out.extend_from_slice(encoded.as_bytes());
                }
            }
        }
        Eio::V3 => match r {
            Record::Text(t) => {
                let text = String::from_utf8_lossy(t);
                let units: usize = text.chars().map(char::len_utf16).sum();
                out.extend_from_slice(units.to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(t);
            }
            Record::Binary(b) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(b);
                out.extend_from_slice((encoded.len() + 2).to_string().as_bytes());
                out.extend_from_slice(b":b4");
                out.extend_from_slice(encoded.as_bytes());
            }
        },
    }
}

/// A v3 binary payload: per packet `0` (text) or `1` (binary), its length
/// in bytes as one byte per decimal digit, `0xff`, then the packet (binary
/// messages behind their `4` type byte).
pub fn encode_v3_binary_payload(records: &[Record<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let (kind, head, data): (u8, &[u8], &[u8]) = match r {
            Record::Text(t) => (0, b"", t),
            Record::Binary(b) => (1, &[4], b),
        };
        out.push(kind);
        let len = head.len() + data.len();
        out.extend(len.to_string().bytes().map(|d| d - b'0'));
        out.push(0xff);
        out.extend_from_slice(head);
        out.extend_from_slice(data);
    }
    out
}

/// Decodes a polling request body (a POST) into packets.
pub fn decode_payload(eio: Eio, body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    match eio {
        Eio::V4 => decode_v4(body),
        Eio::V3 => {
            if body.first().is_some_and(|&b| b == 0 || b == 1) {
                decode_v3_binary(body)
            } else {
                decode_v3_text(body)
            }
        }
    }
}

fn decode_base64(data: &[u8]) -> Result<Bytes, DecodeError> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map(Bytes::from)
        .map_err(|_| DecodeError("base64"))
}

fn decode_v4(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..=body.len() {
        if i == body.len() || body[i] == 0x1e {
            let rec = body.slice(start..i);
            start = i + 1;
            if rec.first() == Some(&b'b') {
                out.push(Packet::Binary(decode_base64(&rec[1..])?));
            } else {
                out.push(Packet::decode_text(rec)?);
            }
        }
    }
    Ok(out)
}

fn decode_v3_text(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let text = std::str::from_utf8(&body).map_err(|_| DecodeError("payload: not UTF-8"))?;
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let colon = rest.find(':').ok_or(DecodeError("payload length"))?;
        let units: usize = rest[..colon]
            .parse()
            .map_err(|_| DecodeError("payload length"))?;
        let after = &rest[colon + 1..];
        // The length counts UTF-16 units (a JavaScript string's length).
        let mut taken = 0;
        let mut end = 0;
        for c in after.chars() {
            if taken >= units {
                break;
            }
            taken += c.len_utf16();
            end += c.len_utf8();
        }
        if taken != units || units == 0 {
            return Err(DecodeError("payload length"));
        }
        let offset = body.len() - rest.len() + colon + 1;
        let packet = body.slice(offset..offset + end);
        if packet.first() == Some(&b'b') {
            // `b4` + base64 of a binary message.
            if packet.get(1) != Some(&b'4') {
                return Err(DecodeError("binary packet type"));
            }
            out.push(Packet::Binary(decode_base64(&packet[2..])?));
        } else {
            out.push(Packet::decode_text(packet)?);
        }
        rest = &after[end..];
    }
    Ok(out)
}

fn decode_v3_binary(body: Bytes) -> Result<Vec<Packet>, DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < body.len() {
        let binary = match body[i] {
            0 => false,
            1 => true,
            _ => return Err(DecodeError("binary payload")),
        };
        i += 1;
        let mut len: usize = 0;
        let mut digits = 0;
        while i < body.len() && body[i] != 0xff {
            let d = body[i];
            if d > 9 || digits >= 10 {
                return Err(DecodeError("binary payload length"));
            }
            len = len * 10 + d as usize;
            digits += 1;
            i += 1;
        }
        if i >= body.len() || digits == 0 {
            return Err(DecodeError("binary payload length"));
        }
        i += 1;
        let end = i.checked_add(len).filter(|&e| e <= body.len());
        let end = end.ok_or(DecodeError("binary payload length"))?;
        let data = body.slice(i..end);
        i = end;
        out.push(if binary {
            Packet::decode_binary(Eio::V3, data)?
        } else {
            Packet::decode_text(data)?
        });
    }
    Ok(out)
}

/// The handshake sent when a session opens.
pub fn open_packet(
    eio: Eio,
    sid: &str,
    upgrades: bool,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> Bytes {
    let upgrades = if upgrades { r#"["websocket"]"# } else { "[]" };
    let sid = serde_json::to_string(sid).expect("a string encodes");
    let json = match eio {
        Eio::V4 => format!(
            r#"0{{"sid":{sid},"upgrades":{upgrades},"pingInterval":{ping_interval_ms},"pingTimeout":{ping_timeout_ms},"maxPayload":{max_payload}}}"#
        ),
        Eio::V3 => format!(
            r#"0{{"sid":{sid},"upgrades":{upgrades},"pingInterval":{ping_interval_ms},"pingTimeout":{ping_timeout_ms}}}"#
        ),
    };
    Bytes::from(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(eio: Eio, records: &[Record<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            encode_record(eio, &mut out, i == 0, r.clone());
        }
        out
    }

    #[test]
    fn v4_payloads() {
        let b = body(
            Eio::V4,
            &[Record::Text(b"4hello"), Record::Binary(&[1, 2, 3, 4])],
        );
        assert_eq!(b, b"4hello\x1ebAQIDBA==");
        let p = decode_payload(Eio::V4, Bytes::from(b)).unwrap();
        assert_eq!(
            p,
            vec![
                Packet::Message(Bytes::from_static(b"hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        assert!(decode_payload(Eio::V4, Bytes::from_static(b"abc")).is_err());
        assert!(decode_payload(Eio::V4, Bytes::from_static(b"")).is_err());
    }

    #[test]
    fn v3_payloads_count_utf16_units() {
        let b = body(
            Eio::V3,
            &[Record::Text("4é😀".as_bytes()), Record::Text(b"2")],
        );
        // "4é😀" is 1 + 1 + 2 UTF-16 units.
        assert_eq!(b, "4:4é😀1:2".as_bytes());
        let p = decode_payload(Eio::V3, Bytes::from(b)).unwrap();
        assert_eq!(
            p,
            vec![
                Packet::Message(Bytes::from("é😀".as_bytes())),
                Packet::Ping(Bytes::new())
            ]
        );
        let b = body(Eio::V3, &[Record::Binary(&[1, 2, 3])]);
        assert_eq!(b, b"6:b4AQID");
        assert_eq!(
            decode_payload(Eio::V3, Bytes::from(b)).unwrap(),
            vec![Packet::Binary(Bytes::from_static(&[1, 2, 3]))]
        );
        for bad in [&b"5:4hi"[..], b"x:4", b"2", b"0:", b"3:b5a"] {
            assert!(decode_payload(Eio::V3, Bytes::copy_from_slice(bad)).is_err());
        }
    }

    #[test]
    fn v3_binary_payloads_are_written_as_socket_io_2_did() {
        let b = encode_v3_binary_payload(&[Record::Text(b"4hello"), Record::Binary(&[1, 2, 3, 4])]);
        assert_eq!(
            b,
            [0, 6, 255, 52, 104, 101, 108, 108, 111, 1, 5, 255, 4, 1, 2, 3, 4]
        );
        assert_eq!(
            decode_payload(Eio::V3, Bytes::from(b)).unwrap(),
            vec![
                Packet::Message(Bytes::from_static(b"hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
    }

    #[test]
    fn v3_binary_payloads() {
        // "4hi" as text, then [1,2] as a binary message.
        let b: &[u8] = &[0, 3, 0xff, b'4', b'h', b'i', 1, 3, 0xff, 4, 1, 2];
        assert_eq!(
            decode_payload(Eio::V3, Bytes::from_static(b)).unwrap(),
            vec![
                Packet::Message(Bytes::from_static(b"hi")),
                Packet::Binary(Bytes::from_static(&[1, 2]))
            ]
        );
        assert!(decode_payload(Eio::V3, Bytes::from_static(&[0, 9, 0xff, b'4'])).is_err());
    }

    #[test]
    fn websocket_frames() {
        let p = Packet::Binary(Bytes::from_static(&[9]));
        assert_eq!(&p.ws_payload(Eio::V4)[..], &[9]);
        assert_eq!(&p.ws_payload(Eio::V3)[..], &[4, 9]);
        assert_eq!(
            Packet::decode_binary(Eio::V3, Bytes::from_static(&[4, 9])).unwrap(),
            p
        );
        assert_eq!(
            &Packet::Ping(Bytes::from_static(b"probe")).ws_payload(Eio::V4)[..],
            b"2probe"
        );
        assert!(Packet::decode_text(Bytes::from_static(b"abc")).is_err());
        assert!(Packet::decode_text(Bytes::from_static(b"")).is_err());
    }
}
