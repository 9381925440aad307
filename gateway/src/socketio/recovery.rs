//! Connection state recovery, as socket.io 4.6+ clients expect it, built on
//! room history.
//!
//! With `[socketio] recovery` set, a socket gets a private id (`pid`) in its
//! CONNECT reply, and every publication of a room with history carries one
//! more argument: its offset string, `<offset>:<epoch>:<room>`, which the
//! client keeps (the last string argument of the last event) and hands back
//! in its next CONNECT with the `pid`.
//!
//! A socket's state is kept in the adapter's store ([`Adapter::keep`]), so
//! that its client may come back through any node:
//!
//! - While the socket lives, a snapshot: its rooms and, per room, the
//!   position the client confirmed (a pong after the write) or where it
//!   joined. Written when it connects, when its rooms change and at every
//!   pong, kept for the recovery time plus one heartbeat, so it outlives a
//!   node that dies without a word (SIGKILL, a lost machine).
//! - When the session ends for any reason but an explicit disconnect, the
//!   exact state replaces it: the snapshot's positions, plus the
//!   publications written since the last pong, in order.
//! - An explicit disconnect (a DISCONNECT packet, or a disconnect from the
//!   control plane) forgets it.
//!
//! A CONNECT with a known `pid` within the recovery time takes the state
//! (once, whichever node asks), gets the same socket id back (so
//! `socket.recovered` is true), rejoins those rooms and reads from history
//! everything after them; for the room of the client's offset string, after
//! that offset (the client saw exactly that far, even if more was written).
//! After an exact save that is exactly what was missed. After a snapshot
//! (the node died) the other rooms restart from the last confirmation, so
//! publications written between that pong and the node's end may come
//! twice: at least once, never lost. A room whose history was lost (epoch
//! changed) or trimmed past the position is resubscribed from now, and
//! says `recovered: false` in its `subscribed` event.
//!
//! [`Adapter::keep`]: roomcast_adapter::Adapter::keep

use crate::auth::Grant;
use bytes::Bytes;
use roomcast_adapter::StreamPosition;
use serde::{Deserialize, Serialize};

/// The adapter store's key for a socket's private id.
pub fn key(pid: &str) -> String {
    format!("sio:{pid}")
}

/// The offset string a publication carries.
pub fn offset_string(room: &str, epoch: &str, offset: u64) -> String {
    format!("{offset}:{epoch}:{room}")
}

/// Reads an offset string back: the room and the position in it. Anything
/// else (a client's last string argument need not be ours) is `None`.
pub fn parse_offset(s: &str) -> Option<(String, StreamPosition)> {
    let mut parts = s.splitn(3, ':');
    let offset = parts.next()?.parse().ok()?;
    let epoch = parts.next()?.to_owned();
    let room = parts.next()?;
    if room.is_empty() {
        return None;
    }
    Some((room.to_owned(), StreamPosition { epoch, offset }))
}

/// A socket's state, kept for its client's return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// Its socket id, given back on recovery.
    pub client_id: String,
    /// Its namespace.
    pub nsp: String,
    /// Its grant, when auth is on.
    pub grant: Option<Grant>,
    /// Its rooms and how far the client confirmed having each (a pong
    /// after the write), or where it joined: room, epoch, offset.
    pub rooms: Vec<(String, String, u64)>,
    /// Publications written after that, oldest first, that the client may
    /// or may not have received: room and offset. Empty in a snapshot.
    pub unconfirmed: Vec<(String, u64)>,
}

/// Most publications a session keeps unconfirmed before it gives up on
/// recovering (a client that stops answering pings is cut off long before).
pub const MAX_UNCONFIRMED: usize = 65_536;

