//! Configuration: built-in defaults < TOML file < environment < flags.
//!
//! The whole configuration is one tree of serde types ([`Config`] and the
//! types of its fields), each with `deny_unknown_fields` and its defaults
//! declared once in its `Default`. The `config` crate layers the sources:
//! the file, then the `ROOMCAST_*` variables the flags name, then the flags
//! given on the command line; serde then reads the merged tree. clap reads
//! the command line and documents every flag and variable in `--help`.
//!
//! A new section is a new field of a type here; nothing is read by hand.
//! Whatever is wrong is reported as one [`ConfigError`] naming the key.

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
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
        /// with dashes, variables the same words in capitals after `ROOMCAST_`).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum AdapterKind {
    /// In-process only: a single node.
    Memory,
    /// Redis pub/sub, sharded over `--redis-url`s.
    Redis,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What happens when a session's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
#[value(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// Close the session with 4008 (the default).
    Disconnect,
    /// Drop the oldest queued publications to make room (danmaku).
    DropOldest,
    /// Keep only the newest queued publication per key (quotes).
    LatestPerKey,
}

/// Reads a setting that takes one of a few words, naming them when it is
/// none of them (serde's own message names the Rust type instead).
fn one_of<T: clap::ValueEnum>(s: &str) -> Result<T, String> {
    T::from_str(s, false).map_err(|_| {
        let words: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_owned())
            .collect();
        format!("{s:?} is not one of {}", words.join(", "))
    })
}

macro_rules! from_words {
    ($($t:ty),*) => {$(
        impl TryFrom<String> for $t {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                one_of(&s)
            }
        }
    )*};
}

from_words!(AdapterKind, LogFormat, OverflowPolicy);

/// Options of a namespace (the part of a room name before the first `.` or `:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceOptions {
    /// Clients may publish (backends always may).
    pub client_publish: bool,
    /// Publications kept per room; 0 keeps none.
    pub history_size: usize,
    /// How long a room's history lives after its last publication.
    #[serde(with = "duration")]
    pub history_ttl: Duration,
    /// Subscribers get join/leave events.
    pub join_leave: bool,
    /// Clients may ask who is in a room.
    pub presence: bool,
    /// Slow consumer policy.
    pub overflow: OverflowPolicy,
    /// The backend decides each client subscribe (`Subscribe` hook).
    pub subscribe_hook: bool,
    /// The backend decides each client publish and may replace its data
    /// (`Publish` hook).
    pub publish_hook: bool,
    /// Clients may call the backend's methods in this namespace (`Rpc`).
    pub rpc: bool,
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
            subscribe_hook: false,
            publish_hook: false,
            rpc: false,
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

/// One `[namespaces.NAME]` section as written: what it leaves out comes
/// from `[namespaces.default]`, so every field is optional here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceSection {
    client_publish: Option<bool>,
    history_size: Option<usize>,
    #[serde(default, with = "duration::option")]
    history_ttl: Option<Duration>,
    join_leave: Option<bool>,
    presence: Option<bool>,
    overflow: Option<OverflowPolicy>,
    subscribe_hook: Option<bool>,
    publish_hook: Option<bool>,
    rpc: Option<bool>,
}

impl NamespaceSection {
    fn over(self, base: &NamespaceOptions) -> NamespaceOptions {
        NamespaceOptions {
            client_publish: self.client_publish.unwrap_or(base.client_publish),
            history_size: self.history_size.unwrap_or(base.history_size),
            history_ttl: self.history_ttl.unwrap_or(base.history_ttl),
            join_leave: self.join_leave.unwrap_or(base.join_leave),
            presence: self.presence.unwrap_or(base.presence),
            overflow: self.overflow.unwrap_or(base.overflow),
            subscribe_hook: self.subscribe_hook.unwrap_or(base.subscribe_hook),
            publish_hook: self.publish_hook.unwrap_or(base.publish_hook),
            rpc: self.rpc.unwrap_or(base.rpc),
        }
    }
}

/// Namespace options by name, with `default` for the rest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<String, NamespaceSection>",
    into = "BTreeMap<String, NamespaceOptions>"
)]
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

    /// Every namespace's options, `default` first, with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &NamespaceOptions)> {
        std::iter::once(("default", &self.default))
            .chain(self.named.iter().map(|(n, o)| (n.as_str(), o)))
    }
}

impl TryFrom<BTreeMap<String, NamespaceSection>> for Namespaces {
    type Error = String;

    fn try_from(mut sections: BTreeMap<String, NamespaceSection>) -> Result<Self, String> {
        // `default` first: the other namespaces start from it.
        let default = sections
            .remove("default")
            .unwrap_or_default()
            .over(&NamespaceOptions::default());
        let mut namespaces = Namespaces {
            default,
            named: HashMap::new(),
        };
        for (name, section) in sections {
            if !valid_namespace(&name) {
                return Err(format!(
                    "{name:?} is not a namespace name (1-200 bytes of [A-Za-z0-9_@/-])"
                ));
            }
            let options = section.over(&namespaces.default);
            namespaces.named.insert(name, options);
        }
        Ok(namespaces)
    }
}

impl From<Namespaces> for BTreeMap<String, NamespaceOptions> {
    fn from(n: Namespaces) -> Self {
        let mut out: BTreeMap<_, _> = n.named.into_iter().collect();
        out.insert("default".to_owned(), n.default);
        out
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

/// socket.io compatibility: `[socketio]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoConfig {
    /// Serve socket.io clients.
    pub enabled: bool,
    /// Path on the HTTP listener.
    pub path: String,
    /// socket.io namespaces clients may connect to.
    pub namespaces: Vec<String>,
    /// Rooms every socket joins when it connects.
    pub join: Vec<String>,
    /// Events that publish into a room, `[socketio.events.NAME]`.
    pub events: BTreeMap<String, EventRoute>,
    /// Engine.IO heartbeat period; the node's `ping_interval` when unset.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<Duration>,
    /// Engine.IO heartbeat timeout; the node's `ping_timeout` when unset.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub ping_timeout: Option<Duration>,
    /// Origins allowed to poll (CORS); the node's `allowed_origins` when empty.
    #[serde(with = "list")]
    pub cors_origins: Vec<String>,
    /// Answer CORS with `Access-Control-Allow-Credentials: true`.
    pub cors_credentials: bool,
    /// Connection state recovery: how long a disconnected socket's state is
    /// kept; off when unset.
    #[serde(with = "duration::option", skip_serializing_if = "Option::is_none")]
    pub recovery: Option<Duration>,
    /// Largest long-polling request body (Engine.IO `maxPayload`).
    #[serde(with = "size")]
    pub max_payload: usize,
    /// Serve the official protocol test suites' server instead (testing only).
    pub conformance: bool,
    /// Messages from `@socket.io/redis-emitter`, `[socketio.emitter]`.
    pub emitter: EmitterConfig,
}

/// `[socketio.emitter]`: where Node backends push with
/// `@socket.io/redis-emitter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmitterConfig {
    /// Listen for the emitter's messages.
    pub enabled: bool,
    /// The emitter's Redis; the adapter's first Redis URL when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// The emitter's key prefix (its `key` option).
    pub key: String,
}

