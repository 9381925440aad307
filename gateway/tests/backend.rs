//! Backend hooks against a real gRPC backend: a tonic server of the
//! generated `roomcast.v1.Backend` service, started by each test on a free
//! port, with behaviour chosen by what the client sends (a token, a room,
//! a method). Clients speak the JSON and protobuf subprotocols over real
//! sockets; the socket.io side is tested with socket.io-client in
//! `tests/socketio/backend.test.mjs`.

mod common;

use common::{config_file, free_port, Client, Node};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use prost::Message as _;
use roomcast_proto::v1 as pb;
use roomcast_proto::v1::backend_server::{Backend, BackendServer};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tonic::{Request, Response, Status};

/// What the test backend saw.
#[derive(Default)]
struct Seen {
    connects: Vec<pb::ConnectRequest>,
    disconnected: Vec<pb::DisconnectedRequest>,
    publishes: Vec<pb::PublishHookRequest>,
    bearer: Vec<String>,
}

#[derive(Clone, Default)]
struct TestBackend {
    seen: Arc<Mutex<Seen>>,
}

const SLOW: Duration = Duration::from_secs(3);

fn error(code: &str, message: &str) -> Option<pb::HookError> {
    Some(pb::HookError {
        code: code.into(),
        message: message.into(),
    })
}

#[tonic::async_trait]
impl Backend for TestBackend {
    async fn connect(
        &self,
        r: Request<pb::ConnectRequest>,
    ) -> Result<Response<pb::ConnectReply>, Status> {
        if let Some(a) = r.metadata().get("authorization") {
            self.seen.lock().bearer.push(a.to_str().unwrap().to_owned());
        }
        let r = r.into_inner();
        self.seen.lock().connects.push(r.clone());
        let mut reply = pb::ConnectReply::default();
        match r.token.as_str() {
            "deny" => {
                reply.deny = Some(pb::ConnectDeny {
                    code: 4003,
                    reason: "go away".into(),
                })
            }
            "slow" => tokio::time::sleep(SLOW).await,
            "broken" => return Err(Status::internal("database down")),
            "short" => {
                reply.user = "short-lived".into();
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                reply.expire_at = now + 1;
            }
            "badinfo" => reply.info = bytes::Bytes::from_static(b"{not json"),
            t => {
                reply.user = format!("user-{t}");
                reply.rooms = vec!["chat.welcome".into()];
                reply.info = serde_json::to_vec(&json!({ "token": t })).unwrap().into();
            }
        }
        Ok(Response::new(reply))
    }

    async fn subscribe(
        &self,
        r: Request<pb::SubscribeHookRequest>,
    ) -> Result<Response<pb::SubscribeHookReply>, Status> {
        let r = r.into_inner();
        let mut reply = pb::SubscribeHookReply::default();
        match r.room.as_str() {
            "chat.secret" => reply.error = error("forbidden", "members only"),
            "chat.slow" => tokio::time::sleep(SLOW).await,
            _ => {}
        }
        Ok(Response::new(reply))
    }

    async fn publish(
        &self,
        r: Request<pb::PublishHookRequest>,
    ) -> Result<Response<pb::PublishHookReply>, Status> {
        let r = r.into_inner();
        self.seen.lock().publishes.push(r.clone());
        let mut reply = pb::PublishHookReply::default();
        let text = String::from_utf8_lossy(&r.data).into_owned();
        if text.contains("spam") {
            reply.error = error("bad_request", "no spam");
        } else if r.room == "chat.slow" {
            tokio::time::sleep(SLOW).await;
        } else if r.room == "chat.shout" {
            reply.replace = Some(pb::ReplacedData {
                data: serde_json::to_vec(
                    &json!({ "text": text.to_uppercase(), "by": r.caller.unwrap().user }),
                )
                .unwrap()
                .into(),
                binary: false,
            });
        }
        Ok(Response::new(reply))
    }

