//! A minimal WebSocket client (RFC 6455) on a raw `TcpStream`, built for
//! load generation rather than generality: one large read buffer per
//! connection so a single `read` drains many frames, frames parsed in place,
//! masking done a word at a time, and writes batched until `flush`.
//!
//! It handles what a load generator meets: text and binary messages,
//! continuation frames, Ping (answered with Pong), and Close (reported with
//! its code). It does not do extensions (no permessage-deflate is offered).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The GUID of RFC 6455 §1.3, hashed with the key to prove the upgrade.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Frame opcodes of RFC 6455 §5.2.
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text.
    pub const TEXT: u8 = 0x1;
    /// Opaque bytes.
    pub const BINARY: u8 = 0x2;
    /// Close, with an optional code and reason.
    pub const CLOSE: u8 = 0x8;
    /// Ping; must be answered with a Pong carrying the same payload.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// What `WsConn::next_message` returns.
#[derive(Debug)]
pub enum Message {
    /// A complete text or binary message (continuations joined).
    Data(BytesMut),
    /// The peer closed; the code is 1005 when the frame carried none.
    Close(u16),
}

/// One client connection.
pub struct WsConn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// Fragments of a message still being assembled.
    partial: Option<BytesMut>,
    /// Cheap generator of masking keys: RFC 6455 wants them unpredictable to
    /// defeat cache poisoning by intermediaries, which does not apply between
    /// a load generator and a server on the same machine.
    mask_state: u32,
    read_size: usize,
}

/// How to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Server address.
    pub addr: SocketAddr,
    /// Local address to bind before connecting (spreads connections over
    /// several loopback source addresses, each with its own ephemeral ports).
    pub source_ip: Option<Ipv4Addr>,
    /// Request target, e.g. `/ws` or `/echo`.
    pub path: String,
    /// Value of `Sec-WebSocket-Protocol`, if any.
    pub subprotocol: Option<String>,
    /// Bytes asked of the kernel per read.
    pub read_size: usize,
    /// Whole handshake deadline.
    pub timeout: Duration,
}

impl WsConn {
    /// Connects and performs the opening handshake.
    pub async fn connect(opts: &ConnectOptions) -> io::Result<WsConn> {
        tokio::time::timeout(opts.timeout, Self::connect_inner(opts))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?
    }

    async fn connect_inner(opts: &ConnectOptions) -> io::Result<WsConn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = opts.source_ip {
            socket.bind(SocketAddr::new(ip.into(), 0))?;
        }
        let mut stream = socket.connect(opts.addr).await?;
        stream.set_nodelay(true)?;

        let key_bytes: [u8; 16] = rand::random();
        let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
        let mut req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n",
            opts.path, opts.addr, key
        );
        if let Some(p) = &opts.subprotocol {
            req.push_str("Sec-WebSocket-Protocol: ");
            req.push_str(p);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;

        let mut rbuf = BytesMut::with_capacity(opts.read_size.max(4096));
        let head_end = loop {
            if let Some(pos) = find(&rbuf, b"\r\n\r\n") {
                break pos + 4;
            }
            if rbuf.len() > 16 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "response head too large",
                ));
            }
            if stream.read_buf(&mut rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during handshake",
                ));
            }
        };
        let head = String::from_utf8_lossy(&rbuf[..head_end]).into_owned();
        rbuf.advance(head_end);
        let status = head.lines().next().unwrap_or("");
        if !status.starts_with("HTTP/1.1 101") {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("upgrade refused: {status}"),
            ));
        }
        let mut hasher = Sha1::new();
        hasher.update(key.as_bytes());
        hasher.update(ACCEPT_GUID.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.encode(hasher.finalize());
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == expected
            })
        });
        if !accept_ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad Sec-WebSocket-Accept",
            ));
        }
        Ok(WsConn {
            stream,
            rbuf,
            wbuf: Vec::with_capacity(4096),
            partial: None,
            mask_state: rand::random::<u32>() | 1,
            read_size: opts.read_size.max(4096),
        })
    }

    fn next_mask(&mut self) -> [u8; 4] {
        // xorshift32
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_ne_bytes()
    }

    /// Appends one masked frame to the write buffer; `flush` sends it.
    pub fn queue(&mut self, op: u8, payload: &[u8]) {
        let len = payload.len();
        self.wbuf.push(0x80 | op);
        if len < 126 {
            self.wbuf.push(0x80 | len as u8);
        } else if len <= u16::MAX as usize {
            self.wbuf.push(0x80 | 126);
            self.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.wbuf.push(0x80 | 127);
            self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = self.next_mask();
        self.wbuf.extend_from_slice(&mask);
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(payload);
        apply_mask(&mut self.wbuf[start..], mask);
    }

    /// Bytes queued and not yet flushed.
    pub fn pending(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Queues and flushes one text frame.
    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.queue(opcode::TEXT, payload);
        self.flush().await
    }

    /// The next complete data message, answering Pings on the way.
    /// Returns `Ok(Message::Close)` on a Close frame and an
    /// `UnexpectedEof` error when the TCP stream ends without one.
    pub async fn next_message(&mut self) -> io::Result<Message> {
        loop {
            while let Some((op, fin, payload)) = self.parse_frame()? {
                match op {
                    opcode::TEXT | opcode::BINARY => {
                        if fin {
                            return Ok(Message::Data(payload));
                        }
                        self.partial = Some(payload);
                    }
                    opcode::CONTINUATION => {
                        let mut acc = self.partial.take().ok_or_else(|| {
                            io::Error::new(io::ErrorKind::InvalidData, "stray continuation")
                        })?;
                        acc.extend_from_slice(&payload);
                        if fin {
                            return Ok(Message::Data(acc));
                        }
                        self.partial = Some(acc);
                    }
                    opcode::PING => {
                        self.queue(opcode::PONG, &payload);
                        self.flush().await?;
                    }
                    opcode::PONG => {}
                    opcode::CLOSE => {
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        return Ok(Message::Close(code));
                    }
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad opcode {other}"),
                        ))
                    }
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < self.read_size / 4 {
                self.rbuf.reserve(self.read_size);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    /// Splits one whole frame off the read buffer, if one is there.
    fn parse_frame(&mut self) -> io::Result<Option<(u8, bool, BytesMut)>> {
        let b = &self.rbuf[..];
        if b.len() < 2 {
            return Ok(None);
        }
        let fin = b[0] & 0x80 != 0;
        let op = b[0] & 0x0f;
        if b[1] & 0x80 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "masked server frame",
            ));
        }
        let (len, hdr) = match b[1] & 0x7f {
            126 => {
                if b.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
            }
            127 => {
                if b.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if b.len() < hdr + len {
            if self.rbuf.capacity() < hdr + len {
                self.rbuf.reserve(hdr + len - self.rbuf.len());
            }
            return Ok(None);
        }
        self.rbuf.advance(hdr);
        Ok(Some((op, fin, self.rbuf.split_to(len))))
    }
}

/// XORs `buf` with the repeating 4-byte `mask`, eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let m8 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_round_trips_and_matches_bytewise() {
        let orig: Vec<u8> = (0..37u8).collect();
        let mask = [1, 2, 3, 4];
        let mut a = orig.clone();
        apply_mask(&mut a, mask);
        let b: Vec<u8> = orig
            .iter()
            .enumerate()
            .map(|(i, v)| v ^ mask[i % 4])
            .collect();
        assert_eq!(a, b);
        apply_mask(&mut a, mask);
        assert_eq!(a, orig);
    }
}
