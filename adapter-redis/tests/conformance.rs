//! The shared adapter conformance suite, run against a real `redis-server`
//! spawned on a free port: two adapters built here are two nodes of one
//! cluster.

use roomcast_adapter::Adapter;
use roomcast_adapter_redis::testing::RedisServer;
use roomcast_adapter_redis::{RedisAdapter, RedisConfig};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_adapter_passes_the_conformance_suite() {
    let server = RedisServer::start().expect("redis-server starts");
    let url = server.url();
    roomcast_adapter::testing::run_conformance(|node_id| {
        let url = url.clone();
        async move {
            let adapter = RedisAdapter::connect(RedisConfig::new(vec![url], node_id))
                .await
                .expect("adapter connects");
            assert!(*adapter.health().borrow(), "healthy once connected");
            Arc::new(adapter) as Arc<dyn Adapter>
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_holds_across_two_shards() {
    let one = RedisServer::start().expect("redis-server starts");
    let two = RedisServer::start().expect("redis-server starts");
    let urls = vec![one.url(), two.url()];
    roomcast_adapter::testing::run_conformance(|node_id| {
        let urls = urls.clone();
        async move {
            let adapter = RedisAdapter::connect(RedisConfig::new(urls, node_id))
                .await
                .expect("adapter connects");
            Arc::new(adapter) as Arc<dyn Adapter>
        }
    })
    .await;
}