    async fn rpc(&self, r: Request<pb::RpcRequest>) -> Result<Response<pb::RpcReply>, Status> {
        let r = r.into_inner();
        let caller = r.caller.clone().unwrap_or_default();
        let mut reply = pb::RpcReply::default();
        match r.method.as_str() {
            "slow" => tokio::time::sleep(SLOW).await,
            "missing" => reply.error = error("not_found", "no such thing"),
            "fail" => return Err(Status::unknown("boom")),
            "reverse" => {
                let mut d = r.data.to_vec();
                d.reverse();
                reply.data = d.into();
                reply.binary = true;
            }
            _ if r.binary => {
                reply.data = r.data;
                reply.binary = true;
            }
            _ => {
                let data: Value = serde_json::from_slice(&r.data).unwrap();
                let answer = json!({
                    "method": r.method,
                    "data": data,
                    "user": caller.user,
                    "protocol": caller.protocol,
                    "transport": caller.transport,
                });
                reply.data = serde_json::to_vec(&answer).unwrap().into();
            }
        }
        Ok(Response::new(reply))
    }

    async fn disconnected(
        &self,
        r: Request<pb::DisconnectedRequest>,
    ) -> Result<Response<pb::DisconnectedReply>, Status> {
        self.seen.lock().disconnected.push(r.into_inner());
        Ok(Response::new(pb::DisconnectedReply {}))
    }
}

/// A running test backend on a runtime of its own, so `stop` kills it
/// like a crashed process: listener, connections and calls in flight.
struct Running {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    backend: TestBackend,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A runtime may not block inside another: let it go in the background.
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

impl Running {
    async fn start(port: u16, backend: TestBackend) -> Running {
        Self::start_with(port, backend, None).await
    }

    /// Serves TLS with this certificate and key (PEM).
    async fn start_tls(backend: TestBackend, cert: String, key: String) -> Running {
        Self::start_with(0, backend, Some((cert, key))).await
    }

    async fn start_with(port: u16, backend: TestBackend, tls: Option<(String, String)>) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .spawn(async move { tokio::net::TcpListener::bind(("127.0.0.1", port)).await })
            .await
            .unwrap()
            .expect("bind the test backend");
        let port = listener.local_addr().unwrap().port();
        let svc = BackendServer::new(backend.clone());
        runtime.spawn(async move {
            let mut builder = tonic::transport::Server::builder();
            if let Some((cert, key)) = tls {
                let identity = tonic::transport::Identity::from_pem(cert, key);
                builder = builder
                    .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                    .unwrap();
            }
            builder
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Running {
            port,
            runtime: Some(runtime),
            backend,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stop(self) {
        drop(self);
    }
}

const CONFIG: &str = r#"
[backend]
connect = true
disconnected = true
headers = ["x-tenant"]

[namespaces.chat]
subscribe_hook = true
publish_hook = true
presence = true

[namespaces.default]
rpc = true

[namespaces.plain]
rpc = false
"#;

async fn node_with(backend: &Running, extra: &[&str], config: &str) -> Node {
    let file = config_file(config);
    let url = backend.url();
    let mut args = vec![
        "--config",
        file.to_str().unwrap(),
        "--backend-url",
        &url,
        "--backend-timeout",
        "400ms",
    ];
    args.extend_from_slice(extra);
    Node::start(&args).await
}

async fn connected(node: &Node, token: &str) -> Client {
    let mut c = Client::connect(node).await;
    let r = c.call(json!({"op":"connect","token":token}), 1).await;
    assert_eq!(r["op"], "connected", "{r}");
    c
}

#[tokio::test]
async fn connect_allows_denies_and_fails_as_the_contract_says() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;

    // Allowed: the backend names the user and the rooms to join.
    let mut req = node.ws_url("/ws").into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "roomcast.v1.json".parse().unwrap(),
    );
    req.headers_mut()
        .insert("x-tenant", "acme".parse().unwrap());
    req.headers_mut()
        .insert("x-other", "secret".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client { ws, protocol: None };
    let r = c
        .call(json!({"op":"connect","token":"alice","client":"test/1"}), 1)
        .await;
    assert_eq!(r["op"], "connected", "{r}");
    let joined = c.recv().await;
    assert_eq!(joined["op"], "subscribed", "{joined}");
    assert_eq!(joined["room"], "chat.welcome");
    let who = c
        .call(json!({"op":"rpc","method":"whoami","data":null}), 2)
        .await;
    assert_eq!(who["data"]["user"], "user-alice", "{who}");
    {
        let seen = backend.backend.seen.lock();
        let first = &seen.connects[0];
        assert_eq!(first.token, "alice");
        assert_eq!(first.client, "test/1");
        let caller = first.caller.as_ref().unwrap();
        assert_eq!(caller.protocol, "roomcast.v1.json");
        assert_eq!(caller.transport, "websocket");
        assert!(caller.remote_addr.starts_with("127.0.0.1:"), "{caller:?}");
        assert_eq!(
            first.headers.get("x-tenant").map(String::as_str),
            Some("acme")
        );
        assert!(
            !first.headers.contains_key("x-other"),
            "only allow-listed headers"
        );
    }

    // Denied: the backend's close code and reason.
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"deny","id":1})).await;
    assert_eq!(c.closed().await, (4003, "go away".to_owned()));

