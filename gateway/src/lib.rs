//! Roomcast gateway node: terminates WebSockets, indexes rooms, fans
//! publications out, and serves the gRPC control plane and metrics.
//!
//! `main.rs` turns flags into a [`Config`] and signals into a shutdown
//! future, and installs the Prometheus recorder that every crate's metrics
//! go to; [`run`] does everything else.

pub mod auth;
pub mod backend;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod hub;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod protocol;
pub mod server;
pub mod session;
pub mod socketio;
pub mod ws;

pub use config::Config;

use crate::auth::Authenticator;
use crate::config::AdapterKind;
use crate::hub::Hub;
use crate::metrics::Metrics;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use roomcast_adapter::{Adapter, MemoryAdapter};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

/// Why the node could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The adapter could not start.
    #[error("adapter: {0}")]
    Adapter(#[from] roomcast_adapter::AdapterError),
    /// Bad configuration found while starting.
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    /// The backend client could not be built.
    #[error("{0}")]
    Backend(#[from] backend::BackendError),
    /// The gRPC server failed.
    #[error("grpc: {0}")]
    Grpc(String),
}

/// State shared by every part of a node.
pub struct Node {
    /// The configuration.
    pub config: Config,
    /// Local room index.
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The installed Prometheus recorder, rendered at `/metrics`.
    pub prometheus: PrometheusHandle,
    /// JWT verification, when auth is on.
    pub auth: Option<Authenticator>,
    /// Sessions open or being opened, for `max_connections`.
    pub open_sessions: AtomicUsize,
    /// socket.io sessions by id, for polling requests and upgrades.
    pub socketio: socketio::Registry,
    /// The client of the application's backend, when `backend.url` is set.
    pub backend: Option<Arc<backend::Backend>>,
    session_ids: AtomicU64,
    draining: watch::Sender<bool>,
    adapter_up: watch::Receiver<bool>,
    connect_budget: Mutex<(f64, Instant)>,
}

impl Node {
    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Resolves to true once the node is draining.
    pub fn draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Whether the node is draining.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Accepting sessions, the adapter is up and the backend (when there
    /// is one) answers.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && *self.adapter_up.borrow() && self.backend_up()
    }

    /// Whether the adapter is up.
    pub fn adapter_up(&self) -> bool {
        *self.adapter_up.borrow()
    }

    /// Whether the backend answers (true when there is none).
    pub fn backend_up(&self) -> bool {
        self.backend.as_ref().is_none_or(|b| b.is_up())
    }

    /// Takes one token from the new-connection budget.
    pub fn allow_new_connection(&self) -> bool {
        let rate = self.config.connection_rate as f64;
        if rate == 0.0 {
            return true;
        }
        let mut b = self.connect_budget.lock();
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(rate);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Static files served at `path`, if any.
pub fn static_asset(node: &Node, path: &str) -> Option<(&'static str, &'static [u8])> {
    if !node.config.demo {
        return None;
    }
    demo::asset(path)
}

async fn build_adapter(config: &Config) -> Result<Arc<dyn Adapter>, RunError> {
    match config.adapter {
        AdapterKind::Memory => Ok(Arc::new(MemoryAdapter::new(config.node_id.clone()))),
        AdapterKind::Redis => {
            let redis_config = roomcast_adapter_redis::RedisConfig::new(
                config.redis_urls.clone(),
                config.node_id.clone(),
            );
            // Starts even when Redis is not there yet: the node stays
            // unready (503 on /readyz) until the adapter connects.
            let adapter = roomcast_adapter_redis::RedisAdapter::connect(redis_config).await?;
            Ok(Arc::new(adapter))
        }
    }
}

/// Pending connections the kernel may hold for `accept` (it caps this at
/// `net.core.somaxconn`). A connect storm past the backlog costs clients a
/// one-second SYN retransmit.
const LISTEN_BACKLOG: u32 = 8192;

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(LISTEN_BACKLOG)
        })
        .map_err(|source| RunError::Bind { what, addr, source })
}

