//! Connection state recovery, as socket.io 4.6+ clients expect it, built on
//! room history.
//!
//! With `[socketio] recovery` set, a socket gets a private id (`pid`) in its
//! CONNECT reply, and every publication of a room with history carries one
//! more argument: its offset string, `<offset>:<epoch>:<room>`, which the
//! client keeps (the last string argument of the last event) and hands back
//! in its next CONNECT with the `pid`.
//!
//! When the session ends for any reason but an explicit disconnect, each
//! socket's rooms are kept here with, per room, the position of the last
//! publication written to the client. A CONNECT with a known `pid` within
//! the recovery time gets the same socket id back (so `socket.recovered` is
//! true), rejoins those rooms and reads from history everything after them;
//! for the room of the client's offset string, after that offset (the
//! client saw exactly that far, even if more was written). A room whose
//! history was lost (epoch changed) or trimmed past the position is
//! resubscribed from now, and says `recovered: false` in its `subscribed`
//! event.

use crate::auth::Grant;
use parking_lot::Mutex;
use roomcast_adapter::StreamPosition;
use std::collections::HashMap;
use tokio::time::Instant;

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

/// A socket that went away, kept for its client's return.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Its socket id, given back on recovery.
    pub client_id: String,
    /// Its namespace.
    pub nsp: String,
    /// Its grant, when auth is on.
    pub grant: Option<Grant>,
    /// Its rooms and how far each was written to it.
    pub rooms: Vec<(String, StreamPosition)>,
    /// Kept until then.
    pub until: Instant,
}

/// Sockets awaiting recovery, by private id.
#[derive(Default)]
pub struct Store {
    saved: Mutex<HashMap<String, Saved>>,
}

impl Store {
    /// Keeps a socket's state under its private id.
    pub fn save(&self, pid: String, saved: Saved) {
        let now = Instant::now();
        let mut map = self.saved.lock();
        map.retain(|_, s| s.until > now);
        map.insert(pid, saved);
    }

    /// Takes a socket's state back, if it is still kept and is of `nsp`.
    pub fn take(&self, pid: &str, nsp: &str) -> Option<Saved> {
        let mut map = self.saved.lock();
        let saved = map.remove(pid)?;
        (saved.until > Instant::now() && saved.nsp == nsp).then_some(saved)
    }

    /// Sockets kept now (expired ones included until the next save).
    pub fn len(&self) -> usize {
        self.saved.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
    fn saved_sockets_expire_and_stay_in_their_namespace() {
        let store = Store::default();
        let saved = |secs| Saved {
            client_id: "c".into(),
            nsp: "/".into(),
            grant: None,
            rooms: Vec::new(),
            until: Instant::now() + Duration::from_secs(secs),
        };
        store.save("p1".into(), saved(60));
        assert!(store.take("p1", "/admin").is_none(), "another namespace");
        store.save("p1".into(), saved(60));
        assert_eq!(store.take("p1", "/").unwrap().client_id, "c");
        assert!(store.take("p1", "/").is_none(), "taken once");
        store.save("p2".into(), saved(0));
        assert!(store.take("p2", "/").is_none(), "expired");
    }
}