    // Timed out, or failed: close 1011.
    let mut c = Client::connect(&node).await;
    let started = std::time::Instant::now();
    c.send(json!({"op":"connect","token":"slow","id":1})).await;
    assert_eq!(c.closed().await.0, 1011);
    assert!(
        started.elapsed() < SLOW,
        "the timeout, not the backend, ended it"
    );
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"broken","id":1}))
        .await;
    assert_eq!(c.closed().await.0, 1011);
    // Presence info that is not JSON is a failing backend, not a client's.
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"badinfo","id":1}))
        .await;
    assert_eq!(c.closed().await.0, 1011);

    // With the hook on, nothing goes before connect.
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"subscribe","room":"chat.a","id":1}))
        .await;
    assert_eq!(c.closed().await.0, 4001);

    // An expiry from the backend ends the session with 4001.
    let mut c = connected(&node, "short").await;
    assert_eq!(c.closed().await.0, 4001);

    assert!(
        node.metric("roomcast_backend_requests_total{method=\"Connect\",result=\"ok\"}")
            .await
            >= 2.0
    );
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Connect\",result=\"denied\"}",
        1.0,
    )
    .await;
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Connect\",result=\"timeout\"}",
        1.0,
    )
    .await;
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Connect\",result=\"error\"}",
        2.0,
    )
    .await;
    backend.stop();
}

#[tokio::test]
async fn connect_works_with_jwt_auth_and_a_bearer_token() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(
        &backend,
        &["--jwt-secret", "s3cret", "--backend-token", "hook-token"],
        CONFIG,
    )
    .await;
    let claims = json!({"sub":"jwt-user","exp": 4_000_000_000u64});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"s3cret"),
    )
    .unwrap();
    // A bad JWT never reaches the backend.
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"nope","id":1})).await;
    assert_eq!(c.closed().await.0, 4001);
    assert!(backend.backend.seen.lock().connects.is_empty());
    // A good one does, with its subject; the backend's user wins.
    let mut c = connected(&node, &token).await;
    let who = c.call(json!({"op":"rpc","method":"whoami"}), 2).await;
    assert_eq!(who["data"]["user"], format!("user-{token}"));
    {
        let seen = backend.backend.seen.lock();
        assert_eq!(seen.connects[0].caller.as_ref().unwrap().user, "jwt-user");
        assert_eq!(seen.bearer, vec!["Bearer hook-token".to_owned()]);
    }
    // A token in the URL reaches the backend too, and its user still wins.
    let mut c = Client::connect_with(&node, &format!("/ws?token={token}"), None).await;
    let r = c.call(json!({"op":"connect"}), 1).await;
    assert_eq!(r["op"], "connected", "{r}");
    let who = c.call(json!({"op":"rpc","method":"whoami"}), 2).await;
    assert_eq!(who["data"]["user"], format!("user-{token}"));
    backend.stop();
}

