//! The `--demo` mode: the demo page's static files and the small backend
//! that feeds its server clock and stock ticker.
//!
//! The files are compiled into the binary, so `roomcast --demo` needs nothing
//! on disk. The feeds publish through the node's own gRPC control plane over
//! a real connection, exactly as a user's backend would: the demo exercises
//! the same path as production traffic, not a shortcut into the hub.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomcast_proto::v1::control_client::ControlClient;
use roomcast_proto::v1::PublishRequest;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

static INDEX_HTML: &[u8] = include_bytes!("../assets/demo/index.html");
static DEMO_CSS: &[u8] = include_bytes!("../assets/demo/demo.css");
static DEMO_JS: &[u8] = include_bytes!("../assets/demo/demo.js");
static CLIENT_JS: &[u8] = include_bytes!("../../clients/js/roomcast.js");

/// The demo page's files, by request path: `(content type, body)`.
///
/// Serves `/` (and `/index.html`), `/demo.css`, `/demo.js` and the browser
/// client at `/roomcast.js`, which the page imports as an ES module. Any
/// other path is `None`, for the caller to answer 404.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" | "/index.html" => Some((HTML, INDEX_HTML)),
        "/demo.css" => Some((CSS, DEMO_CSS)),
        "/demo.js" => Some((JS, DEMO_JS)),
        "/roomcast.js" => Some((JS, CLIENT_JS)),
        _ => None,
    }
}

/// The room the clock is published to, once a second.
pub const CLOCK_ROOM: &str = "clock";

/// The symbols of the ticker, each published to room `quotes.<SYMBOL>`.
pub const SYMBOLS: [(&str, f64); 5] = [
    ("AAPL", 189.50),
    ("MSFT", 415.20),
    ("GOOG", 171.30),
    ("AMZN", 183.90),
    ("TSLA", 177.10),
];

/// How often the ticker moves.
const QUOTE_EVERY: Duration = Duration::from_millis(250);

/// A publish that takes longer than this is abandoned, so a stuck call can
/// never hold up shutdown or the next tick.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Feeds the demo's clock and ticker until `shutdown` resolves.
///
/// `grpc_endpoint` is the node's own control plane as a URI, for example
/// `http://127.0.0.1:50051` (connect to loopback even when the listener is
/// bound to `0.0.0.0`). Connecting is retried until the server is up, so this
/// can be spawned before the gRPC server starts.
pub async fn run_feeds(grpc_endpoint: String, shutdown: impl Future<Output = ()> + Send) {
    run_feeds_with_token(grpc_endpoint, None, shutdown).await
}

/// Like [`run_feeds`], for a control plane that requires a bearer token
/// (`--grpc-token`): every call carries `authorization: Bearer <token>`.
pub async fn run_feeds_with_token(
    grpc_endpoint: String,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let bearer = match token.map(|t| format!("Bearer {t}").parse::<MetadataValue<Ascii>>()) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            tracing::error!(
                "demo feeds: the gRPC token is not a valid header value; feeds not started"
            );
            return;
        }
        None => None,
    };

    let mut control = tokio::select! {
        () = &mut shutdown => return,
        client = connect(&grpc_endpoint, bearer) => match client {
            Some(client) => client,
            None => return,
        },
    };
    tracing::info!(endpoint = %grpc_endpoint, "demo feeds: publishing the clock and quotes");

    let mut rng = StdRng::from_entropy();
    let mut quotes: Vec<Walk> = SYMBOLS.iter().map(|&(s, p)| Walk::new(s, p)).collect();
    let mut clock = tokio::time::interval(Duration::from_secs(1));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticker = tokio::time::interval(QUOTE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut failing = false;

    loop {
        let batch: Vec<PublishRequest> = tokio::select! {
            () = &mut shutdown => break,
            _ = clock.tick() => vec![PublishRequest {
                room: CLOCK_ROOM.to_owned(),
                data: clock_payload(SystemTime::now()).into(),
                ..Default::default()
            }],
            _ = ticker.tick() => quote_batch(&mut quotes, &mut rng),
        };
        for request in batch {
            let room = request.room.clone();
            let outcome = tokio::select! {
                () = &mut shutdown => return,
                r = tokio::time::timeout(CALL_TIMEOUT, control.publish(request)) => r,
            };
            match outcome {
                Ok(Ok(_)) if failing => {
                    failing = false;
                    tracing::info!("demo feeds: publishing again");
                }
                Ok(Ok(_)) => {}
                // Only the first failure of a run is worth a warning: while
                // the node drains every call fails the same way.
                Ok(Err(status)) if !failing => {
                    failing = true;
                    tracing::warn!(%room, code = ?status.code(), message = status.message(), "demo feeds: publish failed");
                }
                Err(_) if !failing => {
                    failing = true;
                    tracing::warn!(%room, "demo feeds: publish timed out");
                }
                _ => {}
            }
        }
    }
    tracing::debug!("demo feeds: stopped");
}

