//! The scenarios. Each starts its target, drives it through worker
//! processes (and the publisher, for pub/sub), samples the server's memory
//! and CPU while it runs, and returns one [`Run`] per measured variant.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::churn;
use crate::publisher::{self, PubCounters, PubPlan, Sink};
use crate::report::Run;
use crate::sys;
use crate::targets::{Kind, Layout, Programs, Target};
use crate::worker::{self, Command, Endpoint, Event, Mode, Plan, Pool, Spawn};

/// Scenario names, in the order `all` and `smoke` run them.
pub const ALL: &[&str] = &[
    "echo",
    "idle",
    "storm",
    "fanout",
    "rooms",
    "cluster",
    "cluster-max",
    "slow",
    "churn",
    "rpc",
    "hops",
];

/// Sizes of a scenario run; every field has a per-scenario default.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Connections (echo, idle, storm).
    pub connections: usize,
    /// Subscribers per room (fanout, rooms, cluster, slow).
    pub subscribers: usize,
    /// Rooms.
    pub rooms: usize,
    /// Publications per second in all; 0 = as fast as deliveries keep up.
    pub rate: f64,
    /// Measured phase length.
    pub duration: Duration,
    /// Publication size, bytes.
    pub size: usize,
    /// Echo payload sizes, bytes.
    pub echo_sizes: Vec<usize>,
    /// Nodes (cluster).
    pub nodes: usize,
    /// Redis servers Roomcast shards rooms over (cluster); socket.io uses
    /// the first.
    pub shards: usize,
    /// Roomcast's publisher is a WebSocket client instead of gRPC
    /// `PublishStream` (the baselines always publish on a WebSocket).
    pub ws_publisher: bool,
    /// Rooms nobody publishes to that every subscriber also joins.
    pub extra_rooms: usize,
    /// (nodes, Redis shards) pairs to run cluster-max on, each a variant.
    pub layouts: Vec<(usize, usize)>,
    /// Share of slow subscribers (slow).
    pub slow_share: f64,
    /// Publications in flight at max rate.
    pub window: u64,
    /// New connections per second during a churn burst.
    pub churn_rate: f64,
    /// Churn bursts against one node.
    pub bursts: usize,
}

impl Sizes {
    /// Defaults of a full run of `scenario`, or of a smoke run.
    pub fn defaults(scenario: &str, smoke: bool) -> Sizes {
        let mut s = Sizes {
            connections: 64,
            subscribers: 1,
            rooms: 1,
            rate: 0.0,
            duration: Duration::from_secs(10),
            size: 128,
            echo_sizes: vec![20, 1024, 16 * 1024],
            nodes: 1,
            shards: 0,
            ws_publisher: false,
            extra_rooms: 0,
            layouts: Vec::new(),
            slow_share: 0.0,
            window: 64,
            churn_rate: 1000.0,
            bursts: 2,
        };
        match scenario {
            "echo" => s.connections = 64,
            // Sessions making round trips one at a time each, in the
            // harness process.
            "hops" => s.connections = 16,
            "rpc" => {
                s.connections = 64;
                s.echo_sizes = vec![128];
            }
            "idle" => s.connections = 19_000,
            "storm" => s.connections = 10_000,
            "fanout" => s.subscribers = 10_000,
            "rooms" => {
                s.rooms = 1000;
                s.subscribers = 5;
                s.rate = 5000.0;
            }
            "cluster" => {
                s.nodes = 3;
                s.subscribers = 3000;
                s.rate = 100.0;
            }
            "cluster-max" => {
                // As fast as the cluster delivers: 1,000 subscribers over
                // two nodes and one Redis, one publisher. 256 publications
                // in flight keep the nodes busy through the Redis hop (64
                // left Roomcast's core a third idle, waiting).
                s.nodes = 2;
                s.shards = 1;
                s.subscribers = 1000;
                s.size = 100;
                s.rate = 0.0;
                s.window = 256;
            }
            "slow" => {
                // 50 x 4 KiB x 1000 = 200 MB/s of deliveries: well inside
                // what one server core sustains, so a moved p99 is the slow
                // consumers' doing and not overload.
                s.subscribers = 1000;
                s.rate = 50.0;
                s.size = 4096;
                s.slow_share = 0.1;
                s.duration = Duration::from_secs(15);
            }
            "churn" => {
                // Long-lived subscribers beside the burst, with a
                // publication every 10 ms to check that they lose nothing.
                s.subscribers = 2000;
                s.rate = 100.0;
            }
            _ => {}
        }
        if smoke {
            s.duration = Duration::from_secs(2);
            s.connections = match scenario {
                "echo" | "hops" => 4,
                _ => 100,
            };
            s.echo_sizes = if scenario == "rpc" {
                vec![20]
            } else {
                vec![20, 1024, 16 * 1024]
            };
            match scenario {
                "fanout" => {
                    s.subscribers = 20;
                    s.rate = 200.0;
                }
                "rooms" => {
                    s.rooms = 10;
                    s.subscribers = 3;
                    s.rate = 200.0;
                }
                "cluster" => {
                    s.nodes = 2;
                    s.subscribers = 10;
                    s.rate = 100.0;
                }
                "cluster-max" => {
                    s.nodes = 2;
                    s.subscribers = 10;
                    s.window = 16;
                }
                "slow" => {
                    s.subscribers = 20;
                    s.rate = 100.0;
                    s.slow_share = 0.2;
                }
                "churn" => {
                    s.subscribers = 20;
                    s.rate = 100.0;
                    s.churn_rate = 100.0;
                    s.duration = Duration::from_secs(1);
                }
                _ => {}
            }
        }
        s
    }
}

