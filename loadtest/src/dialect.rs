//! The wire dialects the harness speaks: Roomcast's `roomcast.v1.json`, the
//! plain JSON contract of the Node `ws` and fastwebsockets baselines (a
//! subset of the same commands), and socket.io 4 over its WebSocket
//! transport. Everything a scenario sends goes through here so each target is
//! driven with the same commands, only spelled differently.

use std::io;

use serde::{Deserialize, Serialize};

use crate::ws::{find, Message, WsConn};

/// How to talk to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dialect {
    /// Roomcast, subprotocol `roomcast.v1.json` on `/ws`.
    Roomcast,
    /// The baseline contract: the same JSON commands on `/ws`, no subprotocol.
    Plain,
    /// socket.io 4 (Engine.IO 4) on `/socket.io/`, WebSocket transport only.
    SocketIo,
}

impl Dialect {
    /// Request target of the pub/sub endpoint.
    pub fn path(self) -> &'static str {
        match self {
            Dialect::Roomcast | Dialect::Plain => "/ws",
            Dialect::SocketIo => "/socket.io/?EIO=4&transport=websocket",
        }
    }

    /// Subprotocol to offer on the pub/sub endpoint.
    pub fn subprotocol(self) -> Option<String> {
        match self {
            Dialect::Roomcast => Some("roomcast.v1.json".to_string()),
            _ => None,
        }
    }

    /// Whether the target has a raw echo endpoint at `/echo`.
    pub fn has_raw_echo(self) -> bool {
        !matches!(self, Dialect::SocketIo)
    }

    /// Completes whatever the dialect needs after the WebSocket handshake
    /// (socket.io: the Engine.IO open packet and the namespace connect).
    pub async fn open(self, conn: &mut WsConn) -> io::Result<()> {
        if self != Dialect::SocketIo {
            return Ok(());
        }
        expect_prefix(conn, b"0").await?;
        conn.send_text(b"40").await?;
        expect_prefix(conn, b"40").await?;
        Ok(())
    }

    /// The subscribe command for `room`.
    pub fn subscribe(self, room: &str) -> String {
        match self {
            Dialect::Roomcast | Dialect::Plain => {
                format!(r#"{{"op":"subscribe","id":1,"room":"{room}"}}"#)
            }
            Dialect::SocketIo => format!(r#"421["subscribe","{room}"]"#),
        }
    }

    /// Whether `msg` is the reply to `subscribe`.
    pub fn is_subscribed(self, msg: &[u8]) -> bool {
        match self {
            Dialect::Roomcast | Dialect::Plain => find(msg, b"\"subscribed\"").is_some(),
            Dialect::SocketIo => msg.starts_with(b"431"),
        }
    }

    /// Whether `msg` is an error reply (only meaningful during setup).
    pub fn is_error(self, msg: &[u8]) -> bool {
        match self {
            Dialect::Roomcast | Dialect::Plain => find(msg, b"\"op\":\"error\"").is_some(),
            Dialect::SocketIo => msg.starts_with(b"44"),
        }
    }

    /// A publish command carrying the JSON document `data`.
    pub fn publish(self, room: &str, data: &str) -> String {
        match self {
            Dialect::Roomcast | Dialect::Plain => {
                format!(r#"{{"op":"publish","room":"{room}","data":{data}}}"#)
            }
            Dialect::SocketIo => format!(r#"42["publish",{{"room":"{room}","data":{data}}}]"#),
        }
    }

    /// The echo command carrying the string `data`.
    pub fn echo(self, data: &str) -> String {
        match self {
            Dialect::Roomcast | Dialect::Plain => format!(r#"{{"op":"echo","data":"{data}"}}"#),
            Dialect::SocketIo => format!(r#"42["echo","{data}"]"#),
        }
    }

    /// The rpc command calling `method` with the string `data` (Roomcast
    /// only: the node hands it to its backend). It carries an id (socket.io:
    /// an ack id), without which no reply comes; one is enough, as a
    /// connection has one call out at a time.
    pub fn rpc(self, method: &str, data: &str) -> String {
        match self {
            Dialect::SocketIo => format!(r#"421["{method}","{data}"]"#),
            _ => format!(r#"{{"op":"rpc","id":1,"method":"{method}","data":"{data}"}}"#),
        }
    }

    /// A reply the dialect wants sent for `msg`, for its own keep-alive
    /// (Engine.IO pings are ordinary text frames `2`, answered with `3`).
    pub fn keepalive_reply(self, msg: &[u8]) -> Option<&'static [u8]> {
        (self == Dialect::SocketIo && msg == b"2").then_some(b"3".as_slice())
    }
}

async fn expect_prefix(conn: &mut WsConn, prefix: &[u8]) -> io::Result<()> {
    match conn.next_message().await? {
        Message::Data(m) if m.starts_with(prefix) => Ok(()),
        Message::Data(m) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "expected socket.io packet {:?}, got {:?}",
                String::from_utf8_lossy(prefix),
                String::from_utf8_lossy(&m[..m.len().min(80)])
            ),
        )),
        Message::Close(code) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("closed with {code} during socket.io open"),
        )),
    }
}

/// The document a publisher sends: `{"s":seq,"t":unix_ns,"p":"xxx…"}`, padded
/// with `p` so the whole document is about `size` bytes.
pub fn payload(seq: u64, t_ns: u64, size: usize) -> String {
    let mut s = format!(r#"{{"s":{seq},"t":{t_ns},"p":""#);
    let pad = size.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// Reads the unsigned integer that follows `key` (e.g. `"s":`) in `msg`.
/// A scan rather than a JSON parse, so that one generator core can take
/// hundreds of thousands of deliveries a second.
pub fn scan_u64(msg: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(msg, key)? + key.len();
    let mut v: u64 = 0;
    let mut any = false;
    for &c in &msg[at..] {
        if c.is_ascii_digit() {
            v = v.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_size_and_fields() {
        let p = payload(42, 1_700_000_000_000_000_000, 1024);
        assert_eq!(p.len(), 1024);
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["s"], 42);
        let wrapped = format!(r#"42["message",{{"room":"r","data":{p}}}]"#);
        assert_eq!(scan_u64(wrapped.as_bytes(), b"\"s\":"), Some(42));
        assert_eq!(
            scan_u64(wrapped.as_bytes(), b"\"t\":"),
            Some(1_700_000_000_000_000_000)
        );
        assert!(payload(1, 2, 5).len() > 5);
    }
}
