//! Arbitrary bytes through the strict client-frame reader, twice: all at
//! once, and cut into arbitrary small pieces as a socket would deliver them.
//!
//! Input layout: two bytes choose the message limit (125 to 4220 bytes, small
//! so the limit is reached often), one byte seeds the piece sizes, the rest
//! is the byte stream from the client.
//!
//! Invariants: no panic; every text message is UTF-8; no message exceeds the
//! limit, nor does what the reader holds of a fragmented one; control
//! payloads fit 125 bytes; a close carries a code a peer may send and a UTF-8
//! reason; every refusal maps to 1002, 1007 or 1009; and both deliveries
//! yield the same messages and the same refusal, so where reads happen to
//! end never changes what the reader decides.
#![no_main]

use bytes::BytesMut;
use gateway::ws::{FrameError, FrameReader, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = 125 + usize::from(u16::from_le_bytes([data[0], data[1]])) % 4096;
    let seed = data[2];
    let stream = &data[3..];

    let whole = read(stream, limit, std::iter::repeat(usize::MAX));
    let mut x = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let pieces = std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // Mostly tiny pieces (headers and characters cut anywhere), now and
        // then a larger one.
        Some(if x & 0x700 == 0 {
            1 + (x % 600) as usize
        } else {
            1 + (x % 9) as usize
        })
    });
    let pieced = read(stream, limit, pieces);
    assert_eq!(whole, pieced, "delivery in pieces changed the outcome");
});

/// Feeds `stream` in pieces of the given sizes; returns the messages read
/// and the refusal, if any.
fn read(
    stream: &[u8],
    limit: usize,
    mut pieces: impl Iterator<Item = usize>,
) -> (Vec<Message>, Option<FrameError>) {
    let mut reader = FrameReader::new(limit);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = pieces.next().unwrap().clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let mut hint = 0;
            match reader.next(&mut buf, &mut hint) {
                Ok(Some(m)) => {
                    check(&m, limit);
                    out.push(m);
                }
                Ok(None) => {
                    assert!(hint > 0, "waiting for nothing");
                    break;
                }
                Err(e) => {
                    assert!(matches!(e.close_code(), 1002 | 1007 | 1009), "{e:?}");
                    return (out, Some(e));
                }
            }
            assert!(reader.buffered() <= limit, "holds more than the limit");
        }
    }
    (out, None)
}

fn check(m: &Message, limit: usize) {
    match m {
        Message::Text(t) => {
            assert!(std::str::from_utf8(t).is_ok(), "text that is not UTF-8");
            assert!(t.len() <= limit, "text over the limit");
        }
        Message::Binary(b) => assert!(b.len() <= limit, "binary over the limit"),
        Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
        Message::Close(None) => {}
        Message::Close(Some((code, reason))) => {
            assert!(
                matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                "close code {code}"
            );
            assert!(reason.len() <= 123);
            assert!(std::str::from_utf8(reason).is_ok());
        }
    }
}