/// What every scenario shares.
pub struct Ctx {
    /// Programs under test.
    pub programs: Programs,
    /// How to start generator workers.
    pub spawn: Spawn,
    /// CPUs available to the generator (for the overload warning).
    pub gen_cores: f64,
    /// Loopback source addresses for client sockets.
    pub source_ips: Vec<Ipv4Addr>,
    /// Read size per connection.
    pub read_size: usize,
    /// Echo through the `echo` command instead of raw `/echo`.
    pub echo_command: bool,
    /// Progress bars.
    pub bars: MultiProgress,
}

impl Ctx {
    pub(crate) fn bar(&self, prefix: String, len_ms: u64) -> ProgressBar {
        let pb = self.bars.add(ProgressBar::new(len_ms.max(1)));
        pb.set_style(
            ProgressStyle::with_template("{spinner} {prefix:28} [{bar:30}] {elapsed:>4} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        pb.set_prefix(prefix);
        pb.enable_steady_tick(Duration::from_millis(200));
        pb
    }

    fn plan(&self, mode: Mode, target: &Target, count: usize) -> Plan {
        Plan {
            mode,
            endpoints: target
                .nodes
                .iter()
                .map(|n| Endpoint {
                    addr: n.ws,
                    dialect: target.kind.dialect(),
                })
                .collect(),
            first: 0,
            count,
            source_ips: self.source_ips.clone(),
            rooms: Vec::new(),
            slow_every: 0,
            extra_rooms: 0,
            connect_parallel: 256,
            echo_payload: 0,
            echo_raw: false,
            echo_rpc: false,
            read_size: self.read_size,
        }
    }
}

fn ready_of(ev: Event) -> Option<worker::ReadyInfo> {
    match ev {
        Event::Ready(r) => Some(r),
        _ => None,
    }
}

fn done_of(ev: Event) -> Option<worker::WorkerResult> {
    match ev {
        Event::Done(r) => Some(*r),
        _ => None,
    }
}

/// Time series sampled while a run goes on.
struct Sampler {
    start: Instant,
    last_t: f64,
    last_count: u64,
    throughput: Vec<(f64, f64)>,
    rss: Vec<(f64, f64)>,
    rss_peak_kib: u64,
}

impl Sampler {
    fn new() -> Sampler {
        Sampler {
            start: Instant::now(),
            last_t: 0.0,
            last_count: 0,
            throughput: Vec::new(),
            rss: Vec::new(),
            rss_peak_kib: 0,
        }
    }

    /// Records a point if half a second has passed since the last one.
    fn sample(&mut self, count: u64, target: &Target) {
        let t = self.start.elapsed().as_secs_f64();
        if t - self.last_t < 0.5 {
            return;
        }
        let rate = count.saturating_sub(self.last_count) as f64 / (t - self.last_t);
        self.throughput.push((t, rate));
        let rss = target.rss_kib();
        self.rss_peak_kib = self.rss_peak_kib.max(rss);
        self.rss.push((t, rss as f64 / 1024.0));
        self.last_t = t;
        self.last_count = count;
    }
}

fn check_ready(run: &mut Run, ready: &worker::ReadyInfo) {
    run.set("connections", ready.connected as f64);
    run.set("failed", ready.failed as f64);
    run.set(
        "handshake_p50_ms",
        ready.handshake.quantile(0.5) as f64 / 1e6,
    );
    run.set(
        "handshake_p99_ms",
        ready.handshake.quantile(0.99) as f64 / 1e6,
    );
    run.set("handshake_max_ms", ready.handshake.max as f64 / 1e6);
    if ready.failed > 0 {
        run.notes.push(format!(
            "{} connections failed, e.g. {}",
            ready.failed,
            ready.errors.first().cloned().unwrap_or_default()
        ));
    }
}

fn cpu_note(ctx: &Ctx, run: &mut Run, gen_cpu_secs: f64, wall: f64) {
    let used = gen_cpu_secs / wall.max(1e-3);
    run.set("gen_cpu", used);
    if used > 0.9 * ctx.gen_cores {
        run.notes.push(format!(
            "generator CPU at {:.0}% of its {} core(s): the numbers may be the generator's limit, not the server's",
            100.0 * used / ctx.gen_cores,
            ctx.gen_cores
        ));
    }
}

/// Runs `scenario` against `kind`.
pub async fn run(ctx: &Ctx, scenario: &str, kind: Kind, sizes: &Sizes) -> Result<Vec<Run>> {
    match scenario {
        "echo" => echo(ctx, kind, sizes).await,
        "rpc" => rpc(ctx, kind, sizes).await,
        "idle" => connections(ctx, kind, sizes, "idle", 256)
            .await
            .map(|r| vec![r]),
        "storm" => connections(ctx, kind, sizes, "storm", 0)
            .await
            .map(|r| vec![r]),
        "fanout" | "rooms" | "cluster" => pubsub(ctx, kind, sizes, scenario, 0, "")
            .await
            .map(|r| vec![r]),
        "cluster-max" if !sizes.layouts.is_empty() => {
            // One variant per layout, in one invocation, so that scaling
            // is read off runs made side by side.
            let mut runs = Vec::new();
            for &(nodes, shards) in &sizes.layouts {
                let mut s = sizes.clone();
                s.nodes = nodes;
                s.shards = shards;
                let variant = format!("{nodes}n×{shards}r");
                runs.push(pubsub(ctx, kind, &s, scenario, 0, &variant).await?);
            }
            Ok(runs)
        }
        "cluster-max" => pubsub(ctx, kind, sizes, scenario, 0, "")
            .await
            .map(|r| vec![r]),
        "slow" => {
            let control = pubsub(ctx, kind, sizes, "slow", 0, "control").await?;
            let every = if sizes.slow_share > 0.0 {
                ((1.0 / sizes.slow_share).round() as usize).max(2)
            } else {
                0
            };
            let mut slow = pubsub(ctx, kind, sizes, "slow", every, "with slow").await?;
            if let (Some(a), Some(b)) = (control.latency_ms.get("p99"), slow.latency_ms.get("p99"))
            {
                slow.set("p99_vs_control", b / a.max(1e-6));
            }
            Ok(vec![control, slow])
        }
        "churn" => churn(ctx, kind, sizes).await,
        "hops" => crate::hops::run(ctx, sizes).await,
        other => bail!("unknown scenario {other}"),
    }
}

/// How the echo loop asks for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Raw `/echo`.
    Raw,
    /// The `echo` command.
    Command,
    /// The `rpc` command, answered by the node's backend.
    Rpc,
}

async fn echo(ctx: &Ctx, kind: Kind, sizes: &Sizes) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let mut target = Target::start(kind, Layout::nodes(1), &ctx.programs).await?;
    for &size in &sizes.echo_sizes {
        let raw = kind.dialect().has_raw_echo() && !ctx.echo_command;
        let form = if raw { Form::Raw } else { Form::Command };
        runs.push(roundtrips(ctx, &mut target, "echo", size, form, sizes).await?);
    }
    target.stop().await;
    Ok(runs)
}

