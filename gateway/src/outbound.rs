//! A session's outbound queue: bounded in bytes, shared frames only.
//!
//! The hub pushes pre-built frames (`Bytes` shared with every other
//! subscriber: a refcount, never a copy); the session's writer takes them in
//! batches and writes each batch with one vectored write. When the queue is
//! full the room's overflow policy decides: close the session (4008), drop
//! the oldest queued publications, or keep only the newest per key.
//!
//! The limit bounds a session's *backlog*, not the size of one frame: a
//! session with nothing queued or unwritten takes one frame of any size the
//! node accepted (a client message up to `max_message_bytes`, a publication
//! up to the same size), so whatever the node accepts can reach a client
//! that reads. A session holds at most `limit` bytes, or one larger frame.
//!
//! A burst can leave a session's buffers (the queue's and the writer's,
//! which trade places at every batch) sized for hundreds of frames long
//! after it is over. Buffers of up to [`KEEP_FRAMES`] frames are kept as
//! they are; a larger one is cut back to what the batches of the last
//! [`TRIM_AFTER`] needed, so steady heavy traffic keeps its buffers and
//! a burst's are given back a second or so after it ends.

use crate::config::OverflowPolicy;
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Frames a session's buffers may hold room for whatever its traffic.
pub const KEEP_FRAMES: usize = 16;
/// How long batches are watched before larger buffers are cut back.
pub const TRIM_AFTER: Duration = Duration::from_secs(1);

/// One queued frame.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The complete WebSocket frame.
    pub frame: Bytes,
    /// When its publication was accepted (µs since the Unix epoch); 0 for
    /// replies, which are not publications.
    pub accepted_us: i64,
    /// For `latest_per_key`: a newer frame with the same key replaces this
    /// one. Also the room of a publication for clients that track what
    /// they were written (socket.io recovery).
    pub key: Option<Arc<str>>,
    /// The publication's offset in its room's history (0: none, or not a
    /// publication).
    pub offset: u64,
}

impl Outbound {
    /// A reply or other frame that is never dropped by a policy.
    pub fn reply(frame: Bytes) -> Self {
        Self {
            frame,
            accepted_us: 0,
            key: None,
            offset: 0,
        }
    }

    fn droppable(&self) -> bool {
        self.accepted_us != 0
    }
}

/// Work for the session task that does not come from its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Subscribe to a room (gRPC `Subscribe`).
    Subscribe(String),
    /// Unsubscribe from a room (gRPC `Unsubscribe`).
    Unsubscribe(String),
    /// Close with this code and reason (gRPC `Disconnect`).
    Close(u16, String),
}

/// What happened to a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued.
    Queued,
    /// Queued after dropping this many older publications.
    QueuedDropping(usize),
    /// Replaced a queued frame with the same key.
    Replaced,
    /// Did not fit: the session must close as a slow consumer.
    Overflow,
    /// The session is closing; nothing is queued any more.
    Closed,
}

/// Decides when a session's grown buffers are cut back: after
/// [`TRIM_AFTER`] of batches that all fit in a quarter of the room held,
/// to the next power of two above the largest of them (at least
/// [`KEEP_FRAMES`]).
#[derive(Debug, Default)]
struct Trim {
    /// Largest batch taken since `since`.
    peak: usize,
    /// Start of the window: when the buffers were last seen grown.
    since: Option<Instant>,
}

impl Trim {
    /// Records a batch of `len` frames taken while the buffers have room
    /// for `capacity`; returns the capacity to cut them back to, if any.
    /// `now` is only read for grown buffers.
    fn observe(
        &mut self,
        len: usize,
        capacity: usize,
        now: impl FnOnce() -> Instant,
    ) -> Option<usize> {
        if capacity <= KEEP_FRAMES {
            *self = Trim::default();
            return None;
        }
        self.peak = self.peak.max(len);
        let now = now();
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) < TRIM_AFTER {
            return None;
        }
        let target = self.peak.max(KEEP_FRAMES).next_power_of_two();
        self.peak = len;
        self.since = Some(now);
        (capacity >= 4 * target).then_some(target)
    }
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Outbound>,
    /// Bytes of `items`.
    queued: usize,
    /// Bytes taken by the writer and not yet written.
    inflight: usize,
    overflowed: bool,
    closed: bool,
    /// Control work with the id of the client it is for (one queue may
    /// serve several socket.io namespaces of one connection).
    controls: Vec<(u64, Control)>,
    trim: Trim,
}

