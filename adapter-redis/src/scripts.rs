//! The Lua scripts that make multi-key changes atomic, and the parsing of
//! their replies.
//!
//! Redis runs one script at a time, so the order in which the publish script
//! assigns offsets is the order in which it PUBLISHes: subscribers see a
//! room's publications in offset order.

use roomcast_adapter::AdapterError;

/// Accepts a publication to a room that keeps history.
///
/// KEYS: 1 meta hash, 2 history stream, 3 idempotency key.
/// ARGV: 1 room channel, 2 epoch to use if the room has none, 3 history size,
/// 4 history ttl (ms), 5 "1" when the idempotency key applies, 6 the encoded
/// `RoomEnvelope.room` field, 7 the encoded `Publication` without its offset,
/// 8 the encoded `RoomPublication.exclude_client_id` field (maybe empty).
///
/// The stream is trimmed approximately (`MAXLEN ~`: whole stream nodes at a
/// time, so it may hold up to one node, 100 entries by default, more than
/// asked); exact trimming made XADD several times dearer. The history script
/// shows only the newest `size` entries, so readers see the exact size.
///
/// Returns `{offset, epoch}`. The envelope is assembled here because only
/// here is the offset known; protobuf fields may come in any order, so the
/// offset field is prepended to the publication the node encoded.
pub(crate) const PUBLISH: &str = r#"
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local function field(num, bytes)
  return string.char(num * 8 + 2) .. varint(#bytes) .. bytes
end
if ARGV[5] == '1' then
  local prev = redis.call('GET', KEYS[3])
  if prev then
    local sep = string.find(prev, ':', 1, true)
    return {tonumber(string.sub(prev, 1, sep - 1)), string.sub(prev, sep + 1)}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local id = string.format('%d', offset)
local publication = string.char(8) .. varint(offset) .. ARGV[7]
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], id .. '-0', 'p', publication)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if ARGV[5] == '1' then
  redis.call('SET', KEYS[3], id .. ':' .. epoch, 'PX', ARGV[4])
end
local room_publication = field(1, publication) .. field(2, epoch) .. ARGV[8]
redis.call('PUBLISH', ARGV[1], ARGV[6] .. field(2, room_publication))
return {offset, epoch}
"#;

/// Reads a room's history.
///
/// KEYS: 1 meta hash, 2 history stream.
/// ARGV: 1 epoch to use if the room has none, 2 its ttl (ms), 3 "" or the
/// offset to read after, 4 the epoch of that offset, 5 limit (-1: all),
/// 6 the history size (entries older than the newest `size` are ignored:
/// the stream is trimmed approximately).
///
/// Returns `{epoch, offset, oldest kept offset (0: none), {publications}}`
/// with publications oldest first. A room that keeps history but has none
/// gets its epoch here, so a subscriber that arrives before the first
/// publication holds a position it can recover from.
const HISTORY: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'e')
local offset = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {epoch, 0, 0, {}}
end
offset = tonumber(redis.call('HGET', KEYS[1], 'o')) or 0
local size = tonumber(ARGV[6])
local floor = offset - size + 1
if floor < 1 then
  floor = 1
end
local oldest = 0
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then
  oldest = tonumber(string.match(first[1][1], '^(%d+)-'))
  if oldest < floor then
    oldest = floor
  end
end
local limit = tonumber(ARGV[5])
if limit < 0 or limit > size then
  limit = size
end
local out = {}
if limit == 0 then
  return {epoch, offset, oldest, out}
end
local entries
if ARGV[3] == '' then
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  entries = {}
  for i = #newest, 1, -1 do
    entries[#entries + 1] = newest[i]
  end
else
  local since = tonumber(ARGV[3])
  if ARGV[4] ~= epoch or since > offset then
    return {epoch, offset, oldest, out}
  end
  local from = since + 1
  if from < floor then
    from = floor
  end
  local start = string.format('%d', from) .. '-0'
  entries = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', limit)
end
for i, e in ipairs(entries) do
  out[i] = e[2][2]
end
return {epoch, offset, oldest, out}
"#;

/// Refreshes a node's registry entry.
///
/// KEYS: 1 node set, 2 node entry. ARGV: 1 node id, 2 encoded `NodeInfo`,
/// 3 ttl (ms).
const HEARTBEAT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"#;

/// Lists live nodes and forgets the expired ones.
///
/// KEYS: 1 node set. ARGV: 1 prefix of node entries. The entries' names are
/// built here, which is fine on one Redis (the registry lives on shard 0)
/// but would not be on Redis Cluster.
const NODES: &str = r#"
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local info = redis.call('GET', ARGV[1] .. id)
  if info then
    out[#out + 1] = info
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out
"#;

/// The loaded scripts (hashed once; sent by EVALSHA, re-loaded on NOSCRIPT
/// after a Redis restart).
pub(crate) struct Scripts {
    pub publish: redis::Script,
    pub history: redis::Script,
    pub heartbeat: redis::Script,
    pub nodes: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        Self {
            publish: redis::Script::new(PUBLISH),
            history: redis::Script::new(HISTORY),
            heartbeat: redis::Script::new(HEARTBEAT),
            nodes: redis::Script::new(NODES),
        }
    }
}

/// What the history script found.
pub(crate) struct HistoryReply {
    pub epoch: String,
    pub offset: u64,
    /// Offset of the oldest kept publication; 0 when none is kept.
    pub oldest: u64,
    pub publications: Vec<Vec<u8>>,
}

fn protocol(what: &str, value: &redis::Value) -> AdapterError {
    AdapterError::Protocol(format!("unexpected {what} reply from Redis: {value:?}"))
}

fn as_u64(v: &redis::Value) -> Option<u64> {
    match v {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn as_string(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Parses `{offset, epoch}` from the publish script.
pub(crate) fn parse_publish(value: &redis::Value) -> Result<(u64, String), AdapterError> {
    match value {
        redis::Value::Array(items) if items.len() == 2 => {
            let offset = as_u64(&items[0]).ok_or_else(|| protocol("publish", value))?;
            let epoch = as_string(&items[1]).ok_or_else(|| protocol("publish", value))?;
            Ok((offset, epoch))
        }
        _ => Err(protocol("publish", value)),
    }
}

/// Parses the history script's reply.
pub(crate) fn parse_history(value: &redis::Value) -> Result<HistoryReply, AdapterError> {
    let redis::Value::Array(items) = value else {
        return Err(protocol("history", value));
    };
    let [epoch, offset, oldest, publications] = items.as_slice() else {
        return Err(protocol("history", value));
    };
    let publications = match publications {
        redis::Value::Array(list) => list
            .iter()
            .map(|p| match p {
                redis::Value::BulkString(b) => Ok(b.clone()),
                _ => Err(protocol("history", value)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(protocol("history", value)),
    };
    Ok(HistoryReply {
        epoch: as_string(epoch).ok_or_else(|| protocol("history", value))?,
        offset: as_u64(offset).ok_or_else(|| protocol("history", value))?,
        oldest: as_u64(oldest).ok_or_else(|| protocol("history", value))?,
        publications,
    })
}

/// Parses the list of encoded `NodeInfo`s from the nodes script.
pub(crate) fn parse_nodes(value: &redis::Value) -> Result<Vec<Vec<u8>>, AdapterError> {
    match value {
        redis::Value::Array(list) => list
            .iter()
            .map(|p| match p {
                redis::Value::BulkString(b) => Ok(b.clone()),
                _ => Err(protocol("nodes", value)),
            })
            .collect(),
        _ => Err(protocol("nodes", value)),
    }
}
