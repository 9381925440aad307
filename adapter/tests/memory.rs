//! `MemoryAdapter` against the shared conformance suite, two nodes on one bus.

use roomcast_adapter::{testing, Adapter, MemoryAdapter, MemoryBus};
use std::sync::Arc;

#[tokio::test]
async fn memory_adapter_conforms() {
    let bus = MemoryBus::default();
    testing::run_conformance(|id| {
        let bus = bus.clone();
        async move { Arc::new(MemoryAdapter::with_bus(id, bus)) as Arc<dyn Adapter> }
    })
    .await;
}

#[tokio::test]
async fn history_expires_into_a_new_epoch() {
    use roomcast_adapter::{HistoryOptions, HistoryQuery, PublishRequest, StreamPosition};
    let a = MemoryAdapter::new("n1");
    a.start(testing::RecordingHandler::new("n1")).await.unwrap();
    let opts = HistoryOptions {
        size: 10,
        ttl: std::time::Duration::from_millis(50),
    };
    let req = PublishRequest {
        room: "r".into(),
        event: String::new(),
        data: "1".into(),
        binary: false,
        exclude_client_id: String::new(),
        idempotency_key: String::new(),
        history: opts,
    };
    let first = a.publish(req.clone()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    let h = a
        .history(
            "r",
            HistoryQuery {
                since: Some(StreamPosition {
                    epoch: first.epoch.clone(),
                    offset: 1,
                }),
                limit: None,
                options: opts,
            },
        )
        .await
        .unwrap();
    assert!(!h.recovered, "expired history cannot recover");
    let second = a.publish(req).await.unwrap();
    assert_ne!(second.epoch, first.epoch, "a new history gets a new epoch");
    assert_eq!(second.offset, 1);
}
