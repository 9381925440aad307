//! The end of a node-initiated close: once the node's close frame is
//! written, the connection stays open only until the client answers with
//! its own Close (or ends the stream), and at most a grace period for a
//! client that never does (RFC 6455 §7.1.1: a server that has sent and
//! received a Close closes the TCP connection at once).

use super::frame::{FrameReader, Message};
use bytes::BytesMut;
use std::io;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Smallest room made in the buffer for one read.
const READ_CHUNK: usize = 4 * 1024;

/// How the wait for the client's Close ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The client's Close frame came.
    Close,
    /// The client ended the stream (or it failed).
    Ended,
    /// Neither came within the grace period.
    Expired,
}

/// Reads the client's frames after the node's close frame went out,
/// discarding everything but a Close, until a Close, the end of the stream
/// or `grace`. `rbuf` may already hold frames read earlier.
///
/// A frame that cannot be parsed (typically the one that made the node
/// close) drops what is buffered: the next read is parsed from its start,
/// where a client that answers at once puts its Close.
pub async fn await_close(
    stream: &TcpStream,
    rbuf: &mut BytesMut,
    reader: &mut FrameReader,
    grace: Duration,
) -> Answer {
    let deadline = Instant::now() + grace;
    let mut hint = 0;
    loop {
        loop {
            match reader.next(rbuf, &mut hint) {
                Ok(Some(Message::Close(_))) => return Answer::Close,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    rbuf.clear();
                    reader.reset();
                    break;
                }
            }
        }
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Err(_) => return Answer::Expired,
            Ok(Err(_)) => return Answer::Ended,
            Ok(Ok(())) => {}
        }
        rbuf.reserve(hint.clamp(READ_CHUNK, 64 * 1024));
        match stream.try_read_buf(rbuf) {
            Ok(0) => return Answer::Ended,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Answer::Ended,
        }
    }
}
