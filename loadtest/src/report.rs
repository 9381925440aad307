//! Results and how they are shown: a table on stdout, `report.json`,
//! `report.md`, and PNG plots (latency distribution, throughput over time,
//! server memory over time) drawn with plotters on a bitmap, with the DejaVu
//! Sans font embedded so no system fonts are needed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::Serialize;

use crate::hist::Hist;

/// One measured run: one scenario against one target (and one variant, such
/// as a payload size).
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Scenario name.
    pub scenario: String,
    /// Target name (`roomcast`, `fws`, `node-ws`, `socket.io`; another
    /// Roomcast build is `roomcast@NAME`).
    pub target: String,
    /// Variant within the scenario (payload size, phase), or empty.
    pub variant: String,
    /// Named numbers; see `headline` for which ones each scenario shows.
    pub metrics: BTreeMap<String, f64>,
    /// Latency quantiles, ms, keyed like `p99`.
    pub latency_ms: BTreeMap<String, f64>,
    /// Throughput over time: (seconds, per second).
    pub throughput: Vec<(f64, f64)>,
    /// Server resident memory over time: (seconds, MiB).
    pub rss_mib: Vec<(f64, f64)>,
    /// Warnings and remarks.
    pub notes: Vec<String>,
    /// Latency histogram (not serialised; quantiles are).
    #[serde(skip)]
    pub hist: Option<Hist>,
}

impl Run {
    /// An empty run.
    pub fn new(scenario: &str, target: &str, variant: &str) -> Run {
        Run {
            scenario: scenario.to_string(),
            target: target.to_string(),
            variant: variant.to_string(),
            metrics: BTreeMap::new(),
            latency_ms: BTreeMap::new(),
            throughput: Vec::new(),
            rss_mib: Vec::new(),
            notes: Vec::new(),
            hist: None,
        }
    }

    /// Sets a metric.
    pub fn set(&mut self, k: &str, v: f64) {
        self.metrics.insert(k.to_string(), v);
    }

    /// Reads a metric.
    pub fn get(&self, k: &str) -> Option<f64> {
        self.metrics.get(k).copied()
    }

    /// Stores a latency histogram and its quantiles.
    pub fn set_latency(&mut self, h: Hist) {
        for (name, q) in QUANTILES {
            self.latency_ms
                .insert(name.to_string(), h.quantile(*q) as f64 / 1e6);
        }
        self.latency_ms
            .insert("max".to_string(), h.max as f64 / 1e6);
        self.latency_ms.insert("mean".to_string(), h.mean() / 1e6);
        self.hist = Some(h);
    }

    /// Target and variant, for legends.
    pub fn label(&self) -> String {
        if self.variant.is_empty() {
            self.target.clone()
        } else {
            format!("{} {}", self.target, self.variant)
        }
    }
}

const QUANTILES: &[(&str, f64)] = &[
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99.9", 0.999),
    ("p99.99", 0.9999),
];

/// Roomcast divided by a baseline, for one metric of one scenario variant.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// Scenario.
    pub scenario: String,
    /// Variant.
    pub variant: String,
    /// Metric compared.
    pub metric: String,
    /// Which Roomcast (`roomcast`, or `roomcast@NAME` for `--against-bin`).
    pub target: String,
    /// Baseline name.
    pub baseline: String,
    /// Roomcast's value.
    pub roomcast: f64,
    /// The baseline's value.
    pub baseline_value: f64,
    /// roomcast / baseline.
    pub ratio: f64,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: String,
    /// When it started (UTC).
    pub started: String,
    /// Machine description (CPU model, cores, memory, kernel).
    pub machine: BTreeMap<String, String>,
    /// How processes were pinned.
    pub pinning: String,
    /// All runs.
    pub runs: Vec<Run>,
    /// Ratios against baselines (with `--compare`).
    pub ratios: Vec<Ratio>,
    /// Warnings that apply to the whole report.
    pub warnings: Vec<String>,
}

