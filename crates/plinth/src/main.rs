//! `plinth`: the application runtime binary. All logic lives in the library crates; this
//! file parses flags, sets up logging and the Tokio runtime, and handles signals.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use plinth_api::admin::LogControl;
use plinth_api::app::{AppProtocol, HealthCheck};
use plinth_api::{ListenOptions, Server};
use plinth_runtime::config::Sources;
use plinth_runtime::{Options, Runtime};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// mimalloc, for its per-size-class free lists: see the workspace manifest.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// The app's port: Plinth invokes the app and delivers events and input bindings there.
    #[arg(long)]
    app_port: Option<u16>,
    /// The app's protocol: `http` (Dapr's default) or `grpc` (Dapr's AppCallback, falling
    /// back to Layotto's). A Layotto config's grpc_callback_port implies `grpc`.
    #[arg(long)]
    app_protocol: Option<String>,
    /// The app's host.
    #[arg(long, default_value = "127.0.0.1")]
    app_channel_address: String,
    /// Probe the app's health and hold deliveries while it is unhealthy.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    enable_app_health_check: Option<bool>,
    /// HTTP apps: the path probed.
    #[arg(long, default_value = "/healthz")]
    app_health_check_path: String,
    /// Seconds between probes.
    #[arg(long, default_value_t = 5)]
    app_health_probe_interval: u64,
    /// Milliseconds a probe may take.
    #[arg(long, default_value_t = 500)]
    app_health_probe_timeout: u64,
    /// Failed probes in a row before the app counts as unhealthy.
    #[arg(long, default_value_t = 3)]
    app_health_threshold: u32,
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
    /// Mesh port: other sidecars call this app here, over HTTP/2 with mTLS when configured
    /// (0 picks a free port). Dapr's `--dapr-internal-grpc-port` sets it too.
    #[arg(long, default_value_t = 50002, alias = "dapr-internal-grpc-port")]
    mesh_port: u16,
    /// Admin port: /actuator/*, /metrics, /functions, /wasm/* (0 picks a free port).
    #[arg(long, default_value_t = 34999)]
    admin_port: u16,
    /// The functions' HTTP ingress port (0 picks a free port).
    #[arg(long, default_value_t = 2045)]
    functions_port: u16,
    /// A directory of `.wasm` files: `NAME.wasm` is function NAME, reloaded on change and
    /// removed on delete.
    #[arg(long)]
    functions_dir: Option<PathBuf>,
    /// Where compiled functions are cached (private to this user; default
    /// `$XDG_CACHE_HOME/plinth/wasm` or `~/.cache/plinth/wasm`).
    #[arg(long)]
    functions_cache_dir: Option<PathBuf>,
    /// Function instances alive at once, across all functions (the pooling allocator's size).
    #[arg(long, default_value_t = 128)]
    functions_pool_size: u32,
    /// The largest linear memory a function may be given: bytes or a quantity (`256Mi`).
    #[arg(long, value_parser = parse_size, default_value = "256Mi")]
    functions_max_memory: usize,
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
    /// Largest request or response body, on every API and to and from the app: bytes, or
    /// a quantity such as `4Mi`, `16MB` (default 4Mi).
    #[arg(long, visible_alias = "max-message-size", value_parser = parse_size)]
    max_body_size: Option<usize>,
    /// Legacy form of --max-body-size, in MB (daprd's `--dapr-http-max-request-size`).
    #[arg(long)]
    dapr_http_max_request_size: Option<usize>,
    /// daprd's flags Plinth has no use for: accepted, ignored with a warning.
    #[command(flatten)]
    daprd: DaprdFlags,
    /// How long to let in-flight requests finish on SIGTERM/SIGINT (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_grace_period: Duration,
    /// Log level or filter (e.g. `info`, `debug`, `info,plinth_runtime=debug`).
    #[arg(long, env = "PLINTH_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// daprd's spelling of `--log-format json`.
    #[arg(long)]
    log_as_json: bool,
    /// daprd's spelling of `--shutdown-grace-period`, in seconds.
    #[arg(long)]
    dapr_graceful_shutdown_seconds: Option<u64>,
    /// Worker threads for the async runtime (default: the CPUs available). With 1, all of
    /// Plinth runs on one thread (tokio's current-thread scheduler): the lightest sidecar.
    #[arg(long)]
    worker_threads: Option<usize>,
}

/// The default body limit: 4 MiB, as Dapr's.
const DEFAULT_MAX_BODY_SIZE: usize = 4 << 20;

/// daprd flags that do not apply to Plinth. They are accepted so that a daprd command line
/// runs unchanged, and each one given is named in a warning at startup.
#[derive(Debug, clap::Args)]
struct DaprdFlags {
    #[arg(long, hide = true)]
    placement_host_address: Option<String>,
    #[arg(long, hide = true)]
    scheduler_host_address: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_metrics: Option<String>,
    #[arg(long, hide = true)]
    metrics_port: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_profiling: Option<String>,
    #[arg(long, hide = true)]
    profile_port: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_api_logging: Option<String>,
    #[arg(long, hide = true)]
    mode: Option<String>,
    #[arg(long, hide = true)]
    control_plane_address: Option<String>,
    #[arg(long, hide = true)]
    sentry_address: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    enable_mtls: Option<String>,
    #[arg(long, hide = true)]
    dapr_public_port: Option<String>,
    #[arg(long, hide = true)]
    dapr_block_shutdown_duration: Option<String>,
    #[arg(long, hide = true, visible_alias = "read-buffer-size")]
    dapr_http_read_buffer_size: Option<String>,
    #[arg(long, hide = true)]
    config_path: Option<String>,
}

