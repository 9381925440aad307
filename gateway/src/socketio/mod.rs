//! The socket.io front-end: Engine.IO v3/v4 over WebSocket and long-polling,
//! with the Socket.IO protocol (v4/v5) on top.

pub mod engineio;
pub mod packet;