impl Saved {
    /// Where the client stands in each room, given the offset string of the
    /// last publication it saw: everything written up to that one arrived
    /// (one ordered stream), nothing after it did. Without one it saw
    /// nothing unconfirmed.
    ///
    /// The offset string's own room goes at least that far: the client saw
    /// it, whether or not the state knows it was written (a snapshot does
    /// not).
    pub fn positions(
        &self,
        last_seen: Option<&(String, StreamPosition)>,
    ) -> Vec<(String, StreamPosition)> {
        let upto = last_seen.and_then(|(room, p)| {
            self.unconfirmed
                .iter()
                .rposition(|(r, o)| r == room && *o == p.offset)
        });
        let received = match upto {
            Some(i) => &self.unconfirmed[..=i],
            None => &[],
        };
        self.rooms
            .iter()
            .map(|(room, epoch, offset)| {
                let mut p = StreamPosition {
                    epoch: epoch.clone(),
                    offset: *offset,
                };
                for (r, o) in received {
                    if r == room {
                        p.offset = p.offset.max(*o);
                    }
                }
                if let Some((r, seen)) = last_seen {
                    if r == room && seen.epoch == p.epoch {
                        p.offset = p.offset.max(seen.offset);
                    }
                }
                (room.clone(), p)
            })
            .collect()
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("plain data serializes"))
    }

    /// Reads the stored form back; `None` for anything else.
    pub fn decode(b: &[u8]) -> Option<Saved> {
        serde_json::from_slice(b).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_strings_round_trip_with_colons_in_rooms() {
        let s = offset_string("chat:lobby", "e1f2", 42);
        assert_eq!(s, "42:e1f2:chat:lobby");
        let (room, p) = parse_offset(&s).unwrap();
        assert_eq!(
            (room.as_str(), p.epoch.as_str(), p.offset),
            ("chat:lobby", "e1f2", 42)
        );
        for other in ["hello", "", "1:e", "x:e:r", "1:e:"] {
            assert!(parse_offset(other).is_none(), "{other:?}");
        }
    }

    #[test]
    fn saved_state_round_trips_through_its_stored_form() {
        let saved = Saved {
            client_id: "c".into(),
            nsp: "/admin".into(),
            grant: Some(Grant {
                user: "u".into(),
                ..Grant::default()
            }),
            rooms: vec![("a:b".into(), "e1".into(), 4)],
            unconfirmed: vec![("a:b".into(), 5)],
        };
        assert_eq!(Saved::decode(&saved.encode()), Some(saved));
        assert_eq!(Saved::decode(b"not json"), None);
    }

    #[test]
    fn what_the_client_saw_is_up_to_its_last_offset() {
        let pos = |o| StreamPosition {
            epoch: "e".into(),
            offset: o,
        };
        let saved = Saved {
            client_id: "c".into(),
            nsp: "/".into(),
            grant: None,
            rooms: vec![("a".into(), "e".into(), 1), ("b".into(), "e".into(), 7)],
            unconfirmed: vec![
                ("a".into(), 2),
                ("b".into(), 8),
                ("a".into(), 3),
                ("b".into(), 9),
            ],
        };
        let got = |seen: Option<(&str, u64)>| {
            let seen = seen.map(|(r, o)| (r.to_owned(), pos(o)));
            saved
                .positions(seen.as_ref())
                .into_iter()
                .map(|(r, p)| (r, p.offset))
                .collect::<Vec<_>>()
        };
        assert_eq!(got(Some(("a", 3))), [("a".into(), 3), ("b".into(), 8)]);
        assert_eq!(got(Some(("b", 8))), [("a".into(), 2), ("b".into(), 8)]);
        assert_eq!(got(None), [("a".into(), 1), ("b".into(), 7)]);
        // Beyond what the state knows was written (a snapshot): the
        // client's own room goes as far as it saw, the others stay.
        assert_eq!(got(Some(("a", 99))), [("a".into(), 99), ("b".into(), 7)]);
        let other_epoch = Some((
            "a".to_owned(),
            StreamPosition {
                epoch: "f".into(),
                offset: 99,
            },
        ));
        assert_eq!(
            saved.positions(other_epoch.as_ref())[0].1.offset,
            1,
            "a position in another epoch says nothing"
        );
    }
}
