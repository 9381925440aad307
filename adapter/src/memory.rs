//! `MemoryAdapter`: the default adapter. One node runs with nothing else;
//! several adapters sharing one [`MemoryBus`] act as a cluster inside one
//! process (used by tests and by the conformance suite).

use crate::{
    new_epoch, now_unix_micros, Accepting, Adapter, AdapterError, Handler, HistoryOptions,
    HistoryQuery, HistoryResult, NodeInfo, NodeReply, NodeRequest, PresenceEvent, Publication,
    PublishRequest, PublishResult, RoomEvent, StreamPosition,
};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Idempotency keys remembered per room, newest first out last.
const IDEMPOTENCY_KEYS_PER_ROOM: usize = 1024;
/// Stripes of the per-room ordering lock.
const ORDER_STRIPES: usize = 64;
/// How often expired histories are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// The shared state of in-process nodes: history, and who listens to what.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

struct BusInner {
    /// Publishing to a room holds its stripe from offset assignment to the
    /// end of delivery, which is what keeps a room's publications in order.
    order: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
    rooms: Mutex<HashMap<String, RoomHistory>>,
    nodes: RwLock<Vec<Arc<NodeSlot>>>,
    /// What [`Adapter::keep`] keeps, with when it expires.
    kept: Mutex<HashMap<String, (Bytes, Instant)>>,
}

impl Default for BusInner {
    fn default() -> Self {
        Self {
            order: (0..ORDER_STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
            rooms: Mutex::new(HashMap::new()),
            nodes: RwLock::new(Vec::new()),
            kept: Mutex::new(HashMap::new()),
        }
    }
}

struct NodeSlot {
    id: String,
    handler: Arc<dyn Handler>,
    rooms: Mutex<HashSet<String>>,
}

struct RoomHistory {
    epoch: String,
    offset: u64,
    kept: VecDeque<Publication>,
    /// When the history dies unless another publication comes.
    expires: Instant,
    keys: HashMap<String, u64>,
    key_order: VecDeque<String>,
}

impl RoomHistory {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            kept: VecDeque::new(),
            expires: now,
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }
}

impl BusInner {
    fn stripe(&self, room: &str) -> &Mutex<()> {
        &self.order[(self.hasher.hash_one(room) as usize) % ORDER_STRIPES]
    }

    fn deliver(&self, room: &str, event: RoomEvent) {
        let nodes = self.nodes.read();
        for node in nodes.iter() {
            if node.rooms.lock().contains(room) {
                node.handler.on_room_event(room, event.clone());
            }
        }
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.rooms.lock().retain(|_, h| h.expires > now);
        self.kept.lock().retain(|_, (_, until)| *until > now);
    }
}

/// The in-memory adapter.
pub struct MemoryAdapter {
    node_id: String,
    bus: MemoryBus,
    health: tokio::sync::watch::Sender<bool>,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MemoryAdapter {
    /// A single node with its own bus.
    pub fn new(node_id: impl Into<String>) -> Self {
        Self::with_bus(node_id, MemoryBus::default())
    }

    /// A node joining the in-process cluster behind `bus`.
    pub fn with_bus(node_id: impl Into<String>, bus: MemoryBus) -> Self {
        Self {
            node_id: node_id.into(),
            bus,
            health: tokio::sync::watch::channel(true).0,
            sweeper: Mutex::new(None),
        }
    }

    fn slot(&self) -> Result<Arc<NodeSlot>, AdapterError> {
        self.bus
            .inner
            .nodes
            .read()
            .iter()
            .find(|n| n.id == self.node_id)
            .cloned()
            .ok_or(AdapterError::Closed)
    }

    /// Accepts a publication at once (see [`Adapter::publish`]).
    fn publish_now(&self, request: PublishRequest) -> Result<PublishResult, AdapterError> {
        let bus = &self.bus.inner;
        let _order = bus.stripe(&request.room).lock();
        let now = Instant::now();
        let opts: HistoryOptions = request.history;
        let mut publication = Publication {
            offset: 0,
            event: request.event,
            data: request.data,
            binary: request.binary,
            time_unix_micros: now_unix_micros(),
        };
        let mut epoch = String::new();
        if opts.enabled() {
            let mut rooms = bus.rooms.lock();
            if current(&mut rooms, &request.room, now).is_none() {
                rooms.insert(request.room.clone(), RoomHistory::new(now));
            }
            let h = rooms.get_mut(&request.room).expect("inserted above");
            if !request.idempotency_key.is_empty() {
                if let Some(&offset) = h.keys.get(&request.idempotency_key) {
                    return Ok(PublishResult {
                        offset,
                        epoch: h.epoch.clone(),
                    });
                }
            }
            h.offset += 1;
            h.expires = now + opts.ttl;
            publication.offset = h.offset;
            h.kept.push_back(publication.clone());
            while h.kept.len() > opts.size {
                h.kept.pop_front();
            }
            if !request.idempotency_key.is_empty() {
                h.keys.insert(request.idempotency_key.clone(), h.offset);
                h.key_order.push_back(request.idempotency_key);
                if h.key_order.len() > IDEMPOTENCY_KEYS_PER_ROOM {
                    if let Some(old) = h.key_order.pop_front() {
                        h.keys.remove(&old);
                    }
                }
            }
            epoch = h.epoch.clone();
        }
        let result = PublishResult {
            offset: publication.offset,
            epoch: epoch.clone(),
        };
        bus.deliver(
            &request.room,
            RoomEvent::Publication {
                publication: Arc::new(publication),
                epoch,
                exclude_client_id: request.exclude_client_id,
            },
        );
        Ok(result)
    }
}

impl std::fmt::Debug for MemoryAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAdapter")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn current(rooms: &mut HashMap<String, RoomHistory>, room: &str, now: Instant) -> Option<()> {
    if rooms.get(room).is_some_and(|h| h.expires <= now) {
        rooms.remove(room);
    }
    rooms.get(room).map(|_| ())
}

