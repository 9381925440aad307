//! `roomcast-loadtest`: load-test harness for Roomcast. Runs scenarios
//! (echo, idle, storm, fanout, rooms, cluster, slow, churn) against a Roomcast it
//! starts itself and, with `--compare`, against baselines (bare
//! fastwebsockets, Node `ws`, socket.io with its Redis adapter) under the same
//! conditions, then prints a table and writes JSON, Markdown and PNG reports.
//!
//! `roomcast-loadtest smoke` runs every scenario for a couple of seconds at
//! tiny sizes and fails if any message is lost or reordered (used by CI).

mod backend;
mod churn;
mod dialect;
mod hist;
mod hops;
mod publisher;
mod report;
mod scenarios;
mod sys;
mod targets;
mod worker;
mod ws;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::report::{Report, Run};
use crate::scenarios::{Ctx, Sizes};
use crate::targets::{Kind, Programs};

/// Command line of the harness.
#[derive(Parser, Debug)]
#[command(
    name = "roomcast-loadtest",
    about = "Load-test harness for Roomcast, with baselines side by side",
    after_help = "Scenarios: echo idle storm fanout rooms cluster cluster-max slow churn rpc hops, `all`, or `smoke` \
                  (every scenario, tiny sizes, fails on any loss; for CI)."
)]
struct Cli {
    /// Scenarios to run: echo, idle, storm, fanout, rooms, cluster, cluster-max, slow, churn, rpc, hops, all, smoke.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// Same as the scenario `smoke`.
    #[arg(long)]
    smoke: bool,
    /// Also run each scenario against the baselines and report ratios.
    #[arg(long)]
    compare: bool,
    /// Targets to run (default: roomcast; with --compare: every one that
    /// supports the scenario).
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<Kind>,
    /// Report directory (default reports/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The roomcast binary (default: next to this executable).
    #[arg(long)]
    roomcast_bin: Option<PathBuf>,
    /// Another roomcast binary to run every Roomcast run against too, as
    /// `NAME=PATH` (repeatable); its rows are `roomcast@NAME`, and it gets
    /// its own ratios against the baselines of the same invocation. For
    /// before/after comparisons of two builds.
    #[arg(long = "against-bin", value_name = "NAME=PATH", value_parser = parse_against)]
    against_bins: Vec<(String, PathBuf)>,
    /// Extra argument passed to every Roomcast node (repeatable).
    #[arg(long = "roomcast-arg", allow_hyphen_values = true)]
    roomcast_args: Vec<String>,
    /// Directory holding the Node baselines (default loadtest/baselines).
    #[arg(long)]
    baselines_dir: Option<PathBuf>,
    /// Do not pin servers and generator to separate cores.
    #[arg(long)]
    no_pin: bool,
    /// CPUs for the servers (taskset list).
    #[arg(long, default_value = "0")]
    server_cpus: String,
    /// CPUs for the generator (taskset list).
    #[arg(long, default_value = "1")]
    gen_cpus: String,
    /// Connections (echo, idle, storm).
    #[arg(long, short = 'n')]
    connections: Option<usize>,
    /// Subscribers per room (fanout, rooms, cluster, slow).
    #[arg(long, short = 's')]
    subscribers: Option<usize>,
    /// Rooms (rooms scenario).
    #[arg(long)]
    rooms: Option<usize>,
    /// Publications per second in all; 0 = as fast as deliveries keep up.
    #[arg(long)]
    rate: Option<f64>,
    /// Measured phase length, seconds.
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Publication size, bytes.
    #[arg(long)]
    size: Option<usize>,
    /// Echo payload sizes, bytes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Nodes (cluster, cluster-max).
    #[arg(long)]
    nodes: Option<usize>,
    /// Redis servers Roomcast shards rooms over (cluster, cluster-max);
    /// socket.io's Redis adapter uses the first.
    #[arg(long)]
    shards: Option<usize>,
    /// How Roomcast's publisher publishes: `grpc` (PublishStream) or `ws`
    /// (the publish command of a WebSocket client, as the baselines do;
    /// its nodes then have no per-client command rate).
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "ws"])]
    publisher: String,
    /// cluster-max on several layouts in one invocation, each a variant:
    /// `NODESxSHARDS`, comma-separated (e.g. `1x1,3x2`).
    #[arg(long, value_delimiter = ',', value_parser = parse_layout)]
    layouts: Vec<(usize, usize)>,
    /// Rooms nobody publishes to that every subscriber also joins
    /// (fan-out, rooms, cluster), to measure what a subscription costs.
    #[arg(long, default_value_t = 0)]
    extra_rooms: usize,
    /// Share of subscribers that stop reading (slow).
    #[arg(long)]
    slow_share: Option<f64>,
    /// Publications in flight at max rate.
    #[arg(long)]
    window: Option<u64>,
    /// New connections per second during a churn burst (churn; its length
    /// is --duration).
    #[arg(long)]
    churn_rate: Option<f64>,
    /// Churn bursts against the same node, each reported with the memory
    /// and files before, at the peak and 5 s after it (churn).
    #[arg(long)]
    bursts: Option<usize>,
    /// Echo through the `echo` command on /ws instead of raw /echo.
    #[arg(long)]
    echo_command: bool,
    /// Most connections per generator process (each may open 20,000 files).
    #[arg(long, default_value_t = 9000)]
    max_per_worker: usize,
    /// Loopback source addresses to spread client sockets over
    /// (127.0.0.2 onwards), each with its own ephemeral port range.
    #[arg(long, default_value_t = 8)]
    source_ips: u8,
    /// Bytes asked of the kernel per read, per connection.
    #[arg(long, default_value_t = 64 * 1024)]
    read_size: usize,
}

