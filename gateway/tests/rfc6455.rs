//! RFC 6455 conformance over real sockets.
//!
//! The cases follow the server-side groups of the Autobahn TestSuite
//! (1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation,
//! 6 UTF-8, 7 close handling, 9 limits, 10 automatic fragmentation), written
//! out as tables and driven with raw frames against a real node's `/echo`
//! endpoint. Each case checks the exact opcode and bytes that come back,
//! pongs carrying the ping's payload, the exact close code of a failure
//! (1002 protocol error, 1007 invalid UTF-8, 1009 too big), and that the
//! server's own frames are well formed (FIN set, no RSV bits, unmasked,
//! minimal length).
//!
//! Close codes a client may send: 1000-1003 and 1007-1011 (RFC 6455 §7.4.1),
//! 1012-1014 (registered with IANA after the RFC; the gateway itself sends
//! 1013) and 3000-4999. 1004, 1005, 1006 and 1015 (reserved, or never to be
//! put on the wire), the rest of 0-2999, and 5000 and up are protocol errors.
//!
//! Run with `cargo test -p roomcast-gateway --test rfc6455 -- --nocapture`
//! to see the pass count of every group.

mod common;

use common::{Node, Raw};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one expected frame may take.
const READ_WAIT: Duration = Duration::from_secs(5);

const CONT: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Flags for the suite's own node: `/echo` on, defaults otherwise (64 KiB
/// messages).
const ECHO: &[&str] = &["--echo"];
/// Group 9 raises the message limit to 1 MiB and the send queue so a 1 MiB
/// echo fits in it.
const ECHO_1MIB: &[&str] = &[
    "--echo",
    "--max-message-bytes",
    "1MiB",
    "--max-queue-bytes",
    "8MiB",
];
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Building client frames

/// One masked client frame.
fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    common::encode_frame(fin, op, payload, true)
}

fn text(p: &[u8]) -> Vec<u8> {
    frame(true, TEXT, p)
}

fn binary(p: &[u8]) -> Vec<u8> {
    frame(true, BINARY, p)
}

fn ping(p: &[u8]) -> Vec<u8> {
    frame(true, PING, p)
}

fn pong(p: &[u8]) -> Vec<u8> {
    frame(true, PONG, p)
}

fn close(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(true, CLOSE, &p)
}

/// Sets reserved bits: `bits` is RSV1..RSV3 as a 3-bit number (4 = RSV1).
fn rsv(mut f: Vec<u8>, bits: u8) -> Vec<u8> {
    f[0] |= bits << 4;
    f
}

fn cat<const N: usize>(parts: [Vec<u8>; N]) -> Vec<u8> {
    parts.concat()
}

/// A message cut into fragments whose sizes cycle through `sizes` (zero
/// sizes give empty fragments).
fn fragmented(op: u8, payload: &[u8], sizes: &[usize]) -> Vec<u8> {
    assert!(sizes.iter().any(|&n| n > 0));
    let mut out = Vec::new();
    let mut rest = payload;
    let mut first = true;
    for n in sizes.iter().cycle() {
        let (part, tail) = rest.split_at((*n).min(rest.len()));
        rest = tail;
        let fin = rest.is_empty();
        out.extend(frame(fin, if first { op } else { CONT }, part));
        first = false;
        if fin {
            break;
        }
    }
    out
}

/// The start of one frame: its header (which announces all of `payload`)
/// and only the first `n` payload bytes.
fn frame_prefix(op: u8, payload: &[u8], n: usize) -> Vec<u8> {
    let f = frame(true, op, payload);
    let head = f.len() - payload.len();
    f[..head + n].to_vec()
}

/// ASCII text of exactly `n` bytes.
fn ascii(n: usize) -> Vec<u8> {
    b"roomcast echoes every byte; "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Binary bytes of every value.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}

/// Text of about `n` bytes (cut on a character boundary) full of 2-, 3- and
/// 4-byte characters, so fragment boundaries fall inside characters.
fn multibyte(n: usize) -> Vec<u8> {
    let unit = "Grüße aus Zürich — 東京 ✓ 𝄞 ½ ";
    let mut s = String::with_capacity(n + unit.len());
    while s.len() < n {
        s.push_str(unit);
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// Cases

enum Step {
    /// Write these bytes at once.
    Send(Vec<u8>),
    /// Write in pieces of this many bytes, pausing this many ms between.
    Chop(Vec<u8>, usize, u64),
    /// Wait this many ms.
    Pause(u64),
    /// The next frame from the server must be exactly this.
    Expect(u8, Vec<u8>),
    /// The next frames must be exactly these, in any order (a pong may
    /// overtake queued data).
    ExpectAnyOrder(Vec<(u8, Vec<u8>)>),
}

enum End {
    /// The connection is still healthy: the client closes with 1000 and
    /// must get 1000 back, then the end of the stream.
    Clean,
    /// The next frame must be a close with this code, then nothing but
    /// the end of the stream.
    Close(u16),
}

struct Case {
    name: String,
    steps: Vec<Step>,
    end: End,
}

impl Case {
    fn new(name: impl Into<String>, end: End) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
            end,
        }
    }

    fn send(mut self, b: Vec<u8>) -> Self {
        self.steps.push(Step::Send(b));
        self
    }

    fn chop(mut self, b: Vec<u8>, piece: usize, pause_ms: u64) -> Self {
        self.steps.push(Step::Chop(b, piece, pause_ms));
        self
    }

    fn pause(mut self, ms: u64) -> Self {
        self.steps.push(Step::Pause(ms));
        self
    }

    fn expect(mut self, op: u8, p: &[u8]) -> Self {
        self.steps.push(Step::Expect(op, p.to_vec()));
        self
    }

    fn expect_any_order(mut self, frames: Vec<(u8, Vec<u8>)>) -> Self {
        self.steps.push(Step::ExpectAnyOrder(frames));
        self
    }

    /// Sends one unfragmented message and expects it back.
    fn echo(self, op: u8, p: &[u8]) -> Self {
        self.send(frame(true, op, p)).expect(op, p)
    }
}

// ---------------------------------------------------------------------------
// Running cases