#[async_trait]
impl Adapter for MemoryAdapter {
    async fn start(&self, handler: Arc<dyn Handler>) -> Result<(), AdapterError> {
        let mut nodes = self.bus.inner.nodes.write();
        nodes.retain(|n| n.id != self.node_id);
        nodes.push(Arc::new(NodeSlot {
            id: self.node_id.clone(),
            handler,
            rooms: Mutex::new(HashSet::new()),
        }));
        drop(nodes);
        let weak = Arc::downgrade(&self.bus.inner);
        *self.sweeper.lock() = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(bus) => bus.sweep(),
                    None => return,
                }
            }
        }));
        Ok(())
    }

    fn publish(&self, request: PublishRequest) -> Accepting {
        Box::pin(std::future::ready(self.publish_now(request)))
    }

    async fn publish_presence_event(
        &self,
        room: &str,
        event: PresenceEvent,
    ) -> Result<(), AdapterError> {
        let bus = &self.bus.inner;
        let _order = bus.stripe(room).lock();
        bus.deliver(room, RoomEvent::Presence(event));
        Ok(())
    }

    async fn subscribe(&self, room: &str) -> Result<(), AdapterError> {
        self.slot()?.rooms.lock().insert(room.to_owned());
        Ok(())
    }

    async fn unsubscribe(&self, room: &str) -> Result<(), AdapterError> {
        self.slot()?.rooms.lock().remove(room);
        Ok(())
    }

    async fn history(
        &self,
        room: &str,
        query: HistoryQuery,
    ) -> Result<HistoryResult, AdapterError> {
        let now = Instant::now();
        let mut rooms = self.bus.inner.rooms.lock();
        if query.options.enabled() && current(&mut rooms, room, now).is_none() {
            // A history room has an epoch from its first read, so a client
            // that subscribed before the first publication can recover it.
            let mut fresh = RoomHistory::new(now);
            fresh.expires = now + query.options.ttl;
            rooms.insert(room.to_owned(), fresh);
        }
        if !query.options.enabled() {
            // No history: a fresh, empty stream. A client asking to recover
            // from an epoch we never had (or lost) is told it cannot.
            let position = match rooms.get(room) {
                Some(h) => h.position(),
                None => StreamPosition::default(),
            };
            let recovered = match &query.since {
                None => true,
                Some(since) => since.offset == 0 && since.epoch == position.epoch,
            };
            return Ok(HistoryResult {
                publications: Vec::new(),
                position,
                recovered,
            });
        }
        let h = rooms.get(room).expect("checked above");
        let position = h.position();
        let (publications, recovered): (Vec<Publication>, bool) = match &query.since {
            None => {
                let skip = query.limit.map_or(0, |l| h.kept.len().saturating_sub(l));
                (h.kept.iter().skip(skip).cloned().collect(), true)
            }
            Some(since) if since.epoch != h.epoch || since.offset > h.offset => (Vec::new(), false),
            Some(since) => {
                let after: Vec<Publication> = h
                    .kept
                    .iter()
                    .filter(|p| p.offset > since.offset)
                    .take(query.limit.unwrap_or(usize::MAX))
                    .cloned()
                    .collect();
                let oldest_needed = since.offset + 1;
                let complete = oldest_needed > h.offset
                    || h.kept.front().is_some_and(|p| p.offset <= oldest_needed);
                (after, complete)
            }
        };
        Ok(HistoryResult {
            publications,
            position,
            recovered,
        })
    }

    async fn survey(&self, request: NodeRequest) -> Result<Vec<NodeReply>, AdapterError> {
        let nodes: Vec<Arc<NodeSlot>> = self.bus.inner.nodes.read().clone();
        Ok(nodes
            .iter()
            .map(|n| n.handler.on_request(&request))
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, AdapterError> {
        let nodes: Vec<Arc<NodeSlot>> = self.bus.inner.nodes.read().clone();
        Ok(nodes.iter().map(|n| n.handler.node_info()).collect())
    }

    async fn keep(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), AdapterError> {
        let until = Instant::now() + ttl;
        self.bus
            .inner
            .kept
            .lock()
            .insert(key.to_owned(), (value, until));
        Ok(())
    }

    async fn take_kept(&self, key: &str) -> Result<Option<Bytes>, AdapterError> {
        let taken = self.bus.inner.kept.lock().remove(key);
        Ok(taken.and_then(|(v, until)| (until > Instant::now()).then_some(v)))
    }

    async fn forget_kept(&self, key: &str) -> Result<(), AdapterError> {
        self.bus.inner.kept.lock().remove(key);
        Ok(())
    }

    fn health(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.subscribe()
    }

    async fn shutdown(&self) {
        self.bus
            .inner
            .nodes
            .write()
            .retain(|n| n.id != self.node_id);
        if let Some(task) = self.sweeper.lock().take() {
            task.abort();
        }
    }
}