impl Default for EmitterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            redis_url: None,
            key: "socket.io".into(),
        }
    }
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/socket.io/".into(),
            namespaces: vec!["/".into()],
            join: Vec::new(),
            events: BTreeMap::new(),
            ping_interval: None,
            ping_timeout: None,
            cors_origins: Vec::new(),
            cors_credentials: false,
            recovery: None,
            max_payload: 1_000_000,
            conformance: false,
            emitter: EmitterConfig::default(),
        }
    }
}

/// Backend hooks: `[backend]`, the gRPC service `roomcast.v1.Backend` the
/// node calls (docs/backend.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Where the backend listens (`http://host:port`, or `https://` with
    /// `tls_ca`); hooks are off without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// How long one hook call may take before the client gets `internal`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Bearer token sent with every call. Never printed.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// CA certificate (PEM file) that signs an `https` backend's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Call `Connect` when a client connects.
    pub connect: bool,
    /// Call `Disconnected` when a session ends.
    pub disconnected: bool,
    /// Request headers (lower-case names) passed to `Connect`.
    #[serde(with = "list")]
    pub headers: Vec<String>,
    /// Hook calls in flight on this node; past it, calls are refused at once.
    pub max_concurrency: usize,
    /// Hook calls in flight for one session; past it, its calls are refused.
    pub max_per_session: usize,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            url: None,
            timeout: Duration::from_secs(2),
            token: None,
            tls_ca: None,
            connect: false,
            disconnected: false,
            headers: Vec::new(),
            max_concurrency: 1024,
            max_per_session: 8,
        }
    }
}

/// `[socketio.events.NAME]`: `emit(NAME, data)` publishes `data` to `room`
/// as the event `as` (NAME when unset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRoute {
    /// The room.
    pub room: String,
    /// The publication's event name.
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_event: Option<String>,
}

/// The node's whole configuration. Field names are the config file's keys;
/// `docs/configuration.md` lists each with its default, flag and variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP + WebSocket listener.
    #[serde(with = "address")]
    pub listen: SocketAddr,
    /// gRPC listener.
    #[serde(with = "address")]
    pub grpc_listen: SocketAddr,
    /// Adapter kind.
    pub adapter: AdapterKind,
    /// One Redis URL per shard (the file may spell it `redis_urls`).
    #[serde(rename = "redis_url", with = "list")]
    pub redis_urls: Vec<String>,
    /// Heartbeat: WebSocket Ping period.
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// Heartbeat: close after this long without anything from the client after a Ping.
    #[serde(with = "duration")]
    pub ping_timeout: Duration,
    /// Largest client message (across fragments).
    #[serde(with = "size")]
    pub max_message_bytes: usize,
    /// Allowed `Origin`s; empty allows any.
    #[serde(with = "list")]
    pub allowed_origins: Vec<String>,
    /// This node's id; empty until [`Config::load`] generates one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    /// `host:port` at which the other nodes reach this node's HTTP
    /// listener (socket.io requests for sessions this node owns); empty:
    /// the listen address, or this host's address when that is 0.0.0.0.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub advertise_address: String,
    /// How long SIGTERM waits for sessions to close.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Outbound bytes queued per session before the overflow policy applies.
    #[serde(with = "size")]
    pub max_queue_bytes: usize,
    /// Most open WebSocket sessions on this node; 0 is unlimited.
    pub max_connections: usize,
    /// New WebSocket upgrades accepted per second (burst of the same size); 0 is unlimited.
    pub connection_rate: u32,
    /// Commands per second per session (burst of the same size); 0 is unlimited.
    pub command_rate: u32,
    /// Rooms one session may be subscribed to.
    pub max_rooms_per_session: usize,
    /// Commands one client may have waiting on the adapter (publications in
    /// flight, subscribes, presence); the node reads no more of its
    /// commands until one finishes.
    pub max_pending_commands: usize,
    /// With auth on, sessions that have not authenticated by then are closed.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for a client to send its HTTP request headers.
    #[serde(with = "duration")]
    pub handshake_timeout: Duration,
    /// After the node sends its close frame, how long it waits for the
    /// client's before it closes the TCP connection anyway.
    #[serde(with = "duration")]
    pub close_grace: Duration,
    /// HS256 secret; turns JWT auth on. Never printed.
    #[serde(skip_serializing)]
    pub jwt_secret: Option<String>,
    /// RS256/ES256 public key file (PEM); turns JWT auth on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key: Option<PathBuf>,
    /// Bearer token required on gRPC calls. Never printed.
    #[serde(skip_serializing)]
    pub grpc_token: Option<String>,
    /// gRPC TLS certificate (PEM file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// gRPC TLS private key (PEM file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_tls_key: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Serve the demo page and its feeds (implies `echo`).
    pub demo: bool,
    /// Serve `/echo`.
    pub echo: bool,
    /// Namespace options, `[namespaces.NAME]`.
    pub namespaces: Namespaces,
    /// socket.io compatibility, `[socketio]`.
    pub socketio: SocketIoConfig,
    /// Backend hooks, `[backend]`.
    pub backend: BackendConfig,
    /// JWT verification, resolved from `jwt_secret` or `jwt_public_key`.
    #[serde(skip)]
    pub jwt: Option<JwtKey>,
    /// gRPC TLS certificate and key, resolved from the two keys above.
    #[serde(skip)]
    pub grpc_tls: Option<(PathBuf, PathBuf)>,
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
            advertise_address: String::new(),
            drain_timeout: Duration::from_secs(30),
            max_queue_bytes: 1024 * 1024,
            max_connections: 0,
            connection_rate: 0,
            command_rate: 100,
            max_rooms_per_session: 1000,
            max_pending_commands: 256,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            close_grace: Duration::from_secs(1),
            jwt_secret: None,
            jwt_public_key: None,
            grpc_token: None,
            grpc_tls_cert: None,
            grpc_tls_key: None,
            log_format: LogFormat::Text,
            demo: false,
            echo: false,
            namespaces: Namespaces::default(),
            socketio: SocketIoConfig::default(),
            backend: BackendConfig::default(),
            jwt: None,
            grpc_tls: None,
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