#[tokio::test]
async fn rpc_answers_fails_and_times_out_over_json() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;
    let mut c = connected(&node, "bob").await;
    let r = c
        .call(
            json!({"op":"rpc","method":"chat.history","data":{"n":[1,2]}}),
            5,
        )
        .await;
    assert_eq!(r["op"], "rpc", "{r}");
    assert_eq!(r["data"]["method"], "chat.history");
    assert_eq!(r["data"]["data"], json!({"n":[1,2]}));
    assert_eq!(r["data"]["protocol"], "roomcast.v1.json");

    let r = c.call(json!({"op":"rpc","method":"missing"}), 6).await;
    assert_eq!(
        (r["op"].as_str(), r["code"].as_str()),
        (Some("error"), Some("not_found")),
        "{r}"
    );
    assert_eq!(r["message"], "no such thing");

    let r = c.call(json!({"op":"rpc","method":"fail"}), 7).await;
    assert_eq!(r["code"], "internal", "{r}");

    let started = std::time::Instant::now();
    let r = c.call(json!({"op":"rpc","method":"slow"}), 8).await;
    assert_eq!(r["code"], "internal", "{r}");
    assert!(started.elapsed() < SLOW);

    // A namespace without `rpc` has no methods.
    let r = c.call(json!({"op":"rpc","method":"plain.x"}), 9).await;
    assert_eq!(r["code"], "not_found", "{r}");
    let r = c.call(json!({"op":"rpc"}), 10).await;
    assert_eq!(r["code"], "bad_request", "{r}");

    // A binary answer reaches a JSON client base64-encoded.
    let r = c
        .call(json!({"op":"rpc","method":"reverse","data":"ab"}), 11)
        .await;
    assert_eq!(r["binary"], true, "{r}");
    assert_eq!(r["data"], "ImJhIg==", "{r}"); // the bytes `"ba"` reversed from `"ab"`

    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Rpc\",result=\"timeout\"}",
        1.0,
    )
    .await;
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Rpc\",result=\"denied\"}",
        1.0,
    )
    .await;
    assert!(
        node.metric("roomcast_backend_request_seconds_count{method=\"Rpc\"}")
            .await
            >= 4.0
    );
    backend.stop();
}

async fn proto_call(ws: &mut common::Ws, frame: pb::ClientFrame) -> pb::ServerFrame {
    let id = frame.id;
    ws.send(Message::Binary(frame.encode_to_vec()))
        .await
        .unwrap();
    loop {
        let m = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("a reply")
            .unwrap()
            .unwrap();
        if let Message::Binary(b) = m {
            let f = pb::ServerFrame::decode(&b[..]).unwrap();
            if f.id == id {
                return f;
            }
        }
    }
}

#[tokio::test]
async fn rpc_answers_over_protobuf() {
    use pb::client_frame::Command as C;
    use pb::server_frame::Event as E;
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;
    let mut c = Client::connect_with(&node, "/ws", Some("roomcast.v1.proto")).await;
    let r = proto_call(
        &mut c.ws,
        pb::ClientFrame {
            id: 1,
            command: Some(C::Connect(pb::ConnectCommand {
                token: "pat".into(),
                client: String::new(),
            })),
        },
    )
    .await;
    assert!(matches!(r.event, Some(E::Connected(_))), "{r:?}");
    let rpc = |id, method: &str, data: &'static [u8]| pb::ClientFrame {
        id,
        command: Some(C::Rpc(pb::RpcCommand {
            method: method.into(),
            data: bytes::Bytes::from_static(data),
        })),
    };
    let r = proto_call(&mut c.ws, rpc(2, "reverse", b"\x01\x02\x03")).await;
    match r.event {
        Some(E::Rpc(res)) => {
            assert_eq!(&res.data[..], b"\x03\x02\x01");
            assert!(res.binary);
        }
        other => panic!("expected an rpc result, got {other:?}"),
    }
    let r = proto_call(&mut c.ws, rpc(3, "echo", b"\xff\x00")).await;
    assert!(
        matches!(r.event, Some(E::Rpc(ref res)) if &res.data[..] == b"\xff\x00"),
        "{r:?}"
    );
    let r = proto_call(&mut c.ws, rpc(4, "slow", b"")).await;
    assert!(
        matches!(r.event, Some(E::Error(ref e)) if e.code == "internal"),
        "{r:?}"
    );
    let r = proto_call(&mut c.ws, rpc(5, "missing", b"")).await;
    assert!(
        matches!(r.event, Some(E::Error(ref e)) if e.code == "not_found"),
        "{r:?}"
    );
    backend.stop();
}