/// Backend hooks: RPC round trips through a node to a trivial backend (it
/// answers each `Rpc` with its data) against `echo` commands on the same
/// node and connections, so the difference is what one backend call adds.
async fn rpc(ctx: &Ctx, kind: Kind, sizes: &Sizes) -> Result<Vec<Run>> {
    if kind != Kind::Roomcast {
        bail!("the rpc scenario drives roomcast.v1 only");
    }
    let backend = crate::backend::TrivialBackend::start().await?;
    let config =
        std::env::temp_dir().join(format!("roomcast-loadtest-rpc-{}.toml", std::process::id()));
    std::fs::write(&config, "[namespaces.default]\nrpc = true\n")?;
    let mut programs = ctx.programs.clone();
    programs.roomcast_args.extend([
        "--config".to_string(),
        config.display().to_string(),
        "--backend-url".to_string(),
        backend.url(),
        // Round trips as fast as they come: no per-session command budget.
        "--command-rate".to_string(),
        "0".to_string(),
    ]);
    let mut target = Target::start(kind, Layout::nodes(1), &programs).await?;
    let mut runs = Vec::new();
    for &size in &sizes.echo_sizes {
        let base = roundtrips(ctx, &mut target, "rpc", size, Form::Command, sizes).await?;
        let mut with = roundtrips(ctx, &mut target, "rpc", size, Form::Rpc, sizes).await?;
        for q in ["p50", "p99"] {
            if let (Some(a), Some(b)) = (base.latency_ms.get(q), with.latency_ms.get(q)) {
                with.set(&format!("hook_{q}_added_ms"), b - a);
            }
        }
        runs.push(base);
        runs.push(with);
    }
    target.stop().await;
    let _ = std::fs::remove_file(&config);
    drop(backend);
    Ok(runs)
}