/// Writes a size the way [`parse_size`] reads it, in the largest exact unit.
pub fn format_size(n: usize) -> String {
    const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (mul, unit) in UNITS {
        if n >= mul && n.is_multiple_of(mul) {
            return format!("{}{unit}", n / mul);
        }
    }
    n.to_string()
}

/// Serde for durations written as `25s`, `500ms`, `5m`.
mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// For optional durations.
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        #[allow(dead_code)] // serde's `with` wants both halves
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// Serde for sizes written as `65536`, `64KiB`, `1MiB`.
mod size {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(n: &usize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_size(*n))
    }

    struct Visitor;

    impl de::Visitor<'_> for Visitor {
        type Value = usize;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size such as 65536, 64KiB or 1MiB")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            u64::try_from(v)
                .map_err(|_| E::custom(format!("{v} is not a size (negative)")))
                .and_then(|v| self.visit_u64(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
            super::parse_size(v).map_err(E::custom)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        d.deserialize_any(Visitor)
    }
}

/// Serde for listen addresses, with an error that shows the expected form.
mod address {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(a)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("{s:?} is not an address like 0.0.0.0:8080"))
        })
    }
}

/// Serde for lists of strings: a list, or one string with commas between
/// items (how the environment writes lists). Empty items are dropped.
mod list {
    use serde::{de, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v)
    }

    struct Visitor;

    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list of strings, or one string with commas between items")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                if !s.trim().is_empty() {
                    out.push(s);
                }
            }
            Ok(out)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_any(Visitor)
    }
}

/// Command-line flags; each names its environment variable. Both reach the
/// configuration through [`Config::load`], the variable below the flag.
#[derive(Debug, Parser)]
#[command(
    name = "roomcast",
    version,
    about = "Roomcast: a horizontally scaled WebSocket pub/sub gateway node",
    after_help = "Every flag is also a key of the config file (dashes become \
                  underscores; docs/configuration.md lists them all)."
)]
pub struct Cli {
    /// TOML config file (see docs/configuration.md); flags and environment override it.
    #[arg(long, env = "ROOMCAST_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML (defaults filled in, secrets left out) and exit
    #[arg(long)]
    pub print_config: bool,
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
    /// HOST:PORT at which the other nodes reach this node's HTTP listener, for socket.io requests that land on another node [default: the listen address; on 0.0.0.0, this host's address]
    #[arg(long, env = "ROOMCAST_ADVERTISE_ADDRESS", value_name = "HOST:PORT")]
    pub advertise_address: Option<String>,
    /// On SIGTERM/SIGINT, how long to wait for sessions to close [default: 30s]
    #[arg(long, env = "ROOMCAST_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Outbound bytes queued per session before its overflow policy applies [default: 1MiB]
    #[arg(long, env = "ROOMCAST_MAX_QUEUE_BYTES", value_name = "SIZE")]
    pub max_queue_bytes: Option<String>,
    /// Most open WebSocket sessions on this node; more are refused with 503; 0 = unlimited [default: 0]
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// New WebSocket upgrades per second; more are refused with 503; 0 = unlimited [default: 0]
    #[arg(long, env = "ROOMCAST_CONNECTION_RATE", value_name = "N")]
    pub connection_rate: Option<String>,
    /// Commands per second per session; more get `too_many_requests`; 0 = unlimited [default: 100]
    #[arg(long, env = "ROOMCAST_COMMAND_RATE", value_name = "N")]
    pub command_rate: Option<String>,
    /// Rooms one session may be subscribed to [default: 1000]
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_SESSION", value_name = "N")]
    pub max_rooms_per_session: Option<String>,
    /// Commands one client may have waiting on the adapter; the node reads no more of its commands until one finishes [default: 256]
    #[arg(long, env = "ROOMCAST_MAX_PENDING_COMMANDS", value_name = "N")]
    pub max_pending_commands: Option<String>,
    /// With auth on, close sessions not authenticated within this time (4001) [default: 10s]
    #[arg(long, env = "ROOMCAST_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time a client has to send its HTTP request headers [default: 10s]
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    pub handshake_timeout: Option<String>,
    /// After the node's close frame, how long to wait for the client's before closing TCP [default: 1s]
    #[arg(long, env = "ROOMCAST_CLOSE_GRACE", value_name = "DURATION")]
    pub close_grace: Option<String>,
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
    /// Serve socket.io clients (true or false) [default: true]
    #[arg(long, env = "ROOMCAST_SOCKETIO", value_name = "BOOL")]
    pub socketio: Option<String>,
    /// Path of socket.io on the HTTP listener [default: /socket.io/]
    #[arg(long, env = "ROOMCAST_SOCKETIO_PATH", value_name = "PATH")]
    pub socketio_path: Option<String>,
    /// Largest socket.io long-polling body or WebSocket message (Engine.IO maxPayload) [default: 1000000]
    #[arg(long, env = "ROOMCAST_SOCKETIO_MAX_PAYLOAD", value_name = "SIZE")]
    pub socketio_max_payload: Option<String>,
    /// Be the server of the official Engine.IO and Socket.IO protocol test suites (testing only)
    #[arg(long, env = "ROOMCAST_SOCKETIO_CONFORMANCE")]
    pub socketio_conformance: bool,
    /// The application's roomcast.v1.Backend gRPC service, e.g. http://127.0.0.1:50052; hooks are off without it
    #[arg(long, env = "ROOMCAST_BACKEND_URL", value_name = "URL")]
    pub backend_url: Option<String>,
    /// How long a backend hook call may take; past it the client gets `internal` [default: 2s]
    #[arg(long, env = "ROOMCAST_BACKEND_TIMEOUT", value_name = "DURATION")]
    pub backend_timeout: Option<String>,
    /// Bearer token sent with every backend call
    #[arg(
        long,
        env = "ROOMCAST_BACKEND_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub backend_token: Option<String>,
    /// CA certificate (PEM file) of an https backend
    #[arg(long, env = "ROOMCAST_BACKEND_TLS_CA", value_name = "FILE")]
    pub backend_tls_ca: Option<PathBuf>,
    /// Request header passed to the backend's Connect (repeatable; comma-separated in the environment)
    #[arg(
        long = "backend-header",
        env = "ROOMCAST_BACKEND_HEADERS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub backend_header: Vec<String>,
    /// Backend hook calls in flight on this node; more are refused at once [default: 1024]
    #[arg(long, env = "ROOMCAST_BACKEND_MAX_CONCURRENCY", value_name = "N")]
    pub backend_max_concurrency: Option<String>,
    /// Backend hook calls in flight for one session; more are refused at once [default: 8]
    #[arg(long, env = "ROOMCAST_BACKEND_MAX_PER_SESSION", value_name = "N")]
    pub backend_max_per_session: Option<String>,
}

