//! RFC 6455 frames: a strict reader for client frames and an encoder for
//! server frames.
//!
//! The reader owns every check a public edge needs (masking, reserved bits,
//! opcodes, control-frame rules, fragmentation order, message size across
//! fragments, UTF-8 across fragments, close payloads) and maps each failure
//! to the close code the peer must receive. Text is checked as it arrives:
//! invalid UTF-8 fails the connection as soon as the bytes that prove it are
//! in, even in the middle of a frame whose end has not arrived yet. Server
//! frames are never masked,
//! so one encoded frame is the same bytes for every subscriber: it is built
//! once and shared.

use bytes::{Buf, Bytes, BytesMut};

/// Longest server frame header: 2 bytes plus a 64-bit length.
pub const MAX_SERVER_HEAD: usize = 10;
/// Largest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// UTF-8 text.
    Text,
    /// Binary data.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }

    fn to_fws(self) -> fastwebsockets::OpCode {
        match self {
            Self::Continuation => fastwebsockets::OpCode::Continuation,
            Self::Text => fastwebsockets::OpCode::Text,
            Self::Binary => fastwebsockets::OpCode::Binary,
            Self::Close => fastwebsockets::OpCode::Close,
            Self::Ping => fastwebsockets::OpCode::Ping,
            Self::Pong => fastwebsockets::OpCode::Pong,
        }
    }
}

/// A complete message (or control frame) from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: code and reason, if any.
    Close(Option<(u16, Bytes)>),
}

/// Why the client's frames were refused. Each maps to a close code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// RSV1-3 set with no extension negotiated.
    #[error("reserved bits set")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    /// A client frame without a mask (RFC 6455 §5.1).
    #[error("client frame not masked")]
    Unmasked,
    /// A control frame with FIN clear.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A 64-bit length with the top bit set, or a non-minimal length encoding.
    #[error("invalid payload length")]
    BadLength,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress.
    #[error("new message while a fragmented message is in progress")]
    InterleavedMessage,
    /// The message (across fragments) is over the limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Text that is not UTF-8.
    #[error("invalid UTF-8 in a text message")]
    InvalidUtf8,
    /// A close frame with a one-byte payload or a code that must not be sent.
    #[error("invalid close frame")]
    BadClose,
}

impl FrameError {
    /// The close code to send for this error.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::TooLarge { .. } => 1009,
            Self::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }

    /// The `reason` label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "message_too_large",
            Self::InvalidUtf8 => "invalid_utf8",
            _ => "protocol_error",
        }
    }
}

struct Head {
    fin: bool,
    opcode: OpCode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: u64,
}

/// Parses a header, or says how many more bytes it needs.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::UnknownOpcode(b0 & 0x0F))?;
    let fin = b0 & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControl);
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    let (len_bytes, payload_len) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (2, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (8, n)
        }
        n => (0, n as u64),
    };
    if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::ControlTooLong);
    }
    let header_len = 2 + len_bytes + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + len_bytes..header_len]);
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        header_len,
        payload_len,
    }))
}

/// A fragmented message being collected.
struct Partial {
    text: bool,
    buf: BytesMut,
}

/// Incremental UTF-8 validation of one text message, fed in any pieces:
/// bytes already checked are never looked at again, and a character may be
/// split across pieces.
#[derive(Debug, Clone, Copy, Default)]
struct Utf8 {
    /// Continuation bytes still owed by the character in progress.
    need: u8,
    /// Allowed range of the next continuation byte (the second byte of a
    /// character is narrower after E0, ED, F0 and F4).
    lo: u8,
    hi: u8,
}

impl Utf8 {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), FrameError> {
        // Finish a character split off by the previous piece.
        while self.need > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            if b < self.lo || b > self.hi {
                return Err(FrameError::InvalidUtf8);
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xBF);
            bytes = rest;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            // The piece ends inside a character that may still be finished.
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                (self.need, self.lo, self.hi) = match tail[0] {
                    0xC2..=0xDF => (1, 0x80, 0xBF),
                    0xE0 => (2, 0xA0, 0xBF),
                    0xED => (2, 0x80, 0x9F),
                    0xE1..=0xEF => (2, 0x80, 0xBF),
                    0xF0 => (3, 0x90, 0xBF),
                    0xF4 => (3, 0x80, 0x8F),
                    _ => (3, 0x80, 0xBF),
                };
                self.feed(&tail[1..])
            }
            Err(_) => Err(FrameError::InvalidUtf8),
        }
    }

    /// The message may end here: no character is left half done.
    fn finish(&self) -> Result<(), FrameError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(FrameError::InvalidUtf8)
        }
    }
}

