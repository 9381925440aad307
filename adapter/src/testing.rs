//! The conformance suite every [`Adapter`] must pass.
//!
//! Call [`run_conformance`] with a function that builds a started-fresh node
//! adapter for a node id; nodes built by the same function must form one
//! cluster (share a [`crate::MemoryBus`], or the same Redis servers). Room
//! names are randomised per run, so a shared backend is fine.

use crate::{
    Adapter, ClientInfo, Handler, HistoryOptions, HistoryQuery, NodeInfo, NodeReply, NodeRequest,
    PresenceEvent, PublishRequest, RoomEvent, StreamPosition,
};
use bytes::Bytes;
use parking_lot::Mutex;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long the suite waits for an event that should arrive.
const WAIT: Duration = Duration::from_secs(5);

/// A [`Handler`] that records everything it receives.
#[derive(Default)]
pub struct RecordingHandler {
    /// The node id it reports.
    pub node_id: String,
    /// Room events in arrival order.
    pub events: Mutex<Vec<(String, RoomEvent)>>,
    /// Clients it reports as present, per room.
    pub present: Mutex<Vec<(String, ClientInfo)>>,
    notify: tokio::sync::Notify,
}

impl RecordingHandler {
    /// A handler for node `node_id`.
    pub fn new(node_id: &str) -> Arc<Self> {
        Arc::new(Self {
            node_id: node_id.to_owned(),
            ..Default::default()
        })
    }

    /// Waits until `pred` holds over the recorded events, or panics after a while.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[(String, RoomEvent)]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.notify.notified();
            if pred(&self.events.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; node {} saw {} events",
                    self.node_id,
                    self.events.lock().len()
                );
            }
        }
    }

    /// Offsets of the publications received for `room`, in arrival order.
    pub fn offsets(&self, room: &str) -> Vec<u64> {
        self.publications(room).iter().map(|(o, _)| *o).collect()
    }

    /// (offset, data) of the publications received for `room`.
    pub fn publications(&self, room: &str) -> Vec<(u64, Bytes)> {
        self.events
            .lock()
            .iter()
            .filter(|(r, _)| r == room)
            .filter_map(|(_, e)| match e {
                RoomEvent::Publication { publication, .. } => {
                    Some((publication.offset, publication.data.clone()))
                }
                RoomEvent::Presence(_) => None,
            })
            .collect()
    }
}

impl Handler for RecordingHandler {
    fn on_room_event(&self, room: &str, event: RoomEvent) {
        self.events.lock().push((room.to_owned(), event));
        self.notify.notify_waiters();
    }

    fn on_request(&self, request: &NodeRequest) -> NodeReply {
        match request {
            NodeRequest::Presence { room } => NodeReply::Presence(
                self.present
                    .lock()
                    .iter()
                    .filter(|(r, _)| r == room)
                    .map(|(_, c)| c.clone())
                    .collect(),
            ),
            NodeRequest::Rooms { prefix } => {
                let mut rooms: Vec<(String, u64)> = Vec::new();
                for (r, _) in self.present.lock().iter() {
                    if !r.starts_with(prefix.as_str()) {
                        continue;
                    }
                    match rooms.iter_mut().find(|(n, _)| n == r) {
                        Some((_, c)) => *c += 1,
                        None => rooms.push((r.clone(), 1)),
                    }
                }
                NodeReply::Rooms(rooms)
            }
            _ => NodeReply::Affected(1),
        }
    }

    fn node_info(&self) -> NodeInfo {
        NodeInfo {
            id: self.node_id.clone(),
            address: format!("{}:8080", self.node_id),
            version: "test".into(),
            ..Default::default()
        }
    }
}

fn room(prefix: &str) -> String {
    format!("conf{}.{prefix}", crate::new_epoch())
}

fn history(size: usize) -> HistoryOptions {
    HistoryOptions {
        size,
        ttl: Duration::from_secs(60),
    }
}

fn request(room: &str, data: &str, opts: HistoryOptions) -> PublishRequest {
    PublishRequest {
        room: room.to_owned(),
        event: String::new(),
        data: Bytes::from(data.to_owned()),
        binary: false,
        exclude_client_id: String::new(),
        idempotency_key: String::new(),
        history: opts,
    }
}

/// A started node and the handler recording what it receives.
pub struct TestNode {
    /// The adapter under test.
    pub adapter: Arc<dyn Adapter>,
    /// What it delivered.
    pub handler: Arc<RecordingHandler>,
}

async fn start<F, Fut>(make: &F, id: &str) -> TestNode
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<dyn Adapter>>,
{
    let id = format!("{id}-{}", crate::new_epoch());
    let adapter = make(id.clone()).await;
    let handler = RecordingHandler::new(&id);
    adapter
        .start(handler.clone())
        .await
        .expect("adapter starts");
    TestNode { adapter, handler }
}