fn parse_layout(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected NODESxSHARDS such as 3x2, got {s:?}");
    let (n, r) = s.split_once('x').ok_or_else(bad)?;
    let n: usize = n.parse().map_err(|_| bad())?;
    let r: usize = r.parse().map_err(|_| bad())?;
    if n == 0 || r == 0 {
        return Err(bad());
    }
    Ok((n, r))
}

fn parse_against(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, got {s:?}")),
    }
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return worker::run_worker();
    }
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

fn targets_for(cli: &Cli, scenario: &str) -> Vec<Kind> {
    let all = if !cli.targets.is_empty() {
        cli.targets.clone()
    } else if cli.compare {
        vec![
            Kind::Roomcast,
            Kind::Fws,
            Kind::Ws,
            Kind::Socketio,
            Kind::RoomcastSocketio,
        ]
    } else {
        vec![Kind::Roomcast]
    };
    all.into_iter()
        // Only Roomcast and socket.io (through Redis) can spread over nodes.
        .filter(|k| !scenario.starts_with("cluster") || k.is_roomcast() || *k == Kind::Socketio)
        // socket.io has no echo event of its own: echo is measured raw, or
        // with roomcast.v1's `echo` command.
        .filter(|k| scenario != "echo" || *k != Kind::RoomcastSocketio)
        // Backend hooks are Roomcast's, measured on roomcast.v1.
        .filter(|k| scenario != "rpc" || *k == Kind::Roomcast)
        // Hops between nodes are those of Roomcast's socket.io sessions:
        // run once, for the Roomcast target.
        .filter(|k| scenario != "hops" || *k == Kind::Roomcast)
        .collect()
}

fn sizes_for(cli: &Cli, scenario: &str, smoke: bool) -> Sizes {
    let mut s = Sizes::defaults(scenario, smoke);
    if let Some(v) = cli.connections {
        s.connections = v;
    }
    if let Some(v) = cli.subscribers {
        s.subscribers = v;
    }
    if let Some(v) = cli.rooms {
        s.rooms = v;
    }
    if let Some(v) = cli.rate {
        s.rate = v;
    }
    if let Some(v) = cli.duration {
        s.duration = Duration::from_secs_f64(v);
    }
    if let Some(v) = cli.size {
        s.size = v;
    }
    if !cli.sizes.is_empty() {
        s.echo_sizes = cli.sizes.clone();
    }
    if let Some(v) = cli.nodes {
        s.nodes = v;
    }
    if let Some(v) = cli.shards {
        s.shards = v;
    }
    s.ws_publisher = cli.publisher == "ws";
    s.extra_rooms = cli.extra_rooms;
    s.layouts = cli.layouts.clone();
    if let Some(v) = cli.slow_share {
        s.slow_share = v;
    }
    if let Some(v) = cli.window {
        s.window = v;
    }
    if let Some(v) = cli.churn_rate {
        s.churn_rate = v;
    }
    if let Some(v) = cli.bursts {
        s.bursts = v.max(1);
    }
    s
}

