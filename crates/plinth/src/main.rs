//! `plinth`: the application runtime binary. All logic lives in the library crates; this
//! file parses flags, sets up logging and the Tokio runtime, and handles signals.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use plinth_api::admin::LogControl;
use plinth_api::{ListenOptions, Server};
use plinth_runtime::config::Sources;
use plinth_runtime::{Options, Runtime};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Plinth: an application runtime serving Layotto's and Dapr's APIs over pluggable components.
#[derive(Debug, Parser)]
#[command(name = "plinth", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar. With no config, every API is served on in-memory components.
    Run(Box<RunArgs>),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The app's id, used for key prefixing and as the pub/sub consumer group.
    #[arg(long, env = "APP_ID", default_value = "plinth")]
    app_id: String,
    /// Port of the app's gRPC callback (Layotto's AppCallback), for pub/sub delivery.
    #[arg(long)]
    app_port: Option<u16>,
    /// Protocol of the app's callback; only `grpc` is served in this release.
    #[arg(long, default_value = "grpc", value_parser = ["grpc"])]
    app_protocol: String,
    /// Bound on deliveries to the app in flight at once (all subscriptions together).
    #[arg(long)]
    app_max_concurrency: Option<usize>,
    /// Address every listener binds.
    #[arg(long, default_value = "127.0.0.1")]
    listen_address: IpAddr,
    /// Layotto gRPC API port (0 picks a free port).
    #[arg(long, default_value_t = 34904)]
    grpc_port: u16,
    /// Dapr gRPC port (0 picks a free port); serves the same gRPC services.
    #[arg(long, default_value_t = 50001)]
    dapr_grpc_port: u16,
    /// Dapr HTTP API port, `/v1.0` (0 picks a free port).
    #[arg(long, default_value_t = 3500)]
    dapr_http_port: u16,
    /// Also serve the gRPC API on this Unix socket.
    #[arg(long)]
    grpc_uds: Option<PathBuf>,
    /// Admin port: /actuator/*, /metrics (0 picks a free port).
    #[arg(long, default_value_t = 34999)]
    admin_port: u16,
    /// A Configuration resource (Dapr's or Plinth's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A directory (or file) of YAML resources: Components, Subscriptions, Resiliency.
    /// Repeatable.
    #[arg(long = "resources-path", visible_alias = "components-path")]
    resources_path: Vec<PathBuf>,
    /// A Layotto config.json whose grpc_config section to read.
    #[arg(long)]
    layotto_config: Option<PathBuf>,
    /// Largest gRPC message, in bytes, in either direction; also the largest HTTP request
    /// body.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_message_size: usize,
    /// How long to let in-flight requests finish on SIGTERM/SIGINT (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace_period: Duration,
    /// Log level or filter (e.g. `info`, `debug`, `info,plinth_runtime=debug`).
    #[arg(long, env = "PLINTH_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Worker threads for the async runtime (default: the CPUs available).
    #[arg(long)]
    worker_threads: Option<usize>,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    plinth_core::metadata::parse_duration(raw)
        .ok_or_else(|| format!("{raw:?} is not a duration (e.g. 5s, 500ms)"))
}

/// Changes the log filter at run time through a reload handle.
#[derive(Debug)]
struct Logs {
    handle: reload::Handle<EnvFilter, Registry>,
    base: String,
    overrides: std::sync::Mutex<Vec<(String, String)>>,
}

impl LogControl for Logs {
    fn set_level(&self, target: &str, level: &str) -> Result<(), String> {
        let mut overrides = self
            .overrides
            .lock()
            .map_err(|_| "log control lock poisoned".to_string())?;
        let mut base = self.base.clone();
        if target.is_empty() {
            overrides.clear();
            base = level.to_string();
        } else {
            overrides.retain(|(t, _)| t != target);
            overrides.push((target.to_string(), level.to_string()));
        }
        let directives: Vec<String> = std::iter::once(base)
            .chain(overrides.iter().map(|(t, l)| format!("{t}={l}")))
            .collect();
        let filter = EnvFilter::try_new(directives.join(",")).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

fn init_logging(args: &RunArgs) -> anyhow::Result<Arc<Logs>> {
    let filter = EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match args.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stdout),
            )
            .init(),
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer(std::io::stdout),
                )
                .init()
        }
    }
    Ok(Arc::new(Logs {
        handle,
        base: args.log_level.clone(),
        overrides: Default::default(),
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let logs = init_logging(&args)?;
    let workers = args
        .worker_threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("plinth")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(*args, logs));
    if let Err(err) = &result {
        tracing::error!(error = %format!("{err:#}"), "plinth failed");
    }
    // Do not wait for detached background tasks (delivery retries, probes) on exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn run(args: RunArgs, logs: Arc<Logs>) -> anyhow::Result<()> {
    let options = Options {
        app_id: args.app_id.clone(),
        sources: Sources {
            config: args.config.clone(),
            resources: args.resources_path.clone(),
            layotto: args.layotto_config.clone(),
        },
        app_max_concurrency: args.app_max_concurrency,
    };
    let rt = Runtime::start(options)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = ListenOptions {
        address: args.listen_address,
        grpc_port: args.grpc_port,
        dapr_grpc_port: args.dapr_grpc_port,
        dapr_http_port: args.dapr_http_port,
        admin_port: args.admin_port,
        app_port: args.app_port,
        max_message_size: args.max_message_size,
        grpc_uds: args.grpc_uds.clone(),
    };
    let server = Server::start(rt, listen, Some(logs))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Dapr's Shutdown rpc stops Plinth exactly as a signal does.
    tokio::select! {
        signal = wait_for_signal() => signal?,
        _ = server.shutdown_requested() => tracing::info!("shutdown requested through the API"),
    }
    server.shutdown(args.shutdown_grace_period).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}