/// Arguments of [`Cli`] that are not configuration keys.
const NOT_KEYS: &[&str] = &["config", "print_config"];

/// The configuration key a flag sets, where the two are spelled differently.
fn key_of_flag(id: &str) -> &str {
    match id {
        "allowed_origin" => "allowed_origins",
        "socketio" => "socketio.enabled",
        "socketio_path" => "socketio.path",
        "socketio_max_payload" => "socketio.max_payload",
        "socketio_conformance" => "socketio.conformance",
        "backend_url" => "backend.url",
        "backend_timeout" => "backend.timeout",
        "backend_token" => "backend.token",
        "backend_tls_ca" => "backend.tls_ca",
        "backend_header" => "backend.headers",
        "backend_max_concurrency" => "backend.max_concurrency",
        "backend_max_per_session" => "backend.max_per_session",
        other => other,
    }
}

/// Keys whose value is a list (a repeatable flag).
const LIST_KEYS: &[&str] = &["redis_url", "allowed_origins", "backend.headers"];

/// The environment's layer: values under the configuration keys their
/// variables name (`ROOMCAST_SOCKETIO_PATH` is `socketio.path`).
#[derive(Debug, Clone, Default)]
struct Layer(Vec<(String, ::config::Value)>);

impl Layer {
    fn set(&mut self, key: &str, value: &str) {
        let origin = Some("the environment".to_owned());
        let v = if LIST_KEYS.contains(&key) {
            let items: Vec<::config::Value> = value
                .split(',')
                .map(|s| ::config::Value::new(origin.as_ref(), s.trim()))
                .collect();
            ::config::Value::new(origin.as_ref(), items)
        } else {
            ::config::Value::new(origin.as_ref(), value)
        };
        self.0.push((key.to_owned(), v));
    }
}

impl ::config::Source for Layer {
    fn clone_into_box(&self) -> Box<dyn ::config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<::config::Map<String, ::config::Value>, ::config::ConfigError> {
        Ok(self.0.iter().cloned().collect())
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Startup {
    /// Run a node with this configuration.
    Run(Box<Config>),
    /// Print this configuration (TOML) and exit.
    PrintConfig(String),
}

impl Config {
    /// Builds the configuration from command-line arguments (the first is
    /// the program name) and the environment. Clap errors (including
    /// `--help`) are returned as the outer `Err`.
    pub fn load<I, T>(args: I) -> Result<Result<Startup, ConfigError>, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Ok(Self::layered(&cli, &matches, &env).map(|config| {
            if cli.print_config {
                Startup::PrintConfig(config.to_toml())
            } else {
                Startup::Run(Box::new(config.with_node_id()))
            }
        }))
    }

    /// Defaults < file < the environment's `ROOMCAST_*` variables that a
    /// flag names < flags on the command line. Variables no flag names
    /// (`ROOMCAST_BIN` of some script) are not configuration and are left alone.
    fn layered(
        cli: &Cli,
        matches: &clap::ArgMatches,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut builder = ::config::Config::builder();
        if let Some(path) = &cli.config {
            let file_err = |reason: String| ConfigError::File {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
            // Parsed here (not only by the `config` crate) for an error on
            // one line, and so the old spelling `redis_urls` meets the
            // environment's `ROOMCAST_REDIS_URL` under one key.
            let mut table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| file_err(one_line(&e.to_string())))?;
            if let Some(urls) = table.remove("redis_urls") {
                if table.insert("redis_url".to_owned(), urls).is_some() {
                    return Err(invalid(
                        "redis_url",
                        "set redis_url or redis_urls, not both",
                    ));
                }
            }
            builder = builder.add_source(::config::File::from_str(
                &table.to_string(),
                ::config::FileFormat::Toml,
            ));
        }

        let command = Cli::command();
        let mut variables = Layer::default();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_KEYS.contains(&id) {
                continue;
            }
            let Some(name) = arg.get_env().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some((_, value)) = env.iter().find(|(k, _)| k == name) {
                if !value.is_empty() {
                    variables.set(key_of_flag(id), value);
                }
            }
        }
        builder = builder.add_source(variables);

        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_KEYS.contains(&id) || matches.value_source(id) != Some(ValueSource::CommandLine)
            {
                continue;
            }
            let key = key_of_flag(id);
            let values: Vec<String> = matches
                .get_raw(id)
                .into_iter()
                .flatten()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let set = if LIST_KEYS.contains(&key) {
                builder.set_override(key, values)
            } else {
                builder.set_override(key, values.last().cloned().unwrap_or_default())
            };
            builder = set.map_err(|e| from_layers(&e))?;
        }