/// Runs a node until `shutdown` resolves, then drains: `/readyz` turns 503,
/// every session is closed with 1001, and the call returns once they are
/// gone or `drain_timeout` passed.
///
/// `prometheus` is the handle of the recorder the caller installed as the
/// global one (see [`metrics::prometheus_builder`]): the node's and its
/// adapter's metrics go there, and `/metrics` renders it.
pub async fn run(
    config: Config,
    prometheus: PrometheusHandle,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let http = bind("http", config.listen).await?;
    let grpc = bind("grpc", config.grpc_listen).await?;
    let http_addr = http.local_addr().map_err(|source| RunError::Bind {
        what: "http",
        addr: config.listen,
        source,
    })?;
    let grpc_addr = grpc.local_addr().map_err(|source| RunError::Bind {
        what: "grpc",
        addr: config.grpc_listen,
        source,
    })?;

    let metrics = Arc::new(Metrics::new());
    let adapter = build_adapter(&config).await?;
    let auth = config.jwt.as_ref().map(Authenticator::new).transpose()?;
    let backend = backend::Backend::new(&config)?;
    let hub = Arc::new(Hub::new(
        config.node_id.clone(),
        adapter.clone(),
        metrics.clone(),
        config.namespaces.clone(),
    ));
    let _ = hub
        .addresses
        .set(advertised(&config.advertise_address, http_addr, grpc_addr));
    adapter.start(hub.clone()).await?;

    let (draining, _) = watch::channel(false);
    let node = Arc::new(Node {
        adapter_up: adapter.health(),
        hub,
        metrics: metrics.clone(),
        prometheus,
        auth,
        open_sessions: AtomicUsize::new(0),
        socketio: Default::default(),
        backend,
        session_ids: AtomicU64::new(1),
        draining,
        connect_budget: Mutex::new((config.connection_rate as f64, Instant::now())),
        config,
    });

    // Keep the adapter/readiness gauges in step with the adapter's and the
    // backend's health.
    let mut health = adapter.health();
    let (_no_backend, unchanging) = watch::channel(true);
    let mut backend_health = node.backend.as_ref().map_or(unchanging, |b| b.health());
    let mut drain_rx = node.draining();
    let gauges = node.clone();
    tokio::spawn(async move {
        loop {
            let up = *health.borrow_and_update();
            backend_health.borrow_and_update();
            gauges.metrics.adapter_up.set(f64::from(u8::from(up)));
            gauges
                .metrics
                .ready
                .set(f64::from(u8::from(gauges.is_ready())));
            tokio::select! {
                r = health.changed() => if r.is_err() { return },
                r = backend_health.changed() => if r.is_err() { return },
                _ = drain_rx.changed() => {}
            }
        }
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(b) = &node.backend {
        tokio::spawn(b.clone().probe(stop_rx.clone()));
    }
    tokio::spawn(socketio::emitter::run(node.clone(), stop_rx.clone()));
    // The exporter keeps every histogram sample until upkeep folds it into
    // the buckets; at millions of deliveries per second, waiting for the
    // next scrape would hold millions of samples, so fold them every second.
    let upkeep = node.prometheus.clone();
    let mut upkeep_stop = stop_rx.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => upkeep.run_upkeep(),
                _ = wait_true(&mut upkeep_stop) => return,
            }
        }
    });
    let http_task = tokio::spawn(server::serve(node.clone(), http, stop_rx.clone()));
    let grpc_task = tokio::spawn(serve_grpc(node.clone(), grpc, stop_rx.clone()));
    tracing::info!(
        node = %node.config.node_id,
        http = %http_addr,
        grpc = %grpc_addr,
        adapter = ?node.config.adapter,
        "roomcast node started"
    );

    if node.config.demo {
        // The demo's backend talks to this node's gRPC port like any backend.
        let port = grpc_addr.port();
        let host = if grpc_addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            grpc_addr.ip().to_string()
        };
        let scheme = if node.config.grpc_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let endpoint = format!("{scheme}://{host}:{port}");
        let mut drain = node.draining();
        tokio::spawn(demo::run_feeds_with_token(
            endpoint,
            node.config.grpc_token.clone(),
            async move {
                wait_true(&mut drain).await;
            },
        ));
    }

    shutdown.await;
    tracing::info!("draining: closing sessions with 1001");
    node.draining.send_replace(true);
    node.metrics.ready.set(0.0);
    let deadline = Instant::now() + node.config.drain_timeout;
    while node.metrics.connections.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = node.metrics.connections.get();
    if left > 0 {
        tracing::warn!(left, "drain timeout passed with sessions still open");
    }
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), http_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), grpc_task).await;
    node.hub.adapter().shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves once the flag behind `rx` is true (or its sender is gone).