/// Reads client frames out of a byte buffer, strictly.
///
/// The caller appends what it reads to the buffer and passes the same
/// buffer to every call; the reader takes complete frames off its front and
/// leaves an incomplete one in place.
pub struct FrameReader {
    max_message: usize,
    partial: Option<Partial>,
    /// The text message in progress, across its fragments.
    utf8: Utf8,
    /// Payload bytes of the (incomplete, text) frame at the front of the
    /// buffer already unmasked in place and fed to `utf8`.
    checked: usize,
}

/// Unmasks `payload` in place, word-wise, given that it starts `offset`
/// bytes into its frame's payload.
fn unmask_at(payload: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = mask;
    rotated.rotate_left(offset % 4);
    fastwebsockets::unmask(payload, rotated);
}

/// Close codes a peer may send: those RFC 6455 §7.4.1 defines for use
/// (1000-1003, 1007-1011), those registered with IANA since (1012 service
/// restart, 1013 try again later, 1014 bad gateway), and the ranges for
/// libraries and applications (3000-4999).
/// 1004 is reserved, 1005, 1006 and 1015 must never be sent in a frame, the
/// rest of 0-2999 is unassigned and nothing above 4999 is defined.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl FrameReader {
    /// A reader that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
            utf8: Utf8::default(),
            checked: 0,
        }
    }

    /// Forgets any message in progress: the next frame is read as the
    /// first of a message.
    pub fn reset(&mut self) {
        self.partial = None;
        self.utf8 = Utf8::default();
        self.checked = 0;
    }

    /// Bytes of a fragmented message currently held.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.buf.len())
    }

    /// Takes the next complete message out of `buf`. `Ok(None)` means more
    /// bytes are needed; `hint` is then set to how many bytes the frame in
    /// progress still needs, so the caller can size its read.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        hint: &mut usize,
    ) -> Result<Option<Message>, FrameError> {
        loop {
            let Some(head) = parse_head(buf)? else {
                *hint = 14;
                return Ok(None);
            };
            let already = self.buffered() as u64;
            let data_frame = !head.opcode.is_control();
            if data_frame && already + head.payload_len > self.max_message as u64 {
                return Err(FrameError::TooLarge {
                    limit: self.max_message,
                });
            }
            match (head.opcode, &self.partial) {
                (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(FrameError::InterleavedMessage)
                }
                _ => {}
            }
            let text = match head.opcode {
                OpCode::Text => true,
                OpCode::Continuation => self.partial.as_ref().is_some_and(|p| p.text),
                _ => false,
            };
            if head.opcode == OpCode::Text && self.checked == 0 {
                self.utf8 = Utf8::default();
            }
            let total = head.header_len + head.payload_len as usize;
            if buf.len() < total {
                // Fail fast: check the text that is already here.
                let have = buf.len().saturating_sub(head.header_len);
                // The bytes checked so far are unmasked in place, so each
                // byte is unmasked and checked exactly once.
                if text && have > self.checked {
                    let new = &mut buf[head.header_len + self.checked..head.header_len + have];
                    unmask_at(new, head.mask, self.checked);
                    self.utf8.feed(new)?;
                    self.checked = have;
                }
                *hint = total - buf.len();
                return Ok(None);
            }
            let checked = std::mem::take(&mut self.checked);
            let mut frame = buf.split_to(total);
            frame.advance(head.header_len);
            unmask_at(&mut frame[checked..], head.mask, checked);
            if text {
                self.utf8.feed(&frame[checked..])?;
                if head.fin {
                    self.utf8.finish()?;
                }
            }
            match head.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(frame.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(frame.freeze()))),
                OpCode::Close => return Self::close(frame.freeze()).map(Some),
                OpCode::Text | OpCode::Binary => {
                    if head.fin {
                        return Ok(Some(if text {
                            Message::Text(frame.freeze())
                        } else {
                            Message::Binary(frame.freeze())
                        }));
                    }
                    self.partial = Some(Partial { text, buf: frame });
                }
                OpCode::Continuation => {
                    let p = self.partial.as_mut().expect("checked above");
                    p.buf.extend_from_slice(&frame);
                    if head.fin {
                        let p = self.partial.take().expect("checked above");
                        let data = p.buf.freeze();
                        return Ok(Some(if p.text {
                            Message::Text(data)
                        } else {
                            Message::Binary(data)
                        }));
                    }
                }
            }
        }
    }

    fn close(payload: Bytes) -> Result<Message, FrameError> {
        match payload.len() {
            0 => Ok(Message::Close(None)),
            1 => Err(FrameError::BadClose),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !valid_close_code(code) {
                    return Err(FrameError::BadClose);
                }
                let reason = payload.slice(2..);
                if std::str::from_utf8(&reason).is_err() {
                    return Err(FrameError::InvalidUtf8);
                }
                Ok(Message::Close(Some((code, reason))))
            }
        }
    }
}

