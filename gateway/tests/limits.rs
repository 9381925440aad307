//! Every limit trips where the docs say, with the metric the docs name, and
//! the rest of the node carries on.

mod common;

use common::{Client, Node, Raw};
use futures_util::{SinkExt, StreamExt};
use roomcast_proto::v1 as pb;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const POLICIES: &str = r#"
[namespaces.danmaku]
overflow = "drop_oldest"

[namespaces.quotes]
client_publish = false
overflow = "latest_per_key"
"#;

/// Reads JSON messages from a raw socket until `done` says stop.
async fn read_messages(raw: &mut Raw, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    while let Some((op, payload)) = raw.read_frame().await {
        if op != 1 {
            continue;
        }
        let v: Value = serde_json::from_slice(&payload).unwrap();
        if v["op"] == "message" {
            let stop = done(&v);
            out.push(v);
            if stop {
                break;
            }
        }
    }
    out
}

async fn flood(node: &Node, rooms: &[&str], count: usize, size: usize) {
    let mut grpc = node.grpc().await;
    let filler = "x".repeat(size);
    let items: Vec<pb::PublishRequest> = (0..count)
        .map(|i| pb::PublishRequest {
            room: rooms[i % rooms.len()].to_owned(),
            data: serde_json::to_vec(&json!({"seq": i, "pad": filler}))
                .unwrap()
                .into(),
            ..Default::default()
        })
        .collect();
    let r = grpc
        .publish_stream(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted as usize, count);
}

#[tokio::test]
async fn drop_oldest_keeps_a_slow_client_connected_with_the_newest_messages() {
    let cfg = common::config_file(POLICIES);
    let node = Node::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--max-queue-bytes",
        "64KiB",
    ])
    .await;
    let mut slow = Raw::handshake_with_small_buffer(node.http, "/ws").await;
    slow.send_frame(
        true,
        1,
        br#"{"op":"subscribe","room":"danmaku.main"}"#,
        true,
    )
    .await;
    node.wait_metric("roomcast_subscriptions", 1.0).await;
    let n = 1500;
    flood(&node, &["danmaku.main"], n, 8 * 1024).await;
    assert!(
        node.metric("roomcast_slow_consumer_drops_total{policy=\"drop_oldest\"}")
            .await
            > 0.0
    );
    assert_eq!(
        node.metric("roomcast_connections").await,
        1.0,
        "not disconnected"
    );
    let got = read_messages(&mut slow, |m| m["data"]["seq"] == n - 1).await;
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["data"]["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "what arrives is in order"
    );
    assert!(seqs.len() < n, "some were dropped");
    assert_eq!(*seqs.last().unwrap(), n as u64 - 1, "the newest arrives");
}

