//! Conversions between the adapter's values and the protobuf messages that
//! cross Redis (`roomcast.v1` `RoomEnvelope`, `NodeSurvey`, `NodeInfo`, ...).

use bytes::Bytes;
use prost::Message;
use roomcast_adapter::{
    AdapterError, ClientInfo, NodeInfo, NodeReply, NodeRequest, PresenceEvent, Publication,
    RoomEvent, Target,
};
use roomcast_proto::v1 as pb;
use std::sync::Arc;

fn client_to_pb(c: &ClientInfo) -> pb::ClientInfo {
    pb::ClientInfo {
        client_id: c.client_id.clone(),
        user: c.user.clone(),
        node: c.node.clone(),
        info: c.info.clone(),
    }
}

fn client_from_pb(c: pb::ClientInfo) -> ClientInfo {
    ClientInfo {
        client_id: c.client_id,
        user: c.user,
        node: c.node,
        info: c.info,
    }
}

/// The pieces of a publication's envelope that the publish script stitches
/// together around the offset it assigns.
pub(crate) struct EnvelopeParts {
    /// `RoomEnvelope.room`, encoded.
    pub room_field: Vec<u8>,
    /// `Publication` without `offset`, encoded.
    pub publication: Vec<u8>,
    /// `RoomPublication.exclude_client_id`, encoded (empty when unset).
    pub exclude_field: Vec<u8>,
}

/// Splits a publication into [`EnvelopeParts`].
pub(crate) fn envelope_parts(
    room: &str,
    publication: pb::Publication,
    exclude_client_id: &str,
) -> EnvelopeParts {
    EnvelopeParts {
        room_field: pb::RoomEnvelope {
            room: room.to_owned(),
            kind: None,
        }
        .encode_to_vec(),
        publication: publication.encode_to_vec(),
        exclude_field: pb::RoomPublication {
            publication: None,
            epoch: String::new(),
            exclude_client_id: exclude_client_id.to_owned(),
        }
        .encode_to_vec(),
    }
}

/// A whole envelope for a publication (rooms without history, where the node
/// knows everything up front).
pub(crate) fn publication_envelope(
    room: &str,
    publication: pb::Publication,
    epoch: &str,
    exclude_client_id: &str,
) -> Vec<u8> {
    pb::RoomEnvelope {
        room: room.to_owned(),
        kind: Some(pb::room_envelope::Kind::Publication(pb::RoomPublication {
            publication: Some(publication),
            epoch: epoch.to_owned(),
            exclude_client_id: exclude_client_id.to_owned(),
        })),
    }
    .encode_to_vec()
}

/// A whole envelope for a join or leave.
pub(crate) fn presence_envelope(room: &str, event: &PresenceEvent) -> Vec<u8> {
    let kind = match event {
        PresenceEvent::Join(c) => pb::room_envelope::Kind::Join(client_to_pb(c)),
        PresenceEvent::Leave(c) => pb::room_envelope::Kind::Leave(client_to_pb(c)),
    };
    pb::RoomEnvelope {
        room: room.to_owned(),
        kind: Some(kind),
    }
    .encode_to_vec()
}

/// Converts a decoded `Publication`.
pub(crate) fn publication_from_pb(p: pb::Publication) -> Publication {
    Publication {
        offset: p.offset,
        event: p.event,
        data: p.data,
        binary: p.binary,
        time_unix_micros: p.time_unix_micros,
    }
}

/// Decodes a publication kept in history.
pub(crate) fn decode_publication(bytes: &[u8]) -> Result<Publication, AdapterError> {
    pb::Publication::decode(bytes)
        .map(publication_from_pb)
        .map_err(|e| AdapterError::Protocol(format!("undecodable publication in history: {e}")))
}

/// Decodes an envelope into its room, the event, and the publication time
/// (for the lag metric; 0 for presence events).
pub(crate) fn decode_envelope(payload: Bytes) -> Result<(String, RoomEvent, i64), AdapterError> {
    let env = pb::RoomEnvelope::decode(payload)
        .map_err(|e| AdapterError::Protocol(format!("undecodable room envelope: {e}")))?;
    let event = match env.kind {
        Some(pb::room_envelope::Kind::Publication(rp)) => {
            let p = rp.publication.ok_or_else(|| {
                AdapterError::Protocol("room envelope without its publication".into())
            })?;
            let time = p.time_unix_micros;
            return Ok((
                env.room,
                RoomEvent::Publication {
                    publication: Arc::new(publication_from_pb(p)),
                    epoch: rp.epoch,
                    exclude_client_id: rp.exclude_client_id,
                },
                time,
            ));
        }
        Some(pb::room_envelope::Kind::Join(c)) => PresenceEvent::Join(client_from_pb(c)),
        Some(pb::room_envelope::Kind::Leave(c)) => PresenceEvent::Leave(client_from_pb(c)),
        None => return Err(AdapterError::Protocol("empty room envelope".into())),
    };
    Ok((env.room, RoomEvent::Presence(event), 0))
}

