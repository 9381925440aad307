//! A node's life as an operator sees it: configuration, heartbeat, metrics,
//! connection limits, slow consumers, and draining on SIGTERM.

mod common;

use common::{Client, Node, Raw};
use roomcast_proto::v1 as pb;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

fn roomcast(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_key() {
    let out = roomcast(&["--ping-interval", "soon"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("ping_interval"), "{err}");

    let out = roomcast(&[], &[("ROOMCAST_MAX_MESSAGE_BYTES", "12XB")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_message_bytes"));

    let cfg = common::config_file("[namespaces.chat]\nhistory_size = \"lots\"\n");
    let out = roomcast(&["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("namespaces.chat.history_size"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);

    let cfg = common::config_file("listen = \"127.0.0.1:1\"\nbogus_key = 1\n");
    let out = roomcast(&["--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));

    let out = roomcast(&["--adapter", "carrier-pigeon"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--adapter"));
}

#[test]
fn malformed_redis_urls_stop_the_node_at_start() {
    for url in ["redis://", "redis:///0", "http://127.0.0.1:6379"] {
        let out = roomcast(&["--adapter", "redis", "--redis-url", url], &[]);
        assert_eq!(out.status.code(), Some(2), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("`redis_url`"), "{err}");
    }
}

#[test]
fn print_config_shows_every_layer_and_reads_back() {
    let cfg = common::config_file(
        "command_rate = 7\ngrpc_token = \"hush\"\n[namespaces.chat]\nhistory_size = 5\n",
    );
    let out = roomcast(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--print-config",
            "--ping-timeout",
            "3s",
        ],
        &[("ROOMCAST_MAX_QUEUE_BYTES", "2MiB")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    for line in [
        "command_rate = 7",
        "ping_timeout = \"3s\"",
        "max_queue_bytes = \"2MiB\"",
        "max_message_bytes = \"64KiB\"",
        "[namespaces.chat]",
        "history_size = 5",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line:?} not in\n{printed}"
        );
    }
    assert!(!printed.contains("hush"), "secrets are not printed");

    let again = common::config_file(&printed);
    let out = roomcast(
        &["--config", again.to_str().unwrap(), "--print-config"],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reprinted = String::from_utf8(out.stdout).unwrap();
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(body(&reprinted), body(&printed));
}

#[test]
fn help_documents_every_flag_of_the_contract() {
    let out = roomcast(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--grpc-listen",
        "--adapter",
        "--redis-url",
        "--ping-interval",
        "--ping-timeout",
        "--max-message-bytes",
        "--allowed-origin",
        "--node-id",
        "--config",
        "--jwt-secret",
        "--jwt-public-key",
        "--grpc-token",
        "--max-connections",
        "--drain-timeout",
        "--max-queue-bytes",
        "--demo",
        "--echo",
        "--log-format",
        "--print-config",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[tokio::test]
async fn precedence_is_defaults_file_env_flags() {
    let cfg = common::config_file("node_id = \"from-file\"\nping_interval = \"3s\"\n");
    let path = cfg.to_str().unwrap();
    let node = Node::start_with_env(&["--config", path], &[("ROOMCAST_PING_INTERVAL", "4s")]).await;
    let mut c = Client::connect(&node).await;
    let r = c.call(json!({"op": "connect"}), 1).await;
    assert_eq!(r["node"], "from-file");
    assert_eq!(r["ping_interval_ms"], 4000, "environment beats the file");
    let node = Node::start_with_env(
        &["--config", path, "--ping-interval", "5s"],
        &[("ROOMCAST_PING_INTERVAL", "4s")],
    )
    .await;
    let mut c = Client::connect(&node).await;
    assert_eq!(
        c.call(json!({"op": "connect"}), 1).await["ping_interval_ms"],
        5000,
        "flags beat the environment"
    );
}

#[tokio::test]
async fn silent_clients_are_closed_with_4009_and_counted() {
    let node = Node::start(&["--ping-interval", "200ms", "--ping-timeout", "300ms"]).await;
    // A raw client that never answers pings.
    let mut silent = Raw::handshake(node.http, "/ws", &[]).await;
    let mut saw_ping = false;
    let code = loop {
        match silent.read_frame().await {
            Some((9, _)) => saw_ping = true,
            Some((8, p)) => break u16::from_be_bytes([p[0], p[1]]),
            Some(_) => {}
            None => panic!("closed without a close frame"),
        }
    };
    assert!(saw_ping, "the server pings");
    assert_eq!(code, 4009);
    node.wait_metric("roomcast_ping_timeouts_total", 1.0).await;
    node.wait_metric("roomcast_disconnects_total{reason=\"ping_timeout\"}", 1.0)
        .await;

    // A client that answers pings (tungstenite does) stays.
    // (It answers while it reads, so it keeps reading.)
    let mut alive = Client::connect(&node).await;
    for id in 1..=12 {
        assert_eq!(alive.call(json!({"op": "ping"}), id).await["op"], "pong");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(node.metric("roomcast_ping_timeouts_total").await, 1.0);
}

#[tokio::test]
async fn metrics_follow_connections_and_subscriptions() {
    let node = Node::start(&[]).await;
    node.wait_metric("roomcast_connections", 0.0).await;
    let mut a = Client::connect(&node).await;
    let mut b = Client::connect(&node).await;
    node.wait_metric("roomcast_connections", 2.0).await;
    assert_eq!(
        node.metric("roomcast_connections_accepted_total").await,
        2.0
    );
    a.call(json!({"op": "subscribe", "room": "r1"}), 1).await;
    a.call(json!({"op": "subscribe", "room": "r2"}), 2).await;
    b.call(json!({"op": "subscribe", "room": "r1"}), 1).await;
    assert_eq!(node.metric("roomcast_subscriptions").await, 3.0);
    assert_eq!(node.metric("roomcast_rooms").await, 2.0);
    b.call(json!({"op": "publish", "room": "r1", "data": 1}), 2)
        .await;
    assert_eq!(a.recv().await["op"], "message");
    assert_eq!(
        node.metric("roomcast_publications_total{source=\"client\"}")
            .await,
        1.0
    );
    assert!(node.metric("roomcast_delivery_seconds_count").await >= 2.0);
    assert!(node.metric("roomcast_messages_received_total").await >= 4.0);
    assert!(node.metric("roomcast_messages_sent_total").await >= 6.0);
    drop(a);
    node.wait_metric("roomcast_connections", 1.0).await;
    node.wait_metric("roomcast_subscriptions", 1.0).await;
    assert_eq!(node.metric("roomcast_rooms").await, 1.0);
    b.ws.close(None).await.unwrap();
    node.wait_metric("roomcast_connections", 0.0).await;
    assert_eq!(
        node.metric("roomcast_disconnects_total{reason=\"normal\"}")
            .await,
        1.0
    );
    assert_eq!(node.metric("roomcast_adapter_up").await, 1.0);
}

#[tokio::test]
async fn past_max_connections_upgrades_get_503_and_open_ones_stay() {
    let node = Node::start(&["--max-connections", "2"]).await;
    let mut a = Client::connect(&node).await;
    let _b = Client::connect(&node).await;
    let refused = Raw::handshake(node.http, "/ws", &[]).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        node.metric("roomcast_connections_rejected_total{reason=\"max_connections\"}")
            .await,
        1.0
    );
    assert_eq!(
        a.call(json!({"op": "ping"}), 1).await["op"],
        "pong",
        "open sessions are untouched"
    );
    drop(a);
    node.wait_metric("roomcast_connections", 1.0).await;
    let later = Raw::handshake(node.http, "/ws", &[]).await;
    assert_eq!(later.status(), 101, "a freed slot is usable again");
}

#[tokio::test]
async fn origins_outside_the_allow_list_are_refused() {
    let node = Node::start(&["--allowed-origin", "https://app.example"]).await;
    let bad = Raw::handshake(node.http, "/ws", &[("Origin", "https://evil.example")]).await;
    assert_eq!(bad.status(), 403);
    let good = Raw::handshake(node.http, "/ws", &[("Origin", "https://app.example")]).await;
    assert_eq!(good.status(), 101);
    assert_eq!(
        node.metric("roomcast_connections_rejected_total{reason=\"origin\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_while_a_fast_one_keeps_up() {
    // Room for 16 publications: the reading client keeps up even when the
    // machine is busy and its session task runs late; the one that stops
    // reading still passes the bound long before the 1,000th.
    let node = Node::start(&["--max-queue-bytes", "256KiB"]).await;
    let mut fast = Client::connect(&node).await;
    fast.call(json!({"op": "subscribe", "room": "feed"}), 1)
        .await;
    // The slow one subscribes, then never reads again.
    let mut slow = Raw::handshake_with_small_buffer(node.http, "/ws").await;
    slow.send_frame(true, 1, br#"{"op":"subscribe","id":1,"room":"feed"}"#, true)
        .await;
    node.wait_metric("roomcast_subscriptions", 2.0).await;

    let mut grpc = node.grpc().await;
    let payload = format!("\"{}\"", "x".repeat(16 * 1024));
    let total = 1000;
    let publisher = tokio::spawn(async move {
        for i in 0..total {
            grpc.publish(pb::PublishRequest {
                room: "feed".into(),
                event: i.to_string(),
                data: payload.clone().into_bytes().into(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
    });
    for i in 0..total {
        let m = fast.recv().await;
        assert_eq!(
            m["event"],
            i.to_string(),
            "the fast client gets everything, in order"
        );
    }
    publisher.await.unwrap();
    node.wait_metric("roomcast_disconnects_total{reason=\"slow_consumer\"}", 1.0)
        .await;
    assert_eq!(node.metric("roomcast_connections").await, 1.0);
    // Whatever the slow client can still read ends in 4008 or a cut connection.
    let end = slow.close_code().await;
    assert!(end == Some(4008) || end.is_none(), "{end:?}");
}

#[tokio::test]
async fn sigterm_drains_with_1001_and_exits_0() {
    let mut node = Node::start(&["--drain-timeout", "5s"]).await;
    let mut a = Client::connect(&node).await;
    let mut b = Client::connect(&node).await;
    // A raw client that ignores the close handshake keeps the drain going a moment.
    let mut stubborn = Raw::handshake(node.http, "/ws", &[]).await;
    node.wait_metric("roomcast_connections", 3.0).await;
    assert_eq!(node.get("/readyz").await.unwrap().0, 200);
    node.signal(libc::SIGTERM);
    assert_eq!(a.closed().await.0, 1001);
    assert_eq!(b.closed().await.0, 1001);
    assert_eq!(stubborn.close_code().await, Some(1001));
    let (status, _) = node.get("/readyz").await.unwrap_or((503, String::new()));
    assert_eq!(status, 503, "not ready while draining");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}

/// The paths where a node closes a WebSocket of its own accord: a session of
/// the roomcast protocol, the echo, and socket.io over WebSocket.
const CLOSING_PATHS: [&str; 3] = ["/ws", "/echo", "/socket.io/?EIO=4&transport=websocket"];

/// Opens a WebSocket on `path` and makes the node close it: an unmasked
/// frame is a protocol error (1002).
async fn closed_by_the_node(node: &Node, path: &str) -> Raw {
    let mut raw = Raw::handshake(node.http, path, &[]).await;
    assert_eq!(raw.status(), 101, "{path}: {}", raw.response);
    raw.send_frame(true, 0x1, b"not masked", false).await;
    assert_eq!(raw.close_code().await, Some(1002), "{path}");
    raw
}

#[tokio::test]
async fn a_node_initiated_close_ends_the_connection_at_the_clients_close() {
    // A grace far longer than the reads below wait: a node that waited it
    // out instead of closing at the client's Close fails the test.
    let node = Node::start(&["--echo", "--close-grace", "30s"]).await;
    for path in CLOSING_PATHS {
        let mut raw = closed_by_the_node(&node, path).await;
        raw.send_frame(true, 0x8, &1000u16.to_be_bytes(), true)
            .await;
        // `read_frame` gives up (and fails) after 10 s; the end of the
        // stream comes first.
        let started = std::time::Instant::now();
        assert_eq!(
            raw.read_frame().await,
            None,
            "{path}: nothing after the close"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path}: the connection stayed open {:?} after the client's Close",
            started.elapsed()
        );
    }
    node.wait_metric("roomcast_connections", 0.0).await;
    assert_eq!(node.metric("roomcast_close_grace_expired_total").await, 0.0);
}

#[tokio::test]
async fn a_client_that_never_answers_a_close_is_cut_off_after_the_grace() {
    let node = Node::start(&["--echo", "--close-grace", "200ms"]).await;
    for (i, path) in CLOSING_PATHS.into_iter().enumerate() {
        let mut raw = closed_by_the_node(&node, path).await;
        // No Close, no end of stream: only the grace ends the connection.
        let started = std::time::Instant::now();
        assert_eq!(
            raw.read_frame().await,
            None,
            "{path}: nothing after the close"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{path}: cut off after {:?}, before the grace",
            started.elapsed()
        );
        node.wait_metric("roomcast_close_grace_expired_total", (i + 1) as f64)
            .await;
    }
    node.wait_metric("roomcast_connections", 0.0).await;
}

#[tokio::test]
async fn a_second_websocket_for_an_upgraded_socketio_session_waits_for_its_clients_close() {
    let node = Node::start(&["--close-grace", "1s"]).await;
    let (status, body) = node
        .get("/socket.io/?EIO=4&transport=polling")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let open: serde_json::Value =
        serde_json::from_str(body.trim_start_matches(|c: char| c != '{')).expect("open packet");
    let sid = open["sid"].as_str().expect("sid").to_owned();
    let path = format!("/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let mut first = Raw::handshake(node.http, &path, &[]).await;
    assert_eq!(first.status(), 101, "{}", first.response);
    first.send_frame(true, 0x1, b"2probe", true).await;
    assert_eq!(first.read_frame().await, Some((0x1, b"3probe".to_vec())));
    first.send_frame(true, 0x1, b"5", true).await;

    // One that answers the node's Close: closed then, not at the grace
    // (the node counts a grace that ran out before it closes the socket).
    let mut answers = Raw::handshake(node.http, &path, &[]).await;
    assert_eq!(answers.status(), 101, "{}", answers.response);
    assert_eq!(answers.close_code().await, Some(1008));
    answers
        .send_frame(true, 0x8, &1000u16.to_be_bytes(), true)
        .await;
    assert_eq!(answers.read_frame().await, None);
    assert_eq!(node.metric("roomcast_close_grace_expired_total").await, 0.0);

    // One that never answers: held until the grace runs out, and counted.
    let mut silent = Raw::handshake(node.http, &path, &[]).await;
    assert_eq!(silent.status(), 101, "{}", silent.response);
    assert_eq!(silent.close_code().await, Some(1008));
    assert_eq!(silent.read_frame().await, None);
    assert_eq!(node.metric("roomcast_close_grace_expired_total").await, 1.0);
}