/// One closed-loop round-trip run: every connection sends, waits for the
/// reply, and sends again, for the measured phase.
async fn roundtrips(
    ctx: &Ctx,
    target: &mut Target,
    scenario: &str,
    size: usize,
    form: Form,
    sizes: &Sizes,
) -> Result<Run> {
    let kind = target.kind;
    let how = match form {
        Form::Raw => "raw",
        Form::Command => "cmd",
        Form::Rpc => "rpc",
    };
    let variant = format!("{} {how}", human_bytes(size));
    let mut run = Run::new(scenario, kind.name(), &variant);
    let mut plan = ctx.plan(Mode::Echo, target, sizes.connections);
    plan.echo_payload = size;
    plan.echo_raw = form == Form::Raw;
    plan.echo_rpc = form == Form::Rpc;
    let mut pool = Pool::start(&plan, &ctx.spawn).await?;
    let ready = worker::merge_ready(
        &pool
            .collect(Duration::from_secs(120), ready_of, |_| {})
            .await?,
    );
    check_ready(&mut run, &ready);
    let dur_ms = sizes.duration.as_millis() as u64;
    let pb = ctx.bar(format!("{scenario} {} {variant}", kind.name()), dur_ms);
    let server_cpu0 = target.cpu_secs();
    let self_cpu0 = sys::cpu_seconds("self").unwrap_or(0.0);
    let t0 = Instant::now();
    pool.send(&Command::Go {
        duration_ms: dur_ms,
    })
    .await?;
    let mut sampler = Sampler::new();
    let results = pool
        .collect(sizes.duration + Duration::from_secs(60), done_of, |p| {
            let (_, rt, _) = p.progress();
            sampler.sample(rt, target);
            pb.set_position(t0.elapsed().as_millis() as u64);
            pb.set_message(format!("{rt} round trips"));
        })
        .await?;
    pb.finish_and_clear();
    pool.shutdown().await;
    target.check_alive()?;
    let wall = t0.elapsed().as_secs_f64();
    let res = worker::merge_results(&results);
    let secs = sizes.duration.as_secs_f64();
    run.set("roundtrips", res.roundtrips as f64);
    run.set("roundtrips_per_s", res.roundtrips as f64 / secs);
    run.set("bad_replies", res.bad_replies as f64);
    run.set("payload_bytes", size as f64);
    run.set("server_cpu", (target.cpu_secs() - server_cpu0) / wall);
    let own = sys::cpu_seconds("self").unwrap_or(0.0) - self_cpu0;
    cpu_note(ctx, &mut run, res.cpu_secs + own, secs);
    if res.bad_replies > 0 {
        run.notes
            .push(format!("{} replies did not match", res.bad_replies));
    }
    for e in &res.errors {
        run.notes.push(format!("error: {e}"));
    }
    run.throughput = sampler.throughput;
    run.rss_mib = sampler.rss;
    run.set_latency(res.latency);
    Ok(run)
}

