//! The HTTP listener: connection accounting, routes, and the WebSocket
//! upgrade. Every refusal happens before the upgrade, with a status code and
//! a metric.

use crate::backend::Peer;
use crate::protocol::Subprotocol;
use crate::session::{self, Mode, Start};
use crate::Node;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Every response body of the listener.
pub type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = crate::wait_true(&mut stop) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(5);
                let node = node.clone();
                tokio::spawn(connection(node, stream));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The address a request came from, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub std::net::SocketAddr);

/// The address a request came from, when known.
pub fn remote_addr<B>(req: &Request<B>) -> Option<std::net::SocketAddr> {
    req.extensions().get::<RemoteAddr>().map(|r| r.0)
}

async fn connection(node: Arc<Node>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let remote = stream.peer_addr().ok();
    let io = TokioIo::new(stream);
    let mut draining = node.draining();
    // Connections made while draining are still served (`/readyz` says 503,
    // `/metrics` keeps working); only older keep-alive ones are wound down.
    let drain_started = node.is_draining();
    let svc_node = node.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(addr) = remote {
            req.extensions_mut().insert(RemoteAddr(addr));
        }
        let node = svc_node.clone();
        async move { Ok::<_, Infallible>(route(node, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(node.config.handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "http connection ended");
            }
        }
        _ = crate::wait_true(&mut draining), if !drain_started => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

async fn route(node: Arc<Node>, req: Request<Incoming>) -> Response<Body> {
    if let Some(role) = socketio_role(&node, req.uri().path()) {
        return crate::socketio::polling::handle(node, req, role).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served here\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if node.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if node.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !node.adapter_up() {
                text(StatusCode::SERVICE_UNAVAILABLE, "adapter down\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "backend unreachable\n")
            }
        }
        "/metrics" => {
            let mut r = text(StatusCode::OK, node.prometheus.render());
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/ws" => upgrade(node, req, Mode::Roomcast),
        "/echo" if node.config.echo => upgrade(node, req, Mode::Echo),
        path => match crate::static_asset(&node, path) {
            Some((content_type, body)) => {
                let mut r = Response::new(Full::new(Bytes::from_static(body)));
                r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            None if path == "/" => text(
                StatusCode::OK,
                "Roomcast node. WebSocket: /ws (subprotocols roomcast.v1.json, roomcast.v1.proto). \
                 Metrics: /metrics. Run with --demo for the demo page.\n",
            ),
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

/// Takes a slot in the node's connection budget for a new session, or the
/// refusal (503) when the limit or the connection rate says no.
pub fn admit(node: &Arc<Node>) -> Result<ConnectionSlot, Box<Response<Body>>> {
    let max = node.config.max_connections;
    let open = node.open_sessions.fetch_add(1, Ordering::AcqRel) + 1;
    let slot = ConnectionSlot(node.clone());
    let busy = |reason, body, retry_after| {
        let mut r = refuse(node, StatusCode::SERVICE_UNAVAILABLE, reason, body);
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static(retry_after));
        Err(Box::new(r))
    };
    if max > 0 && open > max {
        return busy(
            "max_connections",
            "node at its connection limit; try another node",
            "5",
        );
    }
    if !node.allow_new_connection() {
        return busy(
            "connection_rate",
            "too many new connections; retry shortly",
            "1",
        );
    }
    Ok(slot)
}

/// The TCP stream under a finished upgrade, and what was read past it.
pub async fn upgraded_stream(
    fut: fastwebsockets::upgrade::UpgradeFut,
) -> Option<(TcpStream, Bytes)> {
    let ws = match fut.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return None;
        }
    };
    let upgraded = ws.into_inner().into_inner();
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(p) => Some((p.io.into_inner(), p.read_buf)),
        Err(_) => {
            tracing::error!("upgraded connection is not a TCP stream");
            None
        }
    }
}

/// Whether a path is socket.io's (or, in conformance mode, the Engine.IO
/// suite's), and as what.
fn socketio_role(node: &Node, path: &str) -> Option<crate::socketio::socket::Role> {
    use crate::socketio::socket::Role;
    let cfg = &node.config.socketio;
    if !cfg.enabled {
        return None;
    }
    let under = |base: &str| path == base || Some(path) == base.strip_suffix('/');
    if under(&cfg.path) {
        Some(if cfg.conformance {
            Role::ConformanceSocketIo
        } else {
            Role::SocketIo
        })
    } else if cfg.conformance && under("/engine.io/") {
        Some(Role::ConformanceEngineIo)
    } else {
        None
    }
}

/// A slot in the node's connection budget, given back when dropped.
pub struct ConnectionSlot(Arc<Node>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

fn token_param(req: &Request<Incoming>) -> Option<String> {
    query_param_token(req.uri().query()?)
}

/// The `token` parameter of a query string.
pub fn query_param_token(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` of a query value.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refuse(node: &Node, status: StatusCode, reason: &'static str, body: &str) -> Response<Body> {
    node.metrics.reject(reason);
    text(status, format!("{body}\n"))
}

fn upgrade(node: Arc<Node>, mut req: Request<Incoming>, mode: Mode) -> Response<Body> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return refuse(
            &node,
            StatusCode::UPGRADE_REQUIRED,
            "bad_handshake",
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
        );
    }
    if node.is_draining() {
        return refuse(
            &node,
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "node draining; connect to another node",
        );
    }
    if !node.config.allowed_origins.is_empty() {
        let origin = req.headers().get("origin").and_then(|o| o.to_str().ok());
        let allowed = origin.is_some_and(|o| node.config.allowed_origins.iter().any(|a| a == o));
        if !allowed {
            return refuse(&node, StatusCode::FORBIDDEN, "origin", "origin not allowed");
        }
    }
    let offered = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let negotiated = match mode {
        Mode::Echo => None,
        Mode::Roomcast => match Subprotocol::negotiate(offered) {
            Ok(p) => p,
            Err(_) => {
                return refuse(
                    &node,
                    StatusCode::BAD_REQUEST,
                    "subprotocol",
                    "unsupported subprotocol; offer roomcast.v1.json or roomcast.v1.proto",
                );
            }
        },
    };
    let slot = match admit(&node) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let (grant, bad_token) = match (&node.auth, token_param(&req)) {
        (Some(auth), Some(t)) if mode == Mode::Roomcast => match auth.verify(&t) {
            Ok(g) => (Some(g), false),
            Err(_) => (None, true),
        },
        _ => (None, false),
    };
    let (response, fut) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(x) => x,
        Err(e) => {
            return refuse(
                &node,
                StatusCode::BAD_REQUEST,
                "bad_handshake",
                &format!("bad WebSocket handshake: {e}"),
            )
        }
    };
    let proto = negotiated.unwrap_or(Subprotocol::Json);
    let peer = Peer::from_request(&node, remote_addr(&req), "websocket", req.headers())
        .with_token(token_param(&req));
    // This task only waits for the upgrade; the session gets a task of its
    // own, which holds none of what this one captured.
    tokio::spawn(async move {
        let Some((stream, read_ahead)) = upgraded_stream(fut).await else {
            return;
        };
        let start = Start {
            stream,
            read_ahead,
            mode,
            proto,
            grant,
            bad_token,
            peer,
        };
        session::spawn(node, start, slot);
    });
    let (parts, _) = response.into_parts();
    let mut r = Response::from_parts(parts, Full::new(Bytes::new()));
    if let Some(p) = negotiated {
        r.headers_mut()
            .insert("sec-websocket-protocol", HeaderValue::from_static(p.name()));
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Eb%2e+c"), "a.b. c");
        assert_eq!(super::percent_decode("100%"), "100%");
        assert_eq!(super::percent_decode("%zz"), "%zz");
    }
}
