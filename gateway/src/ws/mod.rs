//! WebSocket framing as Roomcast speaks it: strict RFC 6455 reading of client
//! frames and shared, pre-built server frames. No I/O here.

pub mod frame;

pub use frame::{FrameError, FrameReader, Message, OpCode};
