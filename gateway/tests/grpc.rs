//! The gRPC control plane with a real tonic client: publish fan-out, every
//! method, health, reflection and the bearer token.

mod common;

use common::{Client, Node};
use roomcast_proto::v1 as pb;
use serde_json::json;

#[tokio::test]
async fn a_grpc_publish_reaches_300_subscribers_in_order() {
    let node = Node::start(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..300 {
        let mut c = Client::connect(&node).await;
        c.call(json!({"op": "subscribe", "room": "ticker.all"}), 1)
            .await;
        clients.push(c);
    }
    let mut grpc = node.grpc().await;
    let stream = tokio_stream::iter((0..50).map(|i| pb::PublishRequest {
        room: "ticker.all".into(),
        data: format!("{{\"seq\":{i}}}").into_bytes().into(),
        ..Default::default()
    }));
    let reply = grpc.publish_stream(stream).await.unwrap().into_inner();
    assert_eq!((reply.accepted, reply.rejected), (50, 0));
    let mut readers = Vec::new();
    for mut c in clients {
        readers.push(tokio::spawn(async move {
            for i in 0..50 {
                let m = c.recv().await;
                assert_eq!(m["data"]["seq"], i, "in the order accepted");
            }
        }));
    }
    for r in readers {
        r.await.unwrap();
    }
    assert_eq!(
        node.metric("roomcast_publications_total{source=\"grpc\"}")
            .await,
        50.0
    );
}

#[tokio::test]
async fn publish_validates_input_and_reports_offsets() {
    let cfg = common::config_file("[namespaces.news]\nhistory_size = 5\nhistory_ttl = \"1m\"\n");
    let node = Node::start(&["--config", cfg.to_str().unwrap()]).await;
    let mut grpc = node.grpc().await;
    let bad_room = grpc
        .publish(pb::PublishRequest {
            room: "no spaces".into(),
            data: b"1".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_room.code(), tonic::Code::InvalidArgument);
    let bad_json = grpc
        .publish(pb::PublishRequest {
            room: "news.a".into(),
            data: b"{nope".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_json.code(), tonic::Code::InvalidArgument);
    assert!(bad_json.message().contains("binary"));
    let first = grpc
        .publish(pb::PublishRequest {
            room: "news.a".into(),
            data: b"\"one\"".to_vec().into(),
            idempotency_key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.offset, 1);
    let retry = grpc
        .publish(pb::PublishRequest {
            room: "news.a".into(),
            data: b"\"one\"".to_vec().into(),
            idempotency_key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, first, "a retried publish is accepted once");
    let bin = grpc
        .publish(pb::PublishRequest {
            room: "news.a".into(),
            data: vec![0xff, 0].into(),
            binary: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bin.offset, 2);
    let h = grpc
        .history(pb::HistoryRequest {
            room: "news.a".into(),
            since: None,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.publications.len(), 2);
    assert_eq!(h.publications[1].data, vec![0xff, 0]);
    assert!(h.publications[1].binary);
    assert_eq!((h.epoch, h.offset), (first.epoch.clone(), 2));
    let b = grpc
        .broadcast(pb::BroadcastRequest {
            rooms: vec!["news.a".into(), "bad room".into(), "other".into()],
            data: b"true".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.results.len(), 3);
    assert_eq!(b.results[0].offset, 3);
    assert!(!b.results[1].error.is_empty());
    assert!(b.results[2].error.is_empty());
}

#[tokio::test]
async fn presence_rooms_info_subscribe_and_disconnect() {
    let node = Node::start(&["--node-id", "n1"]).await;
    let mut a = Client::connect(&node).await;
    let mut b = Client::connect(&node).await;
    let a_id = a.call(json!({"op": "connect"}), 1).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    a.call(json!({"op": "subscribe", "room": "game.1"}), 2)
        .await;
    b.call(json!({"op": "subscribe", "room": "game.1"}), 1)
        .await;
    b.call(json!({"op": "subscribe", "room": "lobby"}), 2).await;
    let mut grpc = node.grpc().await;

    let p = grpc
        .presence(pb::PresenceRequest {
            room: "game.1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.clients.len(), 2);
    assert!(p.clients.iter().all(|c| c.node == "n1"));
    let rooms = grpc
        .rooms(pb::RoomsRequest {
            prefix: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(String, u64)> = rooms
        .rooms
        .into_iter()
        .map(|r| (r.room, r.subscribers))
        .collect();
    assert_eq!(counts, vec![("game.1".into(), 2), ("lobby".into(), 1)]);
    let only_games = grpc
        .rooms(pb::RoomsRequest {
            prefix: "game.".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(only_games.rooms.len(), 1);
    let info = grpc.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.nodes.len(), 1);
    assert_eq!(info.nodes[0].id, "n1");
    assert_eq!(info.nodes[0].connections, 2);
    assert_eq!(info.nodes[0].rooms, 2);
    assert!(!info.nodes[0].version.is_empty());

    // Server-side subscribe: the client is told and then receives.
    grpc.subscribe(pb::SubscribeRequest {
        client_id: a_id.clone(),
        user: String::new(),
        room: "news".into(),
    })
    .await
    .unwrap();
    let s = a.recv().await;
    assert_eq!(
        (s["op"].as_str(), s["room"].as_str()),
        (Some("subscribed"), Some("news"))
    );
    grpc.publish(pb::PublishRequest {
        room: "news".into(),
        data: b"42".to_vec().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(a.recv().await["data"], 42);
    let missing = grpc
        .subscribe(pb::SubscribeRequest {
            client_id: "nobody".into(),
            user: String::new(),
            room: "news".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let d = grpc
        .disconnect(pb::DisconnectRequest {
            client_id: a_id,
            user: String::new(),
            code: 0,
            reason: "bye".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.disconnected, 1);
    assert_eq!(a.closed().await, (4003, "bye".to_owned()));
    assert_eq!(
        b.call(json!({"op": "ping"}), 3).await["op"],
        "pong",
        "others stay"
    );
}

#[tokio::test]
async fn health_and_reflection_answer_without_a_proto_at_hand() {
    let node = Node::start(&[]).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "roomcast.v1.Control".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let first = resp.message().await.unwrap().unwrap();
    match first.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
            assert!(
                names.contains(&"roomcast.v1.Control".to_owned()),
                "{names:?}"
            );
            assert!(
                names.contains(&"grpc.health.v1.Health".to_owned()),
                "{names:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn with_a_grpc_token_calls_need_the_bearer() {
    let node = Node::start_with_env(&[], &[("ROOMCAST_GRPC_TOKEN", "t0ken")]).await;
    let mut grpc = node.grpc().await;
    let e = grpc.info(pb::InfoRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(pb::InfoRequest {});
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        grpc.info(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut right = tonic::Request::new(pb::InfoRequest {});
    right
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    assert_eq!(grpc.info(right).await.unwrap().into_inner().nodes.len(), 1);
    // Health checks need no token.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", node.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new()
        })
        .await
        .is_ok());
    assert_eq!(
        node.metric("roomcast_grpc_requests_total{method=\"Info\",code=\"OK\"}")
            .await,
        1.0
    );
}