/// Metrics shown in tables for each scenario, with their column titles.
pub fn headline(scenario: &str) -> &'static [(&'static str, &'static str)] {
    match scenario {
        "rpc" => &[
            ("roundtrips_per_s", "round trips/s"),
            ("connections", "conns"),
            ("lat:p50", "p50 ms"),
            ("lat:p99", "p99 ms"),
            ("hook_p50_added_ms", "hook adds p50 ms"),
            ("hook_p99_added_ms", "hook adds p99 ms"),
            ("server_cpu", "server CPU"),
            ("gen_cpu", "gen CPU"),
        ],
        "hops" => &[
            ("sessions", "sessions"),
            ("roundtrips_per_s", "round trips/s"),
            ("lat:p50", "p50 ms"),
            ("lat:p99", "p99 ms"),
            ("vs_direct", "vs direct"),
            ("hop_p50_added_ms", "hop adds p50 ms"),
            ("hop_p99_added_ms", "hop adds p99 ms"),
            ("errors", "errors"),
        ],
        "echo" => &[
            ("roundtrips_per_s", "round trips/s"),
            ("connections", "conns"),
            ("lat:p50", "p50 ms"),
            ("lat:p99", "p99 ms"),
            ("server_cpu", "server CPU"),
            ("gen_cpu", "gen CPU"),
        ],
        "idle" => &[
            ("connections", "conns"),
            ("connect_per_s", "connects/s"),
            ("handshake_p50_ms", "hs p50 ms"),
            ("handshake_p99_ms", "hs p99 ms"),
            ("rss_per_conn_bytes", "RSS B/conn"),
            ("failed", "failed"),
        ],
        "churn" => &[
            ("connect_per_s", "opened/s"),
            ("rss_before_mib", "RSS before MiB"),
            ("rss_peak_mib", "RSS peak MiB"),
            ("rss_after_mib", "RSS after MiB"),
            ("fds_before", "fds before"),
            ("fds_peak", "fds peak"),
            ("fds_after", "fds after"),
            ("close_p50_ms", "close p50 ms"),
            ("close_p99_ms", "close p99 ms"),
            ("lost", "lost"),
            ("churn_failed", "failed"),
        ],
        "storm" => &[
            ("connections", "conns"),
            ("storm_secs", "all in s"),
            ("connect_per_s", "connects/s"),
            ("handshake_p99_ms", "hs p99 ms"),
            ("failed", "failed"),
        ],
        "cluster-max" => &[
            ("nodes", "nodes"),
            ("shards", "Redis"),
            ("subscribers", "subs"),
            ("rooms", "rooms"),
            ("published_per_s", "pubs/s"),
            ("delivered_per_s", "delivered/s"),
            ("lat:p50", "p50 ms"),
            ("lat:p99", "p99 ms"),
            ("lost", "lost"),
            ("out_of_order", "reordered"),
            ("server_cpu", "nodes CPU"),
            ("redis_cpu", "Redis CPU"),
        ],
        _ => &[
            ("subscribers", "subs"),
            ("published_per_s", "pubs/s"),
            ("delivered_per_s", "delivered/s"),
            ("lat:p50", "p50 ms"),
            ("lat:p99", "p99 ms"),
            ("lat:p99.9", "p99.9 ms"),
            ("lost", "lost"),
            ("out_of_order", "reordered"),
            ("rss_peak_mib", "RSS MiB"),
            ("server_cpu", "server CPU"),
            ("gen_cpu", "gen CPU"),
        ],
    }
}

/// The metric a scenario's ratio is taken on.
pub fn primary(scenario: &str) -> &'static str {
    match scenario {
        "echo" | "rpc" => "roundtrips_per_s",
        "idle" => "rss_per_conn_bytes",
        "storm" => "connect_per_s",
        "slow" => "lat:p99",
        "churn" => "rss_after_vs_first_mib",
        _ => "delivered_per_s",
    }
}