pub async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// The addresses the other nodes reach this one at (HTTP, gRPC): the
/// configured `advertise_address` (its host with the gRPC port for gRPC),
/// else the listen addresses, with this host's address in place of
/// 0.0.0.0 or [::].
fn advertised(configured: &str, http: SocketAddr, grpc: SocketAddr) -> (String, String) {
    if let Some((host, _)) = configured.rsplit_once(':') {
        return (configured.to_owned(), format!("{host}:{}", grpc.port()));
    }
    let here = |addr: SocketAddr| {
        if !addr.ip().is_unspecified() {
            return addr.to_string();
        }
        SocketAddr::new(host_address(addr.is_ipv4()), addr.port()).to_string()
    };
    (here(http), here(grpc))
}

/// This host's address on the network its default route leads to (no
/// packet is sent: connecting a UDP socket only picks the source address);
/// loopback when there is no such network.
fn host_address(v4: bool) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
    let (bind, probe): (IpAddr, SocketAddr) = if v4 {
        (
            Ipv4Addr::UNSPECIFIED.into(),
            "192.0.2.1:9".parse().expect("valid"),
        )
    } else {
        (
            Ipv6Addr::UNSPECIFIED.into(),
            "[2001:db8::1]:9".parse().expect("valid"),
        )
    };
    UdpSocket::bind((bind, 0))
        .and_then(|s| {
            s.connect(probe)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(if v4 {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        })
}

async fn serve_grpc(
    node: Arc<Node>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), RunError> {
    use roomcast_proto::v1::control_server::ControlServer;
    let (mut reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ControlServer<control::ControlService>>()
        .await;
    let check = control::TokenCheck::new(node.config.grpc_token.as_deref());
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(roomcast_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Grpc(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(roomcast_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| RunError::Grpc(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &node.config.grpc_tls {
        let read = |p: &std::path::Path, key: &'static str| {
            std::fs::read(p).map_err(|e| {
                RunError::Config(config::ConfigError::Invalid {
                    key: key.into(),
                    reason: format!("cannot read {}: {e}", p.display()),
                })
            })
        };
        let identity = tonic::transport::Identity::from_pem(
            read(cert, "grpc_tls_cert")?,
            read(key, "grpc_tls_key")?,
        );
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| RunError::Grpc(e.to_string()))?;
    }
    // While draining, health checks report NOT_SERVING.
    let mut drain = node.draining();
    tokio::spawn(async move {
        wait_true(&mut drain).await;
        reporter
            .set_not_serving::<ControlServer<control::ControlService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });
    // Publications up to `max_message_bytes` must decode, and those up to
    // twice as large too, so `Publish` itself refuses them with a message
    // naming the setting; past that, tonic's own limit answers OUT_OF_RANGE
    // before buffering more.
    let decode_limit = (2 * node.config.max_message_bytes + 64 * 1024).max(4 << 20);
    let control = tonic::service::interceptor::InterceptedService::new(
        ControlServer::new(control::ControlService::new(node.clone()))
            .max_decoding_message_size(decode_limit),
        check.clone(),
    );
    builder
        .add_service(health)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            reflection_alpha,
            check,
        ))
        .add_service(control)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                crate::wait_true(&mut stop).await;
            },
        )
        .await
        .map_err(|e| RunError::Grpc(e.to_string()))
}