impl DaprdFlags {
    fn given(&self) -> Vec<&'static str> {
        let all = [
            (
                "--placement-host-address",
                self.placement_host_address.is_some(),
            ),
            (
                "--scheduler-host-address",
                self.scheduler_host_address.is_some(),
            ),
            ("--enable-metrics", self.enable_metrics.is_some()),
            ("--metrics-port", self.metrics_port.is_some()),
            ("--enable-profiling", self.enable_profiling.is_some()),
            ("--profile-port", self.profile_port.is_some()),
            ("--enable-api-logging", self.enable_api_logging.is_some()),
            ("--mode", self.mode.is_some()),
            (
                "--control-plane-address",
                self.control_plane_address.is_some(),
            ),
            ("--sentry-address", self.sentry_address.is_some()),
            ("--enable-mtls", self.enable_mtls.is_some()),
            ("--dapr-public-port", self.dapr_public_port.is_some()),
            (
                "--dapr-block-shutdown-duration",
                self.dapr_block_shutdown_duration.is_some(),
            ),
            (
                "--dapr-http-read-buffer-size",
                self.dapr_http_read_buffer_size.is_some(),
            ),
            ("--config-path", self.config_path.is_some()),
        ];
        all.into_iter()
            .filter(|(_, g)| *g)
            .map(|(n, _)| n)
            .collect()
    }
}

/// A size in bytes: a plain number, or a quantity with a decimal (`k`, `M`, `G`, `KB`,
/// `MB`, `GB`) or binary (`Ki`, `Mi`, `Gi`) suffix, as Kubernetes quantities and daprd's
/// `--max-body-size` take them.
fn parse_size(raw: &str) -> Result<usize, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a size (e.g. 4194304, 4Mi, 16MB)"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "k" | "K" | "KB" | "kB" => 1000,
        "M" | "MB" => 1000 * 1000,
        "G" | "GB" => 1000 * 1000 * 1000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        other => return Err(format!("{raw:?}: unknown size unit {other:?}")),
    };
    let size = n
        .checked_mul(factor)
        .ok_or_else(|| format!("{raw:?} is too large"))?;
    if size == 0 {
        return Err(format!("{raw:?}: the size must be positive"));
    }
    Ok(size)
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
    let format = if args.log_as_json {
        LogFormat::Json
    } else {
        args.log_format
    };
    match format {
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
    // One worker: the thread that runs `main` is the worker, with no work-stealing
    // machinery between tasks.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = builder
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
    for flag in args.daprd.given() {
        tracing::warn!(%flag, "daprd flag accepted and ignored: it has no meaning for Plinth");
    }
    let app_protocol = match &args.app_protocol {
        Some(p) => Some(AppProtocol::parse(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let max_body_size = match (args.max_body_size, args.dapr_http_max_request_size) {
        (Some(size), _) => size,
        (None, Some(mb)) if mb > 0 => mb.saturating_mul(1 << 20),
        (None, Some(_)) => anyhow::bail!("--dapr-http-max-request-size must be positive"),
        (None, None) => DEFAULT_MAX_BODY_SIZE,
    };
    let app_health_check = args
        .enable_app_health_check
        .unwrap_or(false)
        .then(|| HealthCheck {
            path: args.app_health_check_path.clone(),
            interval: Duration::from_secs(args.app_health_probe_interval.max(1)),
            timeout: Duration::from_millis(args.app_health_probe_timeout.max(1)),
            threshold: args.app_health_threshold.max(1),
        });
    let app_token = std::env::var("APP_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let api_token = plinth_api::auth::ApiToken::new(std::env::var("DAPR_API_TOKEN").ok());
    if api_token.is_set() {
        tracing::info!("DAPR_API_TOKEN is set: API calls must present it");
    }
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
        app_protocol,
        app_host: args.app_channel_address.clone(),
        app_token,
        app_health_check,
        api_token,
        max_message_size: max_body_size,
        grpc_uds: args.grpc_uds.clone(),
        functions_port: args.functions_port,
        mesh_port: args.mesh_port,
        functions_dir: args.functions_dir.clone(),
        wasm_engine: plinth_wasm::EngineOptions {
            pool_size: args.functions_pool_size,
            max_memory_bytes: args.functions_max_memory as u64,
            cache_dir: args
                .functions_cache_dir
                .clone()
                .unwrap_or_else(plinth_wasm::engine::default_cache_dir),
        },
    };
    let server = Server::start(rt, listen, Some(logs))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Dapr's Shutdown rpc stops Plinth exactly as a signal does.
    tokio::select! {
        signal = wait_for_signal() => signal?,
        _ = server.shutdown_requested() => tracing::info!("shutdown requested through the API"),
    }
    let grace = args
        .dapr_graceful_shutdown_seconds
        .map(Duration::from_secs)
        .unwrap_or(args.shutdown_grace_period);
    server.shutdown(grace).await;
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
