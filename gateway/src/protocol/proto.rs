//! The `roomcast.v1.proto` subprotocol: one protobuf `ClientFrame` or
//! `ServerFrame` per binary frame, same meaning as the JSON commands.

use super::{Command, CommandError, CommandKind, Data, ServerEvent};
use prost::Message as _;
use roomcast_adapter::StreamPosition;
use roomcast_proto::v1 as pb;

/// Decodes one `ClientFrame`.
pub fn decode(payload: &[u8]) -> Result<Command, CommandError> {
    let frame = pb::ClientFrame::decode(payload)
        .map_err(|e| CommandError::bad_request(0, format!("invalid ClientFrame: {e}")))?;
    let id = frame.id;
    let Some(command) = frame.command else {
        return Err(CommandError::bad_request(
            id,
            "ClientFrame without a command",
        ));
    };
    use pb::client_frame::Command as C;
    let kind = match command {
        C::Connect(c) => CommandKind::Connect {
            token: c.token,
            client: c.client,
        },
        C::Subscribe(s) => CommandKind::Subscribe {
            room: s.room,
            since: s.since.map(|p| StreamPosition {
                epoch: p.epoch,
                offset: p.offset,
            }),
        },
        C::Unsubscribe(u) => CommandKind::Unsubscribe { room: u.room },
        C::Publish(p) => CommandKind::Publish {
            room: p.room,
            event: p.event,
            data: Data {
                bytes: p.data,
                binary: true,
            },
        },
        C::Presence(p) => CommandKind::Presence { room: p.room },
        C::Ping(_) => CommandKind::Ping,
        C::Echo(e) => CommandKind::Echo {
            data: Data {
                bytes: e.data,
                binary: true,
            },
        },
        C::Rpc(r) => CommandKind::Rpc {
            method: r.method,
            data: Data {
                bytes: r.data,
                binary: true,
            },
        },
    };
    Ok(Command { id, kind })
}

fn client(c: &roomcast_adapter::ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        client_id: c.client_id.clone(),
        user: c.user.clone(),
        node: String::new(),
        info: c.info.clone(),
    }
}

/// Encodes one `ServerFrame`.
pub fn encode(id: u64, event: &ServerEvent<'_>) -> Vec<u8> {
    use pb::server_frame::Event as E;
    let event = match event {
        ServerEvent::Connected {
            client_id,
            node,
            ping_interval_ms,
        } => E::Connected(pb::Connected {
            client_id: client_id.to_string(),
            node: node.to_string(),
            ping_interval_ms: *ping_interval_ms,
        }),
        ServerEvent::Subscribed {
            room,
            position,
            recovered,
        } => E::Subscribed(pb::Subscribed {
            room: room.to_string(),
            epoch: position.epoch.clone(),
            offset: position.offset,
            recovered: *recovered,
        }),
        ServerEvent::Unsubscribed { room } => E::Unsubscribed(pb::Unsubscribed {
            room: room.to_string(),
        }),
        ServerEvent::Published { room, offset } => E::Published(pb::Published {
            room: room.to_string(),
            offset: *offset,
        }),
        ServerEvent::Presence { room, clients } => E::Presence(pb::PresenceEvent {
            room: room.to_string(),
            clients: clients.iter().map(client).collect(),
        }),
        ServerEvent::Pong => E::Pong(pb::Pong {}),
        ServerEvent::Echo { data } => E::Echo(pb::Echo {
            data: data.bytes.clone(),
        }),
        ServerEvent::Rpc { data } => E::Rpc(pb::RpcResult {
            data: data.bytes.clone(),
            binary: data.binary,
        }),
        ServerEvent::Message {
            room, publication, ..
        } => E::Message(pb::Message {
            room: room.to_string(),
            event: publication.event.clone(),
            data: publication.data.clone(),
            offset: publication.offset,
            binary: publication.binary,
        }),
        ServerEvent::Join { room, client: c } => E::Join(pb::JoinLeave {
            room: room.to_string(),
            client_id: c.client_id.clone(),
            user: c.user.clone(),
        }),
        ServerEvent::Leave { room, client: c } => E::Leave(pb::JoinLeave {
            room: room.to_string(),
            client_id: c.client_id.clone(),
            user: c.user.clone(),
        }),
        ServerEvent::Error { code, message } => E::Error(pb::Error {
            code: code.as_str().to_string(),
            message: message.to_string(),
        }),
    };
    pb::ServerFrame {
        id,
        event: Some(event),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_subscribe() {
        let bytes = pb::ClientFrame {
            id: 5,
            command: Some(pb::client_frame::Command::Subscribe(pb::SubscribeCommand {
                room: "chat.x".into(),
                since: Some(pb::StreamPosition {
                    epoch: "e".into(),
                    offset: 2,
                }),
            })),
        }
        .encode_to_vec();
        let c = decode(&bytes).unwrap();
        assert_eq!(c.id, 5);
        assert!(
            matches!(c.kind, CommandKind::Subscribe { ref room, since: Some(ref s) } if room == "chat.x" && s.offset == 2)
        );
        assert!(decode(&[0xff, 0xff]).is_err());
        let e = decode(
            &pb::ClientFrame {
                id: 3,
                command: None,
            }
            .encode_to_vec(),
        )
        .unwrap_err();
        assert_eq!(e.id, 3);
    }
}