#[tokio::test]
async fn subscribe_and_publish_hooks_allow_deny_replace_and_time_out() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;
    let mut c = connected(&node, "carol").await;
    assert_eq!(c.recv().await["room"], "chat.welcome");
    let mut reader = connected(&node, "reader").await;
    assert_eq!(reader.recv().await["room"], "chat.welcome");

    let r = c
        .call(json!({"op":"subscribe","room":"chat.lobby"}), 2)
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let r = c
        .call(json!({"op":"subscribe","room":"chat.secret"}), 3)
        .await;
    assert_eq!(
        (r["code"].as_str(), r["message"].as_str()),
        (Some("forbidden"), Some("members only"))
    );
    let r = c
        .call(json!({"op":"subscribe","room":"chat.slow"}), 4)
        .await;
    assert_eq!(r["code"], "internal", "{r}");
    // Namespaces without the hook do not ask.
    let r = c
        .call(json!({"op":"subscribe","room":"plain.secret"}), 5)
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    // Presence shows the info the backend gave at connect.
    let r = c
        .call(json!({"op":"presence","room":"chat.welcome"}), 51)
        .await;
    let mut clients = r["clients"].as_array().expect("clients").clone();
    clients.sort_by_key(|c| c["user"].as_str().unwrap_or_default().to_owned());
    assert_eq!(clients.len(), 2, "{r}");
    assert_eq!(clients[0]["user"], "user-carol");
    assert_eq!(clients[0]["info"], json!({"token":"carol"}));
    assert_eq!(clients[1]["info"], json!({"token":"reader"}));

    // Publish: allowed as sent, refused, replaced.
    for room in ["chat.lobby", "chat.shout"] {
        let r = reader.call(json!({"op":"subscribe","room":room}), 1).await;
        assert_eq!(r["op"], "subscribed", "{r}");
    }
    let r = c
        .call(
            json!({"op":"publish","room":"chat.lobby","data":{"text":"hi"}}),
            6,
        )
        .await;
    assert_eq!(r["op"], "published", "{r}");
    let m = reader.recv().await;
    assert_eq!(m["data"], json!({"text":"hi"}));
    let r = c
        .call(
            json!({"op":"publish","room":"chat.lobby","data":"buy spam"}),
            7,
        )
        .await;
    assert_eq!(
        (r["code"].as_str(), r["message"].as_str()),
        (Some("bad_request"), Some("no spam"))
    );
    let r = c
        .call(
            json!({"op":"publish","room":"chat.shout","event":"say","data":"hello"}),
            9,
        )
        .await;
    assert_eq!(r["op"], "published", "{r}");
    let m = reader.recv().await;
    assert_eq!(
        m["room"], "chat.shout",
        "the refused publication never came: {m}"
    );
    assert_eq!(m["event"], "say");
    assert_eq!(m["data"], json!({"text":"\"HELLO\"","by":"user-carol"}));
    let r = c
        .call(json!({"op":"publish","room":"chat.slow","data":1}), 10)
        .await;
    assert_eq!(r["code"], "internal", "{r}");
    {
        let seen = backend.backend.seen.lock();
        let p = seen
            .publishes
            .iter()
            .find(|p| p.room == "chat.shout")
            .unwrap();
        assert_eq!(p.event, "say");
        assert_eq!(&p.data[..], b"\"hello\"");
        assert!(!p.binary);
    }
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Subscribe\",result=\"denied\"}",
        1.0,
    )
    .await;
    node.wait_metric(
        "roomcast_backend_requests_total{method=\"Publish\",result=\"timeout\"}",
        1.0,
    )
    .await;
    backend.stop();
}

#[tokio::test]
async fn disconnected_is_told_without_holding_the_close() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;
    let c = connected(&node, "dave").await;
    let client_id = backend.backend.seen.lock().connects[0]
        .caller
        .as_ref()
        .unwrap()
        .client_id
        .clone();
    drop(c);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let told = backend
            .backend
            .seen
            .lock()
            .disconnected
            .iter()
            .find(|d| d.caller.as_ref().unwrap().client_id == client_id)
            .cloned();
        if let Some(d) = told {
            assert_eq!(d.caller.as_ref().unwrap().user, "user-dave");
            assert_eq!(d.reason, "client_gone");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Disconnected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A closing session does not wait for a backend that is gone.
    backend.stop();
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"x","id":1})).await;
    assert_eq!(c.closed().await.0, 1011);
    let gauge = "roomcast_connections";
    node.wait_metric(gauge, 0.0).await;
}