/// One raw connection to `/echo`.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    /// Frames received so far, for failure messages.
    frames: usize,
}

fn describe(f: &Option<(u8, Vec<u8>)>) -> String {
    match f {
        None => "end of stream".into(),
        Some((CLOSE, p)) if p.len() >= 2 => {
            format!("close {}", u16::from_be_bytes([p[0], p[1]]))
        }
        Some((op, p)) => {
            let head: Vec<String> = p.iter().take(12).map(|b| format!("{b:02x}")).collect();
            format!(
                "opcode {op:#x}, {} bytes [{}{}]",
                p.len(),
                head.join(" "),
                if p.len() > 12 { " …" } else { "" }
            )
        }
    }
}

/// Parses one server frame strictly: `(opcode, payload, bytes used)`.
fn parse_server_frame(b: &[u8]) -> Result<Option<(u8, Vec<u8>, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x80 == 0 {
        return Err("server frame without FIN".into());
    }
    if b[0] & 0x70 != 0 {
        return Err("server frame with RSV bits".into());
    }
    if b[1] & 0x80 != 0 {
        return Err("masked server frame".into());
    }
    let op = b[0] & 0x0F;
    if ![TEXT, BINARY, CLOSE, PING, PONG].contains(&op) {
        return Err(format!("server frame with opcode {op:#x}"));
    }
    let (head, len) = match b[1] & 0x7F {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            let n = u16::from_be_bytes([b[2], b[3]]) as usize;
            if n < 126 {
                return Err("non-minimal 16-bit length".into());
            }
            (4, n)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let n = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            if n < 65536 {
                return Err("non-minimal 64-bit length".into());
            }
            (10, n)
        }
        n => (2, n as usize),
    };
    if op >= CLOSE && len > 125 {
        return Err("server control frame over 125 bytes".into());
    }
    if b.len() < head + len {
        return Ok(None);
    }
    Ok(Some((op, b[head..head + len].to_vec(), head + len)))
}

impl Conn {
    async fn open(port: u16) -> Result<Conn, String> {
        let raw = Raw::handshake(port, "/echo", &[]).await;
        if raw.status() != 101 {
            return Err(format!("upgrade refused: {}", raw.response));
        }
        raw.stream.set_nodelay(true).unwrap();
        Ok(Conn {
            stream: raw.stream,
            buf: raw.buf,
            eof: false,
            frames: 0,
        })
    }

    /// Writes everything while reading whatever arrives meanwhile, so the
    /// server's echoes never back up into it. `false` when the server has
    /// gone.
    async fn write(&mut self, data: &[u8]) -> bool {
        let Conn {
            stream, buf, eof, ..
        } = self;
        let (mut r, mut w) = stream.split();
        let write = tokio::time::timeout(READ_WAIT, w.write_all(data));
        tokio::pin!(write);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                res = &mut write => return matches!(res, Ok(Ok(()))),
                n = r.read(&mut chunk), if !*eof => match n {
                    Ok(0) | Err(_) => *eof = true,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                },
            }
        }
    }

    /// The next server frame; `None` at the end of the stream.
    async fn frame(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((op, p, used)) = parse_server_frame(&self.buf)? {
                self.buf.drain(..used);
                self.frames += 1;
                return Ok(Some((op, p)));
            }
            if self.eof {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(format!(
                        "stream ended inside a frame ({} bytes)",
                        self.buf.len()
                    ))
                };
            }
            match tokio::time::timeout(READ_WAIT, self.stream.read(&mut chunk)).await {
                Err(_) => {
                    return Err(format!(
                        "timed out waiting for a frame (after {} frames)",
                        self.frames
                    ))
                }
                // A reset after the close frame is an end of stream too.
                Ok(Ok(0)) | Ok(Err(_)) => self.eof = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn expect_close(&mut self, code: u16) -> Result<(), String> {
        let f = self.frame().await?;
        match &f {
            Some((CLOSE, p)) if p.len() >= 2 && u16::from_be_bytes([p[0], p[1]]) == code => {
                if std::str::from_utf8(&p[2..]).is_err() {
                    return Err("close reason is not UTF-8".into());
                }
                Ok(())
            }
            _ => Err(format!("expected close {code}, got {}", describe(&f))),
        }
    }

    async fn expect_end(&mut self) -> Result<(), String> {
        match self.frame().await? {
            None => Ok(()),
            f => Err(format!(
                "expected the end of the stream after close, got {}",
                describe(&f)
            )),
        }
    }
}