fn value(run: &Run, key: &str) -> Option<f64> {
    match key.strip_prefix("lat:") {
        Some(q) => run.latency_ms.get(q).copied(),
        None => run.get(key),
    }
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn rows(runs: &[Run], scenario: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let cols = headline(scenario);
    let mut head = vec!["target".to_string(), "variant".to_string()];
    head.extend(cols.iter().map(|(_, t)| t.to_string()));
    let body = runs
        .iter()
        .filter(|r| r.scenario == scenario)
        .map(|r| {
            let mut row = vec![r.target.clone(), r.variant.clone()];
            row.extend(
                cols.iter()
                    .map(|(k, _)| value(r, k).map(fmt_num).unwrap_or_else(|| "-".into())),
            );
            row
        })
        .collect();
    (head, body)
}

fn scenarios(report: &Report) -> Vec<String> {
    let mut seen = Vec::new();
    for r in &report.runs {
        if !seen.contains(&r.scenario) {
            seen.push(r.scenario.clone());
        }
    }
    seen
}

/// The plain-text table printed at the end.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for sc in scenarios(report) {
        let (head, body) = rows(&report.runs, &sc);
        let mut width: Vec<usize> = head.iter().map(String::len).collect();
        for row in &body {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let _ = writeln!(out, "\n== {sc} ==");
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&width)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let _ = writeln!(out, "{}", line(&head));
        for row in &body {
            let _ = writeln!(out, "{}", line(row));
        }
        for r in report.runs.iter().filter(|r| r.scenario == sc) {
            for n in &r.notes {
                let _ = writeln!(out, "  note ({}): {n}", r.label());
            }
        }
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(out, "\n== ratios (roomcast / baseline) ==");
        for r in &report.ratios {
            let _ = writeln!(
                out,
                "{:>8} {:>8} {:>18} {:>14} vs {:<10} {:>10} / {:>10} = {:.2}x",
                r.scenario,
                r.variant,
                r.metric,
                r.target,
                r.baseline,
                fmt_num(r.roomcast),
                fmt_num(r.baseline_value),
                r.ratio
            );
        }
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// `roomcast`, Roomcast driven by socket.io clients (`roomcast-sio`), or
/// another Roomcast build run with `--against-bin`.
fn is_roomcast(target: &str) -> bool {
    target == "roomcast" || target == "roomcast-sio" || target.starts_with("roomcast@")
}

/// Computes Roomcast/baseline ratios of each scenario's primary metric.
pub fn ratios(runs: &[Run]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for rc in runs.iter().filter(|r| is_roomcast(&r.target)) {
        let metric = primary(&rc.scenario);
        let Some(mine) = value(rc, metric) else {
            continue;
        };
        for b in runs.iter().filter(|b| {
            !is_roomcast(&b.target) && b.scenario == rc.scenario && b.variant == rc.variant
        }) {
            if let Some(theirs) = value(b, metric) {
                if theirs > 0.0 {
                    out.push(Ratio {
                        scenario: rc.scenario.clone(),
                        variant: rc.variant.clone(),
                        metric: metric.to_string(),
                        target: rc.target.clone(),
                        baseline: b.target.clone(),
                        roomcast: mine,
                        baseline_value: theirs,
                        ratio: mine / theirs,
                    });
                }
            }
        }
    }
    out
}

/// The Markdown report.
pub fn markdown(report: &Report, plots: &[PathBuf]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Roomcast load test, {}\n", report.started);
    let _ = writeln!(out, "Command: `{}`\n", report.command);
    let _ = writeln!(out, "Pinning: {}\n", report.pinning);
    let _ = writeln!(out, "| machine | |\n|---|---|");
    for (k, v) in &report.machine {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    for sc in scenarios(report) {
        let (head, body) = rows(&report.runs, &sc);
        let _ = writeln!(out, "\n## {sc}\n");
        let _ = writeln!(out, "| {} |", head.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(head.len()));
        for row in body {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        let notes: Vec<String> = report
            .runs
            .iter()
            .filter(|r| r.scenario == sc)
            .flat_map(|r| r.notes.iter().map(move |n| format!("- {}: {n}", r.label())))
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(out, "\n{}", notes.join("\n"));
        }
        for p in plots {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with(&format!("{sc}-")) {
                let _ = writeln!(out, "\n![{name}]({name})");
            }
        }
    }
    if !report.ratios.is_empty() {
        let _ = writeln!(
            out,
            "\n## Ratios (Roomcast / baseline)\n\n| scenario | variant | metric | target | baseline | roomcast | baseline value | ratio |\n|---|---|---|---|---|---|---|---|"
        );
        for r in &report.ratios {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2}x |",
                r.scenario,
                r.variant,
                r.metric,
                r.target,
                r.baseline,
                fmt_num(r.roomcast),
                fmt_num(r.baseline_value),
                r.ratio
            );
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\n## Warnings\n");
        for w in &report.warnings {
            let _ = writeln!(out, "- {w}");
        }
    }
    out
}

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The embedded DejaVu Sans serves every family name plotters asks for.
        for family in ["sans-serif", "serif", "monospace"] {
            let _ =
                plotters::style::register_font(family, FontStyle::Normal, dejavu::sans::regular());
        }
    });
}

