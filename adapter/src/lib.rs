//! The adapter seam: how Roomcast nodes share publications, history, presence
//! and membership.
//!
//! A node's hub asks its adapter to [`Adapter::subscribe`] a room when the
//! first local session joins it and to [`Adapter::unsubscribe`] when the last
//! one leaves, so a cluster adapter (Redis) only receives the rooms it needs.
//! Everything the adapter receives goes to one [`Handler`] (the hub), in the
//! order publications were accepted for each room.
//!
//! [`MemoryAdapter`] is the default: one node needs nothing else. Several
//! `MemoryAdapter`s sharing a [`MemoryBus`] behave like nodes of a cluster
//! inside one process, which is how the conformance suite in [`testing`]
//! exercises cross-node behaviour without a network.

mod memory;
mod types;

pub mod testing;

pub use memory::{MemoryAdapter, MemoryBus};
pub use types::*;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// The answer to [`Adapter::publish`], on its way.
pub type Accepting = futures::future::BoxFuture<'static, Result<PublishResult, AdapterError>>;

/// How nodes share publications. Every implementation must pass
/// [`testing::run_conformance`].
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Attaches the node's handler and starts background work (connections,
    /// heartbeats). Called once, before any other method.
    async fn start(&self, handler: Arc<dyn Handler>) -> Result<(), AdapterError>;

    /// Accepts a publication: assigns its offset, keeps it in the room's
    /// history when `options.history_size > 0`, and delivers it to every node
    /// subscribed to the room (this one included).
    ///
    /// The publication's place in its room's order is fixed before this
    /// returns: of two calls for one room, the first is delivered first,
    /// whichever returned future is awaited first or at all. The future
    /// only waits for the answer, so a caller may have many publications
    /// in flight (a client's pipeline, a gRPC stream) and still keep their
    /// order. Dropping it does not withdraw the publication.
    fn publish(&self, request: PublishRequest) -> Accepting;

    /// Delivers a join or leave event to every node subscribed to the room.
    /// Not kept in history.
    async fn publish_presence_event(
        &self,
        room: &str,
        event: PresenceEvent,
    ) -> Result<(), AdapterError>;

    /// This node now has a local subscriber in `room` and wants its events.
    async fn subscribe(&self, room: &str) -> Result<(), AdapterError>;

    /// This node no longer has local subscribers in `room`.
    async fn unsubscribe(&self, room: &str) -> Result<(), AdapterError>;

    /// Reads a room's history. With `since`, returns what came after it and
    /// whether that is everything that came after it (`recovered`).
    async fn history(&self, room: &str, query: HistoryQuery)
        -> Result<HistoryResult, AdapterError>;

    /// Sends a request to every live node (this one included) and gathers
    /// their replies. Used for presence, room listings and commands aimed at
    /// sessions that may live on any node.
    async fn survey(&self, request: NodeRequest) -> Result<Vec<NodeReply>, AdapterError>;

    /// Every live node, as last announced.
    async fn nodes(&self) -> Result<Vec<NodeInfo>, AdapterError>;

    /// Keeps `value` under `key` for `ttl`, where every node can take it
    /// back (a session's state kept for its client's return, so that it can
    /// come back through any node). Replaces what was kept under `key`.
    async fn keep(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), AdapterError>;

    /// Takes back what [`Adapter::keep`] left under `key` and has not
    /// expired: once, whichever node asks (a second take finds nothing).
    async fn take_kept(&self, key: &str) -> Result<Option<Bytes>, AdapterError>;

    /// Drops what was kept under `key`, if anything.
    async fn forget_kept(&self, key: &str) -> Result<(), AdapterError>;

    /// Whether the adapter's connections are healthy; changes are announced
    /// on the returned channel.
    fn health(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Stops background work and leaves the cluster (deregisters the node).
    async fn shutdown(&self);
}

/// What an adapter delivers to its node. Implemented by the hub.
///
/// Methods are synchronous and must not block: they run on the adapter's
/// receiving task, and a slow handler would delay every room.
pub trait Handler: Send + Sync + 'static {
    /// A room event arrived for a room this node subscribed to.
    fn on_room_event(&self, room: &str, event: RoomEvent);

    /// Several room events arrived at once, in order (an adapter hands over
    /// everything one wake-up of its connection brought).
    fn on_room_events(&self, events: Vec<(String, RoomEvent)>) {
        for (room, event) in events {
            self.on_room_event(&room, event);
        }
    }

    /// A survey reached this node; the answer covers local sessions only.
    fn on_request(&self, request: &NodeRequest) -> NodeReply;

    /// This node's current description, announced to the cluster.
    fn node_info(&self) -> NodeInfo;
}
