//! socket.io without sticky sessions: requests for a session another node
//! owns go to that node.
//!
//! A session id names its owner: after 15 random bytes come 6 bytes of a
//! hash of the owner's node id ([`new_sid`]). A long-polling GET or POST, or
//! a WebSocket upgrade, whose session is not on this node is sent to the
//! owner's advertised address (the adapter's node list), marked with
//! [`FORWARDED_BY`] so that it is never sent on again:
//!
//! - A GET or POST is one more HTTP request on the cluster's network, over
//!   a pooled connection; its answer comes back as the owner gave it, under
//!   this node's CORS headers.
//! - An upgrade is relayed: once the owner has accepted it, this node
//!   copies bytes both ways for the life of the WebSocket (two more sockets,
//!   one more copy of each byte, no parsing).
//!
//! An owner that is gone (or unknown) makes the request fail as a session
//! the node does not know: the client reconnects, through any node, and
//! recovers its sockets if recovery is on.

use crate::server::Body;
use crate::Node;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Marks a request one node sent to another: it is served where it lands.
pub const FORWARDED_BY: &str = "roomcast-forwarded-by";

/// How often, at most, a lookup that missed reads the node list again.
const REFRESH_EVERY: Duration = Duration::from_millis(250);
/// Opening a connection to another node may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes of the owner's tag in a session id.
const TAG_LEN: usize = 6;
/// Random bytes before it.
const RANDOM_LEN: usize = 15;

type Tag = [u8; TAG_LEN];
type OutBody = BoxBody<Bytes, hyper::Error>;

/// The tag of a node id: the first bytes of its 64-bit FNV-1a hash.
fn tag_of(node_id: &str) -> Tag {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut tag = [0; TAG_LEN];
    tag.copy_from_slice(&h.to_be_bytes()[..TAG_LEN]);
    tag
}

/// A new session id owned by `node_id`: 28 URL-safe characters.
pub fn new_sid(node_id: &str) -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; RANDOM_LEN + TAG_LEN];
    bytes[..RANDOM_LEN].copy_from_slice(&rand::random::<[u8; RANDOM_LEN]>());
    bytes[RANDOM_LEN..].copy_from_slice(&tag_of(node_id));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The owner's tag in a session id, if the id is one of ours.
fn owner_tag(sid: &str) -> Option<Tag> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sid)
        .ok()?;
    (bytes.len() == RANDOM_LEN + TAG_LEN).then(|| {
        let mut tag = [0; TAG_LEN];
        tag.copy_from_slice(&bytes[RANDOM_LEN..]);
        tag
    })
}

/// Where the other nodes are, and the client that reaches them.
pub struct Owners {
    client: Client<HttpConnector, OutBody>,
    /// Node addresses by tag, and when the node list was last read.
    addresses: Mutex<(HashMap<Tag, String>, Option<Instant>)>,
    /// Held while the node list is read.
    refresh: tokio::sync::Mutex<()>,
}

impl Default for Owners {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            client,
            addresses: Mutex::new((HashMap::new(), None)),
            refresh: tokio::sync::Mutex::new(()),
        }
    }
}

/// Why a request could not reach its session's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Not a session of another node: this node's own (now gone), one
    /// already forwarded, or not an id this cluster makes.
    NotForwardable,
    /// The owner is not in the node list (it is gone).
    OwnerUnknown,
    /// The owner did not answer.
    OwnerUnreachable,
}

impl Owners {
    /// The address of the node that owns `sid`, when that is another node
    /// and the request was not forwarded already.
    async fn owner_of(&self, node: &Node, sid: &str, headers: &HeaderMap) -> Result<String, Miss> {
        if headers.contains_key(FORWARDED_BY) {
            return Err(Miss::NotForwardable);
        }
        let tag = owner_tag(sid).ok_or(Miss::NotForwardable)?;
        if tag == tag_of(&node.config.node_id) {
            return Err(Miss::NotForwardable);
        }
        if let Some(a) = self.addresses.lock().0.get(&tag) {
            return Ok(a.clone());
        }
        // One refresh at a time; requests that missed meanwhile wait for
        // it and look again.
        let _refreshing = self.refresh.lock().await;
        if let Some(a) = self.addresses.lock().0.get(&tag) {
            return Ok(a.clone());
        }
        let due = self
            .addresses
            .lock()
            .1
            .is_none_or(|t| t.elapsed() >= REFRESH_EVERY);
        if due {
            if let Ok(nodes) = node.hub.adapter().nodes().await {
                let map = nodes
                    .into_iter()
                    .filter(|n| n.id != node.config.node_id && !n.address.is_empty())
                    .map(|n| (tag_of(&n.id), n.address))
                    .collect();
                self.addresses.lock().0 = map;
            }
            self.addresses.lock().1 = Some(Instant::now());
        }
        self.addresses
            .lock()
            .0
            .get(&tag)
            .cloned()
            .ok_or(Miss::OwnerUnknown)
    }