const COLORS: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws every plot for the report into `dir`; returns the files written.
pub fn plots(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    let mut files = Vec::new();
    for sc in scenarios(report) {
        let runs: Vec<&Run> = report.runs.iter().filter(|r| r.scenario == sc).collect();
        let lat: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .filter_map(|r| {
                let h = r.hist.as_ref().filter(|h| h.total > 0)?;
                // x = "nines": 0 is p0, 1 is p90, 2 is p99, 3 is p99.9 ...
                let pts = (0..=50)
                    .map(|i| {
                        let nines = f64::from(i) / 10.0;
                        let q = 1.0 - 10f64.powf(-nines);
                        (nines, (h.quantile(q) as f64 / 1e6).max(0.001))
                    })
                    .collect();
                Some((r.label(), pts))
            })
            .collect();
        if !lat.is_empty() {
            let ylabel = if sc == "echo" || sc == "rpc" {
                "round-trip time, ms (log)"
            } else {
                "publish-to-deliver latency, ms (log)"
            };
            let p = dir.join(format!("{sc}-latency.png"));
            line_plot(
                &p,
                &format!("{sc}: latency distribution"),
                "percentile (1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)",
                ylabel,
                &lat,
                true,
            )?;
            files.push(p);
        }
        let thr: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .filter(|r| r.throughput.len() > 1)
            .map(|r| (r.label(), r.throughput.clone()))
            .collect();
        if !thr.is_empty() {
            let ylabel = match sc.as_str() {
                "echo" | "rpc" => "round trips / s",
                "idle" | "storm" => "connections / s",
                _ => "deliveries / s",
            };
            let p = dir.join(format!("{sc}-throughput.png"));
            line_plot(
                &p,
                &format!("{sc}: throughput over time"),
                "seconds",
                ylabel,
                &thr,
                false,
            )?;
            files.push(p);
        }
        let rss: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .filter(|r| r.rss_mib.len() > 1)
            .map(|r| (r.label(), r.rss_mib.clone()))
            .collect();
        if !rss.is_empty() && matches!(sc.as_str(), "slow" | "idle" | "fanout") {
            let p = dir.join(format!("{sc}-memory.png"));
            line_plot(
                &p,
                &format!("{sc}: server memory"),
                "seconds",
                "RSS, MiB",
                &rss,
                false,
            )?;
            files.push(p);
        }
    }
    Ok(files)
}

fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (_, pts) in series {
        for (x, y) in pts {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y0 = y0.min(*y);
            y1 = y1.max(*y);
        }
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let draw = |res: Result<(), DrawingAreaErrorKind<_>>| res.map_err(|e| anyhow::anyhow!("{e}"));
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80);
    if log_y {
        let lo = (y0.max(0.001) / 1.5).max(0.001);
        let hi = (y1 * 1.5).max(lo * 10.0);
        let mut chart = builder
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(chart.configure_mesh().x_desc(xlabel).y_desc(ylabel).draw())?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        draw(
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw(),
        )?;
    } else {
        let hi = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
        let mut chart = builder
            .build_cartesian_2d(x0..x1, 0f64..hi)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        draw(
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc(ylabel)
                .y_label_formatter(&|v| fmt_num(*v))
                .draw(),
        )?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        draw(
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw(),
        )?;
    }
    root.present()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Writes `report.json`, `report.md` and the plots into `dir`.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let plots = plots(report, dir)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(dir.join("report.md"), markdown(report, &plots))?;
    Ok(plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_roomcast_build_gets_its_own_ratio_against_each_baseline() {
        let run = |target: &str, v: f64| {
            let mut r = Run::new("fanout", target, "");
            r.set("delivered_per_s", v);
            r
        };
        let runs = [
            run("roomcast", 90.0),
            run("roomcast@base", 80.0),
            run("fws", 100.0),
        ];
        let got: Vec<(String, String, f64)> = ratios(&runs)
            .into_iter()
            .map(|r| (r.target, r.baseline, r.ratio))
            .collect();
        assert_eq!(
            got,
            vec![
                ("roomcast".to_string(), "fws".to_string(), 0.9),
                ("roomcast@base".to_string(), "fws".to_string(), 0.8),
            ]
        );
    }
}