async fn run_case(port: u16, case: &Case) -> Result<(), String> {
    let mut c = Conn::open(port).await?;
    for step in &case.steps {
        match step {
            Step::Send(b) => {
                c.write(b).await;
            }
            Step::Chop(b, piece, pause) => {
                for part in b.chunks(*piece) {
                    if !c.write(part).await {
                        break;
                    }
                    if *pause > 0 {
                        tokio::time::sleep(Duration::from_millis(*pause)).await;
                    }
                }
            }
            Step::Pause(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Step::Expect(op, p) => {
                let f = c.frame().await?;
                if f.as_ref() != Some(&(*op, p.clone())) {
                    return Err(format!(
                        "expected {}, got {}",
                        describe(&Some((*op, p.clone()))),
                        describe(&f)
                    ));
                }
            }
            Step::ExpectAnyOrder(want) => {
                let mut want = want.clone();
                while !want.is_empty() {
                    let f = c.frame().await?;
                    match want.iter().position(|w| Some(w) == f.as_ref()) {
                        Some(i) => {
                            want.remove(i);
                        }
                        None => return Err(format!("unexpected {}", describe(&f))),
                    }
                }
            }
        }
    }
    match case.end {
        End::Clean => {
            c.write(&close(1000, b"")).await;
            c.expect_close(1000).await?;
            c.expect_end().await
        }
        End::Close(code) => {
            c.expect_close(code).await?;
            // Answer the close and end our side, as a client does.
            c.write(&close(1000, b"")).await;
            let _ = c.stream.shutdown().await;
            c.expect_end().await
        }
    }
}

/// Runs a group's cases one by one on fresh connections to one node,
/// prints the pass count and fails with every failing case named.
async fn run_group(group: &str, args: &[&str], cases: Vec<Case>) {
    let node = Node::start(args).await;
    let total = cases.len();
    let mut failed = Vec::new();
    for case in &cases {
        if let Err(e) = run_case(node.http, case).await {
            failed.push(format!("  {}: {e}", case.name));
        }
    }
    println!(
        "rfc6455 group {group}: {}/{total} passed",
        total - failed.len()
    );
    assert!(
        failed.is_empty(),
        "group {group}: {} of {total} cases failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// 1 Framing

fn group1() -> Vec<Case> {
    let mut v = Vec::new();
    let lengths = [0, 125, 126, 127, 128, 65535, 65536];
    for (sub, op, name, make) in [
        (1, TEXT, "text", ascii as fn(usize) -> Vec<u8>),
        (2, BINARY, "binary", bytes),
    ] {
        for (i, &n) in lengths.iter().enumerate() {
            let p = make(n);
            v.push(
                Case::new(format!("1.{sub}.{} {name}, {n} bytes", i + 1), End::Clean).echo(op, &p),
            );
        }
        let p = make(65536);
        v.push(
            Case::new(
                format!("1.{sub}.8 {name}, 65536 bytes written in 997-byte pieces"),
                End::Clean,
            )
            .chop(frame(true, op, &p), 997, 0)
            .expect(op, &p),
        );
        let p = make(300);
        v.push(
            Case::new(
                format!("1.{sub}.9 {name}, 300 bytes written one byte at a time"),
                End::Clean,
            )
            .chop(frame(true, op, &p), 1, 0)
            .expect(op, &p),
        );
    }
    let (a, b) = (ascii(10), bytes(70_000));
    v.push(
        Case::new("1.3.1 three messages in one write", End::Clean)
            .send(cat([text(&a), binary(&b[..200]), text(b"")]))
            .expect(TEXT, &a)
            .expect(BINARY, &b[..200])
            .expect(TEXT, b""),
    );
    v.push(
        Case::new("1.3.2 binary over the 64 KiB limit", End::Close(1009))
            .send(frame_prefix(BINARY, &b, 100)),
    );
    v
}

// ---------------------------------------------------------------------------
// 2 Ping and pong

fn group2() -> Vec<Case> {
    let p125 = bytes(125);
    let binary_payload = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    let ten: Vec<Vec<u8>> = (0..10).map(|i| format!("ping #{i}").into_bytes()).collect();
    let mut ten_pings = Case::new("2.10 ten pings in one write", End::Clean)
        .send(ten.iter().flat_map(|p| ping(p)).collect());
    let mut ten_pings_paced = Case::new("2.11 ten pings, 10 ms apart", End::Clean);
    for p in &ten {
        ten_pings = ten_pings.expect(PONG, p);
        ten_pings_paced = ten_pings_paced.send(ping(p)).pause(10);
    }
    for p in &ten {
        ten_pings_paced = ten_pings_paced.expect(PONG, p);
    }
    vec![
        Case::new("2.1 ping, empty", End::Clean)
            .send(ping(b""))
            .expect(PONG, b""),
        Case::new("2.2 ping, text payload", End::Clean)
            .send(ping(b"are you there?"))
            .expect(PONG, b"are you there?"),
        Case::new("2.3 ping, binary payload", End::Clean)
            .send(ping(&binary_payload))
            .expect(PONG, &binary_payload),
        Case::new("2.4 ping, 125 bytes", End::Clean)
            .send(ping(&p125))
            .expect(PONG, &p125),
        Case::new("2.5 ping, 126 bytes", End::Close(1002)).send(ping(&bytes(126))),
        Case::new("2.6 ping, 125 bytes written one byte at a time", End::Clean)
            .chop(ping(&p125), 1, 0)
            .expect(PONG, &p125),
        Case::new("2.7 unsolicited pong, empty", End::Clean).send(pong(b"")),
        Case::new("2.8 unsolicited pong, with payload", End::Clean).send(pong(b"unasked")),
        Case::new("2.9 unsolicited pong, then ping", End::Clean)
            .send(cat([pong(b"unasked"), ping(b"asked")]))
            .expect(PONG, b"asked"),
        ten_pings,
        ten_pings_paced,
        Case::new("2.12 ping, 127-byte length on the wire", End::Close(1002))
            .send(ping(&bytes(127))),
    ]
}

// ---------------------------------------------------------------------------
// 3 Reserved bits

fn group3() -> Vec<Case> {
    let hi = b"hello";
    vec![
        Case::new("3.1 text with RSV=1", End::Close(1002)).send(rsv(text(hi), 1)),
        Case::new(
            "3.2 text, then text with RSV=2, then ping",
            End::Close(1002),
        )
        .send(cat([text(hi), rsv(text(hi), 2), ping(b"")]))
        .expect(TEXT, hi),
        Case::new("3.3 same with RSV=3, paced", End::Close(1002))
            .send(text(hi))
            .expect(TEXT, hi)
            .pause(20)
            .send(rsv(text(hi), 3))
            .pause(20)
            .send(ping(b"")),
        Case::new(
            "3.4 same with RSV=4, written one byte at a time",
            End::Close(1002),
        )
        .chop(cat([text(hi), rsv(text(hi), 4), ping(b"")]), 1, 0)
        .expect(TEXT, hi),
        Case::new("3.5 binary with RSV=5", End::Close(1002)).send(rsv(binary(&bytes(8)), 5)),
        Case::new("3.6 ping with RSV=6", End::Close(1002)).send(rsv(ping(hi), 6)),
        Case::new("3.7 close with RSV=7", End::Close(1002)).send(rsv(close(1000, b""), 7)),
        Case::new("3.8 continuation with RSV=4", End::Close(1002)).send(cat([
            frame(false, TEXT, b"he"),
            rsv(frame(true, CONT, b"llo"), 4),
        ])),
    ]
}

// ---------------------------------------------------------------------------
// 4 Reserved opcodes

fn group4() -> Vec<Case> {
    let hi = b"hello";
    let mut v = Vec::new();
    for (sub, ops) in [(1, [3u8, 4, 5, 6, 7]), (2, [11, 12, 13, 14, 15])] {
        let kind = if sub == 1 { "data" } else { "control" };
        for (i, op) in ops.into_iter().enumerate() {
            let name = format!("4.{sub}.{} reserved {kind} opcode {op}", i + 1);
            v.push(match i {
                0 => {
                    Case::new(format!("{name}, empty"), End::Close(1002)).send(frame(true, op, b""))
                }
                1 => Case::new(format!("{name}, with payload"), End::Close(1002)).send(frame(
                    true,
                    op,
                    &bytes(10),
                )),
                2 => Case::new(format!("{name}, between text and ping"), End::Close(1002))
                    .send(cat([text(hi), frame(true, op, b""), ping(b"")]))
                    .expect(TEXT, hi),
                3 => Case::new(
                    format!("{name}, with payload, between text and ping"),
                    End::Close(1002),
                )
                .send(cat([text(hi), frame(true, op, hi), ping(b"")]))
                .expect(TEXT, hi),
                _ => Case::new(
                    format!("{name}, written one byte at a time"),
                    End::Close(1002),
                )
                .chop(cat([text(hi), frame(true, op, hi), ping(b"")]), 1, 0)
                .expect(TEXT, hi),
            });
        }
    }
    v
}

// ---------------------------------------------------------------------------
// 5 Fragmentation

fn group5() -> Vec<Case> {
    let f1 = b"fragment1";
    let f2 = b"fragment2";
    let whole = b"fragment1fragment2";
    let two = |op| cat([frame(false, op, f1), frame(true, CONT, f2)]);
    let with_ping = cat([
        frame(false, TEXT, f1),
        ping(b"in between"),
        frame(true, CONT, f2),
    ]);
    let orphan = cat([frame(true, CONT, f2), text(b"never echoed")]);
    let orphan_open = cat([frame(false, CONT, f1), frame(true, CONT, f2), text(b"x")]);
    let five: Vec<Vec<u8>> = (1..=5).map(|i| format!("part{i}").into_bytes()).collect();
    let five_with_pings = cat([
        frame(false, TEXT, &five[0]),
        frame(false, CONT, &five[1]),
        ping(b"p1"),
        frame(false, CONT, &five[2]),
        frame(false, CONT, &five[3]),
        ping(b"p2"),
        frame(true, CONT, &five[4]),
    ]);
    let five_whole = five.concat();
    vec![
        Case::new("5.1 ping in two fragments", End::Close(1002))
            .send(cat([frame(false, PING, f1), frame(true, CONT, f2)])),
        Case::new("5.2 pong in two fragments", End::Close(1002))
            .send(cat([frame(false, PONG, f1), frame(true, CONT, f2)])),
        Case::new("5.3 text in two fragments", End::Clean)
            .send(two(TEXT))
            .expect(TEXT, whole),
        Case::new("5.4 text in two fragments, 50 ms apart", End::Clean)
            .send(frame(false, TEXT, f1))
            .pause(50)
            .send(frame(true, CONT, f2))
            .expect(TEXT, whole),
        Case::new(
            "5.5 text in two fragments, written one byte at a time",
            End::Clean,
        )
        .chop(two(TEXT), 1, 0)
        .expect(TEXT, whole),
        Case::new("5.6 text in two fragments with a ping between", End::Clean)
            .send(with_ping.clone())
            .expect(PONG, b"in between")
            .expect(TEXT, whole),
        Case::new("5.7 same, frames 50 ms apart", End::Clean)
            .send(frame(false, TEXT, f1))
            .pause(50)
            .send(ping(b"in between"))
            .pause(50)
            .send(frame(true, CONT, f2))
            .expect(PONG, b"in between")
            .expect(TEXT, whole),
        Case::new("5.8 same, written one byte at a time", End::Clean)
            .chop(with_ping, 1, 0)
            .expect(PONG, b"in between")
            .expect(TEXT, whole),
        Case::new("5.9 final continuation without a start", End::Close(1002)).send(orphan.clone()),
        Case::new("5.10 same, 50 ms apart", End::Close(1002))
            .send(frame(true, CONT, f2))
            .pause(50)
            .send(text(b"never echoed")),
        Case::new("5.11 same, written one byte at a time", End::Close(1002)).chop(orphan, 1, 0),
        Case::new(
            "5.12 unfinished continuation without a start",
            End::Close(1002),
        )
        .send(orphan_open.clone()),
        Case::new("5.13 same, 50 ms apart", End::Close(1002))
            .send(frame(false, CONT, f1))
            .pause(50)
            .send(frame(true, CONT, f2)),
        Case::new("5.14 same, written one byte at a time", End::Close(1002)).chop(
            orphan_open,
            1,
            0,
        ),
        Case::new(
            "5.15 a continuation after the message ended",
            End::Close(1002),
        )
        .send(cat([
            frame(false, TEXT, f1),
            frame(true, CONT, f2),
            frame(false, CONT, b"fragment3"),
            frame(true, CONT, b"fragment4"),
        ]))
        .expect(TEXT, whole),
        Case::new(
            "5.16 continuation, then a new message, twice",
            End::Close(1002),
        )
        .send(cat([
            frame(false, CONT, f1),
            frame(false, TEXT, f2),
            frame(true, CONT, b"3"),
            frame(false, CONT, f1),
            frame(false, TEXT, f2),
            frame(true, CONT, b"3"),
        ])),
        Case::new(
            "5.17 final continuation, then a new message, twice",
            End::Close(1002),
        )
        .send(cat([
            frame(true, CONT, f1),
            frame(false, TEXT, f2),
            frame(true, CONT, b"3"),
        ])),
        Case::new(
            "5.18 a second text start inside a message",
            End::Close(1002),
        )
        .send(cat([frame(false, TEXT, f1), frame(true, TEXT, f2)])),
        Case::new(
            "5.19 five fragments with two pings between, paced",
            End::Clean,
        )
        .send(frame(false, TEXT, &five[0]))
        .pause(20)
        .send(frame(false, CONT, &five[1]))
        .pause(20)
        .send(ping(b"p1"))
        .expect(PONG, b"p1")
        .send(frame(false, CONT, &five[2]))
        .pause(20)
        .send(frame(false, CONT, &five[3]))
        .pause(20)
        .send(ping(b"p2"))
        .expect(PONG, b"p2")
        .send(frame(true, CONT, &five[4]))
        .expect(TEXT, &five_whole),
        Case::new("5.20 same, written one byte at a time", End::Clean)
            .chop(five_with_pings, 1, 0)
            .expect(PONG, b"p1")
            .expect(PONG, b"p2")
            .expect(TEXT, &five_whole),
        Case::new("5.21 binary in two fragments", End::Clean)
            .send(two(BINARY))
            .expect(BINARY, whole),
        Case::new(
            "5.22 binary in two fragments with a ping between",
            End::Clean,
        )
        .send(cat([
            frame(false, BINARY, f1),
            ping(b"x"),
            frame(true, CONT, f2),
        ]))
        .expect(PONG, b"x")
        .expect(BINARY, whole),
        Case::new("5.23 text of empty fragments only", End::Clean)
            .send(cat([
                frame(false, TEXT, b""),
                frame(false, CONT, b""),
                frame(true, CONT, b""),
            ]))
            .expect(TEXT, b""),
        Case::new("5.24 text with empty first and last fragments", End::Clean)
            .send(cat([
                frame(false, TEXT, b""),
                frame(false, CONT, f1),
                frame(true, CONT, b""),
            ]))
            .expect(TEXT, f1),
        Case::new("5.25 binary start inside a text message", End::Close(1002))
            .send(cat([frame(false, TEXT, f1), frame(true, BINARY, f2)])),
        Case::new("5.26 a fragmented close", End::Close(1002)).send(cat([
            frame(false, CLOSE, &[0x03, 0xe8]),
            frame(true, CONT, b""),
        ])),
        Case::new(
            "5.27 a close between fragments ends the session",
            End::Close(1000),
        )
        .send(cat([frame(false, TEXT, f1), close(1000, b"")])),
        Case::new("5.28 fragments over the 64 KiB limit", End::Close(1009)).send(cat([
            frame(false, BINARY, &bytes(40_000)),
            frame(false, CONT, &bytes(20_000)),
            frame_prefix(CONT, &bytes(10_000), 10),
        ])),
    ]
}

// ---------------------------------------------------------------------------
// 6 UTF-8

/// Samples that are valid UTF-8, with what they show.
fn valid_utf8() -> Vec<(&'static str, Vec<u8>)> {
    let h = |s: &[u8]| s.to_vec();
    vec![
        ("ASCII", h(b"plain ascii, room 42")),
        ("two-byte characters", "é ß ñ Ω".into()),
        ("three-byte characters", "€ ✓ 日本".into()),
        ("four-byte characters", "𝄞 😀 𐍈".into()),
        ("a mixed sentence", multibyte(60)),
        ("U+0000", h(&[0x00])),
        ("U+007F, last one-byte", h(&[0x7f])),
        ("U+0080, first two-byte", h(&[0xc2, 0x80])),
        ("U+07FF, last two-byte", h(&[0xdf, 0xbf])),
        ("U+0800, first three-byte", h(&[0xe0, 0xa0, 0x80])),
        ("U+D7FF, just below the surrogates", h(&[0xed, 0x9f, 0xbf])),
        ("U+E000, just above the surrogates", h(&[0xee, 0x80, 0x80])),
        ("U+FEFF, byte order mark", h(&[0xef, 0xbb, 0xbf])),
        ("U+FFFD, replacement character", h(&[0xef, 0xbf, 0xbd])),
        ("U+FFFE, noncharacter", h(&[0xef, 0xbf, 0xbe])),
        ("U+FFFF, last three-byte", h(&[0xef, 0xbf, 0xbf])),
        ("U+10000, first four-byte", h(&[0xf0, 0x90, 0x80, 0x80])),
        ("U+1FFFE, noncharacter", h(&[0xf0, 0x9f, 0xbf, 0xbe])),
        ("U+10FFFF, last code point", h(&[0xf4, 0x8f, 0xbf, 0xbf])),
        ("every boundary in a row", {
            let mut v = Vec::new();
            for c in [
                '\u{7f}',
                '\u{80}',
                '\u{7ff}',
                '\u{800}',
                '\u{ffff}',
                '\u{10000}',
                '\u{10ffff}',
            ] {
                v.extend_from_slice(c.to_string().as_bytes());
            }
            v
        }),
    ]
}

/// Samples that are not UTF-8, with why.
fn invalid_utf8() -> Vec<(&'static str, Vec<u8>)> {
    let h = |s: &[u8]| s.to_vec();
    let mut v = vec![
        (
            "U+110000, above the last code point",
            h(&[0xf4, 0x90, 0x80, 0x80]),
        ),
        (
            "U+1FFFFF, largest four-byte form",
            h(&[0xf7, 0xbf, 0xbf, 0xbf]),
        ),
        ("a five-byte form", h(&[0xf8, 0x88, 0x80, 0x80, 0x80])),
        ("largest five-byte form", h(&[0xfb, 0xbf, 0xbf, 0xbf, 0xbf])),
        ("a six-byte form", h(&[0xfc, 0x84, 0x80, 0x80, 0x80, 0x80])),
        (
            "largest six-byte form",
            h(&[0xfd, 0xbf, 0xbf, 0xbf, 0xbf, 0xbf]),
        ),
        ("a lone continuation byte 0x80", h(&[0x80])),
        ("a lone continuation byte 0xBF", h(&[0xbf])),
        ("two continuation bytes", h(&[0x80, 0xbf])),
        ("three continuation bytes after ASCII", h(b"ok\x80\xbf\x80")),
        ("every continuation byte", (0x80..=0xbf).collect()),
        ("two-byte lead 0xC2 then a space", h(&[0xc2, 0x20])),
        ("two-byte lead 0xDF then a space", h(&[0xdf, 0x20])),
        ("three-byte lead 0xE0 then a space", h(&[0xe0, 0x20])),
        ("three-byte lead 0xEF then a space", h(&[0xef, 0x20])),
        ("four-byte lead 0xF0 then a space", h(&[0xf0, 0x20])),
        ("four-byte lead 0xF4 then a space", h(&[0xf4, 0x20])),
        ("0xF5, never a lead", h(&[0xf5, 0x80, 0x80, 0x80])),
        (
            "two-byte character missing its last byte, at the end",
            h(b"ab\xc3"),
        ),
        (
            "three-byte character missing its last byte, at the end",
            h(&[0xe2, 0x82]),
        ),
        (
            "four-byte character missing its last byte, at the end",
            h(&[0xf0, 0x9f, 0x98]),
        ),
        (
            "three-byte character missing its last byte, then ASCII",
            h(&[0xe2, 0x82, b'A']),
        ),
        (
            "four-byte character missing two bytes, then ASCII",
            h(&[0xf0, 0x9f, b'x', b'y']),
        ),
        (
            "truncated characters back to back",
            h(&[0xc3, 0xe2, 0x82, 0xf0, 0x9f, 0x98]),
        ),
        ("byte 0xFE", h(&[0xfe])),
        ("byte 0xFF", h(&[0xff])),
        ("bytes 0xFE 0xFE 0xFF 0xFF", h(&[0xfe, 0xfe, 0xff, 0xff])),
        ("'/' in two bytes (overlong)", h(&[0xc0, 0xaf])),
        ("'/' in three bytes (overlong)", h(&[0xe0, 0x80, 0xaf])),
        ("'/' in four bytes (overlong)", h(&[0xf0, 0x80, 0x80, 0xaf])),
        ("largest overlong two-byte", h(&[0xc1, 0xbf])),
        ("largest overlong three-byte", h(&[0xe0, 0x9f, 0xbf])),
        ("largest overlong four-byte", h(&[0xf0, 0x8f, 0xbf, 0xbf])),
        ("NUL in two bytes (overlong)", h(&[0xc0, 0x80])),
        ("NUL in three bytes (overlong)", h(&[0xe0, 0x80, 0x80])),
        ("NUL in four bytes (overlong)", h(&[0xf0, 0x80, 0x80, 0x80])),
        ("surrogate U+D800", h(&[0xed, 0xa0, 0x80])),
        ("surrogate U+DB7F", h(&[0xed, 0xad, 0xbf])),
        ("surrogate U+DB80", h(&[0xed, 0xae, 0x80])),
        ("surrogate U+DBFF", h(&[0xed, 0xaf, 0xbf])),
        ("surrogate U+DC00", h(&[0xed, 0xb0, 0x80])),
        ("surrogate U+DF80", h(&[0xed, 0xbe, 0x80])),
        ("surrogate U+DFFF", h(&[0xed, 0xbf, 0xbf])),
        (
            "surrogate pair U+D800 U+DC00",
            h(&[0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80]),
        ),
        (
            "surrogate pair U+DBFF U+DFFF",
            h(&[0xed, 0xaf, 0xbf, 0xed, 0xbf, 0xbf]),
        ),
    ];
    // Valid text with one bad byte in the middle of it.
    let mut middle = multibyte(40);
    middle.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xff, 0xce, 0xbc]);
    middle.extend(multibyte(40));
    v.push(("0xFF inside otherwise valid text", middle));
    v
}

/// The shortest prefix of `s` that no continuation can make valid: where a
/// fail-fast reader must stop.
fn fail_point(s: &[u8]) -> Option<usize> {
    (1..=s.len())
        .find(|&p| matches!(std::str::from_utf8(&s[..p]), Err(e) if e.error_len().is_some()))
}

fn group6() -> Vec<Case> {
    let mut v = vec![
        Case::new("6.1.1 empty text", End::Clean).echo(TEXT, b""),
        Case::new("6.1.2 empty text in three empty fragments", End::Clean)
            .send(cat([
                frame(false, TEXT, b""),
                frame(false, CONT, b""),
                frame(true, CONT, b""),
            ]))
            .expect(TEXT, b""),
    ];
    let s = multibyte(300);
    v.push(Case::new("6.2.1 valid text, one frame", End::Clean).echo(TEXT, &s));
    v.push(
        Case::new(
            "6.2.2 valid text, fragments cut at every character",
            End::Clean,
        )
        .send({
            let st = std::str::from_utf8(&s).unwrap();
            let sizes: Vec<usize> = st.chars().map(char::len_utf8).collect();
            fragmented(TEXT, &s, &sizes)
        })
        .expect(TEXT, &s),
    );
    v.push(
        Case::new("6.2.3 valid text, one-byte fragments", End::Clean)
            .send(fragmented(TEXT, &s, &[1]))
            .expect(TEXT, &s),
    );
    v.push(
        Case::new(
            "6.2.4 valid text, one frame written one byte at a time",
            End::Clean,
        )
        .chop(text(&s), 1, 0)
        .expect(TEXT, &s),
    );
    // 6.3: invalid text across fragments.
    let mut bad = multibyte(30);
    bad.extend_from_slice(&[0xed, 0xa0, 0x80]);
    bad.extend(multibyte(30));
    v.push(Case::new("6.3.1 invalid text, one frame", End::Close(1007)).send(text(&bad)));
    v.push(
        Case::new("6.3.2 invalid text, one-byte fragments", End::Close(1007)).send(fragmented(
            TEXT,
            &bad,
            &[1],
        )),
    );
    // 6.4: fail fast. The valid start is sent, then the bad part, and the
    // rest of the message never: the close must come before it.
    let good = multibyte(40);
    let above_max = [0xf4u8, 0x90, 0x80, 0x80];
    v.push(
        Case::new(
            "6.4.1 fail fast: bad fragment after a good one",
            End::Close(1007),
        )
        .send(frame(false, TEXT, &good))
        .pause(20)
        .send(frame(false, CONT, &above_max)),
    );
    v.push(
        Case::new(
            "6.4.2 fail fast: a character split across fragments goes bad",
            End::Close(1007),
        )
        .send(frame(false, TEXT, &[&good[..], &above_max[..1]].concat()))
        .pause(20)
        .send(frame(false, CONT, &above_max[1..])),
    );
    let whole: Vec<u8> = [&good[..], &above_max[..], &multibyte(40)[..]].concat();
    v.push(
        Case::new("6.4.3 fail fast inside one frame", End::Close(1007))
            .send(frame_prefix(TEXT, &whole, good.len()))
            .pause(20)
            .send({
                let f = frame(true, TEXT, &whole);
                let head = f.len() - whole.len();
                f[head + good.len()..head + good.len() + 4].to_vec()
            }),
    );
    v.push(
        Case::new(
            "6.4.4 fail fast inside one frame, bad bytes at once",
            End::Close(1007),
        )
        .send(frame_prefix(TEXT, &whole, good.len() + 2)),
    );
    for (i, (name, s)) in valid_utf8().into_iter().enumerate() {
        let n = i + 1;
        v.push(Case::new(format!("6.5.{n} valid: {name}, one frame"), End::Clean).echo(TEXT, &s));
        v.push(
            Case::new(
                format!("6.6.{n} valid: {name}, one-byte fragments"),
                End::Clean,
            )
            .send(fragmented(TEXT, &s, &[1]))
            .expect(TEXT, &s),
        );
        v.push(
            Case::new(
                format!("6.7.{n} valid: {name}, one frame written one byte at a time"),
                End::Clean,
            )
            .chop(text(&s), 1, 0)
            .expect(TEXT, &s),
        );
    }
    for (i, (name, s)) in invalid_utf8().into_iter().enumerate() {
        let n = i + 1;
        v.push(
            Case::new(
                format!("6.8.{n} invalid: {name}, one frame"),
                End::Close(1007),
            )
            .send(text(&s)),
        );
        v.push(
            Case::new(
                format!("6.9.{n} invalid: {name}, one-byte fragments"),
                End::Close(1007),
            )
            .send(fragmented(TEXT, &s, &[1])),
        );
        if let Some(p) = fail_point(&s) {
            v.push(
                Case::new(
                    format!("6.10.{n} invalid: {name}, fail fast on an unfinished message"),
                    End::Close(1007),
                )
                .send(frame(false, TEXT, &s[..p])),
            );
            // The frame announces more than is sent: only a reader that
            // checks what it has so far can refuse it.
            let longer = [&s[..], &ascii(16)[..]].concat();
            v.push(
                Case::new(
                    format!("6.11.{n} invalid: {name}, fail fast inside an unfinished frame"),
                    End::Close(1007),
                )
                .send(frame_prefix(TEXT, &longer, p)),
            );
        }
    }
    v
}

// ---------------------------------------------------------------------------
// 7 Close handling

fn group7() -> Vec<Case> {
    let hi = b"hello";
    let mut v = vec![
        Case::new("7.1.1 text, then close", End::Close(1000))
            .send(cat([text(hi), close(1000, b"")]))
            .expect(TEXT, hi),
        Case::new("7.1.2 close, then close again", End::Close(1000))
            .send(cat([close(1000, b""), close(1000, b"")])),
        Case::new("7.1.3 close, then ping: no pong", End::Close(1000))
            .send(cat([close(1000, b""), ping(b"late")])),
        Case::new("7.1.4 close, then text: no echo", End::Close(1000))
            .send(cat([close(1000, b""), text(b"late")])),
        Case::new(
            "7.1.5 unfinished text, close, then its end: no echo",
            End::Close(1000),
        )
        .send(cat([
            frame(false, TEXT, b"frag"),
            close(1000, b""),
            frame(true, CONT, b"ment"),
        ])),
        Case::new("7.1.6 large text, ping, close", End::Close(1000))
            .send(cat([text(&ascii(60_000)), ping(b"p"), close(1000, b"")]))
            .expect_any_order(vec![(TEXT, ascii(60_000)), (PONG, b"p".to_vec())]),
        Case::new("7.3.1 close, empty payload", End::Close(1000)).send(frame(true, CLOSE, b"")),
        Case::new("7.3.2 close, one-byte payload", End::Close(1002))
            .send(frame(true, CLOSE, b"\x03")),
        Case::new("7.3.3 close 1000, no reason", End::Close(1000)).send(close(1000, b"")),
        Case::new("7.3.4 close 1000 with a reason", End::Close(1000)).send(close(1000, b"bye now")),
        Case::new("7.3.5 close 1000 with a 123-byte reason", End::Close(1000))
            .send(close(1000, &ascii(123))),
        Case::new(
            "7.3.6 close 1000 with a 124-byte reason (126-byte payload)",
            End::Close(1002),
        )
        .send(close(1000, &ascii(124))),
        Case::new("7.5.1 close reason not UTF-8", End::Close(1007))
            .send(close(1000, &[b'o', b'k', 0xce, 0xba, 0xed, 0xa0, 0x80])),
        Case::new(
            "7.5.2 close reason with a truncated character",
            End::Close(1007),
        )
        .send(close(1000, &[0xe2, 0x82])),
        Case::new("7.5.3 close reason in multi-byte UTF-8", End::Close(1000))
            .send(close(1000, "Tschüss ✓ 𝄞".as_bytes())),
    ];
    let valid = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    for (i, code) in valid.into_iter().enumerate() {
        v.push(
            Case::new(
                format!("7.7.{} valid close code {code} is echoed", i + 1),
                End::Close(code),
            )
            .send(close(code, b"")),
        );
    }
    let invalid = [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for (i, code) in invalid.into_iter().enumerate() {
        v.push(
            Case::new(
                format!("7.9.{} invalid close code {code}", i + 1),
                End::Close(1002),
            )
            .send(close(code, b"")),
        );
    }
    v
}

// ---------------------------------------------------------------------------
// 9 Limits (1 MiB messages here)

fn group9() -> Vec<Case> {
    let mut v = Vec::new();
    for (sub, op, name, make) in [
        (1, TEXT, "text", ascii as fn(usize) -> Vec<u8>),
        (2, BINARY, "binary", bytes),
    ] {
        for (i, n) in [64 * 1024, 256 * 1024, MIB].into_iter().enumerate() {
            let p = make(n);
            v.push(
                Case::new(
                    format!("9.{sub}.{} {name}, {} KiB", i + 1, n / 1024),
                    End::Clean,
                )
                .echo(op, &p),
            );
        }
        v.push(
            Case::new(
                format!("9.{sub}.4 {name}, 1 MiB + 1 byte: refused at its header"),
                End::Close(1009),
            )
            .send(frame_prefix(op, &make(MIB + 1), 1000)),
        );
        v.push(
            Case::new(
                format!("9.{sub}.5 {name}, 1 MiB + 1 byte sent whole"),
                End::Close(1009),
            )
            .send(frame(true, op, &make(MIB + 1))),
        );
        v.push(
            Case::new(
                format!("9.{sub}.6 {name} fragments adding up to 1 MiB + 1 byte"),
                End::Close(1009),
            )
            .send(fragmented(op, &make(MIB + 1), &[MIB / 2])),
        );
    }
    for (sub, op, name, make) in [
        (3, TEXT, "text", multibyte as fn(usize) -> Vec<u8>),
        (4, BINARY, "binary", bytes),
    ] {
        let p = make(MIB);
        for (i, size) in [64, 256, 1024, 4096, 16 * 1024, 64 * 1024, 256 * 1024, MIB]
            .into_iter()
            .enumerate()
        {
            v.push(
                Case::new(
                    format!(
                        "9.{sub}.{} {name}, 1 MiB in fragments of {size} bytes",
                        i + 1
                    ),
                    End::Clean,
                )
                .send(fragmented(op, &p, &[size]))
                .expect(op, &p),
            );
        }
    }
    for (sub, op, name, make) in [
        (5, TEXT, "text", multibyte as fn(usize) -> Vec<u8>),
        (6, BINARY, "binary", bytes),
    ] {
        let p = make(MIB);
        for (i, piece) in [64, 128, 256, 512, 1024, 2048].into_iter().enumerate() {
            v.push(
                Case::new(
                    format!(
                        "9.{sub}.{} {name}, 1 MiB written in {piece}-byte pieces",
                        i + 1
                    ),
                    End::Clean,
                )
                .chop(frame(true, op, &p), piece, 0)
                .expect(op, &p),
            );
        }
    }
    for (sub, op, name, make) in [
        (7, TEXT, "text", ascii as fn(usize) -> Vec<u8>),
        (8, BINARY, "binary", bytes),
    ] {
        for (i, size) in [0, 16, 64, 256, 1024, 4096].into_iter().enumerate() {
            let p = make(size);
            let mut c = Case::new(
                format!("9.{sub}.{} 1000 {name} messages of {size} bytes", i + 1),
                End::Clean,
            )
            .send((0..1000).flat_map(|_| frame(true, op, &p)).collect());
            for _ in 0..1000 {
                c = c.expect(op, &p);
            }
            v.push(c);
        }
    }
    v
}

// ---------------------------------------------------------------------------
// 10 Any fragmentation

fn group10() -> Vec<Case> {
    let mut v = Vec::new();
    // A small deterministic generator for irregular fragment sizes.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut irregular = |max: usize| -> Vec<usize> {
        (0..64)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % max as u64) as usize
            })
            .chain([1])
            .collect()
    };
    let t = multibyte(65536);
    let b = bytes(65536);
    let mut n = 0;
    for (op, name, p) in [(TEXT, "text", &t), (BINARY, "binary", &b)] {
        let mut plans: Vec<(String, Vec<usize>)> = [1300, 1, 2, 3, 7, 125, 126, 4096, 65535]
            .into_iter()
            .map(|s| (format!("fragments of {s} bytes"), vec![s]))
            .collect();
        plans.push(("irregular fragments up to 300 bytes".into(), irregular(300)));
        plans.push((
            "irregular fragments up to 5000 bytes".into(),
            irregular(5000),
        ));
        plans.push((
            "empty fragments between 1000-byte ones".into(),
            vec![1000, 0, 0],
        ));
        for (what, sizes) in plans {
            n += 1;
            v.push(
                Case::new(
                    format!("10.1.{n} {name}, {} bytes, {what}", p.len()),
                    End::Clean,
                )
                .send(fragmented(op, p, &sizes))
                .expect(op, p),
            );
        }
    }
    // Pings at every fragment boundary: each answered, the message intact.
    let small = multibyte(200);
    let chunks: Vec<&[u8]> = small.chunks(7).collect();
    let mut frames = Vec::new();
    let mut pongs = Vec::new();
    for (i, part) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        frames.extend(frame(last, if i == 0 { TEXT } else { CONT }, part));
        if !last {
            let label = format!("after {i}").into_bytes();
            frames.extend(ping(&label));
            pongs.push(label);
        }
    }
    let mut c = Case::new(
        "10.2.1 text in 7-byte fragments with a ping after each",
        End::Clean,
    )
    .send(frames);
    for p in &pongs {
        c = c.expect(PONG, p);
    }
    v.push(c.expect(TEXT, &small));
    v
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn group_1_framing() {
    run_group("1 (framing)", ECHO, group1()).await;
}

