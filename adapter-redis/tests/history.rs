//! History kept in Redis Streams: the size a namespace asks for is the size
//! readers see, even though the stream is trimmed a node at a time.

use bytes::Bytes;
use roomcast_adapter::testing::RecordingHandler;
use roomcast_adapter::{
    new_epoch, Adapter, HistoryOptions, HistoryQuery, PublishRequest, StreamPosition,
};
use roomcast_adapter_redis::testing::RedisServer;
use roomcast_adapter_redis::{RedisAdapter, RedisConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_histories_keep_exactly_the_newest_size_publications() {
    let server = RedisServer::start().expect("redis-server starts");
    let adapter = RedisAdapter::connect(RedisConfig::new(vec![server.url()], "h"))
        .await
        .unwrap();
    adapter.start(RecordingHandler::new("h")).await.unwrap();
    let room = format!("chat.{}", new_epoch());
    let options = HistoryOptions {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let mut epoch = String::new();
    for i in 1..=350u64 {
        let res = adapter
            .publish(PublishRequest {
                room: room.clone(),
                event: String::new(),
                data: Bytes::from(i.to_string()),
                binary: false,
                exclude_client_id: String::new(),
                idempotency_key: String::new(),
                history: options,
            })
            .await
            .unwrap();
        epoch = res.epoch;
    }
    let query = |since: Option<u64>, limit: Option<usize>| HistoryQuery {
        since: since.map(|offset| StreamPosition {
            epoch: epoch.clone(),
            offset,
        }),
        limit,
        options,
    };
    let offsets = |r: &roomcast_adapter::HistoryResult| -> Vec<u64> {
        r.publications.iter().map(|p| p.offset).collect()
    };

    let all = adapter.history(&room, query(None, None)).await.unwrap();
    assert_eq!(offsets(&all), (341..=350).collect::<Vec<_>>());
    assert_eq!(all.publications[0].data, Bytes::from("341"));
    let three = adapter.history(&room, query(None, Some(3))).await.unwrap();
    assert_eq!(offsets(&three), vec![348, 349, 350]);

    let just_enough = adapter
        .history(&room, query(Some(340), None))
        .await
        .unwrap();
    assert!(just_enough.recovered);
    assert_eq!(offsets(&just_enough), (341..=350).collect::<Vec<_>>());
    let too_old = adapter
        .history(&room, query(Some(339), None))
        .await
        .unwrap();
    assert!(!too_old.recovered, "offset 340 is no longer kept");
    assert_eq!(offsets(&too_old), (341..=350).collect::<Vec<_>>());

    // The stream itself stays within one stream node of the asked size.
    let len = server
        .command(&format!("XLEN roomcast:hist:{{{room}}}"))
        .unwrap();
    let len: u64 = len.trim().trim_start_matches(':').parse().unwrap();
    assert!((10..=110).contains(&len), "stream holds {len} entries");
    adapter.shutdown().await;
}