fn target_to_pb(t: &Target) -> pb::SurveyTarget {
    let who = match t {
        Target::Client(c) => pb::survey_target::Who::ClientId(c.clone()),
        Target::User(u) => pb::survey_target::Who::User(u.clone()),
    };
    pb::SurveyTarget { who: Some(who) }
}

fn target_from_pb(t: Option<pb::SurveyTarget>) -> Result<Target, AdapterError> {
    match t.and_then(|t| t.who) {
        Some(pb::survey_target::Who::ClientId(c)) => Ok(Target::Client(c)),
        Some(pb::survey_target::Who::User(u)) => Ok(Target::User(u)),
        None => Err(AdapterError::Protocol("survey without a target".into())),
    }
}

/// Encodes a survey.
pub(crate) fn encode_survey(id: u64, reply_channel: &str, request: &NodeRequest) -> Vec<u8> {
    use pb::node_survey::Request as R;
    let request = match request {
        NodeRequest::Presence { room } => R::PresenceRoom(room.clone()),
        NodeRequest::Rooms { prefix } => R::RoomsPrefix(prefix.clone()),
        NodeRequest::Disconnect {
            target,
            code,
            reason,
        } => R::Disconnect(pb::SurveyDisconnect {
            target: Some(target_to_pb(target)),
            code: u32::from(*code),
            reason: reason.clone(),
        }),
        NodeRequest::Subscribe { target, room } => R::Subscribe(pb::SurveyRoomCommand {
            target: Some(target_to_pb(target)),
            room: room.clone(),
        }),
        NodeRequest::Unsubscribe { target, room } => R::Unsubscribe(pb::SurveyRoomCommand {
            target: Some(target_to_pb(target)),
            room: room.clone(),
        }),
    };
    pb::NodeSurvey {
        id,
        reply_channel: reply_channel.to_owned(),
        request: Some(request),
    }
    .encode_to_vec()
}

/// A survey as received: who asked, where to answer, and what.
pub(crate) struct Survey {
    pub id: u64,
    pub reply_channel: String,
    pub request: NodeRequest,
}

/// Decodes a survey.
pub(crate) fn decode_survey(payload: &[u8]) -> Result<Survey, AdapterError> {
    use pb::node_survey::Request as R;
    let s = pb::NodeSurvey::decode(payload)
        .map_err(|e| AdapterError::Protocol(format!("undecodable survey: {e}")))?;
    let request = match s.request {
        Some(R::PresenceRoom(room)) => NodeRequest::Presence { room },
        Some(R::RoomsPrefix(prefix)) => NodeRequest::Rooms { prefix },
        Some(R::Disconnect(d)) => NodeRequest::Disconnect {
            target: target_from_pb(d.target)?,
            code: u16::try_from(d.code)
                .map_err(|_| AdapterError::Protocol(format!("close code {} too big", d.code)))?,
            reason: d.reason,
        },
        Some(R::Subscribe(c)) => NodeRequest::Subscribe {
            target: target_from_pb(c.target)?,
            room: c.room,
        },
        Some(R::Unsubscribe(c)) => NodeRequest::Unsubscribe {
            target: target_from_pb(c.target)?,
            room: c.room,
        },
        None => return Err(AdapterError::Protocol("survey without a request".into())),
    };
    Ok(Survey {
        id: s.id,
        reply_channel: s.reply_channel,
        request,
    })
}

/// Encodes one node's answer.
pub(crate) fn encode_reply(id: u64, node: &str, reply: &NodeReply) -> Vec<u8> {
    use pb::node_survey_reply::Reply as R;
    let reply = match reply {
        NodeReply::Presence(clients) => R::Presence(pb::SurveyPresence {
            clients: clients.iter().map(client_to_pb).collect(),
        }),
        NodeReply::Rooms(rooms) => R::Rooms(pb::SurveyRooms {
            rooms: rooms
                .iter()
                .map(|(room, subscribers)| pb::SurveyRoom {
                    room: room.clone(),
                    subscribers: *subscribers,
                })
                .collect(),
        }),
        NodeReply::Affected(n) => R::Affected(*n),
    };
    pb::NodeSurveyReply {
        id,
        node: node.to_owned(),
        reply: Some(reply),
    }
    .encode_to_vec()
}

