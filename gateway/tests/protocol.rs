//! The JSON and protobuf protocols over real sockets: subprotocol
//! negotiation, every command, every error a user can trigger.

mod common;

use common::{Client, Node, Raw};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use roomcast_proto::v1 as pb;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const CHAT_CONFIG: &str = r#"
[namespaces.chat]
client_publish = true
history_size = 100
history_ttl = "5m"
join_leave = true
presence = true

[namespaces.quotes]
client_publish = false
history_size = 10
history_ttl = "30s"
"#;

async fn chat_node() -> Node {
    let cfg = common::config_file(CHAT_CONFIG);
    Node::start(&["--config", cfg.to_str().unwrap()]).await
}

#[tokio::test]
async fn subprotocols_are_negotiated_as_the_contract_says() {
    let node = Node::start(&[]).await;
    let json = Raw::handshake(
        node.http,
        "/ws",
        &[("Sec-WebSocket-Protocol", "roomcast.v1.json")],
    )
    .await;
    assert_eq!(json.status(), 101);
    assert_eq!(
        json.header("sec-websocket-protocol").as_deref(),
        Some("roomcast.v1.json")
    );
    let proto = Raw::handshake(
        node.http,
        "/ws",
        &[("Sec-WebSocket-Protocol", "x.unknown, roomcast.v1.proto")],
    )
    .await;
    assert_eq!(proto.status(), 101);
    assert_eq!(
        proto.header("sec-websocket-protocol").as_deref(),
        Some("roomcast.v1.proto")
    );
    let none = Raw::handshake(node.http, "/ws", &[]).await;
    assert_eq!(none.status(), 101);
    assert_eq!(
        none.header("sec-websocket-protocol"),
        None,
        "no subprotocol offered: none in the reply"
    );
    let unknown = Raw::handshake(
        node.http,
        "/ws",
        &[("Sec-WebSocket-Protocol", "chat, superchat")],
    )
    .await;
    assert_eq!(
        unknown.status(),
        400,
        "only unknown subprotocols: refused before the upgrade"
    );
    assert_eq!(
        node.metric("roomcast_connections_rejected_total{reason=\"subprotocol\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn connect_ping_echo_and_their_replies() {
    let node = Node::start(&["--node-id", "node-a"]).await;
    let mut c = Client::connect(&node).await;
    assert_eq!(c.protocol.as_deref(), Some("roomcast.v1.json"));
    let r = c
        .call(json!({"op": "connect", "client": "test/1"}), 1)
        .await;
    assert_eq!(r["op"], "connected");
    assert_eq!(r["node"], "node-a");
    assert_eq!(r["ping_interval_ms"], 25000);
    assert!(r["client_id"].as_str().unwrap().len() >= 8);
    assert_eq!(
        c.call(json!({"op": "ping"}), 2).await,
        json!({"op": "pong", "id": 2})
    );
    let e = c
        .call(
            json!({"op": "echo", "data": {"nested": [1, "two", null]}}),
            3,
        )
        .await;
    assert_eq!(e["data"], json!({"nested": [1, "two", null]}));
    let again = c.call(json!({"op": "connect"}), 4).await;
    assert_eq!(again["code"], "bad_request", "a second connect is refused");
}

#[tokio::test]
async fn malformed_commands_get_errors_and_the_connection_stays_open() {
    let node = Node::start(&[]).await;
    let mut c = Client::connect(&node).await;
    c.ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = c.recv().await;
    assert_eq!(e["op"], "error");
    assert_eq!(e["code"], "bad_request");
    let e = c.call(json!({"op": "teleport"}), 7).await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("bad_request"), Some(7))
    );
    let e = c.call(json!({"op": "subscribe"}), 8).await;
    assert_eq!(e["code"], "bad_request");
    let e = c
        .call(json!({"op": "subscribe", "room": "has space"}), 9)
        .await;
    assert_eq!(e["code"], "bad_request");
    let e = c
        .call(json!({"op": "subscribe", "room": "x".repeat(201)}), 10)
        .await;
    assert_eq!(e["code"], "bad_request");
    let e = c
        .call(json!({"op": "unsubscribe", "room": "never.joined"}), 11)
        .await;
    assert_eq!(e["code"], "not_found");
    // Still open and answering.
    assert_eq!(c.call(json!({"op": "ping"}), 12).await["op"], "pong");
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_between_two_clients() {
    let node = chat_node().await;
    let mut alice = Client::connect(&node).await;
    let mut bob = Client::connect(&node).await;
    let sub = alice
        .call(json!({"op": "subscribe", "room": "chat.lobby"}), 1)
        .await;
    assert_eq!(sub["op"], "subscribed");
    assert_eq!(sub["recovered"], true);
    assert!(
        !sub["epoch"].as_str().unwrap().is_empty(),
        "history rooms have an epoch"
    );
    let p = bob
        .call(
            json!({"op": "publish", "room": "chat.lobby", "event": "say", "data": {"text": "hi"}}),
            2,
        )
        .await;
    assert_eq!(p["op"], "published");
    assert_eq!(p["offset"], 1);
    let m = alice.recv().await;
    assert_eq!(
        m,
        json!({"op": "message", "room": "chat.lobby", "event": "say", "data": {"text": "hi"}, "offset": 1})
    );
    let u = alice
        .call(json!({"op": "unsubscribe", "room": "chat.lobby"}), 3)
        .await;
    assert_eq!(
        u,
        json!({"op": "unsubscribed", "id": 3, "room": "chat.lobby"})
    );
    bob.call(
        json!({"op": "publish", "room": "chat.lobby", "data": "after"}),
        4,
    )
    .await;
    // The next thing alice sees is her own pong, not the publication.
    assert_eq!(alice.call(json!({"op": "ping"}), 5).await["op"], "pong");
    let dup = bob
        .call(json!({"op": "subscribe", "room": "chat.x"}), 6)
        .await;
    assert_eq!(dup["op"], "subscribed");
    let dup = bob
        .call(json!({"op": "subscribe", "room": "chat.x"}), 7)
        .await;
    assert_eq!(dup["code"], "bad_request", "subscribing twice is an error");
}

#[tokio::test]
async fn namespaces_decide_publish_presence_and_join_leave() {
    let node = chat_node().await;
    let mut c = Client::connect(&node).await;
    let e = c
        .call(
            json!({"op": "publish", "room": "quotes.AAPL", "data": 1}),
            1,
        )
        .await;
    assert_eq!(e["code"], "forbidden", "quotes are backend-only");
    let e = c
        .call(json!({"op": "presence", "room": "other.room"}), 2)
        .await;
    assert_eq!(e["code"], "forbidden", "presence is off by default");

    let mut watcher = Client::connect(&node).await;
    watcher
        .call(json!({"op": "subscribe", "room": "chat.lobby"}), 1)
        .await;
    c.call(json!({"op": "subscribe", "room": "chat.lobby"}), 3)
        .await;
    let join = watcher.recv().await;
    assert_eq!(join["op"], "join");
    assert_eq!(join["room"], "chat.lobby");
    let who = c
        .call(json!({"op": "presence", "room": "chat.lobby"}), 4)
        .await;
    assert_eq!(who["op"], "presence");
    assert_eq!(who["clients"].as_array().unwrap().len(), 2);
    drop(c);
    let leave = watcher.recv().await;
    assert_eq!(leave["op"], "leave");
    assert_eq!(leave["client_id"], join["client_id"]);
}

#[tokio::test]
async fn history_recovery_replays_what_was_missed() {
    let node = chat_node().await;
    let mut pubr = Client::connect(&node).await;
    let mut c = Client::connect(&node).await;
    let s = c
        .call(json!({"op": "subscribe", "room": "chat.r"}), 1)
        .await;
    let epoch = s["epoch"].as_str().unwrap().to_owned();
    pubr.call(json!({"op": "publish", "room": "chat.r", "data": 1}), 1)
        .await;
    assert_eq!(c.recv().await["offset"], 1);
    drop(c);
    for i in 2..=4 {
        pubr.call(json!({"op": "publish", "room": "chat.r", "data": i}), i)
            .await;
    }
    let mut back = Client::connect(&node).await;
    back.send(json!({"op": "subscribe", "id": 9, "room": "chat.r", "since": {"epoch": epoch, "offset": 1}})).await;
    let s = back.recv().await;
    assert_eq!(
        (
            s["op"].as_str(),
            s["recovered"].as_bool(),
            s["offset"].as_u64()
        ),
        (Some("subscribed"), Some(true), Some(4))
    );
    for want in 2..=4 {
        let m = back.recv().await;
        assert_eq!(
            (m["data"].as_u64(), m["offset"].as_u64()),
            (Some(want), Some(want)),
            "missed messages in order"
        );
    }
    pubr.call(json!({"op": "publish", "room": "chat.r", "data": 5}), 5)
        .await;
    assert_eq!(back.recv().await["offset"], 5, "then live ones");

    let mut stale = Client::connect(&node).await;
    let s = stale
        .call(
            json!({"op": "subscribe", "room": "chat.r", "since": {"epoch": "gone", "offset": 3}}),
            1,
        )
        .await;
    assert_eq!(
        s["recovered"], false,
        "another epoch cannot be recovered, and the client is told"
    );
}

#[tokio::test]
async fn protobuf_subprotocol_speaks_the_same_commands() {
    let node = chat_node().await;
    let mut json_client = Client::connect(&node).await;
    let mut c = Client::connect_with(&node, "/ws", Some("roomcast.v1.proto")).await;
    assert_eq!(c.protocol.as_deref(), Some("roomcast.v1.proto"));
    let frame = |id, command| {
        pb::ClientFrame {
            id,
            command: Some(command),
        }
        .encode_to_vec()
    };
    use pb::client_frame::Command as C;
    c.ws.send(Message::Binary(frame(
        1,
        C::Subscribe(pb::SubscribeCommand {
            room: "chat.p".into(),
            since: None,
        }),
    )))
    .await
    .unwrap();
    let next = |m: Option<Result<Message, _>>| -> pb::ServerFrame {
        match m {
            Some(Ok(Message::Binary(b))) => pb::ServerFrame::decode(&b[..]).unwrap(),
            other => panic!("expected a binary frame, got {other:?}"),
        }
    };
    let r = next(c.ws.next().await);
    assert_eq!(r.id, 1);
    assert!(
        matches!(r.event, Some(pb::server_frame::Event::Subscribed(ref s)) if s.room == "chat.p")
    );
    json_client
        .call(
            json!({"op": "publish", "room": "chat.p", "data": {"k": "v"}}),
            1,
        )
        .await;
    let m = next(c.ws.next().await);
    match m.event {
        Some(pb::server_frame::Event::Message(m)) => {
            assert_eq!(m.data, br#"{"k":"v"}"#.to_vec());
            assert!(!m.binary);
            assert_eq!(m.offset, 1);
        }
        other => panic!("expected a message, got {other:?}"),
    }
    // Opaque bytes from the proto side reach JSON clients base64-encoded.
    json_client
        .call(json!({"op": "subscribe", "room": "chat.p"}), 2)
        .await;
    c.ws.send(Message::Binary(frame(
        2,
        C::Publish(pb::PublishCommand {
            room: "chat.p".into(),
            event: String::new(),
            data: vec![0, 1, 2].into(),
        }),
    )))
    .await
    .unwrap();
    let m = json_client.recv().await;
    assert_eq!(
        (m["data"].as_str(), m["binary"].as_bool()),
        (Some("AAEC"), Some(true))
    );
    c.ws.send(Message::Binary(vec![0xff, 0xff, 0xff]))
        .await
        .unwrap();
    loop {
        let f = next(c.ws.next().await);
        if let Some(pb::server_frame::Event::Error(e)) = f.event {
            assert_eq!(e.code, "bad_request");
            break;
        }
    }
}

#[tokio::test]
async fn frames_of_the_wrong_kind_close_with_1003() {
    let node = Node::start(&[]).await;
    let mut c = Client::connect(&node).await;
    c.ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.closed().await.0, 1003);
    let mut p = Client::connect_with(&node, "/ws", Some("roomcast.v1.proto")).await;
    p.ws.send(Message::Text("{}".into())).await.unwrap();
    assert_eq!(p.closed().await.0, 1003);
}

#[tokio::test]
async fn protocol_violations_close_with_the_right_code() {
    let node = Node::start(&["--max-message-bytes", "1KiB"]).await;
    let mut unmasked = Raw::handshake(node.http, "/ws", &[]).await;
    unmasked
        .send_frame(true, 1, br#"{"op":"ping"}"#, false)
        .await;
    assert_eq!(unmasked.close_code().await, Some(1002));
    let mut big = Raw::handshake(node.http, "/ws", &[]).await;
    big.send_frame(true, 1, &vec![b' '; 2000], true).await;
    assert_eq!(big.close_code().await, Some(1009));
    let mut utf8 = Raw::handshake(node.http, "/ws", &[]).await;
    utf8.send_frame(true, 1, &[0xc3, 0x28], true).await;
    assert_eq!(utf8.close_code().await, Some(1007));
    node.wait_metric("roomcast_disconnects_total{reason=\"protocol_error\"}", 1.0)
        .await;
    node.wait_metric(
        "roomcast_disconnects_total{reason=\"message_too_large\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn pings_are_answered_even_behind_a_backlog() {
    let node = Node::start(&["--echo"]).await;
    let mut raw = Raw::handshake(node.http, "/echo", &[]).await;
    // Queue a pile of echoes, then a ping: the pong must come back.
    for _ in 0..50 {
        raw.send_frame(true, 2, &vec![7u8; 8000], true).await;
    }
    raw.send_frame(true, 9, b"are you there", true).await;
    let mut got_pong = false;
    let mut echoes = 0;
    while let Some((op, p)) = raw.read_frame().await {
        match op {
            0xA => {
                assert_eq!(p, b"are you there");
                got_pong = true;
            }
            2 => echoes += 1,
            _ => {}
        }
        if got_pong && echoes == 50 {
            break;
        }
    }
    assert!(got_pong && echoes == 50);
}
