//! Configuration: built-in defaults < TOML file < environment < flags.
//!
//! Flags and environment variables are read by clap (each flag names its
//! variable); the file is read key by key so a bad value is reported as one
//! line naming the key. Every limit of the node is here, with its default.

use clap::Parser;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value (from file, environment or flag).
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The key as written in the config file (flags use the same words
        /// with dashes).
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// Which adapter connects this node to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdapterKind {
    /// In-process only: a single node.
    Memory,
    /// Redis pub/sub, sharded over `--redis-url`s.
    Redis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What happens when a session's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the session with 4008 (the default).
    Disconnect,
    /// Drop the oldest queued publications to make room (danmaku).
    DropOldest,
    /// Keep only the newest queued publication per key (quotes).
    LatestPerKey,
}

/// Options of a namespace (the part of a room name before the first `.` or `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Clients may publish (backends always may).
    pub client_publish: bool,
    /// Publications kept per room; 0 keeps none.
    pub history_size: usize,
    /// How long a room's history lives after its last publication.
    pub history_ttl: Duration,
    /// Subscribers get join/leave events.
    pub join_leave: bool,
    /// Clients may ask who is in a room.
    pub presence: bool,
    /// Slow consumer policy.
    pub overflow: OverflowPolicy,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            client_publish: true,
            history_size: 0,
            history_ttl: Duration::from_secs(300),
            join_leave: false,
            presence: false,
            overflow: OverflowPolicy::Disconnect,
        }
    }
}

impl NamespaceOptions {
    /// The adapter's view of the history settings.
    pub fn history(&self) -> roomcast_adapter::HistoryOptions {
        roomcast_adapter::HistoryOptions {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }
}

/// Namespace options by name, with `default` for the rest.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    default: NamespaceOptions,
    named: HashMap<String, NamespaceOptions>,
}

impl Namespaces {
    /// The options of the namespace of `room`.
    pub fn for_room(&self, room: &str) -> &NamespaceOptions {
        let end = room.find(['.', ':']).unwrap_or(room.len());
        self.named.get(&room[..end]).unwrap_or(&self.default)
    }

    /// Sets a namespace's options (`default` sets the fallback).
    pub fn set(&mut self, name: &str, options: NamespaceOptions) {
        if name == "default" {
            self.default = options;
        } else {
            self.named.insert(name.to_owned(), options);
        }
    }

    fn has(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }
}

/// JWT verification settings.
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(String),
    /// RS256/ES256 public key, PEM.
    PublicKeyPem(Vec<u8>),
}

/// The node's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP + WebSocket listener.
    pub listen: SocketAddr,
    /// gRPC listener.
    pub grpc_listen: SocketAddr,
    /// Adapter kind.
    pub adapter: AdapterKind,
    /// One Redis URL per shard.
    pub redis_urls: Vec<String>,
    /// Heartbeat: WebSocket Ping period.
    pub ping_interval: Duration,
    /// Heartbeat: close after this long without anything from the client after a Ping.
    pub ping_timeout: Duration,
    /// Largest client message (across fragments).
    pub max_message_bytes: usize,
    /// Allowed `Origin`s; empty allows any.
    pub allowed_origins: Vec<String>,
    /// This node's id.
    pub node_id: String,
    /// How long SIGTERM waits for sessions to close.
    pub drain_timeout: Duration,
    /// Outbound bytes queued per session before the overflow policy applies.
    pub max_queue_bytes: usize,
    /// Most open WebSocket sessions on this node; 0 is unlimited.
    pub max_connections: usize,
    /// New WebSocket upgrades accepted per second (burst of the same size); 0 is unlimited.
    pub connection_rate: u32,
    /// Commands per second per session (burst of the same size); 0 is unlimited.
    pub command_rate: u32,
    /// Rooms one session may be subscribed to.
    pub max_rooms_per_session: usize,
    /// With auth on, sessions that have not authenticated by then are closed.
    pub connect_timeout: Duration,
    /// Time allowed for a client to send its HTTP request headers.
    pub handshake_timeout: Duration,
    /// JWT auth; `None` allows everything.
    pub jwt: Option<JwtKey>,
    /// Bearer token required on gRPC calls.
    pub grpc_token: Option<String>,
    /// gRPC TLS certificate and key (PEM files).
    pub grpc_tls: Option<(PathBuf, PathBuf)>,
    /// Log format.
    pub log_format: LogFormat,
    /// Serve the demo page and its feeds.
    pub demo: bool,
    /// Serve `/echo`.
    pub echo: bool,
    /// Namespace options.
    pub namespaces: Namespaces,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".parse().expect("valid"),
            grpc_listen: "0.0.0.0:50051".parse().expect("valid"),
            adapter: AdapterKind::Memory,
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_message_bytes: 64 * 1024,
            allowed_origins: Vec::new(),
            node_id: String::new(),
            drain_timeout: Duration::from_secs(30),
            max_queue_bytes: 1024 * 1024,
            max_connections: 0,
            connection_rate: 0,
            command_rate: 100,
            max_rooms_per_session: 1000,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            jwt: None,
            grpc_token: None,
            grpc_tls: None,
            log_format: LogFormat::Text,
            demo: false,
            echo: false,
            namespaces: Namespaces::default(),
        }
    }
}