fn machine() -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if let Some(model) = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
    {
        m.insert("cpu".into(), model.1.trim().to_string());
    }
    // Counted from /proc/cpuinfo: after pinning, the affinity mask would
    // say 1.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    m.insert("cores".into(), cores.max(1).to_string());
    if let Some(mem) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
    {
        m.insert(
            "memory".into(),
            mem.replace("MemTotal:", "").trim().to_string(),
        );
    }
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), k.trim().to_string());
    }
    m
}

async fn run(cli: Cli) -> Result<()> {
    let smoke = cli.smoke || cli.scenarios.iter().any(|s| s == "smoke");
    let mut list: Vec<String> = Vec::new();
    for s in &cli.scenarios {
        match s.as_str() {
            "all" | "smoke" => list.extend(scenarios::ALL.iter().map(|s| s.to_string())),
            other if scenarios::ALL.contains(&other) => list.push(other.to_string()),
            other => bail!("unknown scenario {other:?}; see --help"),
        }
    }
    list.dedup();

    let pin = !cli.no_pin && sys::cpus() >= 2 && sys::on_path("taskset");
    if pin {
        // Move this process (and so every worker it starts) to the generator
        // cores; servers are started under `taskset -c <server cpus>`.
        let status = std::process::Command::new("taskset")
            .args(["-pc", &cli.gen_cpus, &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("taskset")?;
        if !status.success() {
            bail!("taskset -pc {} failed", cli.gen_cpus);
        }
    }
    let pinning = if pin {
        format!(
            "servers on CPU {}, generator on CPU {}",
            cli.server_cpus, cli.gen_cpus
        )
    } else {
        "none (taskset missing, fewer than 2 CPUs, or --no-pin)".to_string()
    };
    let mut programs = Programs::locate(
        cli.roomcast_bin.clone(),
        cli.baselines_dir.clone(),
        pin.then(|| cli.server_cpus.clone()),
    )?;
    programs.roomcast_args = cli.roomcast_args.clone();
    let gen_cores = if pin {
        cli.gen_cpus.split(',').count() as f64
    } else {
        sys::cpus() as f64
    };
    let mut ctx = Ctx {
        programs,
        spawn: worker::Spawn {
            max_per_worker: cli.max_per_worker,
            pin: pin.then(|| cli.gen_cpus.clone()),
        },
        gen_cores,
        source_ips: (0..cli.source_ips.max(1))
            .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i))
            .collect(),
        read_size: cli.read_size,
        echo_command: cli.echo_command,
        bars: indicatif::MultiProgress::new(),
    };

    let mut report = Report {
        command: std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" ")
            .replacen(
                &std::env::args().next().unwrap_or_default(),
                "roomcast-loadtest",
                1,
            ),
        started: sys::timestamp(),
        machine: machine(),
        pinning,
        runs: Vec::new(),
        ratios: Vec::new(),
        warnings: Vec::new(),
    };
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(&report.started));

    let mut failures: Vec<String> = Vec::new();
    for scenario in &list {
        let sizes = sizes_for(&cli, scenario, smoke);
        for kind in targets_for(&cli, scenario) {
            // Roomcast runs once with the main binary, then once per
            // --against-bin, swapped in for that run.
            let mut binaries = vec![(kind.name().to_string(), None)];
            if kind == Kind::Roomcast {
                binaries.extend(
                    cli.against_bins
                        .iter()
                        .map(|(name, path)| (format!("roomcast@{name}"), Some(path.clone()))),
                );
            }
            for (label, bin) in binaries {
                let main_bin = bin.map(|b| std::mem::replace(&mut ctx.programs.roomcast, b));
                let result = scenarios::run(&ctx, scenario, kind, &sizes).await;
                if let Some(b) = main_bin {
                    ctx.programs.roomcast = b;
                }
                match result {
                    Ok(mut runs) => {
                        for r in &mut runs {
                            r.target.clone_from(&label);
                            say(&ctx.bars, summary(r));
                            if smoke {
                                failures.extend(smoke_check(r));
                            }
                        }
                        report.runs.extend(runs);
                    }
                    Err(e) => {
                        let msg = format!("{scenario} against {label}: {e:#}");
                        say(&ctx.bars, format!("FAILED {msg}"));
                        report.warnings.push(format!("run failed: {msg}"));
                        failures.push(msg);
                    }
                }
            }
        }
    }
    report.ratios = report::ratios(&report.runs);
    for r in &report.runs {
        for n in r.notes.iter().filter(|n| n.starts_with("generator CPU")) {
            report.warnings.push(format!("{}: {n}", r.label()));
        }
    }
    print!("{}", report::table(&report));
    let plots = report::write_all(&report, &out)?;
    println!(
        "\nreport: {} ({} plots)",
        out.join("report.md").display(),
        plots.len()
    );
    if !failures.is_empty() {
        bail!(
            "{} check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

/// A line above the progress bars, or on stderr when they are hidden
/// (not a terminal), where indicatif would drop it.
fn say(bars: &indicatif::MultiProgress, line: String) {
    if bars.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = bars.println(line);
    }
}

fn summary(r: &Run) -> String {
    let m = report::primary(&r.scenario);
    let v = if let Some(q) = m.strip_prefix("lat:") {
        r.latency_ms.get(q).copied()
    } else {
        r.get(m)
    };
    format!(
        "done {} {}: {} = {}",
        r.scenario,
        r.label(),
        m,
        v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into())
    )
}