#[tokio::test]
async fn group_2_ping_pong() {
    run_group("2 (ping/pong)", ECHO, group2()).await;
}

#[tokio::test]
async fn group_3_reserved_bits() {
    run_group("3 (reserved bits)", ECHO, group3()).await;
}

#[tokio::test]
async fn group_4_reserved_opcodes() {
    run_group("4 (reserved opcodes)", ECHO, group4()).await;
}

#[tokio::test]
async fn group_5_fragmentation() {
    run_group("5 (fragmentation)", ECHO, group5()).await;
}

#[tokio::test]
async fn group_6_utf8() {
    run_group("6 (UTF-8)", ECHO, group6()).await;
}

#[tokio::test]
async fn group_7_close() {
    run_group("7 (close handling)", ECHO, group7()).await;
}

#[tokio::test]
async fn group_9_limits() {
    run_group("9 (limits)", ECHO_1MIB, group9()).await;
}

#[tokio::test]
async fn group_10_any_fragmentation() {
    run_group("10 (any fragmentation)", ECHO, group10()).await;
}

#[test]
fn fail_points_are_where_a_fail_fast_reader_must_stop() {
    assert_eq!(fail_point(&[0xf4, 0x90, 0x80, 0x80]), Some(2));
    assert_eq!(fail_point(&[0xff]), Some(1));
    assert_eq!(fail_point(b"ab\xc3"), None);
    assert_eq!(fail_point(&[0xe2, 0x82, b'A']), Some(3));
}
