//! The client of the application's `roomcast.v1.Backend` gRPC service: the
//! hooks through which the application decides what clients may do
//! (`Connect`, `Subscribe`, `Publish`), answers them (`Rpc`) and hears that
//! they left (`Disconnected`).
//!
//! One lazily connected HTTP/2 channel per node carries every call. Each
//! call has a deadline (`backend.timeout`) and takes a slot of the node's
//! budget (`backend.max_concurrency`) and of its session's
//! (`backend.max_per_session`); a call that finds no slot is refused at
//! once, so a slow backend costs a bounded number of waiting calls, never
//! a growing heap. The hooks are plain async functions over owned values
//! (`Arc<Node>`, `Arc<ClientShared>`, `String`, `Data`), so a front-end may
//! await them inline or inside a spawned `'static` future.

use crate::auth::Grant;
use crate::client::{ClientShared, Refusal};
use crate::protocol::{Data, ErrorCode};
use crate::Node;
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics::{Counter, Gauge, Histogram};
use roomcast_proto::v1 as pb;
use roomcast_proto::v1::backend_client::BackendClient;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The methods of the service, as the `method` label spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `Connect`.
    Connect,
    /// `Subscribe`.
    Subscribe,
    /// `Publish`.
    Publish,
    /// `Rpc`.
    Rpc,
    /// `Disconnected`.
    Disconnected,
}

impl Method {
    const ALL: [Method; 5] = [
        Self::Connect,
        Self::Subscribe,
        Self::Publish,
        Self::Rpc,
        Self::Disconnected,
    ];

    /// The gRPC method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "Connect",
            Self::Subscribe => "Subscribe",
            Self::Publish => "Publish",
            Self::Rpc => "Rpc",
            Self::Disconnected => "Disconnected",
        }
    }
}

/// Values of the `result` label: `ok` (allowed or answered), `denied` (the
/// backend refused), `error` (the call failed), `timeout`, `overloaded`
/// (no slot left on the node or in the session; never sent).
const RESULTS: [&str; 5] = ["ok", "denied", "error", "timeout", "overloaded"];

/// Why a hook call gave no answer. Each maps to what the client sees
/// ([`CallError::refusal`]); none of them is the backend saying no.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer within `backend.timeout`.
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The call failed: unreachable backend, or an error status.
    #[error("the backend failed: {0}")]
    Failed(String),
    /// `backend.max_concurrency` calls are in flight on this node.
    #[error("too many backend calls in flight on this node")]
    NodeBusy,
    /// `backend.max_per_session` calls are in flight for this session.
    #[error("too many backend calls in flight for this session")]
    SessionBusy,
}

impl CallError {
    /// The error the client gets: `internal` when the backend failed,
    /// `too_many_requests` when a limit refused the call.
    pub fn refusal(&self) -> Refusal {
        let code = match self {
            Self::Timeout(_) | Self::Failed(_) => ErrorCode::Internal,
            Self::NodeBusy | Self::SessionBusy => ErrorCode::TooManyRequests,
        };
        (code, self.to_string())
    }

    /// The close a refused connect gets: 1013 (try again later) when a
    /// limit refused the call, else 1011 (internal error).
    pub fn close_code(&self) -> u16 {
        match self {
            Self::NodeBusy | Self::SessionBusy => 1013,
            Self::Timeout(_) | Self::Failed(_) => 1011,
        }
    }

    fn result(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Failed(_) => "error",
            Self::NodeBusy | Self::SessionBusy => "overloaded",
        }
    }
}

/// What a client's connection looked like when it opened: what `Connect`
/// is told besides the token.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The client's address, `ip:port`.
    pub remote_addr: String,
    /// `websocket` or `polling`.
    pub transport: &'static str,
    /// The request headers named in `backend.headers`.
    pub headers: Vec<(String, String)>,
    /// The `token` query parameter of the request, "" when none: what
    /// `Connect` is given when the client's connect carries no token.
    pub token: String,
}

