//! The app channel: Plinth as the client of the app, over HTTP or gRPC (`--app-protocol`).
//! The building blocks call it through `plinth_runtime::app::AppChannel`; this module holds
//! the two wire implementations and the app health probe.

mod grpc;
mod http;

use std::sync::Arc;
use std::time::Duration;

use plinth_core::{Error, Result};
use plinth_runtime::app::{AppChannel, AppHealth};
use tokio::sync::watch;

pub use grpc::GrpcApp;
pub use http::HttpApp;

/// How long one event or binding delivery to the app may take.
pub(crate) const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long listing subscriptions or bindings may take.
pub(crate) const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// The header (HTTP) or metadata key (gRPC) that carries API tokens, and which headers pass.
pub use plinth_runtime::app::{API_TOKEN_HEADER, forwardable};

/// The app's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// Plain HTTP/1.1.
    Http,
    /// gRPC over HTTP/2 (Dapr's `AppCallback`, else Layotto's).
    Grpc,
}

impl AppProtocol {
    /// The name `--app-protocol` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }

    /// Parse `--app-protocol`. Dapr's TLS and h2c variants are named so the error says why.
    pub fn parse(raw: &str) -> Result<Self> {
        match raw.to_ascii_lowercase().as_str() {
            "http" => Ok(Self::Http),
            "grpc" => Ok(Self::Grpc),
            other @ ("https" | "grpcs" | "h2c") => Err(Error::invalid_argument(format!(
                "--app-protocol {other} is not supported: the app channel speaks http or grpc on loopback"
            ))),
            other => Err(Error::invalid_argument(format!(
                "--app-protocol {other:?}: expected http or grpc"
            ))),
        }
    }
}

/// App health checks (`--enable-app-health-check` and its settings).
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// HTTP apps: the path probed.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// How long a probe may take.
    pub timeout: Duration,
    /// Failed probes in a row before the app counts as unhealthy.
    pub threshold: u32,
}

/// Where the app is and how to talk to it.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The protocol.
    pub protocol: AppProtocol,
    /// The app's host (`--app-channel-address`).
    pub host: String,
    /// The app's port (`--app-port`).
    pub port: u16,
    /// Sent to the app in `dapr-api-token` (`APP_API_TOKEN`).
    pub token: Option<String>,
    /// Largest message to or from the app.
    pub max_body_size: usize,
    /// Health checks, when enabled.
    pub health_check: Option<HealthCheck>,
}

/// Open the channel (lazily: the app may start later).
pub fn connect(options: &AppOptions) -> Result<Arc<dyn AppChannel>> {
    Ok(match options.protocol {
        AppProtocol::Http => Arc::new(HttpApp::new(options)?),
        AppProtocol::Grpc => Arc::new(GrpcApp::new(options)?),
    })
}

/// Probe the app every interval; it turns unhealthy after `threshold` failures in a row and
/// healthy again on the first success. Without health checks, it is always healthy.
pub fn watch_health(
    channel: Arc<dyn AppChannel>,
    check: Option<HealthCheck>,
    mut shutdown: watch::Receiver<bool>,
) -> AppHealth {
    let Some(check) = check else {
        return AppHealth::always();
    };
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            let result = tokio::time::timeout(check.timeout, channel.health()).await;
            let ok = matches!(result, Ok(Ok(())));
            if ok {
                failures = 0;
                if !*tx.borrow() {
                    tracing::info!(app = %channel.address(), "the app is healthy again");
                    tx.send_replace(true);
                }
            } else {
                failures = failures.saturating_add(1);
                if failures >= check.threshold && *tx.borrow() {
                    let reason = match result {
                        Ok(Err(e)) => e.to_string(),
                        _ => "the probe timed out".to_string(),
                    };
                    tracing::warn!(app = %channel.address(), %reason, "the app is unhealthy; deliveries wait");
                    tx.send_replace(false);
                }
            }
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(check.interval) => {}
            }
        }
    });
    AppHealth::from_receiver(rx)
}