/// Runs every conformance check. Panics on the first failure.
pub async fn run_conformance<F, Fut>(make: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Arc<dyn Adapter>>,
{
    let a = start(&make, "a").await;
    let b = start(&make, "b").await;
    publications_reach_subscribed_nodes_in_order(&a, &b).await;
    unsubscribe_stops_delivery(&a, &b).await;
    publications_in_flight_together_keep_their_order(&a, &b).await;
    history_offsets_and_recovery(&a, &b).await;
    epoch_exists_before_the_first_publication(&a, &b).await;
    rooms_without_history(&a).await;
    idempotent_publish(&a).await;
    presence_events_and_exclusion(&a, &b).await;
    surveys_and_nodes_cover_the_cluster(&a, &b).await;
    kept_state_is_taken_once_from_any_node(&a, &b).await;
    a.adapter.shutdown().await;
    b.adapter.shutdown().await;
}

/// Node B subscribes; 500 publications from A arrive at B in order; A, not
/// subscribed, receives nothing.
pub async fn publications_reach_subscribed_nodes_in_order(a: &TestNode, b: &TestNode) {
    let r = room("order");
    b.adapter.subscribe(&r).await.unwrap();
    let mut offsets = Vec::new();
    for i in 0..500 {
        let res = a
            .adapter
            .publish(request(&r, &format!("{i}"), history(1000)))
            .await
            .unwrap();
        offsets.push(res.offset);
    }
    assert_eq!(
        offsets,
        (1..=500).collect::<Vec<u64>>(),
        "offsets count up from 1"
    );
    b.handler
        .wait_for("500 publications", |e| {
            e.iter().filter(|(x, _)| *x == r).count() >= 500
        })
        .await;
    let got = b.handler.publications(&r);
    let datas: Vec<String> = got
        .iter()
        .map(|(_, d)| String::from_utf8(d.to_vec()).unwrap())
        .collect();
    assert_eq!(datas, (0..500).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(b.handler.offsets(&r), (1..=500).collect::<Vec<u64>>());
    assert!(
        a.handler.publications(&r).is_empty(),
        "an unsubscribed node got events"
    );
}

/// Publications started together, with and without history and over
/// several rooms, keep the order in which `publish` was called, even when
/// their answers are awaited last first; offsets follow that order too.
pub async fn publications_in_flight_together_keep_their_order(a: &TestNode, b: &TestNode) {
    let kept = room("inflight.kept");
    let plain = room("inflight.plain");
    b.adapter.subscribe(&kept).await.unwrap();
    b.adapter.subscribe(&plain).await.unwrap();
    let mut answers = Vec::new();
    for i in 0..300 {
        let (r, opts) = if i % 2 == 0 {
            (&kept, history(1000))
        } else {
            (&plain, history(0))
        };
        answers.push(a.adapter.publish(request(r, &format!("{i}"), opts)));
    }
    let mut offsets = Vec::new();
    while let Some(answer) = answers.pop() {
        offsets.push(answer.await.unwrap().offset);
    }
    offsets.reverse();
    let kept_offsets: Vec<u64> = offsets.iter().step_by(2).copied().collect();
    assert_eq!(kept_offsets, (1..=150).collect::<Vec<u64>>());
    assert!(offsets.iter().skip(1).step_by(2).all(|o| *o == 0));
    b.handler
        .wait_for("300 publications", |e| {
            e.iter().filter(|(x, _)| *x == kept || *x == plain).count() >= 300
        })
        .await;
    let datas = |r: &str| -> Vec<String> {
        b.handler
            .publications(r)
            .iter()
            .map(|(_, d)| String::from_utf8(d.to_vec()).unwrap())
            .collect()
    };
    let want = |parity: usize| -> Vec<String> {
        (0..300)
            .filter(|i| i % 2 == parity)
            .map(|i| i.to_string())
            .collect()
    };
    assert_eq!(datas(&kept), want(0));
    assert_eq!(datas(&plain), want(1));
}

/// After unsubscribe a node receives nothing more for the room.
pub async fn unsubscribe_stops_delivery(a: &TestNode, b: &TestNode) {
    let r = room("unsub");
    let probe = room("probe");
    b.adapter.subscribe(&r).await.unwrap();
    b.adapter.subscribe(&probe).await.unwrap();
    a.adapter
        .publish(request(&r, "1", history(0)))
        .await
        .unwrap();
    b.handler
        .wait_for("first publication", |e| e.iter().any(|(x, _)| *x == r))
        .await;
    b.adapter.unsubscribe(&r).await.unwrap();
    a.adapter
        .publish(request(&r, "2", history(0)))
        .await
        .unwrap();
    // A later publication to another room on the same node proves the
    // second one had its chance to arrive.
    a.adapter
        .publish(request(&probe, "p", history(0)))
        .await
        .unwrap();
    b.handler
        .wait_for("probe", |e| e.iter().any(|(x, _)| *x == probe))
        .await;
    assert_eq!(
        b.handler.publications(&r).len(),
        1,
        "delivered after unsubscribe"
    );
}

/// Offsets, epochs, limits, and honest `recovered` flags.
pub async fn history_offsets_and_recovery(a: &TestNode, b: &TestNode) {
    let r = room("hist");
    let opts = history(5);
    let mut epoch = String::new();
    for i in 1..=8u64 {
        let res = a
            .adapter
            .publish(request(&r, &format!("{i}"), opts))
            .await
            .unwrap();
        assert_eq!(res.offset, i);
        if i == 1 {
            epoch = res.epoch.clone();
            assert!(!epoch.is_empty(), "a room with history has an epoch");
        } else {
            assert_eq!(res.epoch, epoch, "epoch is stable");
        }
    }
    // Any node reads the same history.
    let all = b
        .adapter
        .history(
            &r,
            HistoryQuery {
                options: opts,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8],
        "keeps the newest `size`"
    );
    assert_eq!(
        all.position,
        StreamPosition {
            epoch: epoch.clone(),
            offset: 8
        }
    );
    let last2 = b
        .adapter
        .history(
            &r,
            HistoryQuery {
                limit: Some(2),
                options: opts,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        last2
            .publications
            .iter()
            .map(|p| p.offset)
            .collect::<Vec<_>>(),
        vec![7, 8]
    );

    let since = |offset| HistoryQuery {
        since: Some(StreamPosition {
            epoch: epoch.clone(),
            offset,
        }),
        limit: None,
        options: opts,
    };
    let ok = b.adapter.history(&r, since(5)).await.unwrap();
    assert!(ok.recovered);
    assert_eq!(
        ok.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert_eq!(ok.publications[0].data, Bytes::from_static(b"6"));
    let up_to_date = b.adapter.history(&r, since(8)).await.unwrap();
    assert!(up_to_date.recovered && up_to_date.publications.is_empty());
    let trimmed = b.adapter.history(&r, since(1)).await.unwrap();
    assert!(
        !trimmed.recovered,
        "offsets 2 and 3 were dropped: not recovered"
    );
    let other_epoch = b
        .adapter
        .history(
            &r,
            HistoryQuery {
                since: Some(StreamPosition {
                    epoch: "not-this-one".into(),
                    offset: 7,
                }),
                limit: None,
                options: opts,
            },
        )
        .await
        .unwrap();
    assert!(!other_epoch.recovered, "another epoch cannot be recovered");
    assert!(other_epoch.publications.is_empty());
}

/// A history room has its epoch before its first publication, and keeps it:
/// a client that subscribed to the empty room can recover from offset 0.
pub async fn epoch_exists_before_the_first_publication(a: &TestNode, b: &TestNode) {
    let r = room("fresh");
    let opts = history(10);
    let empty = b
        .adapter
        .history(
            &r,
            HistoryQuery {
                limit: Some(0),
                options: opts,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        !empty.position.epoch.is_empty(),
        "an empty history room has an epoch"
    );
    assert_eq!(empty.position.offset, 0);
    let first = a.adapter.publish(request(&r, "1", opts)).await.unwrap();
    assert_eq!(
        first.epoch, empty.position.epoch,
        "the first publication keeps that epoch"
    );
    let back = b
        .adapter
        .history(
            &r,
            HistoryQuery {
                since: Some(empty.position.clone()),
                limit: None,
                options: opts,
            },
        )
        .await
        .unwrap();
    assert!(back.recovered);
    assert_eq!(back.publications.len(), 1);
}

/// A room without history has offset 0 and nothing to replay.
pub async fn rooms_without_history(a: &TestNode) {
    let r = room("nohist");
    let res = a
        .adapter
        .publish(request(&r, "x", history(0)))
        .await
        .unwrap();
    assert_eq!(res.offset, 0);
    let h = a
        .adapter
        .history(&r, HistoryQuery::default())
        .await
        .unwrap();
    assert!(h.publications.is_empty());
    assert!(h.recovered);
}

/// The same idempotency key is accepted once.
pub async fn idempotent_publish(a: &TestNode) {
    let r = room("idem");
    let mut req = request(&r, "x", history(10));
    req.idempotency_key = "k1".into();
    let first = a.adapter.publish(req.clone()).await.unwrap();
    let again = a.adapter.publish(req.clone()).await.unwrap();
    assert_eq!(
        first, again,
        "a retried publish is answered with the first offset"
    );
    req.idempotency_key = "k2".into();
    let other = a.adapter.publish(req).await.unwrap();
    assert_eq!(other.offset, first.offset + 1);
    let h = a
        .adapter
        .history(
            &r,
            HistoryQuery {
                options: history(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(h.publications.len(), 2, "the duplicate was not kept");
}

/// Join/leave events reach subscribed nodes; exclusion is carried along.
pub async fn presence_events_and_exclusion(a: &TestNode, b: &TestNode) {
    let r = room("presence");
    b.adapter.subscribe(&r).await.unwrap();
    let who = ClientInfo {
        client_id: "c1".into(),
        user: "u1".into(),
        node: a.handler.node_id.clone(),
        info: r#"{"role":"admin"}"#.into(),
    };
    a.adapter
        .publish_presence_event(&r, PresenceEvent::Join(who.clone()))
        .await
        .unwrap();
    let mut req = request(&r, "hello", history(0));
    req.exclude_client_id = "c1".into();
    a.adapter.publish(req).await.unwrap();
    a.adapter
        .publish_presence_event(&r, PresenceEvent::Leave(who.clone()))
        .await
        .unwrap();
    b.handler
        .wait_for("join, publication, leave", |e| {
            e.iter().filter(|(x, _)| *x == r).count() >= 3
        })
        .await;
    let events = b.handler.events.lock();
    let mine: Vec<&RoomEvent> = events
        .iter()
        .filter(|(x, _)| *x == r)
        .map(|(_, e)| e)
        .collect();
    assert!(matches!(mine[0], RoomEvent::Presence(PresenceEvent::Join(c)) if *c == who));
    assert!(
        matches!(mine[1], RoomEvent::Publication { exclude_client_id, .. } if exclude_client_id == "c1")
    );
    assert!(matches!(mine[2], RoomEvent::Presence(PresenceEvent::Leave(c)) if *c == who));
}

/// Surveys and the node list see both nodes.
pub async fn surveys_and_nodes_cover_the_cluster(a: &TestNode, b: &TestNode) {
    let r = room("survey");
    a.handler.present.lock().push((
        r.clone(),
        ClientInfo {
            client_id: "x".into(),
            user: "ux".into(),
            node: a.handler.node_id.clone(),
            info: String::new(),
        },
    ));
    b.handler.present.lock().push((
        r.clone(),
        ClientInfo {
            client_id: "y".into(),
            user: "uy".into(),
            node: b.handler.node_id.clone(),
            info: r#"{"seat":7}"#.into(),
        },
    ));
    let replies = a
        .adapter
        .survey(NodeRequest::Presence { room: r.clone() })
        .await
        .unwrap();
    let mut ids: Vec<String> = replies
        .into_iter()
        .flat_map(|rep| match rep {
            NodeReply::Presence(c) => c,
            other => panic!("unexpected reply {other:?}"),
        })
        .map(|c| c.client_id)
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["x".to_string(), "y".to_string()]);
    let nodes = b.adapter.nodes().await.unwrap();
    for id in [&a.handler.node_id, &b.handler.node_id] {
        assert!(
            nodes.iter().any(|n| &n.id == id),
            "node {id} missing from {nodes:?}"
        );
    }
}

/// What one node keeps, another takes back, once; it expires; forgetting
/// drops it; keeping again replaces it.
pub async fn kept_state_is_taken_once_from_any_node(a: &TestNode, b: &TestNode) {
    let key = room("kept");
    let long = std::time::Duration::from_secs(60);
    a.adapter
        .keep(&key, Bytes::from_static(b"first"), long)
        .await
        .unwrap();
    a.adapter
        .keep(&key, Bytes::from_static(b"second"), long)
        .await
        .unwrap();
    assert_eq!(
        b.adapter.take_kept(&key).await.unwrap().as_deref(),
        Some(&b"second"[..]),
        "the other node takes the newest value"
    );
    assert_eq!(a.adapter.take_kept(&key).await.unwrap(), None, "taken once");

    a.adapter
        .keep(&key, Bytes::from_static(b"x"), long)
        .await
        .unwrap();
    b.adapter.forget_kept(&key).await.unwrap();
    assert_eq!(a.adapter.take_kept(&key).await.unwrap(), None, "forgotten");

    let short = std::time::Duration::from_millis(50);
    a.adapter
        .keep(&key, Bytes::from_static(b"y"), short)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(b.adapter.take_kept(&key).await.unwrap(), None, "expired");
}