impl Peer {
    /// The allow-listed headers of a request, with the client's address.
    pub fn from_request(
        node: &Node,
        remote: Option<std::net::SocketAddr>,
        transport: &'static str,
        headers: &hyper::HeaderMap,
    ) -> Self {
        let wanted = &node.config.backend.headers;
        let headers = if node.backend.is_some() {
            wanted
                .iter()
                .filter_map(|name| {
                    let v = headers.get(name.as_str())?.to_str().ok()?;
                    Some((name.clone(), v.to_owned()))
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            remote_addr: remote.map(|a| a.to_string()).unwrap_or_default(),
            transport,
            headers,
            token: String::new(),
        }
    }

    /// With the `token` query parameter of the request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.unwrap_or_default();
        self
    }
}

/// What `Connect` is asked besides what the session knows of itself.
#[derive(Debug, Clone, Default)]
pub struct ConnectInput {
    /// The token the client gave, "" when none.
    pub token: String,
    /// The free text of the roomcast.v1 `connect` command.
    pub client: String,
    /// The socket.io CONNECT payload, JSON; empty otherwise.
    pub auth: bytes::Bytes,
    /// The user a verified JWT named, "" when none.
    pub user: String,
}

/// The backend's decision on a connecting client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// Let it in.
    Allow {
        /// The user, when the backend names one.
        user: Option<String>,
        /// Rooms to subscribe it to at once.
        rooms: Vec<String>,
        /// When the session must end, Unix seconds.
        expire_at: Option<u64>,
        /// JSON shown with the client in presence.
        info: Option<String>,
    },
    /// Refuse it: close code and reason.
    Deny {
        /// The WebSocket close code.
        code: u16,
        /// The reason (the socket.io CONNECT_ERROR message).
        reason: String,
    },
}

impl ConnectOutcome {
    /// An allowed client's grant and rooms: its presence info is set on
    /// `shared`, and the grant is `known` (the JWT's, or an empty one) with
    /// the backend's user and expiry in place. A denial's close code and
    /// reason otherwise.
    pub fn admit(
        self,
        shared: &ClientShared,
        known: Option<Grant>,
    ) -> Result<(Grant, Vec<String>), (u16, String)> {
        let (user, rooms, expire_at, info) = match self {
            ConnectOutcome::Allow {
                user,
                rooms,
                expire_at,
                info,
            } => (user, rooms, expire_at, info),
            ConnectOutcome::Deny { code, reason } => return Err((code, reason)),
        };
        if let Some(info) = info {
            shared.set_presence_info(info);
        }
        let mut g = known.unwrap_or_default();
        if let Some(u) = user {
            g.user = u;
        }
        if expire_at.is_some() {
            g.expires_at = expire_at;
        }
        Ok((g, rooms))
    }
}

/// Adds `authorization: Bearer …` to every call when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(t) = &self.0 {
            r.metadata_mut().insert("authorization", t.clone());
        }
        Ok(r)
    }
}

type Client = BackendClient<InterceptedService<Channel, Bearer>>;

/// Why the backend client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A setting is unusable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

struct BackendMetrics {
    requests: HashMap<(Method, &'static str), Counter>,
    seconds: HashMap<Method, Histogram>,
    limited_node: Counter,
    limited_session: Counter,
    up: Gauge,
}

const REQUESTS: &str = "roomcast_backend_requests_total";
const SECONDS: &str = "roomcast_backend_request_seconds";
const LIMITED: &str = "roomcast_backend_limited_total";
const UP: &str = "roomcast_backend_up";

impl BackendMetrics {
    fn new() -> Self {
        describe_counter!(
            REQUESTS,
            "Backend hook calls, by method and result (ok, denied, error, timeout, overloaded)."
        );
        describe_histogram!(SECONDS, "Backend hook call latency, by method.");
        describe_counter!(
            LIMITED,
            "Backend hook calls refused by a concurrency limit, by scope (node, session)."
        );
        describe_gauge!(UP, "1 while the backend answers.");
        let mut requests = HashMap::new();
        let mut seconds = HashMap::new();
        for m in Method::ALL {
            for r in RESULTS {
                requests.insert(
                    (m, r),
                    counter!(REQUESTS, "method" => m.as_str(), "result" => r),
                );
            }
            seconds.insert(m, histogram!(SECONDS, "method" => m.as_str()));
        }
        let up = gauge!(UP);
        up.set(0.0);
        Self {
            requests,
            seconds,
            limited_node: counter!(LIMITED, "scope" => "node"),
            limited_session: counter!(LIMITED, "scope" => "session"),
            up,
        }
    }

