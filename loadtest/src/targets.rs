//! The servers under test: Roomcast itself and the baselines, each started
//! on free loopback ports, pinned to the server core where possible, waited
//! for until `/healthz` answers, and stopped when dropped. A Redis server is
//! started on a free port for whatever needs one (Roomcast's cluster
//! scenario, socket.io's Redis adapter).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::dialect::Dialect;
use crate::sys;

/// A kind of server the harness can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Kind {
    /// The Roomcast gateway.
    Roomcast,
    /// The bare fastwebsockets server of this crate (`roomcast-baseline-fws`).
    Fws,
    /// Node with the `ws` package: the classic broadcast loop.
    Ws,
    /// socket.io 4 with `@socket.io/redis-adapter`.
    Socketio,
    /// The Roomcast gateway driven by socket.io clients (its socket.io
    /// front-end), publishing over the same socket.io events as `Socketio`.
    RoomcastSocketio,
}

impl Kind {
    /// Short name used in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Roomcast => "roomcast",
            Kind::Fws => "fws",
            Kind::Ws => "node-ws",
            Kind::Socketio => "socket.io",
            Kind::RoomcastSocketio => "roomcast-sio",
        }
    }

    /// How the harness speaks to it.
    pub fn dialect(self) -> Dialect {
        match self {
            Kind::Roomcast => Dialect::Roomcast,
            Kind::Fws | Kind::Ws => Dialect::Plain,
            Kind::Socketio | Kind::RoomcastSocketio => Dialect::SocketIo,
        }
    }

    /// Whether this is a Roomcast node (whatever its clients speak).
    pub fn is_roomcast(self) -> bool {
        matches!(self, Kind::Roomcast | Kind::RoomcastSocketio)
    }
}

/// Where the programs under test are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `roomcast` binary.
    pub roomcast: PathBuf,
    /// The `roomcast-baseline-fws` binary.
    pub fws: PathBuf,
    /// `loadtest/baselines` (holds `ws/` and `socketio/` with node_modules).
    pub baselines: PathBuf,
    /// CPU list for `taskset -c` when pinning servers (None: no pinning).
    pub pin: Option<String>,
    /// Extra arguments for every Roomcast node.
    pub roomcast_args: Vec<String>,
}