    /// A node that was asked and did not answer is looked up again next
    /// time (it may have come back elsewhere).
    fn forget(&self, address: &str) {
        self.addresses.lock().0.retain(|_, a| a != address);
    }
}

/// The request as it goes to the owner: same method, path, query and
/// headers (but those of this hop), marked as forwarded.
fn outgoing(
    node: &Node,
    parts: &hyper::http::request::Parts,
    address: &str,
    body: OutBody,
    upgrade: bool,
) -> Option<Request<OutBody>> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: hyper::Uri = format!("http://{address}{path}").parse().ok()?;
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .body(body)
        .ok()?;
    let headers = req.headers_mut();
    for (name, value) in &parts.headers {
        if !upgrade && is_hop_by_hop(name) {
            continue;
        }
        headers.append(name.clone(), value.clone());
    }
    headers.insert(
        HeaderName::from_static(FORWARDED_BY),
        HeaderValue::from_str(&node.config.node_id).ok()?,
    );
    Some(req)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "host"
    )
}

/// The owner's answer as this node's: without the owner's CORS headers
/// (this node adds its own) or hop-by-hop headers.
fn answer(parts: hyper::http::response::Parts, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name) || name.as_str().starts_with("access-control-") {
            continue;
        }
        r.headers_mut().append(name.clone(), value.clone());
    }
    r
}

/// Sends a long-polling GET or POST to the owner of `sid` and returns its
/// answer, or why it could not.
pub async fn request(
    node: &Arc<Node>,
    sid: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Miss> {
    let owners = &node.socketio.owners;
    let address = match owners.owner_of(node, sid, req.headers()).await {
        Ok(a) => a,
        Err(m) => return Err(count(node, m)),
    };
    let (parts, body) = req.into_parts();
    let out = outgoing(node, &parts, &address, body.boxed(), false).ok_or(Miss::NotForwardable)?;
    let sent = async {
        let resp = owners
            .client
            .request(out)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok::<_, String>(answer(parts, body))
    };
    match sent.await {
        Ok(r) => {
            node.metrics.socketio_forwarded.inc("forwarded");
            Ok(r)
        }
        Err(e) => {
            tracing::warn!(owner = %address, error = %e, "socket.io request could not reach its session's node");
            owners.forget(&address);
            Err(count(node, Miss::OwnerUnreachable))
        }
    }
}

/// Relays a WebSocket upgrade to the owner of `sid`: the owner answers
/// the handshake, and once it has switched protocols this node copies
/// bytes between the client and the owner until either side closes.
pub async fn relay(
    node: &Arc<Node>,
    sid: &str,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Miss> {
    let owners = &node.socketio.owners;
    let address = match owners.owner_of(node, sid, req.headers()).await {
        Ok(a) => a,
        Err(m) => return Err(count(node, m)),
    };
    let client_side = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    let empty = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let out = outgoing(node, &parts, &address, empty, true).ok_or(Miss::NotForwardable)?;
    let mut resp = match owners.client.request(out).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(owner = %address, error = %e, "socket.io upgrade could not reach its session's node");
            owners.forget(&address);
            return Err(count(node, Miss::OwnerUnreachable));
        }
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The owner refused it (its session ended meanwhile): its answer.
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        node.metrics.socketio_forwarded.inc("forwarded");
        return Ok(answer(parts, body));
    }
    let owner_side = hyper::upgrade::on(&mut resp);
    let mut reply = Response::new(Full::new(Bytes::new()));
    *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (name, value) in resp.headers() {
        if name.as_str().starts_with("access-control-") || name.as_str() == "content-length" {
            continue;
        }
        reply.headers_mut().append(name.clone(), value.clone());
    }
    node.metrics.socketio_forwarded.inc("forwarded");
    let metrics = node.metrics.clone();
    tokio::spawn(async move {
        let (Ok(client), Ok(owner)) = (client_side.await, owner_side.await) else {
            return;
        };
        metrics.socketio_relays.inc();
        let mut client = TokioIo::new(client);
        let mut owner = TokioIo::new(owner);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut owner).await;
        metrics.socketio_relays.dec();
    });
    Ok(reply)
}

fn count(node: &Node, miss: Miss) -> Miss {
    match miss {
        Miss::NotForwardable => {}
        Miss::OwnerUnknown => node.metrics.socketio_forwarded.inc("owner_unknown"),
        Miss::OwnerUnreachable => node.metrics.socketio_forwarded.inc("owner_unreachable"),
    }
    miss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_owner() {
        let sid = new_sid("gateway-2");
        assert_eq!(sid.len(), 28);
        assert!(sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(owner_tag(&sid), Some(tag_of("gateway-2")));
        assert_ne!(tag_of("gateway-1"), tag_of("gateway-2"));
        assert_ne!(new_sid("gateway-2"), sid, "random part");
        // Ids this cluster does not make name no owner.
        for other in ["", "abc", "AAAAAAAAAAAAAAAAAAAA", "not base64!"] {
            assert_eq!(owner_tag(other), None, "{other:?}");
        }
    }
}