    fn count(&self, m: Method, result: &'static str) {
        if let Some(c) = self.requests.get(&(m, result)) {
            c.increment(1);
        }
    }
}

/// A slot of the node's and the session's budgets, given back when dropped.
pub struct Permit {
    _node: OwnedSemaphorePermit,
    session: Option<Arc<ClientShared>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = &self.session {
            s.backend_calls.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The node's client of the backend.
pub struct Backend {
    client: Client,
    /// The channel and token under `client`, for the health probe.
    channel: Channel,
    bearer: Bearer,
    timeout: Duration,
    /// Calls in flight on this node: the node's budget.
    slots: Arc<Semaphore>,
    per_session: usize,
    /// Whether the backend answers: readiness follows it.
    up: watch::Sender<bool>,
    metrics: BackendMetrics,
}

impl Backend {
    /// A client of `config.backend.url`, or `None` when none is set. The
    /// channel connects on first use, and again after a failure.
    pub fn new(config: &crate::Config) -> Result<Option<Arc<Self>>, BackendError> {
        let b = &config.backend;
        let Some(url) = &b.url else { return Ok(None) };
        let invalid = |key, reason: String| BackendError::Invalid { key, reason };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| invalid("backend.url", e.to_string()))?
            .connect_timeout(b.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if let Some(ca) = &b.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| {
                invalid(
                    "backend.tls_ca",
                    format!("cannot read {}: {e}", ca.display()),
                )
            })?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| invalid("backend.tls_ca", e.to_string()))?;
        }
        let bearer = match &b.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| invalid("backend.token", "not a valid header value".into()))?,
            ),
            None => None,
        };
        let channel = endpoint.connect_lazy();
        let (up, _) = watch::channel(false);
        Ok(Some(Arc::new(Self {
            client: BackendClient::with_interceptor(channel.clone(), Bearer(bearer.clone())),
            channel,
            bearer: Bearer(bearer),
            timeout: b.timeout,
            slots: Arc::new(Semaphore::new(b.max_concurrency)),
            per_session: b.max_per_session,
            up,
            metrics: BackendMetrics::new(),
        })))
    }

    /// Follows whether the backend answers.
    pub fn health(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Whether the backend answered the last call or probe.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    fn set_up(&self, up: bool) {
        self.metrics.up.set(f64::from(u8::from(up)));
        self.up.send_if_modified(|v| std::mem::replace(v, up) != up);
    }

    /// Probes the backend until `stop` turns true: every second while it is
    /// unreachable, every five while it answers. The probe is the standard
    /// `grpc.health.v1.Health/Check`; a backend that does not serve it
    /// answers UNIMPLEMENTED, which still proves it is there.
    pub async fn probe(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let mut health = HealthClient::with_interceptor(self.channel.clone(), self.bearer.clone());
        loop {
            let mut req = tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            });
            req.set_timeout(self.timeout);
            let up = match tokio::time::timeout(self.timeout, health.check(req)).await {
                Ok(Ok(r)) => r.into_inner().status != ServingStatus::NotServing as i32,
                Ok(Err(s)) => !unreachable(&s),
                Err(_) => false,
            };
            self.set_up(up);
            let every = if up {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(1)
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = crate::wait_true(&mut stop) => return,
            }
        }
    }

    /// Takes a slot for a call of `session` (none for notifications after
    /// the session is gone).
    fn permit(&self, session: Option<&Arc<ClientShared>>) -> Result<Permit, CallError> {
        if let Some(s) = session {
            if s.backend_calls.fetch_add(1, Ordering::AcqRel) >= self.per_session {
                s.backend_calls.fetch_sub(1, Ordering::AcqRel);
                self.metrics.limited_session.increment(1);
                return Err(CallError::SessionBusy);
            }
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(p) => Ok(Permit {
                _node: p,
                session: session.cloned(),
            }),
            Err(_) => {
                if let Some(s) = session {
                    s.backend_calls.fetch_sub(1, Ordering::AcqRel);
                }
                self.metrics.limited_node.increment(1);
                Err(CallError::NodeBusy)
            }
        }
    }

    /// One call: the deadline, the latency, the reachability it shows. The
    /// permit is held until the answer (or the deadline).
    async fn call<T, F, Fut>(&self, method: Method, permit: Permit, f: F) -> Result<T, CallError>
    where
        F: FnOnce(Client, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        let r = tokio::time::timeout(self.timeout, f(self.client.clone(), self.timeout)).await;
        drop(permit);
        if let Some(h) = self.metrics.seconds.get(&method) {
            h.record(start.elapsed().as_secs_f64());
        }
        let r = match r {
            Err(_) => Err(CallError::Timeout(self.timeout)),
            // The backend saw the deadline too (`grpc-timeout`), and may have
            // answered that it passed a moment before our own timer.
            Ok(Err(s)) if matches!(s.code(), Code::DeadlineExceeded | Code::Cancelled) => {
                Err(CallError::Timeout(self.timeout))
            }
            Ok(Err(s)) => {
                if unreachable(&s) {
                    self.set_up(false);
                }
                Err(CallError::Failed(format!("{}: {}", s.code(), s.message())))
            }
            Ok(Ok(r)) => {
                self.set_up(true);
                Ok(r.into_inner())
            }
        };
        if let Err(e) = &r {
            tracing::debug!(method = method.as_str(), error = %e, "backend call failed");
            self.metrics.count(method, e.result());
        }
        r
    }

    fn caller(node: &Node, shared: &ClientShared) -> pb::Caller {
        let peer = shared.peer();
        pb::Caller {
            client_id: shared.client_id.clone(),
            user: shared.user().to_owned(),
            transport: peer.map_or("websocket", |p| p.transport).to_owned(),
            protocol: shared.proto.name().to_owned(),
            remote_addr: peer.map(|p| p.remote_addr.clone()).unwrap_or_default(),
            node: node.hub.node_id().to_owned(),
        }
    }

    /// `Connect`: whether a client may connect, and as whom.
    pub async fn connect(
        &self,
        node: &Node,
        shared: &Arc<ClientShared>,
        input: ConnectInput,
    ) -> Result<ConnectOutcome, CallError> {
        let permit = self.permit(Some(shared)).inspect_err(|e| {
            self.metrics.count(Method::Connect, e.result());
        })?;
        let mut caller = Self::caller(node, shared);
        if caller.user.is_empty() {
            caller.user = input.user;
        }
        let headers = shared
            .peer()
            .map(|p| p.headers.iter().cloned().collect())
            .unwrap_or_default();
        let req = pb::ConnectRequest {
            caller: Some(caller),
            token: input.token,
            client: input.client,
            auth: input.auth,
            socketio_namespace: shared.nsp.to_string(),
            headers,
        };
        let reply = self
            .call(Method::Connect, permit, |mut c, t| async move {
                c.connect(deadline(req, t)).await
            })
            .await?;
        let info = match reply.deny {
            None if !reply.info.is_empty() => match String::from_utf8(reply.info.to_vec()) {
                Ok(s) if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_ok() => Some(s),
                _ => {
                    self.metrics.count(Method::Connect, "error");
                    return Err(CallError::Failed(
                        "the backend answered info that is not JSON".into(),
                    ));
                }
            },
            _ => None,
        };
        let outcome = match reply.deny {
            Some(d) => ConnectOutcome::Deny {
                code: close_code(d.code),
                reason: d.reason,
            },
            None => ConnectOutcome::Allow {
                user: (!reply.user.is_empty()).then_some(reply.user),
                rooms: reply.rooms,
                expire_at: (reply.expire_at != 0).then_some(reply.expire_at),
                info,
            },
        };
        let result = match outcome {
            ConnectOutcome::Allow { .. } => "ok",
            ConnectOutcome::Deny { .. } => "denied",
        };
        self.metrics.count(Method::Connect, result);
        Ok(outcome)
    }

    /// Whether a subscribe to `room` asks the backend (so callers skip
    /// building the hook's arguments when it does not).
    pub fn subscribe_hook_on(node: &Node, room: &str) -> bool {
        node.backend.is_some() && node.hub.namespaces().for_room(room).subscribe_hook
    }

    /// Whether a publish to `room` asks the backend.
    pub fn publish_hook_on(node: &Node, room: &str) -> bool {
        node.backend.is_some() && node.hub.namespaces().for_room(room).publish_hook
    }

    /// The `Subscribe` hook: `Ok` when the namespace of `room` has no
    /// `subscribe_hook` or the backend allows the subscription.
    pub async fn check_subscribe(
        node: Arc<Node>,
        shared: Arc<ClientShared>,
        room: String,
    ) -> Result<(), Refusal> {
        let Some(b) = &node.backend else {
            return Ok(());
        };
        if !node.hub.namespaces().for_room(&room).subscribe_hook {
            return Ok(());
        }
        let permit = b
            .permit(Some(&shared))
            .map_err(|e| b.refused(Method::Subscribe, e))?;
        let req = pb::SubscribeHookRequest {
            caller: Some(Self::caller(&node, &shared)),
            room,
        };
        let reply = b
            .call(Method::Subscribe, permit, |mut c, t| async move {
                c.subscribe(deadline(req, t)).await
            })
            .await
            .map_err(|e| e.refusal())?;
        b.verdict(Method::Subscribe, reply.error)
    }

    /// The `Publish` hook: `Ok(None)` to publish the client's data,
    /// `Ok(Some(data))` to publish the backend's instead.
    pub async fn check_publish(
        node: Arc<Node>,
        shared: Arc<ClientShared>,
        room: String,
        event: String,
        data: Data,
    ) -> Result<Option<Data>, Refusal> {
        let Some(b) = &node.backend else {
            return Ok(None);
        };
        if !node.hub.namespaces().for_room(&room).publish_hook {
            return Ok(None);
        }
        let permit = b
            .permit(Some(&shared))
            .map_err(|e| b.refused(Method::Publish, e))?;
        let req = pb::PublishHookRequest {
            caller: Some(Self::caller(&node, &shared)),
            room,
            event,
            data: data.bytes,
            binary: data.binary,
        };
        let reply = b
            .call(Method::Publish, permit, |mut c, t| async move {
                c.publish(deadline(req, t)).await
            })
            .await
            .map_err(|e| e.refusal())?;
        b.verdict(Method::Publish, reply.error)?;
        match reply.replace {
            None => Ok(None),
            Some(r) => {
                let data = Data {
                    bytes: r.data,
                    binary: r.binary,
                };
                check_answer(&data, node.config.max_message_bytes)?;
                Ok(Some(data))
            }
        }
    }

    /// Whether `method` is one clients may call: the backend is set and the
    /// method's namespace has `rpc` on.
    pub fn serves_rpc(node: &Node, method: &str) -> bool {
        node.backend.is_some() && node.hub.namespaces().for_room(method).rpc
    }

    /// The `Rpc` hook: the backend's answer to `method`.
    pub async fn rpc(
        node: Arc<Node>,
        shared: Arc<ClientShared>,
        method: String,
        data: Data,
    ) -> Result<Data, Refusal> {
        let permit = Self::rpc_permit(&node, &shared, &method)?;
        Self::rpc_with(node, shared, method, data, permit).await
    }

    /// Checks an `rpc` and takes its slot, so the caller can refuse at once
    /// what would otherwise wait in a spawned task.
    pub fn rpc_permit(
        node: &Node,
        shared: &Arc<ClientShared>,
        method: &str,
    ) -> Result<Permit, Refusal> {
        if method.is_empty() || method.len() > 200 {
            return Err((
                ErrorCode::BadRequest,
                "a method name is 1 to 200 bytes".into(),
            ));
        }
        let Some(b) = node
            .backend
            .as_ref()
            .filter(|_| Self::serves_rpc(node, method))
        else {
            return Err((ErrorCode::NotFound, format!("no method {method:?}")));
        };
        b.permit(Some(shared))
            .map_err(|e| b.refused(Method::Rpc, e))
    }

    /// The `Rpc` hook with its slot already taken ([`Backend::rpc_permit`]).
    pub async fn rpc_with(
        node: Arc<Node>,
        shared: Arc<ClientShared>,
        method: String,
        data: Data,
        permit: Permit,
    ) -> Result<Data, Refusal> {
        let b = node.backend.as_ref().expect("rpc_permit checked it");
        let req = pb::RpcRequest {
            caller: Some(Self::caller(&node, &shared)),
            method,
            data: data.bytes,
            binary: data.binary,
        };
        let reply = b
            .call(Method::Rpc, permit, |mut c, t| async move {
                c.rpc(deadline(req, t)).await
            })
            .await
            .map_err(|e| e.refusal())?;
        b.verdict(Method::Rpc, reply.error)?;
        let data = if reply.data.is_empty() && !reply.binary {
            Data {
                bytes: bytes::Bytes::from_static(b"null"),
                binary: false,
            }
        } else {
            Data {
                bytes: reply.data,
                binary: reply.binary,
            }
        };
        check_answer(&data, node.config.max_message_bytes)?;
        Ok(data)
    }

    /// `Disconnected`, when `backend.disconnected` is on: sent from a task of
    /// its own, never waited for. With the node's budget spent it is
    /// dropped, and counted.
    pub fn notify_disconnected(node: &Arc<Node>, shared: &ClientShared, reason: &'static str) {
        let Some(b) = &node.backend else { return };
        if !node.config.backend.disconnected {
            return;
        }
        let permit = match b.permit(None) {
            Ok(p) => p,
            Err(e) => {
                b.metrics.count(Method::Disconnected, e.result());
                return;
            }
        };
        let req = pb::DisconnectedRequest {
            caller: Some(Self::caller(node, shared)),
            reason: reason.to_owned(),
        };
        let b = b.clone();
        tokio::spawn(async move {
            let r = b
                .call(Method::Disconnected, permit, |mut c, t| async move {
                    c.disconnected(deadline(req, t)).await
                })
                .await;
            if r.is_ok() {
                b.metrics.count(Method::Disconnected, "ok");
            }
        });
    }

    fn refused(&self, method: Method, e: CallError) -> Refusal {
        self.metrics.count(method, e.result());
        e.refusal()
    }

    /// Counts an answer and turns its error, if any, into a refusal.
    fn verdict(&self, method: Method, error: Option<pb::HookError>) -> Result<(), Refusal> {
        match error {
            None => {
                self.metrics.count(method, "ok");
                Ok(())
            }
            Some(e) => {
                self.metrics.count(method, "denied");
                let code = ErrorCode::ALL
                    .into_iter()
                    .find(|c| c.as_str() == e.code)
                    .unwrap_or(ErrorCode::Forbidden);
                let message = if e.message.is_empty() {
                    "refused by the backend".to_owned()
                } else {
                    e.message
                };
                Err((code, message))
            }
        }
    }
}