        let mut config: Config = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| from_layers(&e))?;
        config.resolve()?;
        Ok(config)
    }

    /// Fills in what follows from the keys: `--demo` implies `--echo` and
    /// its namespaces, the JWT key is read, the TLS pair is checked.
    fn resolve(&mut self) -> Result<(), ConfigError> {
        self.echo |= self.demo;
        if self.demo {
            self.add_demo_namespaces();
        }
        self.jwt = match (&self.jwt_secret, &self.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "jwt_secret",
                    "set jwt_secret (HS256) or jwt_public_key (RS256/ES256), not both",
                ))
            }
            (Some(s), None) => Some(JwtKey::Secret(s.clone())),
            (None, Some(path)) => Some(read_key("jwt_public_key", path)?),
            (None, None) => None,
        };
        if !self.socketio.path.ends_with('/') {
            self.socketio.path.push('/');
        }
        for h in &mut self.backend.headers {
            *h = h.trim().to_ascii_lowercase();
        }
        if self.socketio.conformance {
            // What the official protocol test suites expect of their server.
            self.socketio.enabled = true;
            self.socketio.namespaces = vec!["/".into(), "/custom".into()];
            self.socketio.ping_interval = Some(Duration::from_millis(300));
            self.socketio.ping_timeout = Some(Duration::from_millis(200));
            self.socketio.max_payload = 1_000_000;
            self.socketio.recovery = None;
            self.socketio.join.clear();
            self.socketio.events.clear();
        }
        self.grpc_tls = match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            (Some(_), None) => return Err(invalid("grpc_tls_key", "grpc_tls_cert needs it")),
            (None, Some(_)) => return Err(invalid("grpc_tls_cert", "grpc_tls_key needs it")),
        };
        self.validate()
    }

    fn validate_socketio(&self) -> Result<(), ConfigError> {
        let sio = &self.socketio;
        if !sio.path.starts_with('/') {
            return Err(invalid("socketio.path", "must start with /"));
        }
        for n in &sio.namespaces {
            if !n.starts_with('/') || n.contains([',', '?']) {
                return Err(invalid(
                    "socketio.namespaces",
                    format!("{n:?}: a namespace starts with / and has no , or ?"),
                ));
            }
        }
        if sio.namespaces.len() > usize::from(u16::MAX) {
            return Err(invalid("socketio.namespaces", "too many"));
        }
        for room in &sio.join {
            if !crate::client::valid_room(room) {
                return Err(invalid(
                    "socketio.join",
                    format!("{room:?} is not a room name (1 to 200 bytes of [A-Za-z0-9_.:@/-])"),
                ));
            }
        }
        for (name, route) in &sio.events {
            if !crate::client::valid_room(&route.room) {
                return Err(invalid(
                    &format!("socketio.events.{name}.room"),
                    format!("{:?} is not a room name", route.room),
                ));
            }
        }
        if sio.max_payload == 0 {
            return Err(invalid("socketio.max_payload", "must be greater than 0"));
        }
        let em = &sio.emitter;
        if em.key.is_empty() || em.key.contains(['*', '?', '[', ']']) {
            return Err(invalid(
                "socketio.emitter.key",
                "must be non-empty, without * ? [ ] (it prefixes a channel pattern)",
            ));
        }
        if let Some(url) = &em.redis_url {
            if let Err(e) = redis::Client::open(url.as_str()) {
                return Err(invalid(
                    "socketio.emitter.redis_url",
                    format!("{url:?} is not a redis:// URL: {e}"),
                ));
            }
        } else if em.enabled && self.adapter == AdapterKind::Memory {
            return Err(invalid(
                "socketio.emitter.redis_url",
                "needed with the memory adapter (there is no adapter Redis to default to)",
            ));
        }
        if !self.advertise_address.is_empty() {
            let ok = self
                .advertise_address
                .rsplit_once(':')
                .is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
            if !ok {
                return Err(invalid(
                    "advertise_address",
                    format!("{:?} is not HOST:PORT", self.advertise_address),
                ));
            }
        }
        Ok(())
    }

    fn with_node_id(mut self) -> Self {
        if self.node_id.is_empty() {
            self.node_id = generated_node_id();
        }
        self
    }

    /// The configuration as TOML that `--config` reads back: every key with
    /// its effective value. Secrets are left out (a comment says they are
    /// set); give them again through the environment.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("# roomcast: effective configuration\n");
        for (key, set) in [
            ("jwt_secret", self.jwt_secret.is_some()),
            ("grpc_token", self.grpc_token.is_some()),
            ("backend.token", self.backend.token.is_some()),
        ] {
            if set {
                out.push_str(&format!("# {key} is set (not printed)\n"));
            }
        }
        match toml::to_string(self) {
            Ok(body) => {
                out.push_str(&body);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            // Every field is a string, number, bool, list or table.
            Err(e) => out.push_str(&format!("# cannot print: {e}\n")),
        }
        out
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

    fn validate_backend(&self) -> Result<(), ConfigError> {
        let b = &self.backend;
        let Some(url) = &b.url else {
            if b.connect {
                return Err(invalid("backend.connect", "needs backend.url"));
            }
            if b.disconnected {
                return Err(invalid("backend.disconnected", "needs backend.url"));
            }
            for (name, o) in self.namespaces.iter() {
                for (key, on) in [
                    ("subscribe_hook", o.subscribe_hook),
                    ("publish_hook", o.publish_hook),
                    ("rpc", o.rpc),
                ] {
                    if on {
                        return Err(invalid(
                            &format!("namespaces.{name}.{key}"),
                            "needs backend.url",
                        ));
                    }
                }
            }
            return Ok(());
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| invalid("backend.url", format!("{url:?} is not a URL ({e})")))?;
        match parsed.scheme() {
            "http" => {}
            "https" if b.tls_ca.is_some() => {}
            "https" => {
                return Err(invalid(
                    "backend.url",
                    "an https backend needs backend.tls_ca (the CA certificate that signs its certificate)",
                ))
            }
            other => {
                return Err(invalid(
                    "backend.url",
                    format!("scheme {other:?}: use http:// or https://"),
                ))
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("backend.url", format!("{url:?} has no host")));
        }
        if b.timeout.is_zero() {
            return Err(invalid("backend.timeout", "must be greater than 0"));
        }
        if b.max_concurrency == 0 {
            return Err(invalid("backend.max_concurrency", "must be at least 1"));
        }
        if b.max_per_session == 0 {
            return Err(invalid("backend.max_per_session", "must be at least 1"));
        }
        if b.token.as_deref() == Some("") {
            return Err(invalid("backend.token", "must not be empty"));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_socketio()?;
        self.validate_backend()?;
        if self.ping_interval.is_zero() {
            return Err(invalid("ping_interval", "must be greater than 0"));
        }
        if self.ping_timeout.is_zero() {
            return Err(invalid("ping_timeout", "must be greater than 0"));
        }
        if self.max_pending_commands == 0 {
            return Err(invalid("max_pending_commands", "must be at least 1"));
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
                check_redis_url(u).map_err(|e| invalid("redis_url", e))?;
            }
        }
        if let Some(t) = &self.grpc_token {
            if t.is_empty() {
                return Err(invalid("grpc_token", "must not be empty"));
            }
        }
        if let Some(s) = &self.jwt_secret {
            if s.is_empty() {
                return Err(invalid("jwt_secret", "must not be empty"));
            }
        }
        Ok(())
    }
}

