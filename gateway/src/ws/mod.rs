//! WebSocket framing as Roomcast speaks it: strict RFC 6455 reading of client
//! frames and shared, pre-built server frames; and the wait for a client's
//! Close at the end of a node-initiated close.

pub mod close;
pub mod frame;

pub use frame::{FrameError, FrameReader, Message, OpCode};
