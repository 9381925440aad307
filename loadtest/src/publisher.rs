//! The publisher: open-loop at a fixed rate, or as fast as the target
//! delivers (a window of publications in flight, measured by the
//! subscribers' delivery counts). Roomcast is fed through gRPC `PublishStream`; the baselines
//! through the publish command of their WebSocket contract.
//!
//! Open loop means each publication is stamped with the time it was
//! *scheduled*, not sent, so a publisher held back by a slow server shows up
//! as latency instead of vanishing (no coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use roomcast_proto::v1::control_client::ControlClient;
use roomcast_proto::v1::PublishRequest;
use tokio::sync::mpsc;

use crate::dialect::{payload, Dialect};
use crate::sys;
use crate::ws::{ConnectOptions, WsConn};

/// Where publications go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Roomcast's gRPC control plane.
    Grpc(SocketAddr),
    /// A WebSocket publish command.
    Ws(SocketAddr, Dialect),
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct PubPlan {
    /// Rooms, used round-robin.
    pub rooms: Vec<String>,
    /// Publications per second; 0 means as fast as deliveries keep up.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Size of each publication's JSON document.
    pub size: usize,
    /// Publications in flight at most when `rate` is 0: published but not
    /// yet delivered to every subscriber, as counted by the workers.
    pub window: u64,
}

/// What was published.
#[derive(Debug, Clone, Default)]
pub struct PubResult {
    /// Publications sent, per room.
    pub per_room: BTreeMap<String, u64>,
    /// Publications sent in all.
    pub sent: u64,
    /// Wall seconds spent publishing.
    pub secs: f64,
    /// Publications the server refused (gRPC reply).
    pub rejected: u64,
}

/// Live counters of a running publisher, for progress bars.
#[derive(Debug, Default)]
pub struct PubCounters {
    /// Publications sent so far.
    pub sent: AtomicU64,
}

/// Publishes according to `plan`. `seen` is kept up to date by the caller
/// with how many publications have reached all their subscribers (from the
/// workers' delivery counts); at max rate the publisher stays at most
/// `window` ahead of it, so every target is measured at the rate it can
/// sustain rather than at how much it can buffer.
pub async fn publish(
    sink: &Sink,
    plan: &PubPlan,
    counters: Arc<PubCounters>,
    seen: Arc<AtomicU64>,
) -> Result<PubResult> {
    match sink {
        Sink::Grpc(addr) => publish_grpc(*addr, plan, &seen, &counters).await,
        Sink::Ws(addr, dialect) => publish_ws(*addr, *dialect, plan, &seen, &counters).await,
    }
}

/// When each publication is due.
struct Schedule<'a> {
    plan: &'a PubPlan,
    start: Instant,
    start_ns: u64,
    /// Index of the next publication.
    next: u64,
}

impl<'a> Schedule<'a> {
    fn new(plan: &'a PubPlan) -> Self {
        Schedule {
            plan,
            start: Instant::now(),
            start_ns: sys::now_ns(),
            next: 0,
        }
    }

    /// How many publications should have gone out by now; None when the
    /// run is over.
    fn due(&self, seen: &AtomicU64) -> Option<u64> {
        let elapsed = self.start.elapsed();
        if elapsed >= self.plan.duration {
            return None;
        }
        Some(if self.plan.rate > 0.0 {
            (elapsed.as_secs_f64() * self.plan.rate) as u64 + 1
        } else {
            seen.load(Ordering::Relaxed) + self.plan.window
        })
    }

    /// The stamp of publication `i`: its scheduled time at a fixed rate,
    /// now at max rate.
    fn stamp(&self, i: u64) -> u64 {
        if self.plan.rate > 0.0 {
            self.start_ns + (i as f64 * 1e9 / self.plan.rate) as u64
        } else {
            sys::now_ns()
        }
    }
}

fn room_and_seq(plan: &PubPlan, i: u64) -> (&str, u64) {
    let n = plan.rooms.len() as u64;
    (&plan.rooms[(i % n) as usize], i / n + 1)
}

async fn publish_grpc(
    addr: SocketAddr,
    plan: &PubPlan,
    seen: &AtomicU64,
    counters: &PubCounters,
) -> Result<PubResult> {
    let mut client = ControlClient::connect(format!("http://{addr}"))
        .await
        .context("connect gRPC")?;
    let (tx, rx) = mpsc::channel::<PublishRequest>(1024);
    let call = tokio::spawn(async move {
        client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let mut sched = Schedule::new(plan);
    let mut result = PubResult::default();
    while let Some(due) = sched.due(seen) {
        if sched.next >= due {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        while sched.next < due {
            let i = sched.next;
            let t = sched.stamp(i);
            let (room, seq) = room_and_seq(plan, i);
            let req = PublishRequest {
                room: room.to_string(),
                data: payload(seq, t, plan.size).into_bytes().into(),
                ..Default::default()
            };
            if tx.send(req).await.is_err() {
                break;
            }
            *result.per_room.entry(room.to_string()).or_default() += 1;
            sched.next += 1;
            counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    drop(tx);
    result.secs = sched.start.elapsed().as_secs_f64();
    result.sent = sched.next;
    match call.await? {
        Ok(reply) => {
            let r = reply.into_inner();
            result.rejected = r.rejected;
            if r.rejected > 0 {
                bail!(
                    "server rejected {} publications: {}",
                    r.rejected,
                    r.first_error
                );
            }
        }
        Err(status) => bail!("PublishStream failed: {status}"),
    }
    Ok(result)
}

async fn publish_ws(
    addr: SocketAddr,
    dialect: Dialect,
    plan: &PubPlan,
    seen: &AtomicU64,
    counters: &PubCounters,
) -> Result<PubResult> {
    // The publisher sends commands without `id`, so nothing comes back but
    // keep-alives; runs are shorter than any server's ping timeout, so it
    // never reads.
    let mut conn = connect(addr, dialect).await?;
    let mut sched = Schedule::new(plan);
    let mut result = PubResult::default();
    while let Some(due) = sched.due(seen) {
        if sched.next >= due {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        while sched.next < due {
            let i = sched.next;
            let t = sched.stamp(i);
            let (room, seq) = room_and_seq(plan, i);
            conn.queue(
                crate::ws::opcode::TEXT,
                dialect
                    .publish(room, &payload(seq, t, plan.size))
                    .as_bytes(),
            );
            *result.per_room.entry(room.to_string()).or_default() += 1;
            sched.next += 1;
            counters.sent.fetch_add(1, Ordering::Relaxed);
            if conn.pending() > 256 * 1024 {
                break;
            }
        }
        conn.flush().await?;
    }
    result.secs = sched.start.elapsed().as_secs_f64();
    result.sent = sched.next;
    Ok(result)
}

async fn connect(addr: SocketAddr, dialect: Dialect) -> Result<WsConn> {
    let mut conn = WsConn::connect(&ConnectOptions {
        addr,
        source_ip: None,
        path: dialect.path().to_string(),
        subprotocol: dialect.subprotocol(),
        read_size: 64 * 1024,
        timeout: Duration::from_secs(10),
    })
    .await
    .with_context(|| format!("publisher connect {addr}"))?;
    dialect.open(&mut conn).await?;
    Ok(conn)
}