/// Checks a Redis URL the way the adapter will use it, so a bad one stops
/// the node at start instead of failing its first connection.
fn check_redis_url(u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("{u:?} is not a URL ({e})"))?;
    match url.scheme() {
        "redis" | "rediss" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!(
                    "{u:?} has no host; use e.g. redis://127.0.0.1:6379"
                ));
            }
            let db = url.path().trim_start_matches('/');
            if !db.is_empty() && db.parse::<u32>().is_err() {
                return Err(format!("{u:?}: the path must be a database number"));
            }
            Ok(())
        }
        "redis+unix" | "unix" => {
            if url.path().is_empty() {
                return Err(format!("{u:?} has no socket path"));
            }
            Ok(())
        }
        other => Err(format!(
            "{u:?}: scheme {other:?} is not redis, rediss or redis+unix"
        )),
    }
}

/// One line out of what the layering or serde said, naming the key.
fn from_layers(e: &::config::ConfigError) -> ConfigError {
    use ::config::ConfigError as E;
    match e {
        E::At { error, key, .. } => {
            let key = key.clone().unwrap_or_default();
            match &**error {
                E::Message(m) => from_message(&key, m),
                inner => invalid(&key, one_line(&inner.to_string())),
            }
        }
        E::Type {
            key,
            unexpected,
            expected,
            ..
        } => invalid(
            key.as_deref().unwrap_or("?"),
            // Every integer setting is a count or a size.
            format!(
                "expected {}, found {unexpected}",
                if *expected == "an integer" {
                    "a non-negative integer"
                } else {
                    expected
                }
            ),
        ),
        E::Message(m) => from_message("", m),
        other => invalid("?", one_line(&other.to_string())),
    }
}

/// serde's messages: an unknown key becomes that key, the rest stays a reason.
fn from_message(key: &str, message: &str) -> ConfigError {
    let join = |k: &str| {
        if key.is_empty() {
            k.to_owned()
        } else {
            format!("{key}.{k}")
        }
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some(field) = rest.split('`').next() {
            return invalid(&join(field), "unknown key");
        }
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        if let Some(field) = rest.split('`').next() {
            return invalid(&join(field), "set twice (once under another spelling?)");
        }
    }
    invalid(if key.is_empty() { "?" } else { key }, one_line(message))
}