/// Whether a failed call shows the backend cannot be reached (or refuses
/// the node's token), as opposed to a backend that answered with an error.
fn unreachable(s: &Status) -> bool {
    matches!(s.code(), Code::Unavailable | Code::Unauthenticated)
}

/// The request with its deadline, so the backend sees it too.
fn deadline<T>(msg: T, t: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(t);
    r
}

/// A deny's close code: 0 means 4001; codes a server may not send (below
/// 1000, 1004-1006, 1015, past 4999) become 1008 (policy violation).
fn close_code(code: u32) -> u16 {
    match code {
        0 => 4001,
        1000..=1003 | 1007..=1014 | 3000..=4999 => code as u16,
        _ => 1008,
    }
}

/// What the backend answers goes to clients as it is: it must be JSON
/// unless marked binary, and no larger than what a client may send.
fn check_answer(data: &Data, max: usize) -> Result<(), Refusal> {
    if data.bytes.len() > max {
        return Err((
            ErrorCode::Internal,
            "the backend answered more than max_message_bytes".into(),
        ));
    }
    if !data.binary && serde_json::from_slice::<serde::de::IgnoredAny>(&data.bytes).is_err() {
        return Err((
            ErrorCode::Internal,
            "the backend answered data that is not JSON (set binary for bytes)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deny_codes_are_ones_a_server_may_send() {
        assert_eq!(close_code(0), 4001);
        assert_eq!(close_code(4003), 4003);
        assert_eq!(close_code(1008), 1008);
        assert_eq!(close_code(1005), 1008);
        assert_eq!(close_code(70000), 1008);
    }

    #[test]
    fn answers_must_be_json_unless_binary() {
        let json = |s: &'static str| Data {
            bytes: bytes::Bytes::from_static(s.as_bytes()),
            binary: false,
        };
        assert!(check_answer(&json(r#"{"ok":true}"#), 100).is_ok());
        assert_eq!(
            check_answer(&json("nope"), 100).unwrap_err().0,
            ErrorCode::Internal
        );
        assert!(check_answer(&json("[1,2,3]"), 3).is_err());
        let bin = Data {
            bytes: bytes::Bytes::from_static(b"\xff"),
            binary: true,
        };
        assert!(check_answer(&bin, 100).is_ok());
    }

    #[test]
    fn failures_map_to_the_contract() {
        assert_eq!(
            CallError::Timeout(Duration::from_secs(2)).refusal().0,
            ErrorCode::Internal
        );
        assert_eq!(CallError::Failed("x".into()).close_code(), 1011);
        assert_eq!(CallError::NodeBusy.close_code(), 1013);
        assert_eq!(
            CallError::SessionBusy.refusal().0,
            ErrorCode::TooManyRequests
        );
    }
}