/// Decodes one node's answer: the survey id and the reply.
pub(crate) fn decode_reply(payload: &[u8]) -> Result<(u64, NodeReply), AdapterError> {
    use pb::node_survey_reply::Reply as R;
    let r = pb::NodeSurveyReply::decode(payload)
        .map_err(|e| AdapterError::Protocol(format!("undecodable survey reply: {e}")))?;
    let reply = match r.reply {
        Some(R::Presence(p)) => {
            NodeReply::Presence(p.clients.into_iter().map(client_from_pb).collect())
        }
        Some(R::Rooms(rooms)) => NodeReply::Rooms(
            rooms
                .rooms
                .into_iter()
                .map(|r| (r.room, r.subscribers))
                .collect(),
        ),
        Some(R::Affected(n)) => NodeReply::Affected(n),
        None => {
            return Err(AdapterError::Protocol(
                "survey reply without a reply".into(),
            ))
        }
    };
    Ok((r.id, reply))
}

/// Encodes a node's registry entry.
pub(crate) fn encode_node(info: &NodeInfo) -> Vec<u8> {
    pb::NodeInfo {
        id: info.id.clone(),
        address: info.address.clone(),
        connections: info.connections,
        rooms: info.rooms,
        uptime_seconds: info.uptime_seconds,
        version: info.version.clone(),
        subscriptions: info.subscriptions,
        grpc_address: info.grpc_address.clone(),
    }
    .encode_to_vec()
}

/// Decodes a node's registry entry.
pub(crate) fn decode_node(bytes: &[u8]) -> Result<NodeInfo, AdapterError> {
    let n = pb::NodeInfo::decode(bytes)
        .map_err(|e| AdapterError::Protocol(format!("undecodable node entry: {e}")))?;
    Ok(NodeInfo {
        id: n.id,
        address: n.address,
        grpc_address: n.grpc_address,
        connections: n.connections,
        rooms: n.rooms,
        subscriptions: n.subscriptions,
        uptime_seconds: n.uptime_seconds,
        version: n.version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publish script does, in Rust, to check that stitching the
    /// pieces yields the envelope prost would have written.
    fn stitch(parts: &EnvelopeParts, offset: u64, epoch: &str) -> Vec<u8> {
        fn varint(mut n: u64, out: &mut Vec<u8>) {
            while n >= 128 {
                out.push((n % 128 + 128) as u8);
                n /= 128;
            }
            out.push(n as u8);
        }
        fn field(num: u8, bytes: &[u8], out: &mut Vec<u8>) {
            out.push(num * 8 + 2);
            varint(bytes.len() as u64, out);
            out.extend_from_slice(bytes);
        }
        let mut publication = vec![8];
        varint(offset, &mut publication);
        publication.extend_from_slice(&parts.publication);
        let mut rp = Vec::new();
        field(1, &publication, &mut rp);
        field(2, epoch.as_bytes(), &mut rp);
        rp.extend_from_slice(&parts.exclude_field);
        let mut env = parts.room_field.clone();
        field(2, &rp, &mut env);
        env
    }

    #[test]
    fn stitched_envelopes_decode_like_whole_ones() {
        let p = pb::Publication {
            offset: 0,
            event: "ev".into(),
            data: Bytes::from(vec![7u8; 300]),
            binary: true,
            time_unix_micros: 1_700_000_000_000_000,
        };
        let parts = envelope_parts("chat.a", p.clone(), "c1");
        for offset in [1u64, 127, 128, 300, 1 << 40] {
            let bytes = stitch(&parts, offset, "e1");
            let (room, event, time) = decode_envelope(Bytes::from(bytes)).unwrap();
            assert_eq!(room, "chat.a");
            assert_eq!(time, p.time_unix_micros);
            match event {
                RoomEvent::Publication {
                    publication,
                    epoch,
                    exclude_client_id,
                } => {
                    assert_eq!(publication.offset, offset);
                    assert_eq!(publication.data.len(), 300);
                    assert_eq!(publication.event, "ev");
                    assert!(publication.binary);
                    assert_eq!(epoch, "e1");
                    assert_eq!(exclude_client_id, "c1");
                }
                other => panic!("not a publication: {other:?}"),
            }
        }
    }

    #[test]
    fn surveys_and_replies_round_trip() {
        let req = NodeRequest::Disconnect {
            target: Target::User("u".into()),
            code: 4003,
            reason: "bye".into(),
        };
        let s = decode_survey(&encode_survey(9, "ch", &req)).unwrap();
        assert_eq!((s.id, s.reply_channel.as_str()), (9, "ch"));
        assert_eq!(s.request, req);
        let rep = NodeReply::Rooms(vec![("a".into(), 2)]);
        assert_eq!(decode_reply(&encode_reply(9, "n", &rep)).unwrap(), (9, rep));
    }
}