/// One ticker step: moves a random subset of the symbols (so the table looks
/// like a market rather than a metronome) and returns their publications.
fn quote_batch(quotes: &mut [Walk], rng: &mut impl Rng) -> Vec<PublishRequest> {
    let mut batch = Vec::with_capacity(quotes.len());
    for walk in quotes.iter_mut() {
        if rng.gen_bool(0.6) {
            batch.push(PublishRequest {
                room: format!("quotes.{}", walk.symbol),
                event: "quote".to_owned(),
                data: walk.step(rng).into(),
                ..Default::default()
            });
        }
    }
    batch
}

/// The control client with the optional bearer token attached to every call.
type Control = ControlClient<InterceptedService<Channel, Bearer>>;

/// Connects to the control plane, retrying with a capped backoff until it
/// answers. `None` only when the endpoint itself is malformed.
async fn connect(endpoint: &str, bearer: Option<MetadataValue<Ascii>>) -> Option<Control> {
    let endpoint = match Endpoint::from_shared(endpoint.to_owned()) {
        Ok(e) => e.connect_timeout(Duration::from_secs(2)),
        Err(err) => {
            tracing::error!(%endpoint, error = %err, "demo feeds: bad gRPC endpoint; feeds not started");
            return None;
        }
    };
    let mut delay = Duration::from_millis(50);
    let mut attempts = 0u32;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Some(ControlClient::with_interceptor(channel, Bearer(bearer))),
            Err(err) => {
                attempts += 1;
                // The server is usually seconds away from listening: stay quiet at first.
                if attempts == 20 {
                    tracing::warn!(error = %err, "demo feeds: gRPC control plane not reachable yet; still trying");
                } else {
                    tracing::debug!(error = %err, "demo feeds: gRPC control plane not up yet");
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Adds `authorization` to every call when a token was given.
#[derive(Clone)]
struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The clock's publication: `{"now": <unix ms>, "iso": "<RFC 3339, ms>"}`.
fn clock_payload(now: SystemTime) -> Vec<u8> {
    let ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let iso = humantime::format_rfc3339_millis(now).to_string();
    serde_json::to_vec(&serde_json::json!({ "now": ms, "iso": iso })).unwrap_or_default()
}

/// One symbol's random walk. `change` is measured from where the walk began,
/// as a ticker shows the change since the open.
struct Walk {
    symbol: &'static str,
    open: f64,
    price: f64,
}

impl Walk {
    fn new(symbol: &'static str, open: f64) -> Self {
        Walk {
            symbol,
            open,
            price: open,
        }
    }

    /// Moves the price by up to ±0.3 % (pulled gently back towards the open
    /// so a long-running demo does not drift off to zero or the moon) and
    /// returns the publication: `{"symbol", "price", "change"}`.
    fn step(&mut self, rng: &mut impl Rng) -> Vec<u8> {
        let pull = (self.open - self.price) / self.open * 0.02;
        let pct = rng.gen_range(-0.003..0.003) + pull;
        self.price = round2((self.price * (1.0 + pct)).max(0.01));
        let change = round2(self.price - self.open);
        serde_json::to_vec(&serde_json::json!({
            "symbol": self.symbol,
            "price": self.price,
            "change": change,
        }))
        .unwrap_or_default()
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_the_page_and_the_client() {
        let (ty, body) = asset("/").expect("index");
        assert!(ty.starts_with("text/html"));
        assert!(std::str::from_utf8(body)
            .unwrap()
            .contains("<title>Roomcast demo</title>"));
        assert_eq!(asset("/index.html").unwrap().1, body);
        assert!(asset("/demo.css").unwrap().0.starts_with("text/css"));
        let (ty, js) = asset("/roomcast.js").expect("client");
        assert!(
            ty.starts_with("text/javascript"),
            "module scripts need a JavaScript MIME type"
        );
        assert!(std::str::from_utf8(js)
            .unwrap()
            .contains("export class RoomcastClient"));
        let demo = std::str::from_utf8(asset("/demo.js").unwrap().1).unwrap();
        assert!(demo.contains("./roomcast.js"));
        assert_eq!(asset("/ws"), None);
        assert_eq!(asset("/../Cargo.toml"), None);
    }

    #[test]
    fn clock_payload_is_the_documented_json() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let v: serde_json::Value = serde_json::from_slice(&clock_payload(t)).unwrap();
        assert_eq!(v["now"], 1_700_000_000_123u64);
        assert_eq!(v["iso"], "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn quotes_walk_within_bounds_and_report_change() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut walk = Walk::new("AAPL", 100.0);
        for _ in 0..10_000 {
            let v: serde_json::Value = serde_json::from_slice(&walk.step(&mut rng)).unwrap();
            assert_eq!(v["symbol"], "AAPL");
            let price = v["price"].as_f64().unwrap();
            let change = v["change"].as_f64().unwrap();
            assert!(price > 50.0 && price < 150.0, "price wandered to {price}");
            assert!((price - 100.0 - change).abs() < 0.011);
            assert_eq!(round2(price), price, "two decimals");
        }
    }
}