impl Programs {
    /// Finds the programs next to the running executable (the same cargo
    /// profile) and the baselines directory under the current directory.
    pub fn locate(
        roomcast: Option<PathBuf>,
        baselines: Option<PathBuf>,
        pin: Option<String>,
    ) -> Result<Programs> {
        let exe = std::env::current_exe().context("own executable")?;
        let dir = exe.parent().context("executable directory")?.to_path_buf();
        let baselines = baselines.unwrap_or_else(|| {
            let here = PathBuf::from("loadtest/baselines");
            if here.is_dir() {
                here
            } else {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("baselines")
            }
        });
        Ok(Programs {
            roomcast: roomcast.unwrap_or_else(|| dir.join("roomcast")),
            fws: dir.join("roomcast-baseline-fws"),
            baselines,
            pin,
            roomcast_args: Vec::new(),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match &self.pin {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

/// A running Redis server, stopped on drop.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its pid, for /proc.
    pub pid: u32,
    _child: Child,
}

impl Redis {
    /// Starts `redis-server` on a free port, persisting nothing.
    pub async fn start() -> Result<Redis> {
        if !sys::on_path("redis-server") {
            bail!("redis-server not found on PATH (needed for the cluster scenario and socket.io)");
        }
        let port = sys::free_port()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start redis-server")?;
        let pid = child.id().context("redis-server pid")?;
        wait_tcp(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        )
        .await?;
        Ok(Redis {
            port,
            pid,
            _child: child,
        })
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// One running node of a target.
pub struct Node {
    /// WebSocket/HTTP listener.
    pub ws: SocketAddr,
    /// gRPC control plane (Roomcast only).
    pub grpc: Option<SocketAddr>,
    /// Pid of the server process itself (not of a wrapper), for /proc.
    pub pid: u32,
    child: Child,
}

/// A running target: one or more nodes, and the Redis they share if any.
pub struct Target {
    /// What it is.
    pub kind: Kind,
    /// Its nodes.
    pub nodes: Vec<Node>,
    /// The Redis servers it shares (Roomcast shards rooms over all of them;
    /// socket.io's adapter uses the first).
    pub redis: Vec<Redis>,
}

/// How to start a target.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Nodes.
    pub nodes: usize,
    /// Redis servers; Roomcast uses them even with one node when this is
    /// above 0, and always when it has several nodes.
    pub shards: usize,
    /// Roomcast clients may send commands without a rate limit (a
    /// publisher on a WebSocket, like socket.io's, which has none).
    pub unlimited_commands: bool,
}

impl Layout {
    /// `nodes` nodes, with Redis when they are several.
    pub fn nodes(nodes: usize) -> Layout {
        Layout {
            nodes,
            shards: usize::from(nodes > 1),
            unlimited_commands: false,
        }
    }
}

impl Target {
    /// Starts `nodes` nodes of `kind`. Several Roomcast nodes share a Redis
    /// adapter; socket.io always uses its Redis adapter.
    pub async fn start(kind: Kind, layout: Layout, programs: &Programs) -> Result<Target> {
        let nodes = layout.nodes;
        let shards = match kind {
            Kind::Socketio => 1,
            k if k.is_roomcast() => layout.shards.max(usize::from(nodes > 1)),
            _ => 0,
        };
        let mut redis = Vec::new();
        for _ in 0..shards {
            redis.push(Redis::start().await?);
        }
        let mut list = Vec::new();
        for i in 0..nodes {
            let port = sys::free_port()?;
            let ws = SocketAddr::from(([127, 0, 0, 1], port));
            let mut grpc = None;
            let mut cmd = match kind {
                Kind::Roomcast | Kind::RoomcastSocketio => {
                    if !programs.roomcast.is_file() {
                        bail!(
                            "roomcast binary not found at {} (cargo build --release -p roomcast-gateway, or --roomcast-bin)",
                            programs.roomcast.display()
                        );
                    }
                    let g = SocketAddr::from(([127, 0, 0, 1], sys::free_port()?));
                    grpc = Some(g);
                    let mut c = programs.command(&programs.roomcast);
                    c.arg("--listen")
                        .arg(ws.to_string())
                        .arg("--grpc-listen")
                        .arg(g.to_string())
                        .arg("--echo")
                        .arg("--node-id")
                        .arg(format!("loadtest-{i}"))
                        .args(&programs.roomcast_args);
                    if kind == Kind::RoomcastSocketio || layout.unlimited_commands {
                        // Its publisher is a client like socket.io's, which
                        // has no per-client command rate: neither here.
                        c.arg("--command-rate").arg("0");
                    }
                    if !redis.is_empty() {
                        c.arg("--adapter").arg("redis");
                        for r in &redis {
                            c.arg("--redis-url").arg(r.url());
                        }
                    }
                    c
                }
                Kind::Fws => {
                    if !programs.fws.is_file() {
                        bail!(
                            "{} not found (cargo build -p roomcast-loadtest)",
                            programs.fws.display()
                        );
                    }
                    let mut c = programs.command(&programs.fws);
                    c.arg("--listen").arg(ws.to_string());
                    c
                }
                Kind::Ws | Kind::Socketio => {
                    let dir =
                        programs
                            .baselines
                            .join(if kind == Kind::Ws { "ws" } else { "socketio" });
                    if !dir.join("node_modules").is_dir() {
                        bail!(
                            "{} is not installed: run loadtest/baselines/install.sh",
                            dir.display()
                        );
                    }
                    let mut c = programs.command(Path::new("node"));
                    c.arg(dir.join("server.js"))
                        .env("PORT", port.to_string())
                        .env("HOST", "127.0.0.1");
                    if let Some(r) = redis.first() {
                        c.env("REDIS_URL", r.url());
                    }
                    c
                }
            };
            cmd.stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .env("RUST_LOG", "warn")
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .with_context(|| format!("start {}", kind.name()))?;
            // taskset execs the program in place, so the pid is the server's.
            let pid = child.id().context("server pid")?;
            let node = Node {
                ws,
                grpc,
                pid,
                child,
            };
            wait_healthy(ws, Duration::from_secs(30))
                .await
                .with_context(|| format!("{} node {i} did not come up", kind.name()))?;
            if let Some(g) = grpc {
                wait_tcp(g, Duration::from_secs(10)).await?;
            }
            list.push(node);
        }
        Ok(Target {
            kind,
            nodes: list,
            redis,
        })
    }

    /// Sum of the nodes' resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.nodes.iter().filter_map(|n| sys::rss_kib(n.pid)).sum()
    }

    /// Sum of the nodes' CPU seconds.
    pub fn cpu_secs(&self) -> f64 {
        self.nodes
            .iter()
            .filter_map(|n| sys::cpu_seconds(&n.pid.to_string()))
            .sum()
    }

    /// Sum of the Redis servers' CPU seconds.
    pub fn redis_cpu_secs(&self) -> f64 {
        self.redis
            .iter()
            .filter_map(|r| sys::cpu_seconds(&r.pid.to_string()))
            .sum()
    }

    /// Fails if a node has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            if let Ok(Some(status)) = n.child.try_wait() {
                bail!("{} node exited: {status}", self.kind.name());
            }
        }
        Ok(())
    }

    /// Stops every node (SIGKILL; nothing is kept between runs).
    pub async fn stop(mut self) {
        for n in &mut self.nodes {
            let _ = n.child.start_kill();
            let _ = n.child.wait().await;
        }
    }
}

async fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("nothing listening on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_healthy(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(true) = healthz(addr).await {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("GET /healthz on {addr} not 200 after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn healthz(addr: SocketAddr) -> Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await??;
    Ok(buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200"))
}