#[tokio::test]
async fn latest_per_key_gives_a_slow_client_fresh_values() {
    let cfg = common::config_file(POLICIES);
    let node = Node::start(&[
        "--config",
        cfg.to_str().unwrap(),
        "--max-queue-bytes",
        "64KiB",
    ])
    .await;
    let mut slow = Raw::handshake_with_small_buffer(node.http, "/ws").await;
    slow.send_frame(true, 1, br#"{"op":"subscribe","room":"quotes.A"}"#, true)
        .await;
    slow.send_frame(true, 1, br#"{"op":"subscribe","room":"quotes.B"}"#, true)
        .await;
    node.wait_metric("roomcast_subscriptions", 2.0).await;
    let n = 1000;
    flood(&node, &["quotes.A", "quotes.B"], n, 8 * 1024).await;
    assert!(
        node.metric("roomcast_slow_consumer_drops_total{policy=\"latest_per_key\"}")
            .await
            > 0.0
    );
    assert_eq!(
        node.metric("roomcast_connections").await,
        1.0,
        "not disconnected"
    );
    let mut last_a = None;
    let mut last_b = None;
    read_messages(&mut slow, |m| {
        let seq = m["data"]["seq"].as_u64().unwrap();
        match m["room"].as_str().unwrap() {
            "quotes.A" => last_a = Some(seq),
            _ => last_b = Some(seq),
        }
        last_a == Some(n as u64 - 2) && last_b == Some(n as u64 - 1)
    })
    .await;
    assert_eq!(
        (last_a, last_b),
        (Some(n as u64 - 2), Some(n as u64 - 1)),
        "the latest value of each room arrives"
    );
}

#[tokio::test]
async fn command_rate_and_rooms_per_session() {
    let node = Node::start(&["--command-rate", "5", "--max-rooms-per-session", "2"]).await;
    let mut c = Client::connect(&node).await;
    for id in 1..=20u64 {
        c.send(json!({"op": "ping", "id": id})).await;
    }
    let mut limited = 0;
    for _ in 0..20 {
        let r = c.recv().await;
        if r["code"] == "too_many_requests" {
            limited += 1;
        }
    }
    assert!(
        limited >= 10,
        "only {limited} of 20 rapid commands were limited"
    );
    assert!(
        node.metric("roomcast_command_errors_total{code=\"too_many_requests\"}")
            .await
            >= 10.0
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = Client::connect(&node).await;
    assert_eq!(
        c.call(json!({"op": "subscribe", "room": "a"}), 1).await["op"],
        "subscribed"
    );
    assert_eq!(
        c.call(json!({"op": "subscribe", "room": "b"}), 2).await["op"],
        "subscribed"
    );
    assert_eq!(
        c.call(json!({"op": "subscribe", "room": "c"}), 3).await["code"],
        "too_many_requests"
    );
}

#[tokio::test]
async fn connection_rate_refuses_bursts_with_503() {
    let node = Node::start(&["--connection-rate", "3"]).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(Raw::handshake(node.http, "/ws", &[]).await.status());
    }
    assert!(statuses.contains(&101));
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(
        node.metric("roomcast_connections_rejected_total{reason=\"connection_rate\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let node = Node::start(&["--handshake-timeout", "300ms"]).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", node.http))
        .await
        .unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    // The server gives up on the unfinished request and closes the socket.
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("still open after 5 s");
    let n = n.unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn grpc_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("roomcast-tls-{}", common::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let node = Node::start(&[
        "--grpc-tls-cert",
        cert_path.to_str().unwrap(),
        "--grpc-tls-key",
        key_path.to_str().unwrap(),
    ])
    .await;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel =
        tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{}", node.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc = pb::control_client::ControlClient::new(channel);
    assert_eq!(
        grpc.info(pb::InfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes
            .len(),
        1
    );
    // Plain text is not served.
    let plain =
        pb::control_client::ControlClient::connect(format!("http://127.0.0.1:{}", node.grpc)).await;
    match plain {
        Err(_) => {}
        Ok(mut c) => assert!(c.info(pb::InfoRequest {}).await.is_err()),
    }
}

#[tokio::test]
async fn echo_client_that_never_reads_is_cut_off_at_the_queue_limit() {
    let node = Node::start(&["--echo", "--max-queue-bytes", "64KiB"]).await;
    let mut raw = Raw::handshake_with_small_buffer(node.http, "/echo").await;
    assert_eq!(raw.status(), 101);
    // Send echoes and never read them: once the kernel buffers are full the
    // replies back up in the session and it is closed as a slow consumer.
    let frame = common::encode_frame(true, 2, &[7u8; 16 * 1024], true);
    let writer = tokio::spawn(async move {
        for _ in 0..2048 {
            if raw.stream.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    node.wait_metric("roomcast_disconnects_total{reason=\"slow_consumer\"}", 1.0)
        .await;
    writer.abort();
    // The node carries on.
    let mut c = Client::connect_with(&node, "/echo", None).await;
    c.ws.send(Message::Text("still here".into())).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap(), "still here");
}

#[tokio::test]
async fn one_message_larger_than_the_queue_reaches_a_client_that_reads() {
    let node = Node::start(&[
        "--echo",
        "--max-queue-bytes",
        "1MiB",
        "--max-message-bytes",
        "4MiB",
    ])
    .await;
    let three_mib = 3 << 20;

    // A 3 MiB echo on the raw endpoint and on the JSON protocol.
    let mut echo = Client::connect_with(&node, "/echo", None).await;
    let blob: Vec<u8> = (0..three_mib).map(|i| (i % 251) as u8).collect();
    echo.ws.send(Message::Binary(blob.clone())).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(20), echo.ws.next())
        .await
        .expect("echo arrives")
        .unwrap()
        .unwrap();
    assert_eq!(back.into_data(), blob, "the echo comes back whole");

    let mut sub = Client::connect(&node).await;
    let text = "t".repeat(three_mib);
    let r = sub.call(json!({"op": "echo", "data": text}), 1).await;
    assert_eq!(r["data"].as_str().map(str::len), Some(three_mib));

    // A 3 MiB publication from gRPC and one from a client.
    sub.call(json!({"op": "subscribe", "room": "big.room"}), 2)
        .await;
    let mut grpc = node.grpc().await;
    let data = serde_json::to_vec(&json!({"blob": "g".repeat(three_mib)})).unwrap();
    grpc.publish(pb::PublishRequest {
        room: "big.room".into(),
        data: data.into(),
        ..Default::default()
    })
    .await
    .expect("a publication up to max_message_bytes is accepted");
    let m = sub.recv().await;
    assert_eq!(m["op"], "message");
    assert_eq!(m["data"]["blob"].as_str().map(str::len), Some(three_mib));

    let mut publisher = Client::connect(&node).await;
    let r = publisher
        .call(
            json!({"op": "publish", "room": "big.room", "data": "c".repeat(three_mib)}),
            3,
        )
        .await;
    assert_eq!(r["op"], "published", "{}", r["op"]);
    let m = sub.recv().await;
    assert_eq!(m["data"].as_str().map(str::len), Some(three_mib));

    // What no client could send is refused at Publish, not accepted and lost.
    let too_big = serde_json::to_vec(&json!("x".repeat(5 << 20))).unwrap();
    let err = grpc
        .publish(pb::PublishRequest {
            room: "big.room".into(),
            data: too_big.into(),
            ..Default::default()
        })
        .await
        .expect_err("larger than max_message_bytes");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("max_message_bytes"), "{err:?}");
    assert_eq!(
        node.metric("roomcast_publications_total{source=\"grpc\"}")
            .await,
        1.0
    );

    // The bound still holds for a backlog: a subscriber that stops reading
    // is closed with 4008 once what it has not read passes 1 MiB.
    let mut slow = Raw::handshake_with_small_buffer(node.http, "/ws").await;
    slow.send_frame(
        true,
        1,
        br#"{"op":"subscribe","id":1,"room":"big.slow"}"#,
        true,
    )
    .await;
    node.wait_metric("roomcast_subscriptions", 2.0).await;
    flood(&node, &["big.slow"], 64, 512 * 1024).await;
    node.wait_metric("roomcast_disconnects_total{reason=\"slow_consumer\"}", 1.0)
        .await;
    let end = slow.close_code().await;
    assert!(end == Some(4008) || end.is_none(), "{end:?}");
    // The reading subscriber is still there.
    assert_eq!(
        sub.call(json!({"op": "ping"}), 4).await["op"],
        "pong",
        "a client that reads keeps its session"
    );
}
