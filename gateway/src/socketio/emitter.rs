//! Node backends that push with `@socket.io/redis-emitter`
//! (`emitter.to(room).emit(event, data)`) reach Roomcast's subscribers.
//!
//! The emitter PUBLISHes, on its Redis, a MessagePack array `[uid, packet,
//! opts]` to `KEY#/#` (or `KEY#/#ROOM#` for a single room): `packet` is a
//! Socket.IO EVENT (`{type: 2, data: [event, ...args], nsp: "/"}`), `opts`
//! holds `rooms`, `except` and `flags`. Every node listens (a pattern
//! subscription to `KEY#/#*`) and delivers each message to its own
//! subscribers of each room, socket.io and roomcast.v1 alike, as a
//! publication with that event and data, as socket.io's Redis adapter
//! does.
//!
//! Such a publication is live only: it has no offset, is not kept in the
//! room's history, and so cannot be recovered after a reconnect.
//!
//! Not supported, each counted under its own outcome of
//! `roomcast_socketio_emitter_messages_total` and dropped: an emit to no
//! room (`emitter.emit(...)`, every socket), `except(...)`, more than one
//! argument, and binary data nested inside JSON (a Buffer alone is a
//! binary publication). Namespaces other than `/` are not listened to, nor
//! the emitter's requests (`socketsJoin`, `socketsLeave`,
//! `disconnectSockets`, `serverSideEmit`).

use crate::Node;
use bytes::Bytes;
use futures::StreamExt;
use rmpv::Value as Mp;
use roomcast_adapter::{now_unix_micros, Handler, Publication, RoomEvent};
use serde_json::Value as Json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the subscription is checked with a PING.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A connection or PING that takes longer is a dead Redis.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// First and longest wait before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// One emitter message, ready to deliver.
#[derive(Debug, PartialEq)]
pub struct Emitted {
    /// Rooms to deliver to.
    pub rooms: Vec<String>,
    /// The publication's event.
    pub event: String,
    /// Its data: JSON text, or bytes when `binary`.
    pub data: Bytes,
    /// Whether `data` is binary.
    pub binary: bool,
}

/// Reads one emitter message. The error is the outcome it is counted under.
pub fn decode(payload: &[u8]) -> Result<Emitted, &'static str> {
    let value = rmpv::decode::read_value(&mut &payload[..]).map_err(|_| "malformed")?;
    let Mp::Array(parts) = value else {
        return Err("malformed");
    };
    let (Some(packet), Some(opts)) = (parts.get(1), parts.get(2)) else {
        return Err("malformed");
    };
    if field(packet, "nsp").and_then(Mp::as_str).unwrap_or("/") != "/" {
        return Err("other_namespace");
    }
    let Some(Mp::Array(data)) = field(packet, "data") else {
        return Err("malformed");
    };
    let Some(event) = data.first().and_then(Mp::as_str) else {
        return Err("malformed");
    };
    let strings = |name: &str| -> Result<Vec<String>, &'static str> {
        match field(opts, name) {
            None | Some(Mp::Nil) => Ok(Vec::new()),
            Some(Mp::Array(items)) => items
                .iter()
                .map(|r| r.as_str().map(str::to_owned).ok_or("malformed"))
                .collect(),
            Some(_) => Err("malformed"),
        }
    };
    let rooms = strings("rooms")?;
    if !strings("except")?.is_empty() {
        return Err("except");
    }
    if rooms.is_empty() {
        return Err("no_room");
    }
    let (data, binary) = match &data[1..] {
        [] => (Bytes::from_static(b"null"), false),
        [Mp::Binary(b)] => (Bytes::copy_from_slice(b), true),
        [one] => {
            let json = to_json(one).ok_or("arguments")?;
            (Bytes::from(serde_json::to_vec(&json).expect("JSON")), false)
        }
        _ => return Err("arguments"),
    };
    Ok(Emitted {
        rooms,
        event: event.to_owned(),
        data,
        binary,
    })
}

/// A string-keyed map's field.
fn field<'a>(map: &'a Mp, name: &str) -> Option<&'a Mp> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
}

/// MessagePack as JSON; `None` where JSON has no equivalent (bytes).
fn to_json(v: &Mp) -> Option<Json> {
    Some(match v {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Json::from(n),
            (None, Some(n)) => Json::from(n),
            _ => return None,
        },
        Mp::F32(f) => serde_json::Number::from_f64(f64::from(*f)).map_or(Json::Null, Json::Number),
        Mp::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Mp::String(s) => Json::String(s.as_str()?.to_owned()),
        Mp::Array(items) => Json::Array(items.iter().map(to_json).collect::<Option<_>>()?),
        Mp::Map(entries) => {
            let mut m = serde_json::Map::new();
            for (k, v) in entries {
                let key = match k {
                    Mp::String(s) => s.as_str()?.to_owned(),
                    other => other.to_string(),
                };
                // notepack writes `undefined` as an extension: JSON drops it.
                if matches!(v, Mp::Ext(..)) {
                    continue;
                }
                m.insert(key, to_json(v)?);
            }
            Json::Object(m)
        }
        // `undefined` (and anything else notepack writes as an extension)
        // is null, as in JSON.stringify of an array.
        Mp::Ext(..) => Json::Null,
        Mp::Binary(_) => return None,
    })
}

