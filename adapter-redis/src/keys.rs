//! Names of every key and channel the adapter uses, and which shard a room
//! lives on.
//!
//! Room keys carry the room name as a Redis Cluster hash tag (`{room}`), so
//! a room's keys always share a slot; room names cannot contain braces.

/// Key and channel names for one node under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
    room_channel_head: String,
    /// `{prefix}:survey`: every node listens here (on shard 0).
    pub survey: String,
    /// `{prefix}:reply:{node}`: survey answers for this node (shard 0).
    pub reply: String,
    /// `{prefix}:ping:{node}`: liveness probes of this node (every shard).
    pub ping: String,
    /// `{prefix}:nodes`: the set of registered node ids (shard 0).
    pub nodes: String,
}

/// What arrived on a pub/sub connection, by channel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A room event (the envelope names the room).
    Room,
    /// This node's liveness probe came back.
    Ping,
    /// Another node (or this one) asks something.
    Survey,
    /// An answer to one of this node's surveys.
    Reply,
    /// Nothing of ours.
    Other,
}

impl Names {
    pub fn new(prefix: &str, node: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            room_channel_head: format!("{prefix}:room:{{"),
            survey: format!("{prefix}:survey"),
            reply: format!("{prefix}:reply:{node}"),
            ping: format!("{prefix}:ping:{node}"),
            nodes: format!("{prefix}:nodes"),
        }
    }

    /// The pub/sub channel of a room.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}{room}}}", self.room_channel_head)
    }

    /// Offset counter and epoch of a room (a hash: `e`, `o`).
    pub fn meta(&self, room: &str) -> String {
        format!("{}:meta:{{{room}}}", self.prefix)
    }

    /// History of a room (a stream; entry id = `offset-0`, field `p`).
    pub fn history(&self, room: &str) -> String {
        format!("{}:hist:{{{room}}}", self.prefix)
    }

    /// An idempotency key of a room.
    pub fn idempotency(&self, room: &str, key: &str) -> String {
        format!("{}:idem:{{{room}}}:{key}", self.prefix)
    }

    /// State a node keeps for any node to take back (`Adapter::keep`); the
    /// caller's key is the hash tag, so it maps to one slot.
    pub fn kept(&self, key: &str) -> String {
        format!("{}:kept:{{{key}}}", self.prefix)
    }

    /// Prefix of node registry entries; the node id follows.
    pub fn node_info_prefix(&self) -> String {
        format!("{}:node:", self.prefix)
    }

    /// The registry entry of a node (its encoded `NodeInfo`, with a TTL).
    pub fn node_info(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// Classifies a channel name.
    pub fn classify(&self, channel: &str) -> Incoming {
        if channel.starts_with(&self.room_channel_head) {
            Incoming::Room
        } else if channel == self.ping {
            Incoming::Ping
        } else if channel == self.survey {
            Incoming::Survey
        } else if channel == self.reply {
            Incoming::Reply
        } else {
            Incoming::Other
        }
    }
}

/// The shard (index into the configured URLs) that holds `room`.
///
/// Jump consistent hashing (Lamping and Veach) over a stable 64-bit FNV-1a
/// hash of the name: every node computes the same answer, and going from n to
/// n+1 shards moves only about 1/(n+1) of the rooms, all to the new shard.
pub(crate) fn shard_of(room: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut key = fnv1a(room.as_bytes());
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_the_shard_count_moves_few_rooms_and_only_to_the_new_shard() {
        let rooms: Vec<String> = (0..10_000).map(|i| format!("chat.room{i}")).collect();
        let before: Vec<usize> = rooms.iter().map(|r| shard_of(r, 4)).collect();
        let after: Vec<usize> = rooms.iter().map(|r| shard_of(r, 5)).collect();
        let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
        assert!(
            before.iter().zip(&after).all(|(a, b)| a == b || *b == 4),
            "rooms moved between old shards"
        );
        // About a fifth should move; allow generous slack.
        assert!((1_000..3_000).contains(&moved), "moved {moved} of 10000");
        for s in 0..4 {
            let n = before.iter().filter(|&&x| x == s).count();
            assert!((2_000..3_000).contains(&n), "shard {s} holds {n} of 10000");
        }
    }

    #[test]
    fn channels_classify_and_keys_share_a_hash_tag() {
        let n = Names::new("rc", "node1");
        assert_eq!(n.room_channel("chat.a"), "rc:room:{chat.a}");
        assert_eq!(n.classify("rc:room:{chat.a}"), Incoming::Room);
        assert_eq!(n.classify("rc:ping:node1"), Incoming::Ping);
        assert_eq!(n.classify("rc:ping:node2"), Incoming::Other);
        assert_eq!(n.classify("rc:survey"), Incoming::Survey);
        assert_eq!(n.classify("rc:reply:node1"), Incoming::Reply);
        assert_eq!(n.meta("chat.a"), "rc:meta:{chat.a}");
        assert_eq!(n.history("chat.a"), "rc:hist:{chat.a}");
        assert_eq!(n.idempotency("chat.a", "k"), "rc:idem:{chat.a}:k");
    }
}
