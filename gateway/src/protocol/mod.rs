//! Client commands and server events of `roomcast.v1`, in both subprotocols.
//! Decoding and encoding only: no I/O, no clock, so this is fuzzed and tested
//! deterministically.

pub mod json;
pub mod proto;

use bytes::Bytes;
use roomcast_adapter::{ClientInfo, Publication, StreamPosition};

use crate::ws::frame::{self, OpCode};

/// The subprotocol a session negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subprotocol {
    /// `roomcast.v1.json`: text frames of JSON (also the default when the
    /// client offers no subprotocol).
    Json,
    /// `roomcast.v1.proto`: binary frames of protobuf.
    Proto,
    /// socket.io: Engine.IO messages carrying Socket.IO packets. Never
    /// negotiated through `Sec-WebSocket-Protocol`; a dialect of its own so
    /// the hub encodes each publication once per socket.io flavour too.
    SocketIo(crate::socketio::Dialect),
}

impl Subprotocol {
    /// The `Sec-WebSocket-Protocol` token.
    pub fn name(self) -> &'static str {
        match self {
            Self::Json => "roomcast.v1.json",
            Self::Proto => "roomcast.v1.proto",
            Self::SocketIo(_) => "socket.io",
        }
    }

    /// Picks the first offered subprotocol this node speaks. `Ok(None)` when
    /// none was offered; `Err` when only unknown ones were.
    pub fn negotiate<'a>(
        offered: impl Iterator<Item = &'a str>,
    ) -> Result<Option<Self>, UnknownSubprotocols> {
        let mut any = false;
        for token in offered
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            any = true;
            match token {
                "roomcast.v1.json" => return Ok(Some(Self::Json)),
                "roomcast.v1.proto" => return Ok(Some(Self::Proto)),
                _ => {}
            }
        }
        if any {
            Err(UnknownSubprotocols)
        } else {
            Ok(None)
        }
    }

    /// Decodes one client message of this subprotocol (socket.io clients
    /// speak Socket.IO packets instead, decoded by their front-end).
    pub fn decode(self, payload: &[u8]) -> Result<Command, CommandError> {
        match self {
            Self::Json => json::decode(payload),
            Self::Proto => proto::decode(payload),
            Self::SocketIo(_) => Err(CommandError::bad_request(0, "not a roomcast.v1 session")),
        }
    }

    /// Encodes a reply or event into complete server frames.
    pub fn encode(self, id: u64, event: &ServerEvent<'_>) -> Bytes {
        self.encode_for("/", id, event)
    }

    /// Encodes a reply or event for a client in socket.io namespace `nsp`
    /// (only socket.io frames carry it). May be empty: a socket.io reply
    /// that no acknowledgement asked for.
    pub fn encode_for(self, nsp: &str, id: u64, event: &ServerEvent<'_>) -> Bytes {
        match self {
            Self::Json => frame::encode(OpCode::Text, &json::encode(id, event)),
            Self::Proto => frame::encode(OpCode::Binary, &proto::encode(id, event)),
            Self::SocketIo(d) => crate::socketio::encode_event(d, nsp, id, event),
        }
    }
}

/// The client offered subprotocols, none of them ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownSubprotocols;

/// Error codes of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The command could not be understood.
    BadRequest,
    /// Authentication is missing or invalid.
    Unauthorized,
    /// Not allowed for this client.
    Forbidden,
    /// Nothing by that name.
    NotFound,
    /// Rate limited.
    TooManyRequests,
    /// Too large.
    PayloadTooLarge,
    /// Our fault.
    Internal,
}

impl ErrorCode {
    /// Every code, for metrics that have a series per code.
    pub const ALL: [ErrorCode; 7] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::TooManyRequests,
        Self::PayloadTooLarge,
        Self::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::TooManyRequests => "too_many_requests",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Internal => "internal",
        }
    }
}

/// A command that could not be decoded, with whatever id could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command's id when it could be read (0 otherwise).
    pub id: u64,
    /// What to answer.
    pub code: ErrorCode,
    /// Why, for humans.
    pub message: String,
}