/// Delivers one message to this node's subscribers of its rooms.
fn deliver(node: &Node, payload: &[u8]) {
    let m = &node.metrics.socketio_emitter_messages;
    let e = match decode(payload) {
        Ok(e) => e,
        Err(outcome) => {
            tracing::debug!(outcome, "emitter message not delivered");
            m.inc(outcome);
            return;
        }
    };
    let publication = Arc::new(Publication {
        offset: 0,
        event: e.event,
        data: e.data,
        binary: e.binary,
        time_unix_micros: now_unix_micros(),
    });
    for room in &e.rooms {
        node.hub.on_room_event(
            room,
            RoomEvent::Publication {
                publication: publication.clone(),
                epoch: String::new(),
                exclude_client_id: String::new(),
            },
        );
    }
    m.inc("delivered");
}

/// Listens for emitter messages until `stop`, reconnecting with backoff.
/// Does nothing unless `[socketio.emitter] enabled`.
pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let cfg = &node.config.socketio.emitter;
    if !cfg.enabled || !node.config.socketio.enabled {
        return;
    }
    let Some(url) = cfg
        .redis_url
        .clone()
        .or_else(|| node.config.redis_urls.first().cloned())
    else {
        return;
    };
    let pattern = format!("{}#/#*", cfg.key);
    let mut backoff = BACKOFF.0;
    loop {
        let why = tokio::select! {
            why = listen(&node, &url, &pattern, &mut backoff) => why,
            _ = crate::wait_true(&mut stop) => return,
        };
        node.metrics.socketio_emitter_up.set(0.0);
        tracing::warn!(error = %why, retry_in = ?backoff, "emitter subscription lost");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = crate::wait_true(&mut stop) => return,
        }
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// One subscription, until it fails: why.
async fn listen(node: &Node, url: &str, pattern: &str, backoff: &mut Duration) -> String {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let pubsub = match tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "connect timed out".into(),
    };
    let (mut sink, mut stream) = pubsub.split();
    match tokio::time::timeout(REDIS_TIMEOUT, sink.psubscribe(pattern)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return e.to_string(),
        Err(_) => return "PSUBSCRIBE timed out".into(),
    }
    node.metrics.socketio_emitter_up.set(1.0);
    tracing::info!(pattern, "listening for @socket.io/redis-emitter messages");
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(msg) => deliver(node, msg.get_payload_bytes()),
                None => return "connection closed".into(),
            },
            _ = probe.tick() => {
                // Subscribed, Redis answers a PING with ["pong", ""].
                match tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await {
                    // Healthy for a probe: the next loss retries quickly.
                    Ok(Ok(_)) => *backoff = BACKOFF.0,
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "PING timed out".into(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value as V;

    fn message(packet_data: Vec<V>, rooms: &[&str], except: &[&str]) -> Vec<u8> {
        let strs = |xs: &[&str]| V::Array(xs.iter().map(|s| V::from(*s)).collect());
        let v = V::Array(vec![
            V::from("emitter"),
            V::Map(vec![
                (V::from("type"), V::from(2)),
                (V::from("data"), V::Array(packet_data)),
                (V::from("nsp"), V::from("/")),
            ]),
            V::Map(vec![
                (V::from("rooms"), strs(rooms)),
                (V::from("flags"), V::Map(vec![])),
                (V::from("except"), strs(except)),
            ]),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    }

    #[test]
    fn an_emit_to_rooms_becomes_a_publication() {
        let data = V::Map(vec![
            (V::from("price"), V::F64(1.5)),
            (V::from("n"), V::from(-3)),
            (V::from("tags"), V::Array(vec![V::from("a"), V::Nil])),
        ]);
        let e = decode(&message(vec![V::from("quote"), data], &["q.a", "q.b"], &[])).unwrap();
        assert_eq!(e.rooms, ["q.a", "q.b"]);
        assert_eq!(e.event, "quote");
        assert!(!e.binary);
        let json: Json = serde_json::from_slice(&e.data).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"price": 1.5, "n": -3, "tags": ["a", null]})
        );

        let bin = decode(&message(
            vec![V::from("blob"), V::Binary(vec![0, 1, 2])],
            &["r"],
            &[],
        ))
        .unwrap();
        assert!(bin.binary);
        assert_eq!(&bin.data[..], &[0, 1, 2]);

        let none = decode(&message(vec![V::from("tick")], &["r"], &[])).unwrap();
        assert_eq!(&none.data[..], b"null");
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        let ev = || vec![V::from("e"), V::from(1)];
        assert_eq!(decode(&message(ev(), &[], &[])), Err("no_room"));
        assert_eq!(decode(&message(ev(), &["r"], &["x"])), Err("except"));
        assert_eq!(
            decode(&message(
                vec![V::from("e"), V::from(1), V::from(2)],
                &["r"],
                &[]
            )),
            Err("arguments")
        );
        let nested = V::Map(vec![(V::from("b"), V::Binary(vec![1]))]);
        assert_eq!(
            decode(&message(vec![V::from("e"), nested], &["r"], &[])),
            Err("arguments")
        );
        assert_eq!(decode(b"\xc1"), Err("malformed"));
        assert_eq!(
            decode(&message(vec![V::from(7)], &["r"], &[])),
            Err("malformed")
        );
    }
}