/// What makes a smoke run fail: any loss or reordering, failed connections,
/// or a scenario that moved no messages at all. No timing is checked.
fn smoke_check(r: &Run) -> Vec<String> {
    let mut f = Vec::new();
    let name = format!("{} {}", r.scenario, r.label());
    for key in [
        "lost",
        "out_of_order",
        "failed",
        "bad_replies",
        "churn_failed",
        "errors",
    ] {
        if let Some(v) = r.get(key).filter(|v| *v > 0.0) {
            f.push(format!("{name}: {key} = {v}"));
        }
    }
    let moved = match r.scenario.as_str() {
        "echo" | "rpc" | "hops" => r.get("roundtrips"),
        "idle" | "storm" => r.get("connections"),
        _ => r.get("delivered"),
    };
    if moved.unwrap_or(0.0) <= 0.0 {
        f.push(format!("{name}: nothing moved"));
    }
    if let (Some(d), Some(e)) = (r.get("delivered"), r.get("expected")) {
        if d < e {
            f.push(format!("{name}: delivered {d} of {e}"));
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn against_bin_takes_name_equals_path() {
        assert_eq!(
            parse_against("base=/tmp/roomcast").unwrap(),
            ("base".to_string(), PathBuf::from("/tmp/roomcast"))
        );
        assert!(parse_against("/tmp/roomcast").is_err());
        assert!(parse_against("=x").is_err());
    }

    #[test]
    fn smoke_fails_on_loss_reordering_and_silence() {
        let mut ok = Run::new("fanout", "roomcast", "");
        ok.set("delivered", 100.0);
        ok.set("expected", 100.0);
        ok.set("lost", 0.0);
        assert!(smoke_check(&ok).is_empty());

        let mut lost = ok.clone();
        lost.set("lost", 3.0);
        assert_eq!(smoke_check(&lost).len(), 1);

        let mut reordered = ok.clone();
        reordered.set("out_of_order", 1.0);
        assert_eq!(smoke_check(&reordered).len(), 1);

        let mut short = ok.clone();
        short.set("delivered", 99.0);
        assert_eq!(smoke_check(&short).len(), 1);

        let silent = Run::new("echo", "roomcast", "20 B raw");
        assert_eq!(smoke_check(&silent).len(), 1);
    }
}