async fn connections(
    ctx: &Ctx,
    kind: Kind,
    sizes: &Sizes,
    scenario: &str,
    parallel: usize,
) -> Result<Run> {
    let mut run = Run::new(scenario, kind.name(), "");
    let mut target = Target::start(kind, Layout::nodes(1), &ctx.programs).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = target.rss_kib();
    let mut plan = ctx.plan(Mode::Hold, &target, sizes.connections);
    plan.connect_parallel = parallel;
    let pb = ctx.bar(
        format!("{scenario} {}", kind.name()),
        sizes.connections as u64,
    );
    let self_cpu0 = sys::cpu_seconds("self").unwrap_or(0.0);
    let t0 = Instant::now();
    let mut pool = Pool::start(&plan, &ctx.spawn).await?;
    let mut sampler = Sampler::new();
    let readies = pool
        .collect(Duration::from_secs(600), ready_of, |p| {
            let (_, _, c) = p.progress();
            sampler.sample(c, &target);
            pb.set_position(c);
            pb.set_message("connecting");
        })
        .await?;
    let ready = worker::merge_ready(&readies);
    check_ready(&mut run, &ready);
    pb.set_message("settling");
    // Let the server finish whatever it allocates lazily after the upgrade.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        sampler.sample(ready.connected, &target);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss1 = target.rss_kib();
    pool.send(&Command::Finish {
        expected: Default::default(),
        grace_ms: 0,
    })
    .await?;
    let results = pool
        .collect(Duration::from_secs(60), done_of, |_| {})
        .await?;
    pb.finish_and_clear();
    pool.shutdown().await;
    target.check_alive()?;
    target.stop().await;
    let res = worker::merge_results(&results);
    let setup = ready.setup_secs.max(1e-6);
    run.set("storm_secs", setup);
    run.set("connect_per_s", ready.connected as f64 / setup);
    run.set("rss_before_kib", rss0 as f64);
    run.set("rss_after_kib", rss1 as f64);
    if ready.connected > 0 {
        run.set(
            "rss_per_conn_bytes",
            (rss1.saturating_sub(rss0) * 1024) as f64 / ready.connected as f64,
        );
    }
    run.set("rss_peak_mib", sampler.rss_peak_kib as f64 / 1024.0);
    let dropped: u64 = res.fast_closed.values().sum();
    if dropped > 0 {
        run.notes.push(format!(
            "server closed {dropped} idle connections: {:?}",
            res.fast_closed
        ));
    }
    let own = sys::cpu_seconds("self").unwrap_or(0.0) - self_cpu0;
    cpu_note(
        ctx,
        &mut run,
        res.cpu_secs + own,
        t0.elapsed().as_secs_f64(),
    );
    run.throughput = sampler.throughput;
    run.rss_mib = sampler.rss;
    let mut hs = crate::hist::Hist::default();
    hs.merge(&ready.handshake);
    run.set_latency(hs);
    Ok(run)
}

