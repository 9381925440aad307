//! Several real `roomcast` nodes sharing real `redis-server`s: one room
//! space, cluster-wide gRPC answers, and Redis faults run for real.

mod common;

use common::{Client, Node};
use roomcast_adapter_redis::testing::RedisServer;
use roomcast_proto::v1 as pb;
use serde_json::json;
use std::time::Duration;

const CONFIG: &str = r#"
command_rate = 0

[namespaces.chat]
history_size = 100
history_ttl = "5m"
presence = true
join_leave = true
"#;

async fn cluster_node(redis: &[&RedisServer], id: &str) -> Node {
    let cfg = common::config_file(CONFIG);
    let urls: Vec<String> = redis.iter().map(|r| r.url()).collect();
    let mut args = vec![
        "--adapter".to_owned(),
        "redis".to_owned(),
        "--node-id".to_owned(),
        id.to_owned(),
        "--config".to_owned(),
        cfg.to_str().unwrap().to_owned(),
    ];
    for u in urls {
        args.push("--redis-url".into());
        args.push(u);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start(&args).await;
    wait_ready(&node, true).await;
    node
}

async fn wait_ready(node: &Node, ready: bool) {
    let want = if ready { 200 } else { 503 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if node.get("/readyz").await.map(|r| r.0).unwrap_or(0) == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn info_ids(node: &Node) -> Vec<String> {
    let mut g = node.grpc().await;
    g.info(pb::InfoRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.id)
        .collect()
}

async fn wait_nodes(node: &Node, want: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ids = info_ids(node).await;
        if ids.len() == want {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Info shows {ids:?}, expected {want} nodes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn three_nodes_share_one_room_space() {
    let redis = RedisServer::start().unwrap();
    let nodes = [
        cluster_node(&[&redis], "n1").await,
        cluster_node(&[&redis], "n2").await,
        cluster_node(&[&redis], "n3").await,
    ];
    let mut clients = Vec::new();
    for n in &nodes {
        let mut c = Client::connect(n).await;
        assert_eq!(
            c.call(json!({"op": "subscribe", "room": "chat.lobby"}), 1)
                .await["op"],
            "subscribed"
        );
        clients.push(c);
    }
    // A client on n2 publishes; everyone on every node receives, in order.
    let mut publisher = Client::connect(&nodes[1]).await;
    for i in 1..=20 {
        let r = publisher
            .call(
                json!({"op": "publish", "room": "chat.lobby", "data": i}),
                100 + i,
            )
            .await;
        assert_eq!(r["offset"], i);
    }
    for c in clients.iter_mut() {
        let mut got = Vec::new();
        while got.len() < 20 {
            let m = c.recv().await;
            if m["op"] == "message" {
                got.push(m["data"].as_u64().unwrap());
            }
        }
        assert_eq!(got, (1..=20).collect::<Vec<u64>>());
    }
    // gRPC on any node sees the whole cluster.
    let ids = wait_nodes(&nodes[2], 3).await;
    assert_eq!(ids, vec!["n1", "n2", "n3"]);
    let mut g = nodes[0].grpc().await;
    let p = g
        .presence(pb::PresenceRequest {
            room: "chat.lobby".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut where_: Vec<String> = p.clients.into_iter().map(|c| c.node).collect();
    where_.sort();
    assert_eq!(where_, vec!["n1", "n2", "n3"]);
    let rooms = g
        .rooms(pb::RoomsRequest {
            prefix: "chat.".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rooms.rooms.len(), 1);
    assert_eq!(rooms.rooms[0].subscribers, 3);
    // A gRPC publish on n3 reaches the client on n1.
    let mut g3 = nodes[2].grpc().await;
    g3.publish(pb::PublishRequest {
        room: "chat.lobby".into(),
        data: b"\"from n3\"".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    loop {
        let m = clients[0].recv().await;
        if m["op"] == "message" {
            assert_eq!(m["data"], "from n3");
            break;
        }
    }
    // History recovery works on any node.
    let mut late = Client::connect(&nodes[0]).await;
    let s = late
        .call(
            json!({"op": "subscribe", "room": "chat.lobby", "since": {"epoch": "", "offset": 0}}),
            1,
        )
        .await;
    assert_eq!(s["offset"], 21);
    // A disconnect by user/client id works across nodes.
    let id = clients[2].call(json!({"op": "connect"}), 500).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let d = g
        .disconnect(pb::DisconnectRequest {
            client_id: id,
            user: String::new(),
            code: 4003,
            reason: "ops".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.disconnected, 1);
    assert_eq!(clients[2].closed().await.0, 4003);
}

#[tokio::test]
async fn a_killed_node_leaves_info_and_the_rest_carry_on() {
    let redis = RedisServer::start().unwrap();
    let a = cluster_node(&[&redis], "a").await;
    let b = cluster_node(&[&redis], "b").await;
    let mut ca = Client::connect(&a).await;
    ca.call(json!({"op": "subscribe", "room": "chat.k"}), 1)
        .await;
    wait_nodes(&a, 2).await;
    b.signal(libc::SIGKILL);
    let ids = wait_nodes(&a, 1).await;
    assert_eq!(ids, vec!["a"]);
    let mut g = a.grpc().await;
    g.publish(pb::PublishRequest {
        room: "chat.k".into(),
        data: b"1".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(ca.recv().await["data"], 1);
}

#[tokio::test]
async fn redis_killed_and_restarted() {
    let mut redis = RedisServer::start().unwrap();
    let a = cluster_node(&[&redis], "a").await;
    let b = cluster_node(&[&redis], "b").await;
    let mut sub = Client::connect(&b).await;
    let s = sub
        .call(json!({"op": "subscribe", "room": "chat.f"}), 1)
        .await;
    let epoch = s["epoch"].as_str().unwrap().to_owned();
    let mut g = a.grpc().await;
    g.publish(pb::PublishRequest {
        room: "chat.f".into(),
        data: b"1".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(sub.recv().await["data"], 1);

    redis.kill();
    wait_ready(&a, false).await;
    a.wait_metric("roomcast_adapter_up", 0.0).await;
    let failed = g
        .publish(pb::PublishRequest {
            room: "chat.f".into(),
            data: b"2".to_vec().into(),
            ..Default::default()
        })
        .await;
    assert!(
        failed.is_err(),
        "a publication that cannot be accepted is refused, not lost silently"
    );

    redis.restart().unwrap();
    wait_ready(&a, true).await;
    wait_ready(&b, true).await;
    a.wait_metric("roomcast_adapter_up", 1.0).await;
    assert!(a.metric("roomcast_adapter_reconnects_total").await >= 1.0);
    // The node resubscribed its rooms: live delivery works again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        g.publish(pb::PublishRequest {
            room: "chat.f".into(),
            data: b"3".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
        match tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            Ok(m) => {
                assert_eq!(m["data"], 3);
                break;
            }
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "no delivery after Redis came back"
            ),
        }
    }
    // The history died with Redis: a client recovering from the old epoch is told.
    let mut back = Client::connect(&a).await;
    let r = back
        .call(
            json!({"op": "subscribe", "room": "chat.f", "since": {"epoch": epoch, "offset": 1}}),
            1,
        )
        .await;
    assert_eq!(r["recovered"], false);
}

#[tokio::test]
async fn rooms_spread_over_two_shards() {
    let r1 = RedisServer::start().unwrap();
    let r2 = RedisServer::start().unwrap();
    let a = cluster_node(&[&r1, &r2], "a").await;
    let b = cluster_node(&[&r1, &r2], "b").await;
    let mut c = Client::connect(&b).await;
    let rooms: Vec<String> = (0..20).map(|i| format!("chat.s{i}")).collect();
    for (i, r) in rooms.iter().enumerate() {
        c.call(json!({"op": "subscribe", "room": r}), i as u64 + 1)
            .await;
    }
    let mut g = a.grpc().await;
    for r in &rooms {
        g.publish(pb::PublishRequest {
            room: r.clone(),
            data: b"1".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < rooms.len() {
        let m = c.recv().await;
        seen.insert(m["room"].as_str().unwrap().to_owned());
    }
    // Both Redis servers carry some of the rooms.
    for r in [&r1, &r2] {
        let keys = r.command("KEYS *").unwrap();
        assert!(keys.contains("chat.s"), "a shard holds no rooms: {keys}");
    }
}

/// A client that sends a burst of publications without waiting gets every
/// reply, in command order with offsets counting up, and a subscriber on
/// another node gets them all in that order; a subscribe and an
/// unsubscribe in the middle of the burst take effect in command order.
#[tokio::test]
async fn a_burst_of_publications_is_pipelined_and_keeps_its_order() {
    let redis = RedisServer::start().unwrap();
    let a = cluster_node(&[&redis], "pipe-a").await;
    let b = cluster_node(&[&redis], "pipe-b").await;
    let mut reader = Client::connect(&b).await;
    let r = reader
        .call(json!({"op": "subscribe", "room": "chat.burst"}), 1)
        .await;
    assert_eq!(r["op"], "subscribed", "{r}");
    let mut writer = Client::connect(&a).await;
    const N: u64 = 300;
    for i in 0..N {
        writer
            .send(json!({"op": "publish", "id": i + 1, "room": "chat.burst", "data": {"n": i}}))
            .await;
        if i == N / 2 {
            writer
                .send(json!({"op": "subscribe", "id": 10_000, "room": "chat.burst"}))
                .await;
        }
    }
    writer
        .send(json!({"op": "unsubscribe", "id": 20_000, "room": "chat.burst"}))
        .await;
    // Replies: publications 1..=N with offsets 1..=N, the subscribe's reply
    // right after publication N/2+1, the unsubscribe's last. Between them
    // the writer, once subscribed, receives its own later publications.
    let mut replies = Vec::new();
    while replies.last() != Some(&20_000) {
        let m = writer.recv().await;
        if m["op"] == "message" {
            continue;
        }
        let id = m["id"].as_u64().unwrap_or_else(|| panic!("no id: {m}"));
        if id <= N {
            assert_eq!(m["op"], "published", "{m}");
            assert_eq!(m["offset"], id, "offsets follow command order: {m}");
        }
        replies.push(id);
    }
    let mut want: Vec<u64> = (1..=N).collect();
    want.insert((N / 2 + 1) as usize, 10_000);
    want.push(20_000);
    assert_eq!(replies, want, "replies in command order");
    for i in 0..N {
        let mut m = reader.recv().await;
        while m["op"] == "join" || m["op"] == "leave" {
            m = reader.recv().await;
        }
        assert_eq!(m["op"], "message", "{m}");
        assert_eq!(m["data"]["n"], i, "delivered in order: {m}");
        assert_eq!(m["offset"], i + 1);
    }
}

/// While Redis does not answer, a client's publication waits, but its
/// session goes on reading and answering WebSocket pings; when Redis is
/// back the reply arrives.
#[tokio::test]
async fn a_session_keeps_reading_while_its_publication_waits_on_redis() {
    let redis = RedisServer::start().unwrap();
    let a = cluster_node(&[&redis], "wait-a").await;
    let mut c = Client::connect(&a).await;
    let r = c.call(json!({"op": "ping"}), 1).await;
    assert_eq!(r["op"], "pong", "{r}");
    redis.pause().unwrap();
    c.send(json!({"op": "publish", "id": 2, "room": "chat.wait", "data": 1}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    c.ws.send(Message::Ping(b"still there?".to_vec()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(1), c.ws.next())
        .await
        .expect("the session answered no ping while its publication waited");
    match pong {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"still there?"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    redis.resume().unwrap();
    let r = c.recv().await;
    assert_eq!(r["id"], 2, "{r}");
    assert_eq!(r["op"], "published", "{r}");
}