/// Parser messages span several lines (a source excerpt with a caret);
/// keeps the lines that say something.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|') && !l.starts_with('^'))
        .collect::<Vec<_>>()
        .join(": ")
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

    /// Loads with an explicit environment instead of the process's.
    fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let argv = std::iter::once("roomcast").chain(args.iter().copied());
        let matches = Cli::command()
            .try_get_matches_from(argv)
            .expect("flags parse");
        let cli = Cli::from_arg_matches(&matches).expect("flags parse");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::layered(&cli, &matches, &env)
    }

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    /// A file removed when dropped; the tests need nothing more.
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);

        impl TempPath {
            pub fn with(text: &str) -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir().join(format!(
                    "roomcast-config-test-{}-{n}.toml",
                    std::process::id()
                ));
                std::fs::write(&path, text).expect("writes");
                Self(path)
            }

            pub fn arg(&self) -> &str {
                self.0.to_str().expect("utf-8 path")
            }
        }

        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12XB").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(format_size(65536), "64KiB");
        assert_eq!(format_size(3 << 20), "3MiB");
        assert_eq!(format_size(1000), "1000");
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

    #[test]
    fn defaults_without_any_source() {
        let c = load(&[], &[]).expect("loads");
        assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.max_message_bytes, 64 * 1024);
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        assert_eq!(c.command_rate, 100);
        assert_eq!(c.redis_urls, vec!["redis://127.0.0.1:6379"]);
        assert!(c.jwt.is_none());
    }

    #[test]
    fn file_then_environment_then_flags() {
        let f = file("ping_timeout = \"3s\"\nmax_queue_bytes = \"2MiB\"\ncommand_rate = 7\n");
        let c = load(
            &["--config", f.arg(), "--command-rate", "9"],
            &[
                ("ROOMCAST_PING_TIMEOUT", "4s"),
                ("ROOMCAST_COMMAND_RATE", "8"),
            ],
        )
        .expect("loads");
        assert_eq!(c.max_queue_bytes, 2 << 20, "file beats default");
        assert_eq!(c.ping_timeout, Duration::from_secs(4), "env beats file");
        assert_eq!(c.command_rate, 9, "flag beats env");
    }

    #[test]
    fn lists_from_each_layer() {
        let f = file(
            "redis_urls = [\"redis://a:1\", \"redis://b:2\"]\nallowed_origins = \"https://x\"\n",
        );
        let c = load(&["--config", f.arg()], &[]).expect("loads");
        assert_eq!(c.redis_urls, vec!["redis://a:1", "redis://b:2"]);
        assert_eq!(c.allowed_origins, vec!["https://x"]);
        let c = load(
            &["--config", f.arg()],
            &[("ROOMCAST_REDIS_URL", "redis://c:3,redis://d:4")],
        )
        .expect("loads");
        assert_eq!(c.redis_urls, vec!["redis://c:3", "redis://d:4"]);
        let c = load(
            &[
                "--allowed-origin",
                "https://p",
                "--allowed-origin",
                "https://q",
            ],
            &[("ROOMCAST_ALLOWED_ORIGINS", "https://env")],
        )
        .expect("loads");
        assert_eq!(c.allowed_origins, vec!["https://p", "https://q"]);
    }

    #[test]
    fn unrelated_variables_are_not_configuration() {
        let c = load(&[], &[("ROOMCAST_BIN", "/x"), ("ROOMCAST_WHATEVER", "1")]);
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn secrets_that_look_like_numbers_stay_text() {
        let c = load(&[], &[("ROOMCAST_JWT_SECRET", "1e5")]).expect("loads");
        assert!(matches!(c.jwt, Some(JwtKey::Secret(ref s)) if s == "1e5"));
    }

    #[test]
    fn namespaces_inherit_from_default() {
        let f = file(
            "[namespaces.default]\nhistory_size = 3\n\n[namespaces.chat]\njoin_leave = true\n",
        );
        let c = load(&["--config", f.arg()], &[]).expect("loads");
        let chat = c.namespaces.for_room("chat.a");
        assert_eq!(chat.history_size, 3);
        assert!(chat.join_leave);
        assert_eq!(c.namespaces.for_room("other.a").history_size, 3);
    }

    fn err(args: &[&str], env: &[(&str, &str)]) -> String {
        let e = load(args, env).expect_err("refused").to_string();
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        e
    }

    #[test]
    fn every_error_names_its_key() {
        let e = err(&["--ping-interval", "soon"], &[]);
        assert!(e.starts_with("invalid `ping_interval`: "), "{e}");
        let e = err(&[], &[("ROOMCAST_MAX_MESSAGE_BYTES", "12XB")]);
        assert!(e.starts_with("invalid `max_message_bytes`: "), "{e}");
        let f = file("[namespaces.chat]\nhistory_size = \"lots\"\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(e.contains("`namespaces.chat.history_size`"), "{e}");
        let f = file("[namespaces.chat]\nhistroy_size = 1\n");
        let e = err(&["--config", f.arg()], &[]);
        assert_eq!(e, "invalid `namespaces.chat.histroy_size`: unknown key");
        let f = file("bogus_key = 1\n");
        assert_eq!(
            err(&["--config", f.arg()], &[]),
            "invalid `bogus_key`: unknown key"
        );
        let f = file("listen = \n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(e.starts_with("config file "), "{e}");
        let e = err(&["--listen", "localhost"], &[]);
        assert!(e.starts_with("invalid `listen`: "), "{e}");
        let e = err(&["--command-rate=-1"], &[]);
        assert!(e.starts_with("invalid `command_rate`: "), "{e}");
        let f = file("[namespaces.chat]\noverflow = \"explode\"\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(e.contains("`namespaces.chat.overflow`"), "{e}");
        let f = file("[namespaces.\"bad name\"]\npresence = true\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(e.contains("`namespaces`") && e.contains("bad name"), "{e}");
        let e = err(&["--grpc-tls-cert", "c.pem"], &[]);
        assert!(e.starts_with("invalid `grpc_tls_key`: "), "{e}");
    }

    #[test]
    fn redis_urls_are_checked_at_start() {
        for (url, why) in [
            ("redis://", "has no host"),
            ("redis:///0", "has no host"),
            ("http://h:1", "scheme"),
            ("redis://h:1/db", "database number"),
            ("not a url", "is not a URL"),
        ] {
            let e = err(&["--adapter", "redis", "--redis-url", url], &[]);
            assert!(e.starts_with("invalid `redis_url`: "), "{e}");
            assert!(e.contains(why), "{url}: {e}");
        }
        assert!(load(&["--adapter", "redis", "--redis-url", "redis://h:1/2"], &[]).is_ok());
        assert!(load(
            &["--adapter", "redis", "--redis-url", "rediss://u:p@h"],
            &[]
        )
        .is_ok());
    }

    #[test]
    fn cluster_settings_of_socketio_are_checked() {
        let e = err(&["--advertise-address", "gateway-1"], &[]);
        assert!(e.starts_with("invalid `advertise_address`: "), "{e}");
        let e = err(&["--advertise-address", "h:0"], &[]);
        assert!(e.starts_with("invalid `advertise_address`: "), "{e}");
        let c = load(&[], &[("ROOMCAST_ADVERTISE_ADDRESS", "gateway-1:8080")]).unwrap();
        assert_eq!(c.advertise_address, "gateway-1:8080");

        let f = file("[socketio.emitter]\nenabled = true\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(
            e.starts_with("invalid `socketio.emitter.redis_url`: "),
            "{e}"
        );
        assert!(load(&["--config", f.arg(), "--adapter", "redis"], &[]).is_ok());
        let f = file("[socketio.emitter]\nenabled = true\nredis_url = \"redis://e:6380\"\n");
        let c = load(&["--config", f.arg()], &[]).unwrap();
        assert_eq!(
            c.socketio.emitter.redis_url.as_deref(),
            Some("redis://e:6380")
        );
        assert_eq!(c.socketio.emitter.key, "socket.io");
        let f = file("[socketio.emitter]\nkey = \"a*\"\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(e.starts_with("invalid `socketio.emitter.key`: "), "{e}");
    }

    #[test]
    fn printed_configuration_reads_back_the_same() {
        let f = file(
            "listen = \"127.0.0.1:9\"\nmax_message_bytes = 100000\njwt_secret = \"s3cret\"\n\
             [namespaces.quotes]\nhistory_size = 10\noverflow = \"latest_per_key\"\n",
        );
        let first = load(&["--config", f.arg(), "--demo"], &[]).expect("loads");
        let printed = first.to_toml();
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("# jwt_secret is set"), "{printed}");
        let again = file(&printed);
        let second = load(&["--config", again.arg()], &[]).expect("reads back");
        let body = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(body(&second.to_toml()), body(&printed));
        assert_eq!(second.max_message_bytes, 100000);
        assert_eq!(
            second.namespaces.for_room("quotes.x").overflow,
            OverflowPolicy::LatestPerKey
        );
        assert!(second.demo && second.echo);
        assert!(second.namespaces.for_room("chat.x").join_leave);
    }
    #[test]
    fn backend_settings_from_every_layer() {
        let c = load(
            &[
                "--backend-url",
                "http://127.0.0.1:50052",
                "--backend-header",
                "X-Tenant",
            ],
            &[
                ("ROOMCAST_BACKEND_TIMEOUT", "750ms"),
                ("ROOMCAST_BACKEND_HEADERS", "cookie,x-a"),
                ("ROOMCAST_BACKEND_MAX_PER_SESSION", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.backend.url.as_deref(), Some("http://127.0.0.1:50052"));
        assert_eq!(c.backend.timeout, Duration::from_millis(750));
        assert_eq!(c.backend.headers, vec!["x-tenant".to_owned()]);
        assert_eq!(c.backend.max_per_session, 3);
        assert_eq!(c.backend.max_concurrency, 1024);
        let f = file("[backend]\nconnect = true\n[namespaces.chat]\nrpc = true\n");
        let c = load(
            &["--config", f.arg()],
            &[("ROOMCAST_BACKEND_URL", "http://b:1")],
        )
        .unwrap();
        assert!(c.backend.connect && c.namespaces.for_room("chat.x").rpc);
        assert!(!c.namespaces.for_room("other.x").rpc);
        assert!(!c.to_toml().contains("hook-secret"));
    }

    #[test]
    fn backend_hooks_need_a_usable_url() {
        let f = file("[backend]\nconnect = true\n");
        let e = err(&["--config", f.arg()], &[]);
        assert!(
            e.starts_with("invalid `backend.connect`: needs backend.url"),
            "{e}"
        );
        let e = err(&["--backend-url", "https://b:1"], &[]);
        assert!(
            e.starts_with("invalid `backend.url`: an https backend needs backend.tls_ca"),
            "{e}"
        );
        let e = err(&["--backend-url", "redis://b:1"], &[]);
        assert!(e.starts_with("invalid `backend.url`: "), "{e}");
        let e = err(
            &["--backend-url", "http://b:1", "--backend-timeout", "0s"],
            &[],
        );
        assert!(e.starts_with("invalid `backend.timeout`: "), "{e}");
        let printed = load(
            &[
                "--backend-url",
                "http://b:1",
                "--backend-token",
                "hook-secret",
            ],
            &[],
        )
        .unwrap()
        .to_toml();
        assert!(!printed.contains("hook-secret"), "{printed}");
        assert!(
            printed.contains("# backend.token is set (not printed)"),
            "{printed}"
        );
    }

    #[test]
    fn every_key_flag_and_variable_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let documented = |key: &str| doc.contains(&format!("| `{key}`"));
        let mut every = Config {
            node_id: "n".into(),
            advertise_address: "h:1".into(),
            jwt_public_key: Some("k.pem".into()),
            grpc_tls_cert: Some("c.pem".into()),
            grpc_tls_key: Some("k.pem".into()),
            ..Config::default()
        };
        every.namespaces.set("chat", NamespaceOptions::default());
        every.socketio.ping_interval = Some(Duration::from_secs(1));
        every.socketio.ping_timeout = Some(Duration::from_secs(1));
        every.socketio.recovery = Some(Duration::from_secs(1));
        every.socketio.emitter.redis_url = Some("redis://e".into());
        every.socketio.events.insert(
            "NAME".into(),
            EventRoute {
                room: "r".into(),
                as_event: Some("e".into()),
            },
        );
        let tree: toml::Table = toml::from_str(&every.to_toml()).expect("prints TOML");
        for key in tree
            .keys()
            .filter(|k| *k != "namespaces" && *k != "socketio" && *k != "backend")
        {
            assert!(
                documented(key),
                "docs/configuration.md lacks the key `{key}`"
            );
        }
        let toml::Value::Table(sio) = &tree["socketio"] else {
            panic!("socketio is a table")
        };
        for key in sio.keys().filter(|k| *k != "events" && *k != "emitter") {
            let key = format!("socketio.{key}");
            assert!(
                documented(&key),
                "docs/configuration.md lacks the key `{key}`"
            );
        }
        let toml::Value::Table(emitter) = &sio["emitter"] else {
            panic!("socketio.emitter is a table")
        };
        for key in emitter.keys() {
            let key = format!("socketio.emitter.{key}");
            assert!(
                documented(&key),
                "docs/configuration.md lacks the key `{key}`"
            );
        }
        let toml::Value::Table(backend) = &tree["backend"] else {
            panic!("backend is a table")
        };
        for key in backend
            .keys()
            .map(|k| format!("backend.{k}"))
            .chain(["backend.token".to_owned(), "backend.url".to_owned()])
        {
            assert!(
                documented(&key),
                "docs/configuration.md lacks the key `{key}`"
            );
        }
        for key in ["socketio.events.NAME.room", "socketio.events.NAME.as"] {
            assert!(
                documented(key),
                "docs/configuration.md lacks the key `{key}`"
            );
        }
        let toml::Value::Table(namespaces) = &tree["namespaces"] else {
            panic!("namespaces is a table")
        };
        let toml::Value::Table(chat) = &namespaces["chat"] else {
            panic!("a namespace is a table")
        };
        for key in chat.keys() {
            assert!(
                documented(key),
                "docs/configuration.md lacks `namespaces.*.{key}`"
            );
        }
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            let flag = format!("`--{}", arg.get_long().expect("every flag is long"));
            assert!(doc.contains(&flag), "docs/configuration.md lacks {flag}`");
            if let Some(var) = arg.get_env().and_then(|v| v.to_str()) {
                assert!(doc.contains(var), "docs/configuration.md lacks {var}");
            }
            if !NOT_KEYS.contains(&id) {
                let key = key_of_flag(id);
                assert!(
                    documented(key),
                    "docs/configuration.md lacks the key `{key}`"
                );
            }
        }
    }
}