/// Fan-out, many rooms, cluster and slow consumers: subscribers in workers,
/// one publisher here.
async fn pubsub(
    ctx: &Ctx,
    kind: Kind,
    sizes: &Sizes,
    scenario: &str,
    slow_every: usize,
    variant: &str,
) -> Result<Run> {
    let mut run = Run::new(scenario, kind.name(), variant);
    let clustered = scenario.starts_with("cluster");
    let layout = Layout {
        nodes: if clustered { sizes.nodes } else { 1 },
        shards: if clustered { sizes.shards } else { 0 },
        unlimited_commands: sizes.ws_publisher,
    };
    let nodes = layout.nodes;
    let mut target = Target::start(kind, layout, &ctx.programs).await?;
    let rooms: Vec<String> = (0..sizes.rooms)
        .map(|i| format!("lt.{scenario}.{i}"))
        .collect();
    let total = sizes.rooms * sizes.subscribers;
    let mut plan = ctx.plan(Mode::Subscribe, &target, total);
    plan.rooms = rooms.clone();
    plan.slow_every = slow_every;
    plan.extra_rooms = sizes.extra_rooms;
    let label = format!(
        "{scenario} {}{}",
        kind.name(),
        if variant.is_empty() {
            String::new()
        } else {
            format!(" {variant}")
        }
    );
    let pb = ctx.bar(label, sizes.duration.as_millis() as u64);
    pb.set_message("subscribing");
    let mut pool = Pool::start(&plan, &ctx.spawn).await?;
    let ready = worker::merge_ready(
        &pool
            .collect(Duration::from_secs(600), ready_of, |p| {
                pb.set_message(format!("subscribed {}", p.progress().2));
            })
            .await?,
    );
    check_ready(&mut run, &ready);
    run.set("subscribers", ready.connected as f64);
    if sizes.extra_rooms > 0 {
        run.set("extra_rooms", sizes.extra_rooms as f64);
        run.set(
            "subscriptions",
            (ready.connected * (1 + sizes.extra_rooms as u64)) as f64,
        );
    }
    run.set("rooms", sizes.rooms as f64);
    run.set("nodes", nodes as f64);
    run.set("payload_bytes", sizes.size as f64);
    run.set(
        "subscribe_p99_ms",
        ready.subscribe.quantile(0.99) as f64 / 1e6,
    );

    let sink = match (kind, target.nodes[0].grpc) {
        (Kind::Roomcast, Some(g)) if !sizes.ws_publisher => Sink::Grpc(g),
        _ => Sink::Ws(target.nodes[0].ws, kind.dialect()),
    };
    run.set("shards", target.redis.len() as f64);
    run.notes.push(format!(
        "publisher: {}",
        match sink {
            Sink::Grpc(_) => "gRPC PublishStream",
            Sink::Ws(..) => "WebSocket client",
        }
    ));
    let pplan = PubPlan {
        rooms: rooms.clone(),
        rate: sizes.rate,
        duration: sizes.duration,
        size: sizes.size,
        window: sizes.window,
    };
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Deliveries per publication: the reading subscribers of one room.
    let reading = ready.connected.saturating_sub(if slow_every > 0 {
        ready.connected / slow_every as u64
    } else {
        0
    });
    let per_pub = (reading as f64 / sizes.rooms as f64).max(1.0);
    let counters = Arc::new(PubCounters::default());
    let server_cpu0 = target.cpu_secs();
    let redis_cpu0 = target.redis_cpu_secs();
    let self_cpu0 = sys::cpu_seconds("self").unwrap_or(0.0);
    let t0 = Instant::now();
    let mut publisher = {
        let counters = counters.clone();
        let seen = seen.clone();
        tokio::spawn(async move { publisher::publish(&sink, &pplan, counters, seen).await })
    };
    let mut sampler = Sampler::new();
    let published = loop {
        tokio::select! {
            r = &mut publisher => break r??,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                pool.poll();
                let (d, _, _) = pool.progress();
                seen.store((d as f64 / per_pub) as u64, Ordering::Relaxed);
                sampler.sample(d, &target);
                pb.set_position(t0.elapsed().as_millis() as u64);
                pb.set_message(format!("published {} delivered {d}", counters.sent.load(Ordering::Relaxed)));
            }
        }
    };
    pb.set_message("draining");
    pool.send(&Command::Finish {
        expected: published.per_room.clone(),
        grace_ms: 3000,
    })
    .await?;
    let results = pool
        .collect(Duration::from_secs(120), done_of, |p| {
            let (d, _, _) = p.progress();
            sampler.sample(d, &target);
        })
        .await?;
    let wall = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    pool.shutdown().await;
    let server_cpu = (target.cpu_secs() - server_cpu0) / wall;
    let redis_cpu = (target.redis_cpu_secs() - redis_cpu0) / wall;
    let target_redis_empty = target.redis.is_empty();
    target.check_alive()?;
    target.stop().await;
    let res = worker::merge_results(&results);
    run.set("published", published.sent as f64);
    run.set(
        "published_per_s",
        published.sent as f64 / published.secs.max(1e-6),
    );
    run.set("delivered", res.delivered as f64);
    run.set("delivered_per_s", res.delivered as f64 / wall);
    run.set(
        "expected",
        (published.sent as f64 / sizes.rooms as f64) * (ready.connected - res.slow) as f64,
    );
    run.set("lost", res.lost as f64);
    run.set("out_of_order", res.out_of_order as f64);
    run.set("server_cpu", server_cpu);
    if !target_redis_empty {
        run.set("redis_cpu", redis_cpu);
    }
    run.set("rss_peak_mib", sampler.rss_peak_kib as f64 / 1024.0);
    if let (Some(first), Some(last)) = (sampler.rss.first(), sampler.rss.last()) {
        run.set("rss_growth_mib", last.1 - first.1);
    }
    if res.slow > 0 {
        run.set("slow", res.slow as f64);
        let closed: u64 = res
            .slow_closed
            .iter()
            .filter(|(k, _)| *k != "open")
            .map(|(_, v)| v)
            .sum();
        run.set("slow_closed", closed as f64);
        run.notes.push(format!(
            "{} slow subscribers; how they ended: {:?}",
            res.slow, res.slow_closed
        ));
    }
    if !res.fast_closed.is_empty() {
        run.notes.push(format!(
            "reading subscribers closed by the server: {:?}",
            res.fast_closed
        ));
    }
    if res.lost > 0 || res.out_of_order > 0 {
        run.notes.push(format!(
            "LOSS: {} lost, {} out of order",
            res.lost, res.out_of_order
        ));
    }
    for e in &res.errors {
        run.notes.push(format!("error: {e}"));
    }
    let own = sys::cpu_seconds("self").unwrap_or(0.0) - self_cpu0;
    cpu_note(ctx, &mut run, res.cpu_secs + own, wall);
    run.throughput = sampler.throughput;
    run.rss_mib = sampler.rss;
    run.set_latency(res.latency);
    Ok(run)
}