#[tokio::test]
async fn a_session_has_a_bounded_number_of_calls_in_flight() {
    let backend = Running::start(0, TestBackend::default()).await;
    let node = node_with(&backend, &["--backend-max-per-session", "1"], CONFIG).await;
    let mut c = connected(&node, "erin").await;
    c.send(json!({"op":"rpc","method":"slow","id":2})).await;
    c.send(json!({"op":"rpc","method":"x","id":3})).await;
    // Replies keep command order: the slow one ends first, by its timeout,
    // then the one refused at once because the slow one held the slot
    // (events without an id, such as the welcome room's, are not replies).
    let mut r = c.recv().await;
    while r["id"].is_null() {
        r = c.recv().await;
    }
    assert_eq!(
        (r["id"].as_u64(), r["code"].as_str()),
        (Some(2), Some("internal")),
        "{r}"
    );
    let r = c.recv().await;
    assert_eq!(
        (r["id"].as_u64(), r["code"].as_str()),
        (Some(3), Some("too_many_requests")),
        "{r}"
    );
    // The slot is free again.
    let r = c.call(json!({"op":"rpc","method":"x"}), 4).await;
    assert_eq!(r["op"], "rpc", "{r}");
    node.wait_metric("roomcast_backend_limited_total{scope=\"session\"}", 1.0)
        .await;
    backend.stop();
}

#[tokio::test]
async fn a_backend_killed_and_restarted_is_unready_then_serves_again() {
    let port = free_port();
    let backend = Running::start(port, TestBackend::default()).await;
    let node = node_with(&backend, &[], CONFIG).await;
    let ready = |node: &Node| {
        let port = node.http;
        async move { common::http_get(port, "/readyz", &[]).await.unwrap() }
    };
    wait_for(|| async { ready(&node).await.0 == 200 }).await;
    assert_eq!(node.metric("roomcast_backend_up").await, 1.0);
    let mut c = connected(&node, "fay").await;
    let r = c.call(json!({"op":"rpc","method":"a"}), 2).await;
    assert_eq!(r["op"], "rpc");

    let seen = backend.backend.clone();
    backend.stop();
    let r = c.call(json!({"op":"rpc","method":"a"}), 3).await;
    assert_eq!(r["code"], "internal", "{r}");
    wait_for(|| async { ready(&node).await == (503, "backend unreachable\n".to_owned()) }).await;
    node.wait_metric("roomcast_backend_up", 0.0).await;

    let backend = Running::start(port, seen).await;
    wait_for(|| async { ready(&node).await.0 == 200 }).await;
    let r = c.call(json!({"op":"rpc","method":"a"}), 4).await;
    assert_eq!(r["op"], "rpc", "{r}");
    node.wait_metric("roomcast_backend_up", 1.0).await;
    backend.stop();
}

#[tokio::test]
async fn a_tls_backend_is_reached_with_its_ca_and_refused_without_it() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("roomcast-backend-tls-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let wrong_ca = dir.join("wrong.pem");
    std::fs::write(&wrong_ca, other.cert.pem()).unwrap();
    let backend = Running::start_tls(
        TestBackend::default(),
        cert.cert.pem(),
        cert.key_pair.serialize_pem(),
    )
    .await;
    let url = format!("https://localhost:{}", backend.port);
    let config = config_file(CONFIG);
    let start = |ca: std::path::PathBuf| {
        let (url, config) = (url.clone(), config.clone());
        async move {
            Node::start(&[
                "--config",
                config.to_str().unwrap(),
                "--backend-url",
                &url,
                "--backend-tls-ca",
                ca.to_str().unwrap(),
                "--backend-token",
                "tls-token",
            ])
            .await
        }
    };
    let node = start(ca).await;
    let mut c = connected(&node, "tess").await;
    let r = c.call(json!({"op":"rpc","method":"whoami"}), 2).await;
    assert_eq!(r["data"]["user"], "user-tess", "{r}");
    assert_eq!(
        backend.backend.seen.lock().bearer,
        vec!["Bearer tls-token".to_owned()]
    );
    // A backend whose certificate the CA did not sign is not trusted.
    let node = start(wrong_ca).await;
    let mut c = Client::connect(&node).await;
    c.send(json!({"op":"connect","token":"tess","id":1})).await;
    assert_eq!(c.closed().await.0, 1011);
    assert_eq!(
        common::http_get(node.http, "/readyz", &[]).await.unwrap().0,
        503
    );
    backend.stop();
}

#[tokio::test]
async fn hooks_without_a_backend_url_stop_the_node_at_start() {
    let file = config_file("[namespaces.chat]\npublish_hook = true\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid `namespaces.chat.publish_hook`: needs backend.url"),
        "{err}"
    );
}

async fn wait_for<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