impl CommandError {
    pub(crate) fn bad_request(id: u64, message: impl Into<String>) -> Self {
        Self {
            id,
            code: ErrorCode::BadRequest,
            message: message.into(),
        }
    }
}

/// A decoded client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Echoed in the reply; 0 means no success reply.
    pub id: u64,
    /// What the client asks.
    pub kind: CommandKind,
}

/// Payload carried by publish and echo: JSON text, or opaque bytes on the
/// proto subprotocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The bytes.
    pub bytes: Bytes,
    /// Opaque bytes rather than JSON.
    pub binary: bool,
}

/// The commands of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandKind {
    /// Authenticate and describe the client.
    Connect {
        /// JWT, empty when none.
        token: String,
        /// Free text naming the client software.
        client: String,
    },
    /// Join a room, optionally recovering from a position.
    Subscribe {
        /// Room name (not yet validated).
        room: String,
        /// Recover what came after this.
        since: Option<StreamPosition>,
    },
    /// Leave a room.
    Unsubscribe {
        /// Room name.
        room: String,
    },
    /// Publish to a room.
    Publish {
        /// Room name.
        room: String,
        /// Event name, empty when none.
        event: String,
        /// Payload.
        data: Data,
    },
    /// Who is in a room.
    Presence {
        /// Room name.
        room: String,
    },
    /// Application-level ping.
    Ping,
    /// Echo the data back.
    Echo {
        /// Payload.
        data: Data,
    },
    /// Call a method of the application's backend.
    Rpc {
        /// The method (not yet validated).
        method: String,
        /// Payload, handed to the backend.
        data: Data,
    },
}

/// Everything the server sends.
#[derive(Debug, Clone)]
pub enum ServerEvent<'a> {
    /// Reply to connect.
    Connected {
        /// Session's client id.
        client_id: &'a str,
        /// Node id.
        node: &'a str,
        /// Heartbeat interval in milliseconds.
        ping_interval_ms: u64,
    },
    /// Reply to subscribe.
    Subscribed {
        /// Room.
        room: &'a str,
        /// The room's position now.
        position: &'a StreamPosition,
        /// Whether everything after `since` follows.
        recovered: bool,
    },
    /// Reply to unsubscribe.
    Unsubscribed {
        /// Room.
        room: &'a str,
    },
    /// Reply to publish.
    Published {
        /// Room.
        room: &'a str,
        /// Offset of the publication.
        offset: u64,
    },
    /// Reply to presence.
    Presence {
        /// Room.
        room: &'a str,
        /// Clients in the room.
        clients: &'a [ClientInfo],
    },
    /// Reply to ping.
    Pong,
    /// Reply to echo.
    Echo {
        /// The data sent.
        data: &'a Data,
    },
    /// Reply to rpc: the backend's answer.
    Rpc {
        /// What the backend answered.
        data: &'a Data,
    },
    /// A publication.
    Message {
        /// Room.
        room: &'a str,
        /// The room's epoch when it was published (socket.io recovery
        /// offsets carry it).
        epoch: &'a str,
        /// The publication.
        publication: &'a Publication,
    },
    /// Someone joined.
    Join {
        /// Room.
        room: &'a str,
        /// Who.
        client: &'a ClientInfo,
    },
    /// Someone left.
    Leave {
        /// Room.
        room: &'a str,
        /// Who.
        client: &'a ClientInfo,
    },
    /// An error.
    Error {
        /// Code.
        code: ErrorCode,
        /// Human text.
        message: &'a str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_contract() {
        assert_eq!(Subprotocol::negotiate([].into_iter()), Ok(None));
        assert_eq!(
            Subprotocol::negotiate(["foo, roomcast.v1.proto"].into_iter()),
            Ok(Some(Subprotocol::Proto))
        );
        assert_eq!(
            Subprotocol::negotiate(["roomcast.v1.json", "roomcast.v1.proto"].into_iter()),
            Ok(Some(Subprotocol::Json))
        );
        assert_eq!(
            Subprotocol::negotiate(["chat, superchat"].into_iter()),
            Err(UnknownSubprotocols)
        );
    }
}