/// Parses a duration such as `25s`, `500ms`, `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 25s, 500ms, 5m"))
}

/// Parses a size such as `64KiB`, `1MiB`, `65536`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 65536, 64KiB, 1MiB"))?;
    let mul = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" | "kB" | "KB" => 1024,
        "MiB" | "M" | "MB" => 1024 * 1024,
        "GiB" | "G" | "GB" => 1024 * 1024 * 1024,
        u => return Err(format!("{s:?}: unknown unit {u:?}; use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Command-line flags; each reads its environment variable when not given.
#[derive(Debug, Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Roomcast: a horizontally scaled WebSocket pub/sub gateway node"
)]
pub struct Cli {
    /// TOML config file (see docs/operations.md); flags and environment override it.
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP + WebSocket listen address [default: 0.0.0.0:8080]
    #[arg(long, env = "ROOMCAST_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// gRPC control plane listen address [default: 0.0.0.0:50051]
    #[arg(long, env = "ROOMCAST_GRPC_LISTEN", value_name = "ADDR")]
    pub grpc_listen: Option<String>,
    /// How nodes share publications [default: memory]
    #[arg(long, env = "ROOMCAST_ADAPTER", value_enum)]
    pub adapter: Option<AdapterKind>,
    /// Redis URL, one per shard (repeatable; comma-separated in the environment) [default: redis://127.0.0.1:6379]
    #[arg(
        long = "redis-url",
        env = "ROOMCAST_REDIS_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub redis_url: Vec<String>,
    /// WebSocket Ping period [default: 25s]
    #[arg(long, env = "ROOMCAST_PING_INTERVAL", value_name = "DURATION")]
    pub ping_interval: Option<String>,
    /// Close a session silent this long after a Ping, with 4009 [default: 20s]
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT", value_name = "DURATION")]
    pub ping_timeout: Option<String>,
    /// Largest client message, across fragments; larger closes with 1009 [default: 64KiB]
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_BYTES", value_name = "SIZE")]
    pub max_message_bytes: Option<String>,
    /// Allowed browser Origin (repeatable; comma-separated in the environment) [default: any]
    #[arg(
        long = "allowed-origin",
        env = "ROOMCAST_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub allowed_origin: Vec<String>,
    /// Node id [default: generated at start]
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// On SIGTERM/SIGINT, how long to wait for sessions to close [default: 30s]
    #[arg(long, env = "ROOMCAST_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Outbound bytes queued per session before its overflow policy applies [default: 1MiB]
    #[arg(long, env = "ROOMCAST_MAX_QUEUE_BYTES", value_name = "SIZE")]
    pub max_queue_bytes: Option<String>,
    /// Most open WebSocket sessions on this node; more are refused with 503; 0 = unlimited [default: 0]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// New WebSocket upgrades per second; more are refused with 503; 0 = unlimited [default: 0]
    #[arg(long, env = "ROOMCAST_CONNECTION_RATE", value_name = "N")]
    pub connection_rate: Option<u32>,
    /// Commands per second per session; more get `too_many_requests`; 0 = unlimited [default: 100]
    #[arg(long, env = "ROOMCAST_COMMAND_RATE", value_name = "N")]
    pub command_rate: Option<u32>,
    /// Rooms one session may be subscribed to [default: 1000]
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SESSION", value_name = "N")]
    pub max_rooms_per_session: Option<usize>,
    /// With auth on, close sessions not authenticated within this time (4001) [default: 10s]
    #[arg(long, env = "ROOMCAST_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time a client has to send its HTTP request headers [default: 10s]
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// HS256 shared secret; turns JWT auth on
    #[arg(
        long,
        env = "ROOMCAST_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// RS256/ES256 public key (PEM file); turns JWT auth on
    #[arg(long, env = "ROOMCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// Bearer token every gRPC call must carry (health checks excepted)
    #[arg(
        long,
        env = "ROOMCAST_GRPC_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub grpc_token: Option<String>,
    /// TLS certificate (PEM) for the gRPC listener; needs --grpc-tls-key
    #[arg(long, env = "ROOMCAST_GRPC_TLS_CERT", value_name = "FILE")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) for the gRPC listener; needs --grpc-tls-cert
    #[arg(long, env = "ROOMCAST_GRPC_TLS_KEY", value_name = "FILE")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Log format; the level filter comes from RUST_LOG (e.g. info, roomcast=debug) [default: text]
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve the demo page at / with its clock and ticker feeds (implies --echo)
    #[arg(long, env = "ROOMCAST_DEMO")]
    pub demo: bool,
    /// Serve the raw WebSocket echo endpoint at /echo
    #[arg(long, env = "ROOMCAST_ECHO")]
    pub echo: bool,
}

