//! Fault tests: each runs its own `redis-server` processes and really does
//! the fault to them (SIGKILL and restart, SIGSTOP and SIGCONT, a node that
//! vanishes without saying goodbye, a second shard).

use bytes::Bytes;
use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use roomcast_adapter::testing::RecordingHandler;
use roomcast_adapter::{
    new_epoch, Adapter, AdapterError, HistoryOptions, HistoryQuery, PublishRequest, StreamPosition,
};
use roomcast_adapter_redis::testing::{free_port, RedisServer};
use roomcast_adapter_redis::{RedisAdapter, RedisConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Generous bound for anything that should happen "soon".
const PATIENCE: Duration = Duration::from_secs(15);

fn config(urls: Vec<String>, name: &str) -> RedisConfig {
    let mut c = RedisConfig::new(urls, format!("{name}-{}", new_epoch()));
    c.command_timeout = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(1);
    c.probe_interval = Duration::from_millis(200);
    c.probe_timeout = Duration::from_millis(800);
    c.heartbeat_interval = Duration::from_millis(200);
    c.node_ttl = Duration::from_secs(1);
    c.reconnect_backoff_min = Duration::from_millis(50);
    c.reconnect_backoff_max = Duration::from_millis(500);
    c
}

struct Node {
    adapter: Arc<RedisAdapter>,
    handler: Arc<RecordingHandler>,
    /// This node's own metrics: tests run side by side in one process, so
    /// each adapter reports to a recorder of its own.
    metrics: PrometheusHandle,
}

/// Polls `fut` with `recorder` as the thread's recorder, so the metric
/// handles the adapter registers while connecting are this recorder's.
struct WithRecorder<'a, F> {
    recorder: &'a PrometheusRecorder,
    fut: Pin<Box<F>>,
}

impl<F: Future> Future for WithRecorder<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        metrics::with_local_recorder(this.recorder, || this.fut.as_mut().poll(cx))
    }
}

async fn node(config: RedisConfig) -> Node {
    let handler = RecordingHandler::new(&config.node_id);
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    let connect = WithRecorder {
        recorder: &recorder,
        fut: Box::pin(RedisAdapter::connect(config)),
    };
    let adapter = Arc::new(connect.await.expect("connects"));
    adapter.start(handler.clone()).await.expect("starts");
    Node {
        adapter,
        handler,
        metrics,
    }
}

async fn wait_health(node: &Node, want: bool, what: &str) {
    let mut health = node.adapter.health();
    let reached = tokio::time::timeout(PATIENCE, health.wait_for(|h| *h == want)).await;
    assert!(
        matches!(reached, Ok(Ok(_))),
        "{what}: health never became {want}"
    );
}

fn publication(room: &str, data: &str) -> PublishRequest {
    PublishRequest {
        room: room.to_owned(),
        event: String::new(),
        data: Bytes::from(data.to_owned()),
        binary: false,
        exclude_client_id: String::new(),
        idempotency_key: String::new(),
        history: HistoryOptions {
            size: 100,
            ttl: Duration::from_secs(60),
        },
    }
}

fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_empty_means_reconnect_resubscribe_and_a_new_epoch() {
    let mut server = RedisServer::start().expect("redis-server starts");
    let a = node(config(vec![server.url()], "a")).await;
    let b = node(config(vec![server.url()], "b")).await;
    let room = format!("chat.{}", new_epoch());
    b.adapter.subscribe(&room).await.unwrap();
    let first = a
        .adapter
        .publish(publication(&room, "before"))
        .await
        .unwrap();
    b.handler
        .wait_for("the publication before the crash", |e| {
            e.iter().any(|(r, _)| *r == room)
        })
        .await;

    server.kill();
    wait_health(&a, false, "after SIGKILL").await;
    wait_health(&b, false, "after SIGKILL").await;
    let during = tokio::time::timeout(PATIENCE, a.adapter.publish(publication(&room, "lost")))
        .await
        .expect("a publish while Redis is dead returns");
    assert!(
        matches!(
            during,
            Err(AdapterError::Unavailable(_) | AdapterError::Timeout(_))
        ),
        "publish while Redis is dead: {during:?}"
    );

    server
        .restart()
        .expect("redis-server restarts on the same port");
    wait_health(&a, true, "after restart").await;
    wait_health(&b, true, "after restart").await;

    let after = a
        .adapter
        .publish(publication(&room, "after"))
        .await
        .unwrap();
    assert_eq!(after.offset, 1, "history was lost with the data");
    assert_ne!(after.epoch, first.epoch, "lost history means a new epoch");
    b.handler
        .wait_for("the publication after the restart", |e| {
            e.iter().filter(|(r, _)| *r == room).count() >= 2
        })
        .await;
    let datas: Vec<Bytes> = b
        .handler
        .publications(&room)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    assert_eq!(
        datas,
        vec![Bytes::from("before"), Bytes::from("after")],
        "the subscriber got both, and nothing published while Redis was dead"
    );

    let recovery = b
        .adapter
        .history(
            &room,
            HistoryQuery {
                since: Some(StreamPosition {
                    epoch: first.epoch.clone(),
                    offset: first.offset,
                }),
                limit: None,
                options: publication(&room, "").history,
            },
        )
        .await
        .unwrap();
    assert!(!recovery.recovered, "a position from the lost epoch");
    assert_eq!(recovery.position.epoch, after.epoch);

    assert!(metric_value(&a.metrics.render(), "roomcast_adapter_reconnects_total") >= 1.0);
    a.adapter.shutdown().await;
    b.adapter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_makes_publish_time_out_and_recovers_after_sigcont() {
    let server = RedisServer::start().expect("redis-server starts");
    let a = node(config(vec![server.url()], "a")).await;
    let b = node(config(vec![server.url()], "b")).await;
    let room = format!("chat.{}", new_epoch());
    b.adapter.subscribe(&room).await.unwrap();

    server.pause().expect("SIGSTOP");
    let frozen = tokio::time::timeout(PATIENCE, a.adapter.publish(publication(&room, "x")))
        .await
        .expect("publish to a frozen Redis must not hang");
    assert!(
        matches!(frozen, Err(AdapterError::Timeout(_))),
        "publish to a frozen Redis: {frozen:?}"
    );
    wait_health(&a, false, "frozen Redis (liveness probe)").await;
    wait_health(&b, false, "frozen Redis (liveness probe)").await;

    server.resume().expect("SIGCONT");
    wait_health(&a, true, "after SIGCONT").await;
    wait_health(&b, true, "after SIGCONT").await;
    a.adapter
        .publish(publication(&room, "thawed"))
        .await
        .unwrap();
    b.handler
        .wait_for("the publication after SIGCONT", |e| {
            b_has(e, &room, "thawed")
        })
        .await;
    a.adapter.shutdown().await;
    b.adapter.shutdown().await;
}

fn b_has(events: &[(String, roomcast_adapter::RoomEvent)], room: &str, data: &str) -> bool {
    events.iter().any(|(r, e)| {
        r == room
            && matches!(e, roomcast_adapter::RoomEvent::Publication { publication, .. }
                if publication.data == data.as_bytes())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_node_leaves_the_node_list_within_its_ttl() {
    let server = RedisServer::start().expect("redis-server starts");
    let a = node(config(vec![server.url()], "a")).await;
    let b = node(config(vec![server.url()], "b")).await;
    let c = node(config(vec![server.url()], "c")).await;
    let ids = |nodes: Vec<roomcast_adapter::NodeInfo>| -> Vec<String> {
        nodes.into_iter().map(|n| n.id).collect()
    };
    let listed = ids(b.adapter.nodes().await.unwrap());
    for n in [&a, &b, &c] {
        assert!(listed.contains(&n.handler.node_id), "{listed:?}");
    }

    // c leaves properly: gone at once.
    c.adapter.shutdown().await;
    let listed = ids(b.adapter.nodes().await.unwrap());
    assert!(!listed.contains(&c.handler.node_id), "{listed:?}");

    // a crashes (dropped without shutdown): gone once its entry expires.
    let a_id = a.handler.node_id.clone();
    drop(a);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let listed = ids(b.adapter.nodes().await.unwrap());
        if !listed.contains(&a_id) {
            assert!(listed.contains(&b.handler.node_id));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{a_id} still listed: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Surveys stop expecting it too: only b answers.
    let replies = b
        .adapter
        .survey(roomcast_adapter::NodeRequest::Rooms {
            prefix: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(replies.len(), 1);
    b.adapter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_two_shards_and_still_reach_other_nodes() {
    let one = RedisServer::start().expect("redis-server starts");
    let two = RedisServer::start().expect("redis-server starts");
    let urls = vec![one.url(), two.url()];
    let a = node(config(urls.clone(), "a")).await;
    let b = node(config(urls, "b")).await;
    let rooms: Vec<String> = (0..40)
        .map(|i| format!("chat.{}-{i}", new_epoch()))
        .collect();
    for room in &rooms {
        b.adapter.subscribe(room).await.unwrap();
    }
    for room in &rooms {
        a.adapter.publish(publication(room, room)).await.unwrap();
    }
    b.handler
        .wait_for("one publication per room", |e| e.len() >= rooms.len())
        .await;
    for room in &rooms {
        assert_eq!(b.handler.publications(room).len(), 1, "{room}");
        // Its history lives on the shard the hash picked, and only there.
        let (home, other) = match a.adapter.shard_of(room) {
            0 => (&one, &two),
            _ => (&two, &one),
        };
        let key = format!("EXISTS roomcast:hist:{{{room}}}");
        assert_eq!(home.command(&key).unwrap().trim(), ":1", "{room}");
        assert_eq!(other.command(&key).unwrap().trim(), ":0", "{room}");
    }
    let on_first = rooms.iter().filter(|r| a.adapter.shard_of(r) == 0).count();
    assert!(
        on_first > 0 && on_first < rooms.len(),
        "all 40 rooms on one shard"
    );
    a.adapter.shutdown().await;
    b.adapter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_its_redis_comes_up_unhealthy_then_healthy() {
    let port = free_port().unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    let mut cfg = config(vec![url], "early");
    cfg.connect_timeout = Duration::from_millis(300);
    let early = node(cfg).await;
    assert!(!*early.adapter.health().borrow(), "healthy without Redis");
    let room = format!("chat.{}", new_epoch());
    assert!(matches!(
        early.adapter.subscribe(&room).await,
        Err(AdapterError::Unavailable(_))
    ));

    let _server = RedisServer::start_on(port).expect("redis-server starts");
    wait_health(&early, true, "once Redis is up").await;
    early.adapter.subscribe(&room).await.unwrap();
    early
        .adapter
        .publish(publication(&room, "hi"))
        .await
        .unwrap();
    early
        .handler
        .wait_for("its own publication", |e| e.iter().any(|(r, _)| *r == room))
        .await;
    // The heartbeat kept retrying, so the node is listed now.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !early
        .adapter
        .nodes()
        .await
        .unwrap()
        .iter()
        .any(|n| n.id == early.handler.node_id)
    {
        assert!(tokio::time::Instant::now() < deadline, "never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    early.adapter.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exposed_under_their_documented_names() {
    let server = RedisServer::start().expect("redis-server starts");
    let a = node(config(vec![server.url()], "a")).await;
    let room = format!("chat.{}", new_epoch());
    a.adapter.subscribe(&room).await.unwrap();
    a.adapter.publish(publication(&room, "m")).await.unwrap();
    a.handler
        .wait_for("its own publication", |e| e.iter().any(|(r, _)| *r == room))
        .await;
    let text = a.metrics.render();
    assert_eq!(
        metric_value(&text, "roomcast_adapter_publish_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "roomcast_adapter_pubsub_lag_seconds_count"),
        1.0
    );
    assert_eq!(
        metric_value(&text, "roomcast_adapter_reconnects_total"),
        0.0
    );
    assert!(text.contains("roomcast_adapter_messages_dropped_total"));
    assert_eq!(
        metric_value(&text, "roomcast_adapter_publish_batch_size_count"),
        1.0
    );
    assert_eq!(metric_value(&text, "roomcast_adapter_publish_queue"), 0.0);
    a.adapter.shutdown().await;
}

/// After `SCRIPT FLUSH` the publish script is loaded again and the
/// publications that met `NOSCRIPT` are sent again: a burst in flight across
/// the flush arrives whole, once each, in order, with offsets counting up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_is_loaded_again_and_nothing_is_lost_or_doubled() {
    let server = RedisServer::start().expect("redis-server starts");
    let a = node(config(vec![server.url()], "a")).await;
    let b = node(config(vec![server.url()], "b")).await;
    let room = format!("chat.{}", new_epoch());
    b.adapter.subscribe(&room).await.unwrap();
    a.adapter.publish(publication(&room, "0")).await.unwrap();
    server.command("SCRIPT FLUSH").expect("SCRIPT FLUSH");
    let answers: Vec<_> = (1..=200)
        .map(|i| a.adapter.publish(publication(&room, &i.to_string())))
        .collect();
    let mut offsets = Vec::new();
    for answer in answers {
        offsets.push(answer.await.expect("accepted after NOSCRIPT").offset);
    }
    assert_eq!(offsets, (2..=201).collect::<Vec<u64>>());
    b.handler
        .wait_for("201 publications", |e| {
            e.iter().filter(|(r, _)| *r == room).count() >= 201
        })
        .await;
    let got: Vec<String> = b
        .handler
        .publications(&room)
        .iter()
        .map(|(_, d)| String::from_utf8(d.to_vec()).unwrap())
        .collect();
    assert_eq!(got, (0..=200).map(|i| i.to_string()).collect::<Vec<_>>());
    a.adapter.shutdown().await;
    b.adapter.shutdown().await;
}