fn human_bytes(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// Churn: long-lived subscribers (which must lose nothing) beside bursts of
/// connections opened at a rate and ended every way clients end them. One
/// node for every burst, so the memory after each burst is compared with
/// the level before the first. One run per burst.
async fn churn(ctx: &Ctx, kind: Kind, sizes: &Sizes) -> Result<Vec<Run>> {
    /// How long after a burst its "after" figures are taken.
    const AFTER: Duration = Duration::from_secs(5);
    let mut target = Target::start(kind, Layout::nodes(1), &ctx.programs).await?;
    let pid = target.nodes[0].pid;
    let rooms = vec!["lt.churn.0".to_string()];
    let mut plan = ctx.plan(Mode::Subscribe, &target, sizes.subscribers);
    plan.rooms = rooms.clone();
    let pb = ctx.bar(format!("churn {}", kind.name()), sizes.bursts as u64);
    pb.set_message("subscribing");
    let mut pool = Pool::start(&plan, &ctx.spawn).await?;
    let ready = worker::merge_ready(
        &pool
            .collect(Duration::from_secs(600), ready_of, |_| {})
            .await?,
    );
    let sink = match (kind, target.nodes[0].grpc) {
        (Kind::Roomcast, Some(g)) => Sink::Grpc(g),
        _ => Sink::Ws(target.nodes[0].ws, kind.dialect()),
    };
    // The publisher runs through every burst and the wait after it.
    let per_burst = sizes.duration + AFTER + Duration::from_secs(3);
    let pplan = PubPlan {
        rooms: rooms.clone(),
        rate: sizes.rate.max(1.0),
        duration: per_burst * sizes.bursts as u32 + Duration::from_secs(1),
        size: sizes.size,
        window: sizes.window,
    };
    let counters = Arc::new(PubCounters::default());
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut publisher = {
        let counters = counters.clone();
        tokio::spawn(async move { publisher::publish(&sink, &pplan, counters, seen).await })
    };
    let fds = || sys::fd_count(pid).unwrap_or(0) as f64;
    let mib = |t: &Target| t.rss_kib() as f64 / 1024.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first_rss = mib(&target);
    let bplan = churn::BurstPlan {
        addr: target.nodes[0].ws,
        path: kind.dialect().path().to_string(),
        subprotocol: kind.dialect().subprotocol(),
        rate: sizes.churn_rate,
        duration: sizes.duration,
        source_ips: ctx.source_ips.clone(),
        max_open: 15_000,
    };
    let mut runs = Vec::new();
    for b in 1..=sizes.bursts {
        let mut run = Run::new("churn", kind.name(), &format!("burst {b}"));
        check_ready(&mut run, &ready);
        pb.set_message(format!("burst {b}"));
        pool.poll();
        let (rss0, fds0) = (mib(&target), fds());
        let (mut rss_peak, mut fds_peak) = (rss0, fds0);
        let mut sampler = Sampler::new();
        let burst = churn::burst(&bplan);
        tokio::pin!(burst);
        let res = loop {
            tokio::select! {
                r = &mut burst => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    pool.poll();
                    rss_peak = rss_peak.max(mib(&target));
                    fds_peak = fds_peak.max(fds());
                    sampler.sample(0, &target);
                }
            }
        };
        let settle = Instant::now();
        while settle.elapsed() < AFTER {
            pool.poll();
            sampler.sample(0, &target);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (rss1, fds1) = (mib(&target), fds());
        rss_peak = rss_peak.max(sampler.rss_peak_kib as f64 / 1024.0);
        let ended: u64 = res.done.values().sum();
        run.set("churn_connections", res.attempted as f64);
        run.set("churn_ended", ended as f64);
        run.set("churn_failed", res.failed as f64);
        run.set(
            "connect_per_s",
            res.attempted as f64 / res.open_secs.max(1e-6),
        );
        run.set("rss_before_mib", rss0);
        run.set("rss_peak_mib", rss_peak);
        run.set("rss_after_mib", rss1);
        run.set("rss_after_vs_first_mib", rss1 - first_rss);
        run.set("fds_before", fds0);
        run.set("fds_peak", fds_peak);
        run.set("fds_after", fds1);
        if res.close_latency.total > 0 {
            let q = |p: f64| res.close_latency.quantile(p) as f64 / 1e6;
            run.set("close_p50_ms", q(0.5));
            run.set("close_p99_ms", q(0.99));
            run.set("close_max_ms", res.close_latency.max as f64 / 1e6);
        }
        run.notes.push(format!("endings: {:?}", res.done));
        if res.no_close > 0 {
            run.notes.push(format!(
                "{} node-initiated closes came without a Close frame",
                res.no_close
            ));
        }
        for e in &res.errors {
            run.notes.push(format!("churn error: {e}"));
        }
        run.throughput = sampler.throughput;
        run.rss_mib = sampler.rss;
        run.set_latency(res.close_latency);
        runs.push(run);
        pb.inc(1);
    }
    pb.set_message("draining");
    let published = loop {
        tokio::select! {
            r = &mut publisher => break r??,
            _ = tokio::time::sleep(Duration::from_millis(100)) => { pool.poll(); }
        }
    };
    pool.send(&Command::Finish {
        expected: published.per_room.clone(),
        grace_ms: 3000,
    })
    .await?;
    let results = pool
        .collect(Duration::from_secs(120), done_of, |_| {})
        .await?;
    pb.finish_and_clear();
    pool.shutdown().await;
    target.check_alive()?;
    target.stop().await;
    let res = worker::merge_results(&results);
    // The subscribers' figures cover every burst: each run carries them.
    for run in &mut runs {
        run.set("published", published.sent as f64);
        run.set("delivered", res.delivered as f64);
        run.set(
            "expected",
            published.sent as f64 * ready.connected.saturating_sub(res.slow) as f64,
        );
        run.set("lost", res.lost as f64);
        run.set("out_of_order", res.out_of_order as f64);
        if !res.fast_closed.is_empty() {
            run.notes.push(format!(
                "subscribers closed by the server: {:?}",
                res.fast_closed
            ));
        }
    }
    Ok(runs)
}