/// The queue.
pub struct OutboundQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    limit: usize,
}

impl OutboundQueue {
    /// A queue holding at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            limit,
        }
    }

    /// Queues a frame, applying `policy` when it does not fit.
    pub fn push(&self, item: Outbound, policy: OverflowPolicy) -> Pushed {
        let len = item.frame.len();
        let mut q = self.inner.lock();
        if q.closed || q.overflowed {
            return Pushed::Closed;
        }
        if policy == OverflowPolicy::LatestPerKey {
            if let Some(key) = &item.key {
                if let Some(old) = q.items.iter_mut().find(|o| o.key.as_ref() == Some(key)) {
                    let old_len = old.frame.len();
                    *old = item;
                    q.queued = q.queued - old_len + len;
                    return Pushed::Replaced;
                }
            }
        }
        // `disconnect` counts what the writer holds too: the session's whole
        // backlog stays under the limit. The drop policies can only drop what
        // is still queued, so they bound the queue alone (the writer holds
        // at most one more queue's worth).
        let held = |q: &Inner| match policy {
            OverflowPolicy::Disconnect => q.queued + q.inflight,
            _ => q.queued,
        };
        let limit = self.limit;
        let fits = |q: &Inner| held(q) == 0 || held(q) + len <= limit;
        let mut dropped = 0;
        if !fits(&q) {
            if policy != OverflowPolicy::Disconnect && item.droppable() {
                while !fits(&q) {
                    let Some(pos) = q.items.iter().position(Outbound::droppable) else {
                        break;
                    };
                    let old = q.items.remove(pos).expect("position is in range");
                    q.queued -= old.frame.len();
                    dropped += 1;
                }
            }
            if !fits(&q) {
                q.overflowed = true;
                drop(q);
                self.notify.notify_one();
                return Pushed::Overflow;
            }
        }
        let was_empty = q.items.is_empty();
        q.queued += len;
        q.items.push_back(item);
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
        if dropped > 0 {
            Pushed::QueuedDropping(dropped)
        } else {
            Pushed::Queued
        }
    }

    /// Counts a frame the session's writer holds without queueing it (the
    /// session's own replies on the echo endpoint). `false` when it would
    /// take a non-empty backlog over the limit: the queue is then marked
    /// overflowed, as `push` does.
    pub fn hold(&self, len: usize) -> bool {
        let mut q = self.inner.lock();
        let held = q.queued + q.inflight;
        if held > 0 && held + len > self.limit {
            q.overflowed = true;
            return false;
        }
        q.inflight += len;
        true
    }

    /// Queues work for the task that owns client `id`.
    pub fn control(&self, id: u64, c: Control) -> bool {
        let mut q = self.inner.lock();
        if q.closed {
            return false;
        }
        q.controls.push((id, c));
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Moves every queued frame to `out`; their bytes still count (as in
    /// flight) until [`OutboundQueue::written`]. `out` and the queue trade
    /// buffers; grown ones are cut back once a burst is over (see [`Trim`]).
    pub fn take(&self, out: &mut VecDeque<Outbound>) {
        self.take_at(out, Instant::now)
    }

    fn take_at(&self, out: &mut VecDeque<Outbound>, now: impl FnOnce() -> Instant) {
        let mut q = self.inner.lock();
        q.inflight += q.queued;
        q.queued = 0;
        if out.is_empty() {
            std::mem::swap(out, &mut q.items);
        } else {
            out.extend(q.items.drain(..));
        }
        let capacity = out.capacity().max(q.items.capacity());
        if let Some(keep) = q.trim.observe(out.len(), capacity, now) {
            // The queue's buffer is empty here; `out` holds at most `keep`.
            q.items.shrink_to(keep);
            out.shrink_to(keep);
        }
    }

    /// Gives back the room of empty buffers grown past [`KEEP_FRAMES`]: the
    /// queue's, and `out` (the writer's) when it is empty too. For a session
    /// with nothing to send, which takes no batches that would trim them.
    pub fn release_idle(&self, out: &mut VecDeque<Outbound>) {
        if out.is_empty() && out.capacity() > KEEP_FRAMES {
            *out = VecDeque::new();
        }
        let mut q = self.inner.lock();
        if q.items.is_empty() && q.items.capacity() > KEEP_FRAMES {
            q.items = VecDeque::new();
            q.trim = Trim::default();
        }
    }

    /// Takes pending control work.
    pub fn take_controls(&self) -> Vec<(u64, Control)> {
        std::mem::take(&mut self.inner.lock().controls)
    }

    /// The writer wrote `n` bytes of taken frames.
    pub fn written(&self, n: usize) {
        let mut q = self.inner.lock();
        q.inflight = q.inflight.saturating_sub(n);
    }

    /// Whether a push overflowed (the session must close with 4008).
    pub fn overflowed(&self) -> bool {
        self.inner.lock().overflowed
    }

    /// Stops accepting frames and drops what is queued.
    pub fn close(&self) {
        let mut q = self.inner.lock();
        q.closed = true;
        q.items.clear();
        q.queued = 0;
        q.controls.clear();
    }

    /// Resolves when something was pushed to an empty queue, a control
    /// arrived, or the queue overflowed.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(n: usize, key: &str) -> Outbound {
        Outbound {
            frame: Bytes::from(vec![b'x'; n]),
            accepted_us: 1,
            key: Some(key.into()),
            offset: 0,
        }
    }

    #[test]
    fn disconnect_policy_overflows() {
        let q = OutboundQueue::new(100);
        assert_eq!(
            q.push(publication(60, "a"), OverflowPolicy::Disconnect),
            Pushed::Queued
        );
        assert_eq!(
            q.push(publication(60, "b"), OverflowPolicy::Disconnect),
            Pushed::Overflow
        );
        assert!(q.overflowed());
        assert_eq!(
            q.push(publication(1, "c"), OverflowPolicy::Disconnect),
            Pushed::Closed
        );
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let q = OutboundQueue::new(100);
        q.push(
            Outbound::reply(Bytes::from_static(b"reply")),
            OverflowPolicy::DropOldest,
        );
        for i in 0..10 {
            q.push(publication(30, &i.to_string()), OverflowPolicy::DropOldest);
        }
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(&out[0].frame[..], b"reply", "replies are never dropped");
        assert_eq!(out.len(), 4);
        assert_eq!(out.back().unwrap().key.as_deref(), Some("9"));
        assert!(!q.overflowed());
    }

    #[test]
    fn latest_per_key_replaces_in_place() {
        let q = OutboundQueue::new(1000);
        q.push(publication(10, "AAPL"), OverflowPolicy::LatestPerKey);
        q.push(publication(10, "MSFT"), OverflowPolicy::LatestPerKey);
        assert_eq!(
            q.push(publication(12, "AAPL"), OverflowPolicy::LatestPerKey),
            Pushed::Replaced
        );
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].frame.len(), 12);
    }

    #[test]
    fn bytes_count_until_written() {
        let q = OutboundQueue::new(100);
        q.push(publication(80, "a"), OverflowPolicy::Disconnect);
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(
            q.push(publication(30, "b"), OverflowPolicy::Disconnect),
            Pushed::Overflow
        );
        let q = OutboundQueue::new(100);
        q.push(publication(80, "a"), OverflowPolicy::Disconnect);
        q.take(&mut out);
        q.written(80);
        assert_eq!(
            q.push(publication(30, "b"), OverflowPolicy::Disconnect),
            Pushed::Queued
        );
    }
    #[test]
    fn an_empty_backlog_takes_one_frame_of_any_size() {
        for policy in [
            OverflowPolicy::Disconnect,
            OverflowPolicy::DropOldest,
            OverflowPolicy::LatestPerKey,
        ] {
            let q = OutboundQueue::new(100);
            assert_eq!(q.push(publication(300, "a"), policy), Pushed::Queued);
            let mut out = VecDeque::new();
            q.take(&mut out);
            q.written(300);
            assert_eq!(q.push(publication(300, "b"), policy), Pushed::Queued);
        }
        let q = OutboundQueue::new(100);
        assert!(q.hold(300), "an echo reply larger than the limit");
        assert!(!q.hold(1), "but nothing more until it is written");
        assert!(q.overflowed());
    }

    #[test]
    fn trim_keeps_small_buffers_and_steady_traffic() {
        let t0 = Instant::now();
        let mut t = Trim::default();
        // Small buffers are never looked at, nor the clock read.
        for _ in 0..100 {
            assert_eq!(t.observe(1, KEEP_FRAMES, || unreachable!()), None);
        }
        // Batches that use the room keep it, however long they go on.
        for i in 0..100 {
            let now = t0 + TRIM_AFTER * i / 10;
            assert_eq!(t.observe(100, 128, || now), None);
        }
    }

    #[test]
    fn trim_cuts_back_after_a_burst() {
        let t0 = Instant::now();
        let mut t = Trim::default();
        assert_eq!(t.observe(400, 512, || t0), None, "the burst itself");
        assert_eq!(t.observe(3, 512, || t0 + TRIM_AFTER / 2), None);
        // The window still saw the burst's batch.
        assert_eq!(t.observe(2, 512, || t0 + TRIM_AFTER), None);
        // A whole window of small batches: back to what they need.
        assert_eq!(t.observe(2, 512, || t0 + TRIM_AFTER * 3 / 2), None);
        assert_eq!(
            t.observe(20, 512, || t0 + TRIM_AFTER * 2),
            Some(32),
            "the next power of two above the window's largest batch"
        );
    }

    fn push_n(q: &OutboundQueue, n: usize) {
        for i in 0..n {
            let p = publication(10, &i.to_string());
            assert_eq!(q.push(p, OverflowPolicy::DropOldest), Pushed::Queued);
        }
    }

    fn drain(q: &OutboundQueue, out: &mut VecDeque<Outbound>) -> usize {
        drain_at(q, out, Instant::now())
    }

    fn drain_at(q: &OutboundQueue, out: &mut VecDeque<Outbound>, now: Instant) -> usize {
        q.take_at(out, || now);
        let n: usize = out.iter().map(|o| o.frame.len()).sum();
        let frames = out.len();
        out.clear();
        q.written(n);
        frames
    }

    fn room(q: &OutboundQueue, out: &VecDeque<Outbound>) -> usize {
        out.capacity() + q.inner.lock().items.capacity()
    }

    #[test]
    fn a_burst_leaves_no_grown_buffers_behind() {
        let q = OutboundQueue::new(1 << 20);
        let mut out = VecDeque::new();
        // Two batches of a burst grow both buffers.
        push_n(&q, 500);
        assert_eq!(drain(&q, &mut out), 500);
        push_n(&q, 500);
        assert_eq!(drain(&q, &mut out), 500);
        assert!(room(&q, &out) >= 1000);
        // Then ordinary traffic, 50 batches a second, for three windows.
        let start = Instant::now();
        for i in 0..150 {
            push_n(&q, 2);
            let now = start + Duration::from_millis(20 * i);
            assert_eq!(drain_at(&q, &mut out, now), 2, "nothing is lost meanwhile");
        }
        assert!(
            room(&q, &out) <= 2 * KEEP_FRAMES,
            "room for {} frames left",
            room(&q, &out)
        );
    }

    #[test]
    fn an_idle_session_gives_back_its_buffers() {
        let q = OutboundQueue::new(1 << 20);
        let mut out = VecDeque::new();
        push_n(&q, 300);
        assert_eq!(drain(&q, &mut out), 300);
        push_n(&q, 300);
        q.take(&mut out);
        // Still being written: nothing is released.
        q.release_idle(&mut out);
        assert_eq!(out.len(), 300);
        assert!(out.capacity() >= 300);
        out.clear();
        q.release_idle(&mut out);
        assert_eq!(room(&q, &out), 0);
        // And the queue works as before.
        push_n(&q, 3);
        assert_eq!(drain(&q, &mut out), 3);
    }

    #[test]
    fn a_large_frame_behind_a_backlog_overflows_or_drops() {
        let q = OutboundQueue::new(100);
        q.push(publication(10, "a"), OverflowPolicy::Disconnect);
        assert_eq!(
            q.push(publication(300, "b"), OverflowPolicy::Disconnect),
            Pushed::Overflow
        );
        let q = OutboundQueue::new(100);
        q.push(publication(10, "a"), OverflowPolicy::DropOldest);
        assert_eq!(
            q.push(publication(300, "b"), OverflowPolicy::DropOldest),
            Pushed::QueuedDropping(1),
            "the drop policies make the backlog empty for it"
        );
    }
}
