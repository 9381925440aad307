//! The `roomcast` binary: flags and config into a [`gateway::Config`],
//! SIGTERM/SIGINT into the shutdown future, everything else in [`gateway::run`].

use gateway::config::{LogFormat, Startup};
use std::process::ExitCode;

// The allocator is chosen by cargo feature: mimalloc by default (it gives
// memory back after a burst of connections; docs/operations.md has the
// figures), jemalloc with `--features jemalloc`, the system's with neither.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn main() -> ExitCode {
    let config = match gateway::Config::load(std::env::args_os()) {
        Err(clap_error) => clap_error.exit(),
        Ok(Err(e)) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(2);
        }
        Ok(Ok(Startup::PrintConfig(toml))) => {
            print!("{toml}");
            return ExitCode::SUCCESS;
        }
        Ok(Ok(Startup::Run(c))) => *c,
    };
    init_logging(config.log_format);
    // Each session is a file descriptor; many systems start processes with a
    // soft limit of 1024 while allowing far more.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
    // Only the binary installs a recorder; the node and the adapters emit
    // through the `metrics` facade, and `/metrics` renders this handle.
    let prometheus = match gateway::metrics::prometheus_builder().install_recorder() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("roomcast: cannot install the metrics recorder: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("roomcast: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(gateway::run(config, prometheus, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roomcast: {e}");
            ExitCode::from(match e {
                gateway::RunError::Config(_) => 2,
                _ => 1,
            })
        }
    }
}