fn addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| invalid(key, format!("{s:?} is not an address like 0.0.0.0:8080")))
}

/// Reads typed values out of the file's TOML table, naming the key on error.
struct FileReader<'a> {
    table: &'a toml::Table,
    prefix: String,
}

impl FileReader<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    fn str(&self, k: &str) -> Result<Option<String>, ConfigError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(invalid(
                &self.key(k),
                format!("expected a string, found {}", v.type_str()),
            )),
        }
    }

    fn duration(&self, k: &str) -> Result<Option<Duration>, ConfigError> {
        self.str(k)?
            .map(|s| parse_duration(&s).map_err(|e| invalid(&self.key(k), e)))
            .transpose()
    }

    fn size(&self, k: &str) -> Result<Option<usize>, ConfigError> {
        match self.table.get(k) {
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as usize)),
            Some(toml::Value::String(s)) => parse_size(s)
                .map(Some)
                .map_err(|e| invalid(&self.key(k), e)),
            None => Ok(None),
            Some(v) => Err(invalid(&self.key(k), format!("expected a size, found {v}"))),
        }
    }

    fn uint(&self, k: &str) -> Result<Option<u64>, ConfigError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n as u64)),
            Some(v) => Err(invalid(
                &self.key(k),
                format!("expected a non-negative integer, found {v}"),
            )),
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>, ConfigError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(v) => Err(invalid(
                &self.key(k),
                format!("expected true or false, found {v}"),
            )),
        }
    }

    fn list(&self, k: &str) -> Result<Option<Vec<String>>, ConfigError> {
        match self.table.get(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => Err(invalid(
                        &self.key(k),
                        format!("expected strings, found {other}"),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(invalid(
                &self.key(k),
                format!("expected a list of strings, found {v}"),
            )),
        }
    }

    fn check_keys(&self, known: &[&str]) -> Result<(), ConfigError> {
        for k in self.table.keys() {
            if !known.contains(&k.as_str()) {
                return Err(invalid(&self.key(k), "unknown key"));
            }
        }
        Ok(())
    }
}

const TOP_KEYS: &[&str] = &[
    "listen",
    "grpc_listen",
    "adapter",
    "redis_url",
    "redis_urls",
    "ping_interval",
    "ping_timeout",
    "max_message_bytes",
    "allowed_origins",
    "node_id",
    "drain_timeout",
    "max_queue_bytes",
    "max_connections",
    "connection_rate",
    "command_rate",
    "max_rooms_per_session",
    "connect_timeout",
    "handshake_timeout",
    "jwt_secret",
    "jwt_public_key",
    "grpc_token",
    "grpc_tls_cert",
    "grpc_tls_key",
    "log_format",
    "demo",
    "echo",
    "namespaces",
];
const NAMESPACE_KEYS: &[&str] = &[
    "client_publish",
    "history_size",
    "history_ttl",
    "join_leave",
    "presence",
    "overflow",
];

fn namespace(r: &FileReader<'_>, base: &NamespaceOptions) -> Result<NamespaceOptions, ConfigError> {
    r.check_keys(NAMESPACE_KEYS)?;
    let mut o = base.clone();
    if let Some(v) = r.boolean("client_publish")? {
        o.client_publish = v;
    }
    if let Some(v) = r.uint("history_size")? {
        o.history_size = v as usize;
    }
    if let Some(v) = r.duration("history_ttl")? {
        o.history_ttl = v;
    }
    if let Some(v) = r.boolean("join_leave")? {
        o.join_leave = v;
    }
    if let Some(v) = r.boolean("presence")? {
        o.presence = v;
    }
    if let Some(v) = r.str("overflow")? {
        o.overflow = match v.as_str() {
            "disconnect" => OverflowPolicy::Disconnect,
            "drop_oldest" => OverflowPolicy::DropOldest,
            "latest_per_key" => OverflowPolicy::LatestPerKey,
            other => {
                return Err(invalid(
                    &r.key("overflow"),
                    format!("{other:?}: expected disconnect, drop_oldest or latest_per_key"),
                ))
            }
        };
    }
    Ok(o)
}

impl Config {
    /// Builds the configuration from command-line arguments (the first is
    /// the program name) and the environment. Clap errors (including
    /// `--help`) are returned as `Err(Left)`.
    pub fn load<I, T>(args: I) -> Result<Result<Config, ConfigError>, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        Ok(Self::from_cli(cli))
    }

    /// Layers the file (if any) and then flags/environment over the defaults.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = &cli.config {
            c.apply_file(path)?;
        }
        c.apply_cli(cli)?;
        c.validate()?;
        if c.node_id.is_empty() {
            c.node_id = generated_node_id();
        }
        Ok(c)
    }

    fn apply_file(&mut self, path: &std::path::Path) -> Result<(), ConfigError> {
        let file_err = |reason: String| ConfigError::File {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.message().to_owned()))?;
        let r = FileReader {
            table: &table,
            prefix: String::new(),
        };
        r.check_keys(TOP_KEYS)?;
        if let Some(v) = r.str("listen")? {
            self.listen = addr("listen", &v)?;
        }
        if let Some(v) = r.str("grpc_listen")? {
            self.grpc_listen = addr("grpc_listen", &v)?;
        }
        if let Some(v) = r.str("adapter")? {
            self.adapter = match v.as_str() {
                "memory" => AdapterKind::Memory,
                "redis" => AdapterKind::Redis,
                other => {
                    return Err(invalid(
                        "adapter",
                        format!("{other:?}: expected memory or redis"),
                    ))
                }
            };
        }
        for k in ["redis_url", "redis_urls"] {
            if let Some(v) = r.list(k)? {
                self.redis_urls = v;
            }
        }
        if let Some(v) = r.duration("ping_interval")? {
            self.ping_interval = v;
        }
        if let Some(v) = r.duration("ping_timeout")? {
            self.ping_timeout = v;
        }
        if let Some(v) = r.size("max_message_bytes")? {
            self.max_message_bytes = v;
        }
        if let Some(v) = r.list("allowed_origins")? {
            self.allowed_origins = v;
        }
        if let Some(v) = r.str("node_id")? {
            self.node_id = v;
        }
        if let Some(v) = r.duration("drain_timeout")? {
            self.drain_timeout = v;
        }
        if let Some(v) = r.size("max_queue_bytes")? {
            self.max_queue_bytes = v;
        }
        if let Some(v) = r.uint("max_connections")? {
            self.max_connections = v as usize;
        }
        if let Some(v) = r.uint("connection_rate")? {
            self.connection_rate =
                u32::try_from(v).map_err(|_| invalid("connection_rate", "too large"))?;
        }
        if let Some(v) = r.uint("command_rate")? {
            self.command_rate =
                u32::try_from(v).map_err(|_| invalid("command_rate", "too large"))?;
        }
        if let Some(v) = r.uint("max_rooms_per_session")? {
            self.max_rooms_per_session = v as usize;
        }
        if let Some(v) = r.duration("connect_timeout")? {
            self.connect_timeout = v;
        }
        if let Some(v) = r.duration("handshake_timeout")? {
            self.handshake_timeout = v;
        }
        if let Some(v) = r.str("jwt_secret")? {
            self.jwt = Some(JwtKey::Secret(v));
        }
        if let Some(v) = r.str("jwt_public_key")? {
            self.jwt = Some(read_key("jwt_public_key", &PathBuf::from(v))?);
        }
        if let Some(v) = r.str("grpc_token")? {
            self.grpc_token = Some(v);
        }
        if let (Some(c), Some(k)) = (r.str("grpc_tls_cert")?, r.str("grpc_tls_key")?) {
            self.grpc_tls = Some((c.into(), k.into()));
        }
        if let Some(v) = r.str("log_format")? {
            self.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "log_format",
                        format!("{other:?}: expected text or json"),
                    ))
                }
            };
        }
        if let Some(v) = r.boolean("demo")? {
            self.demo = v;
        }
        if let Some(v) = r.boolean("echo")? {
            self.echo = v;
        }
        if let Some(ns) = table.get("namespaces") {
            let toml::Value::Table(ns) = ns else {
                return Err(invalid(
                    "namespaces",
                    "expected a table of [namespaces.NAME] sections",
                ));
            };
            // `default` first: the other namespaces start from it.
            let mut names: Vec<&String> = ns.keys().collect();
            names.sort_by_key(|n| n.as_str() != "default");
            for name in names {
                let toml::Value::Table(t) = &ns[name] else {
                    return Err(invalid(&format!("namespaces.{name}"), "expected a table"));
                };
                if !valid_namespace(name) {
                    return Err(invalid(
                        &format!("namespaces.{name}"),
                        "a namespace name is 1-200 bytes of [A-Za-z0-9_@/-]",
                    ));
                }
                let r = FileReader {
                    table: t,
                    prefix: format!("namespaces.{name}."),
                };
                let base = self.namespaces.default.clone();
                let o = namespace(&r, &base)?;
                self.namespaces.set(name, o);
            }
        }
        Ok(())
    }

    fn apply_cli(&mut self, cli: Cli) -> Result<(), ConfigError> {
        if let Some(v) = cli.listen {
            self.listen = addr("listen", &v)?;
        }
        if let Some(v) = cli.grpc_listen {
            self.grpc_listen = addr("grpc_listen", &v)?;
        }
        if let Some(v) = cli.adapter {
            self.adapter = v;
        }
        let urls: Vec<String> = cli
            .redis_url
            .into_iter()
            .filter(|u| !u.trim().is_empty())
            .collect();
        if !urls.is_empty() {
            self.redis_urls = urls;
        }
        let dur = |key: &str, v: Option<String>| -> Result<Option<Duration>, ConfigError> {
            v.map(|s| parse_duration(&s).map_err(|e| invalid(key, e)))
                .transpose()
        };
        if let Some(v) = dur("ping_interval", cli.ping_interval)? {
            self.ping_interval = v;
        }
        if let Some(v) = dur("ping_timeout", cli.ping_timeout)? {
            self.ping_timeout = v;
        }
        if let Some(v) = dur("drain_timeout", cli.drain_timeout)? {
            self.drain_timeout = v;
        }
        if let Some(v) = dur("connect_timeout", cli.connect_timeout)? {
            self.connect_timeout = v;
        }
        if let Some(v) = dur("handshake_timeout", cli.handshake_timeout)? {
            self.handshake_timeout = v;
        }
        if let Some(v) = cli.max_message_bytes {
            self.max_message_bytes = parse_size(&v).map_err(|e| invalid("max_message_bytes", e))?;
        }
        if let Some(v) = cli.max_queue_bytes {
            self.max_queue_bytes = parse_size(&v).map_err(|e| invalid("max_queue_bytes", e))?;
        }
        let origins: Vec<String> = cli
            .allowed_origin
            .into_iter()
            .filter(|o| !o.trim().is_empty())
            .collect();
        if !origins.is_empty() {
            self.allowed_origins = origins;
        }
        if let Some(v) = cli.node_id {
            self.node_id = v;
        }
        if let Some(v) = cli.max_connections {
            self.max_connections = v;
        }
        if let Some(v) = cli.connection_rate {
            self.connection_rate = v;
        }
        if let Some(v) = cli.command_rate {
            self.command_rate = v;
        }
        if let Some(v) = cli.max_rooms_per_session {
            self.max_rooms_per_session = v;
        }
        if let Some(v) = cli.jwt_secret {
            self.jwt = Some(JwtKey::Secret(v));
        }
        if let Some(v) = cli.jwt_public_key {
            self.jwt = Some(read_key("jwt_public_key", &v)?);
        }
        if let Some(v) = cli.grpc_token {
            self.grpc_token = Some(v);
        }
        match (cli.grpc_tls_cert, cli.grpc_tls_key) {
            (Some(c), Some(k)) => self.grpc_tls = Some((c, k)),
            (None, None) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "grpc_tls_key",
                    "--grpc-tls-cert needs --grpc-tls-key",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "grpc_tls_cert",
                    "--grpc-tls-key needs --grpc-tls-cert",
                ))
            }
        }
        if let Some(v) = cli.log_format {
            self.log_format = v;
        }
        self.demo |= cli.demo;
        self.echo |= cli.echo || self.demo;
        if self.demo {
            self.add_demo_namespaces();
        }
        Ok(())
    }

    /// The namespaces the demo page uses, unless the file set them already.
    fn add_demo_namespaces(&mut self) {
        let d = NamespaceOptions::default();
        let demo = [
            (
                "chat",
                NamespaceOptions {
                    history_size: 100,
                    history_ttl: Duration::from_secs(600),
                    join_leave: true,
                    presence: true,
                    ..d.clone()
                },
            ),
            (
                "quotes",
                NamespaceOptions {
                    client_publish: false,
                    history_size: 10,
                    history_ttl: Duration::from_secs(60),
                    overflow: OverflowPolicy::LatestPerKey,
                    ..d.clone()
                },
            ),
            (
                "clock",
                NamespaceOptions {
                    client_publish: false,
                    history_size: 1,
                    history_ttl: Duration::from_secs(60),
                    ..d.clone()
                },
            ),
            (
                "danmaku",
                NamespaceOptions {
                    overflow: OverflowPolicy::DropOldest,
                    ..d.clone()
                },
            ),
        ];
        for (name, o) in demo {
            if !self.namespaces.has(name) {
                self.namespaces.set(name, o);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.ping_interval.is_zero() {
            return Err(invalid("ping_interval", "must be greater than 0"));
        }
        if self.ping_timeout.is_zero() {
            return Err(invalid("ping_timeout", "must be greater than 0"));
        }
        if self.max_message_bytes < 125 {
            return Err(invalid("max_message_bytes", "must be at least 125 bytes"));
        }
        if self.max_queue_bytes < self.max_message_bytes.min(64 * 1024) {
            return Err(invalid(
                "max_queue_bytes",
                "must be at least 64KiB (or max_message_bytes if smaller)",
            ));
        }
        if self.adapter == AdapterKind::Redis {
            if self.redis_urls.is_empty() {
                return Err(invalid(
                    "redis_url",
                    "the redis adapter needs at least one URL",
                ));
            }
            for u in &self.redis_urls {
                if !(u.starts_with("redis://")
                    || u.starts_with("rediss://")
                    || u.starts_with("redis+unix://")
                    || u.starts_with("unix://"))
                {
                    return Err(invalid("redis_url", format!("{u:?} is not a redis:// URL")));
                }
            }
        }
        if let Some(t) = &self.grpc_token {
            if t.is_empty() {
                return Err(invalid("grpc_token", "must not be empty"));
            }
        }
        if let Some(JwtKey::Secret(s)) = &self.jwt {
            if s.is_empty() {
                return Err(invalid("jwt_secret", "must not be empty"));
            }
        }
        Ok(())
    }
}

fn read_key(key: &str, path: &std::path::Path) -> Result<JwtKey, ConfigError> {
    std::fs::read(path)
        .map(JwtKey::PublicKeyPem)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

fn valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_@/-".contains(&b))
}

fn generated_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12XB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn namespaces_resolve_by_prefix() {
        let mut n = Namespaces::default();
        n.set(
            "chat",
            NamespaceOptions {
                history_size: 5,
                ..Default::default()
            },
        );
        assert_eq!(n.for_room("chat.lobby").history_size, 5);
        assert_eq!(n.for_room("chat:lobby").history_size, 5);
        assert_eq!(n.for_room("chat").history_size, 5);
        assert_eq!(n.for_room("chatter.x").history_size, 0);
    }
}