/// Builds one complete, unmasked server frame.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; MAX_SERVER_HEAD];
    let n = fastwebsockets::Frame::new(
        true,
        opcode.to_fws(),
        None,
        fastwebsockets::Payload::Borrowed(payload),
    )
    .fmt_head(&mut head);
    let mut out = BytesMut::with_capacity(n + payload.len());
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// Builds a close frame with a code and a reason (cut to fit 125 bytes on a
/// character boundary).
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Close, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(fin as u8) << 7 | op];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn read_all(bytes: &[u8], max: usize) -> Result<Vec<Message>, FrameError> {
        let mut r = FrameReader::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut hint = 0;
        let mut out = Vec::new();
        while let Some(m) = r.next(&mut buf, &mut hint)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn reads_masked_text_and_fragments() {
        let mut b = client_frame(true, 1, b"hello");
        b.extend(client_frame(false, 2, b"ab"));
        b.extend(client_frame(true, 9, b"p"));
        b.extend(client_frame(true, 0, b"cd"));
        assert_eq!(
            read_all(&b, 100).unwrap(),
            vec![
                Message::Text("hello".into()),
                Message::Ping("p".into()),
                Message::Binary("abcd".into())
            ]
        );
    }

    #[test]
    fn refuses_protocol_violations_with_the_right_code() {
        let unmasked = [0x81u8, 0x01, b'a'];
        assert_eq!(read_all(&unmasked, 100).unwrap_err().close_code(), 1002);
        let long_ping = client_frame(true, 9, &[0u8; 126]);
        assert_eq!(
            read_all(&long_ping, 1000).unwrap_err(),
            FrameError::ControlTooLong
        );
        let mut interleaved = client_frame(false, 1, b"a");
        interleaved.extend(client_frame(false, 1, b"b"));
        assert_eq!(
            read_all(&interleaved, 100).unwrap_err(),
            FrameError::InterleavedMessage
        );
        let rsv = {
            let mut f = client_frame(true, 1, b"a");
            f[0] |= 0x40;
            f
        };
        assert_eq!(read_all(&rsv, 100).unwrap_err(), FrameError::ReservedBits);
        assert_eq!(
            read_all(&client_frame(true, 3, b""), 100).unwrap_err(),
            FrameError::UnknownOpcode(3)
        );
        assert_eq!(
            read_all(&client_frame(true, 0, b"x"), 100).unwrap_err(),
            FrameError::UnexpectedContinuation
        );
        assert_eq!(
            read_all(&client_frame(false, 9, b""), 100).unwrap_err(),
            FrameError::FragmentedControl
        );
    }

    #[test]
    fn limits_message_size_across_fragments() {
        let mut b = client_frame(false, 2, &[0u8; 60]);
        b.extend(client_frame(true, 0, &[0u8; 60]));
        let e = read_all(&b, 100).unwrap_err();
        assert_eq!(e.close_code(), 1009);
    }

    #[test]
    fn utf8_is_checked_across_fragments_and_fails_fast() {
        let euro = "€".as_bytes();
        let mut ok = client_frame(false, 1, &euro[..1]);
        ok.extend(client_frame(true, 0, &euro[1..]));
        assert_eq!(read_all(&ok, 100).unwrap(), vec![Message::Text("€".into())]);
        // The first fragment alone is already invalid: refused before the rest arrives.
        let bad_first = client_frame(false, 1, &[0xce, 0xba, 0xff]);
        assert_eq!(read_all(&bad_first, 100).unwrap_err().close_code(), 1007);
        let truncated = client_frame(true, 1, &euro[..2]);
        assert_eq!(read_all(&truncated, 100).unwrap_err().close_code(), 1007);
    }

    #[test]
    fn utf8_fails_fast_inside_a_frame_that_has_not_fully_arrived() {
        let mut payload = "ok €".as_bytes().to_vec();
        payload.extend_from_slice(&[0xed, 0xa0, 0x80]); // a surrogate
        payload.extend_from_slice(&[b'x'; 100]);
        let f = client_frame(true, 1, &payload);
        let head = f.len() - payload.len();
        let mut r = FrameReader::new(1000);
        let mut hint = 0;
        // Up to the middle of the euro sign: fine so far.
        let mut buf = BytesMut::from(&f[..head + 4]);
        assert_eq!(r.next(&mut buf, &mut hint).unwrap(), None);
        // The second byte of the surrogate proves it: refused now.
        buf.extend_from_slice(&f[head + 4..head + 8]);
        assert_eq!(r.next(&mut buf, &mut hint), Err(FrameError::InvalidUtf8));
    }

    #[test]
    fn text_arriving_byte_by_byte_in_fragments_is_accepted() {
        let text = "Grüße — 東京 𝄞".as_bytes();
        let mut wire = Vec::new();
        for (i, part) in text.chunks(3).enumerate() {
            let last = (i + 1) * 3 >= text.len();
            wire.extend(client_frame(last, if i == 0 { 1 } else { 0 }, part));
        }
        let mut r = FrameReader::new(1000);
        let mut buf = BytesMut::new();
        let mut hint = 0;
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(m) = r.next(&mut buf, &mut hint).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![Message::Text(Bytes::copy_from_slice(text))]);
    }

    #[test]
    fn text_split_at_any_two_points_arrives_intact() {
        let text = "héllo wörld, 𝄞 and € and more text past one word".as_bytes();
        let wire = client_frame(true, 1, text);
        for a in 1..wire.len() {
            for b in a..wire.len() {
                let mut r = FrameReader::new(1000);
                let mut buf = BytesMut::new();
                let mut hint = 0;
                let mut got = Vec::new();
                for piece in [&wire[..a], &wire[a..b], &wire[b..]] {
                    buf.extend_from_slice(piece);
                    while let Some(m) = r.next(&mut buf, &mut hint).unwrap() {
                        got.push(m);
                    }
                }
                assert_eq!(got, vec![Message::Text(Bytes::copy_from_slice(text))]);
            }
        }
    }

    #[test]
    fn incremental_utf8_agrees_with_std_at_every_split() {
        let samples: &[&[u8]] = &[
            "a€𝄞ß".as_bytes(),
            &[0xe0, 0xa0, 0x80],
            &[0xe0, 0x9f, 0xbf],
            &[0xed, 0x9f, 0xbf],
            &[0xed, 0xa0, 0x80],
            &[0xf0, 0x90, 0x80, 0x80],
            &[0xf0, 0x8f, 0xbf, 0xbf],
            &[0xf4, 0x8f, 0xbf, 0xbf],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xc2],
            &[0xc0, 0x80],
            &[0xe2, 0x82, b'A'],
            &[0xf1, 0x80, 0x80, 0x80, 0xff],
        ];
        for s in samples {
            let want = std::str::from_utf8(s).is_ok();
            for a in 0..=s.len() {
                for b in a..=s.len() {
                    let mut u = Utf8::default();
                    let got = u
                        .feed(&s[..a])
                        .and_then(|_| u.feed(&s[a..b]))
                        .and_then(|_| u.feed(&s[b..]))
                        .and_then(|_| u.finish())
                        .is_ok();
                    assert_eq!(got, want, "{s:x?} split at {a}, {b}");
                }
            }
        }
    }

    #[test]
    fn registered_close_codes_are_accepted() {
        for code in [1000u16, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999] {
            let p = code.to_be_bytes();
            assert_eq!(
                read_all(&client_frame(true, 8, &p), 10).unwrap(),
                vec![Message::Close(Some((code, Bytes::new())))],
                "{code}"
            );
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            let p = code.to_be_bytes();
            assert_eq!(
                read_all(&client_frame(true, 8, &p), 10).unwrap_err(),
                FrameError::BadClose,
                "{code}"
            );
        }
    }

    #[test]
    fn close_payloads_are_validated() {
        assert_eq!(
            read_all(&client_frame(true, 8, b""), 10).unwrap(),
            vec![Message::Close(None)]
        );
        assert_eq!(
            read_all(&client_frame(true, 8, b"x"), 10).unwrap_err(),
            FrameError::BadClose
        );
        let mut p = 1005u16.to_be_bytes().to_vec();
        assert_eq!(
            read_all(&client_frame(true, 8, &p), 10).unwrap_err(),
            FrameError::BadClose
        );
        p = 1000u16.to_be_bytes().to_vec();
        p.push(0xff);
        assert_eq!(
            read_all(&client_frame(true, 8, &p), 10)
                .unwrap_err()
                .close_code(),
            1007
        );
    }

    #[test]
    fn waits_for_partial_frames() {
        let f = client_frame(true, 2, &[7u8; 300]);
        let mut r = FrameReader::new(1000);
        let mut buf = BytesMut::from(&f[..100]);
        let mut hint = 0;
        assert_eq!(r.next(&mut buf, &mut hint).unwrap(), None);
        assert_eq!(hint, f.len() - 100);
        buf.extend_from_slice(&f[100..]);
        assert_eq!(
            r.next(&mut buf, &mut hint).unwrap(),
            Some(Message::Binary(vec![7u8; 300].into()))
        );
    }

    #[test]
    fn server_frames_are_unmasked_with_minimal_length() {
        let f = encode(OpCode::Text, &[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        let c = encode_close(4008, "slow consumer");
        assert_eq!(&c[..4], &[0x88, 15, 0x0f, 0xa8]);
    }
}
