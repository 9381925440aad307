//! JWT authentication as a browser and an operator see it.

mod common;

use common::{Client, Node};
use serde_json::json;

fn token(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn with_auth_the_first_command_must_be_a_valid_connect() {
    let node = Node::start(&["--jwt-secret", "s3cret"]).await;
    let mut anon = Client::connect(&node).await;
    anon.send(json!({"op": "subscribe", "room": "x"})).await;
    assert_eq!(anon.closed().await.0, 4001);

    let mut forged = Client::connect(&node).await;
    forged.send(json!({"op": "connect", "token": token("wrong", json!({"sub": "eve", "exp": now() + 60}))})).await;
    assert_eq!(forged.closed().await.0, 4001);

    let mut ok = Client::connect(&node).await;
    let t = token(
        "s3cret",
        json!({"sub": "alice", "exp": now() + 60, "rooms": ["chat.*"], "publish": ["chat.lobby"]}),
    );
    let r = ok.call(json!({"op": "connect", "token": t}), 1).await;
    assert_eq!(r["op"], "connected");
    assert_eq!(
        ok.call(json!({"op": "subscribe", "room": "chat.x"}), 2)
            .await["op"],
        "subscribed"
    );
    assert_eq!(
        ok.call(json!({"op": "subscribe", "room": "admin"}), 3)
            .await["code"],
        "forbidden"
    );
    assert_eq!(
        ok.call(json!({"op": "publish", "room": "chat.lobby", "data": 1}), 4)
            .await["op"],
        "published"
    );
    assert_eq!(
        ok.call(json!({"op": "publish", "room": "chat.x", "data": 1}), 5)
            .await["code"],
        "forbidden"
    );
    node.wait_metric("roomcast_disconnects_total{reason=\"unauthorized\"}", 2.0)
        .await;
}

#[tokio::test]
async fn tokens_in_the_query_string_and_expiry() {
    let node = Node::start(&["--jwt-secret", "s3cret"]).await;
    let t = token("s3cret", json!({"sub": "bob", "exp": now() + 2}));
    let mut c =
        Client::connect_with(&node, &format!("/ws?token={t}"), Some("roomcast.v1.json")).await;
    // Authenticated by the query string: no connect needed.
    assert_eq!(
        c.call(json!({"op": "subscribe", "room": "r"}), 1).await["op"],
        "subscribed"
    );
    let mut grpc = node.grpc().await;
    let p = grpc
        .presence(roomcast_proto::v1::PresenceRequest { room: "r".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.clients[0].user, "bob");
    // The token expires: the session is closed with 4001.
    assert_eq!(c.closed().await.0, 4001);

    let mut bad = Client::connect_with(&node, "/ws?token=garbage", Some("roomcast.v1.json")).await;
    assert_eq!(bad.closed().await.0, 4001);
}

#[tokio::test]
async fn sessions_that_never_authenticate_are_closed() {
    let node = Node::start(&["--jwt-secret", "s3cret", "--connect-timeout", "300ms"]).await;
    let mut idle = Client::connect(&node).await;
    let (code, reason) = idle.closed().await;
    assert_eq!(code, 4001);
    assert!(reason.contains("not authenticated"), "{reason}");
}
