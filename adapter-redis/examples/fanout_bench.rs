//! Throughput of one Redis: one node publishes, three nodes receive.
//!
//! ```text
//! cargo run --release -p roomcast-adapter-redis --example fanout_bench -- [publications] [concurrency]
//! ```
//!
//! Spawns its own `redis-server` on a free port (never touches one already
//! running), builds four adapters on it, subscribes three of them to one
//! room, and publishes `publications` (default 100000) with `concurrency`
//! publishes in flight (default 64), once to a room with history (the Lua
//! script path) and once to a room without (plain PUBLISH). Prints
//! publications per second, counted until the last subscriber got the last
//! one, and the Redis CPU time spent, from `INFO cpu`.

use roomcast_adapter::{
    Adapter, Handler, HistoryOptions, NodeInfo, NodeReply, NodeRequest, PublishRequest, RoomEvent,
};
use roomcast_adapter_redis::testing::RedisServer;
use roomcast_adapter_redis::{RedisAdapter, RedisConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Counter {
    id: String,
    received: AtomicU64,
}

impl Handler for Counter {
    fn on_room_event(&self, _room: &str, _event: RoomEvent) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }
    fn on_request(&self, _request: &NodeRequest) -> NodeReply {
        NodeReply::Affected(0)
    }
    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            ..Default::default()
        }
    }
}

fn cpu_seconds(server: &RedisServer) -> f64 {
    let info = server.command("INFO cpu").unwrap_or_default();
    ["used_cpu_sys:", "used_cpu_user:"]
        .iter()
        .filter_map(|k| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .sum()
}

async fn node(url: &str, id: &str) -> (Arc<RedisAdapter>, Arc<Counter>) {
    let adapter = Arc::new(
        RedisAdapter::connect(RedisConfig::new(vec![url.to_owned()], id))
            .await
            .expect("connects"),
    );
    let counter = Arc::new(Counter {
        id: id.to_owned(),
        received: AtomicU64::new(0),
    });
    adapter.start(counter.clone()).await.expect("starts");
    (adapter, counter)
}

async fn run(
    server: &RedisServer,
    publisher: &Arc<RedisAdapter>,
    subscribers: &[(Arc<RedisAdapter>, Arc<Counter>)],
    room: &str,
    history: HistoryOptions,
    total: u64,
    concurrency: u64,
) {
    for (s, c) in subscribers {
        s.subscribe(room).await.expect("subscribes");
        c.received.store(0, Ordering::SeqCst);
    }
    let cpu_before = cpu_seconds(server);
    let started = Instant::now();
    let per_task = total / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let publisher = publisher.clone();
            let room = room.to_owned();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    publisher
                        .publish(PublishRequest {
                            room: room.clone(),
                            event: String::new(),
                            data: bytes::Bytes::from_static(br#"{"price":101.25,"sym":"ACME"}"#),
                            binary: false,
                            exclude_client_id: String::new(),
                            idempotency_key: String::new(),
                            history,
                        })
                        .await
                        .expect("publishes");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("publisher task");
    }
    let published_in = started.elapsed();
    let sent = per_task * concurrency;
    let deadline = Instant::now() + Duration::from_secs(60);
    while subscribers
        .iter()
        .any(|(_, c)| c.received.load(Ordering::Relaxed) < sent)
    {
        assert!(Instant::now() < deadline, "deliveries missing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delivered_in = started.elapsed();
    let cpu = cpu_seconds(server) - cpu_before;
    println!(
        "{:<12} {sent} publications, {} subscriber nodes: accepted {:.0}/s, delivered to all {:.0}/s ({:.2} s); redis CPU {:.2} s ({:.1} µs per publication)",
        if history.enabled() { "history" } else { "no history" },
        subscribers.len(),
        sent as f64 / published_in.as_secs_f64(),
        sent as f64 / delivered_in.as_secs_f64(),
        delivered_in.as_secs_f64(),
        cpu,
        cpu * 1e6 / sent as f64,
    );
    for (s, _) in subscribers {
        s.unsubscribe(room).await.expect("unsubscribes");
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let concurrency: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let server = RedisServer::start().expect("redis-server starts");
    let (publisher, _) = node(&server.url(), "bench-pub").await;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(node(&server.url(), &format!("bench-sub{i}")).await);
    }
    println!("redis INFO cpu before: {:.2} s", cpu_seconds(&server));
    let history = HistoryOptions {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    run(
        &server,
        &publisher,
        &subscribers,
        "bench.history",
        history,
        total,
        concurrency,
    )
    .await;
    run(
        &server,
        &publisher,
        &subscribers,
        "bench.plain",
        HistoryOptions::default(),
        total,
        concurrency,
    )
    .await;
    println!("redis INFO cpu after: {:.2} s", cpu_seconds(&server));
    if std::env::var_os("BENCH_COMMANDSTATS").is_some() {
        let stats = server.command("INFO commandstats").unwrap_or_default();
        for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
            println!("{line}");
        }
    }
    publisher.shutdown().await;
    for (s, _) in &subscribers {
        s.shutdown().await;
    }
}
