//! `bench-dapr`: the Dapr-compatibility benchmark.
//!
//! Dapr's HTTP and gRPC APIs through Plinth against a bare server answering
//! the same payloads on the same protocols (axum for HTTP, tonic for gRPC),
//! and service invocation of a local HTTP app through Plinth against two
//! baselines: calling that app directly, and haproxy proxying to it:
//!
//! | scenario | Plinth | baseline |
//! | --- | --- | --- |
//! | GetState HTTP | `GET /v1.0/state/{store}/{key}` | bare axum, same body, `Content-Type` and `ETag` |
//! | GetState gRPC | `Dapr/GetState` | bare tonic `Dapr/GetState` |
//! | Publish HTTP | `POST /v1.0/publish/{pubsub}/{topic}` → 204 | bare axum → 204 |
//! | Publish gRPC | `Dapr/PublishEvent` | bare tonic `Dapr/PublishEvent` |
//! | Invoke HTTP | `POST /v1.0/invoke/benchapp/method/echo` | `POST /echo` on the app directly; the same request through haproxy, which rewrites the path to `/echo` |
//!
//! HTTP goes through one hyper-util keep-alive pool (HTTP/1.1), gRPC through
//! one multiplexed tonic channel per server. Each run starts the app (the
//! bare server's `--app` mode), haproxy, the bare server and Plinth fresh,
//! samples their idle RSS, then for every scenario measures open loop at a
//! low and a high rate and closed loop at a fixed concurrency, alternating
//! the baselines and Plinth measurement by measurement.
//!
//! Results go to stdout as Markdown and to `bench/results/<name>.json`.
//! Target checks are informational: the exit status is 0 unless something
//! failed to run.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use dapr::dapr::proto::runtime::v1 as dpb;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plinth_bench::payload::json_value;
use plinth_bench::report::{self, Check, ProcessExtra};
use plinth_bench::stats::{self, Series, Side};
use plinth_bench::{
    Candidate, CommonArgs, HaproxySpec, Pinning, Proc, ProcessSeries, Readiness, Report, RunConfig,
    Session, StopSignal, Sut, SutSpec, haproxy, pin,
};
use serde::Serialize;
use tonic::transport::Channel;

/// Added p99 latency per call allowed at the low rate for the HTTP
/// scenarios, µs.
const TARGET_ADDED_P99_HTTP_US: f64 = 150.0;
/// Closed-loop throughput required relative to the baseline.
const TARGET_THROUGHPUT_RATIO: f64 = 0.6;

/// Key read by the GetState scenarios (saved before measuring).
const GET_KEY: &str = "bench-get";
/// The app id Plinth runs with and the invoke route names.
const APP_ID: &str = "benchapp";
/// Label of the app called directly in the Invoke scenario.
const APP_LABEL: &str = "app";
/// Label of haproxy in front of the app in the Invoke scenario.
const HAPROXY_LABEL: &str = "haproxy";
/// The app's route.
const APP_PATH: &str = "/echo";
/// How long the checks before measuring may take per server.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(10);

/// Dapr-compatibility benchmark: Plinth's Dapr APIs vs. a bare server, and
/// invocation through Plinth vs. calling the app directly and vs. haproxy.
#[derive(Debug, Parser)]
#[command(name = "bench-dapr", args_override_self = true)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// Size of the JSON value saved, published and echoed, bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// State store name.
    #[arg(long, default_value = "statestore")]
    store: String,
    /// Pub/sub component name.
    #[arg(long, default_value = "pubsub")]
    pubsub: String,
    /// Topic published to; nothing subscribes to it.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Core for the invoked app [default: the SUTs' core].
    #[arg(long)]
    app_core: Option<usize>,
    /// Leave haproxy, the second Invoke HTTP baseline, out.
    #[arg(long)]
    no_haproxy: bool,
    /// The haproxy executable (Debian's package `haproxy`), looked up in
    /// PATH, then /usr/sbin.
    #[arg(long, default_value = "haproxy")]
    haproxy_bin: PathBuf,
    /// Result name (`<results-dir>/<name>.json`).
    #[arg(long, default_value = "dapr")]
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
enum Scenario {
    GetStateHttp,
    GetStateGrpc,
    PublishHttp,
    PublishGrpc,
    InvokeHttp,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::GetStateHttp,
        Scenario::GetStateGrpc,
        Scenario::PublishHttp,
        Scenario::PublishGrpc,
        Scenario::InvokeHttp,
    ];

    /// Width of the longest name, for progress lines.
    const NAME_WIDTH: usize = 13;

    fn name(self) -> &'static str {
        match self {
            Scenario::GetStateHttp => "GetState HTTP",
            Scenario::GetStateGrpc => "GetState gRPC",
            Scenario::PublishHttp => "Publish HTTP",
            Scenario::PublishGrpc => "Publish gRPC",
            Scenario::InvokeHttp => "Invoke HTTP",
        }
    }

    fn is_http(self) -> bool {
        matches!(
            self,
            Scenario::GetStateHttp | Scenario::PublishHttp | Scenario::InvokeHttp
        )
    }
}

/// The configuration as run, recorded in the JSON result.
#[derive(Debug, Clone, Serialize)]
struct Config {
    #[serde(flatten)]
    run: RunConfig,
    scenarios: Vec<Scenario>,
    value_size: usize,
    store: String,
    pubsub: String,
    topic: String,
    app_core: Option<usize>,
    /// The haproxy executable, when haproxy is an Invoke HTTP baseline.
    haproxy_bin: Option<PathBuf>,
}

impl Config {
    fn resolve(args: &Args, pinning: Pinning) -> anyhow::Result<Self> {
        ensure!(!args.scenarios.is_empty(), "no scenarios selected");
        let haproxy_bin = if args.no_haproxy || !args.scenarios.contains(&Scenario::InvokeHttp) {
            None
        } else {
            Some(haproxy::find_program(&args.haproxy_bin).context(
                "haproxy is the second Invoke HTTP baseline: install Debian's package \
                 (`apt-get install haproxy`; `bench/run.sh dapr` does when run as root), \
                 pass --haproxy-bin, or leave it out with --no-haproxy",
            )?)
        };
        Ok(Self {
            run: RunConfig::resolve(&args.common)?,
            scenarios: args.scenarios.clone(),
            value_size: args.value_size,
            store: args.store.clone(),
            pubsub: args.pubsub.clone(),
            topic: args.topic.clone(),
            app_core: args.app_core.or(pinning.sut_core()),
            haproxy_bin,
        })
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// One HTTP/1.1 keep-alive pool for every HTTP server of a run.
fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<DaprClient<Channel>> {
    Ok(DaprClient::new(
        plinth_bench::sut::grpc_channel(addr).await?,
    ))
}

/// One HTTP request and what a correct answer looks like.
#[derive(Debug, Clone)]
struct HttpCall {
    method: Method,
    uri: Uri,
    /// Sent as `application/json`.
    body: Option<Bytes>,
    status: StatusCode,
    body_len: usize,
}

/// A response: head and whole body (read to the end so the connection goes
/// back to the pool).
type HttpAnswer = (http::response::Parts, Bytes);

impl HttpCall {
    async fn exchange(self, client: &HttpClient) -> anyhow::Result<HttpAnswer> {
        let mut request = Request::builder().method(self.method).uri(self.uri);
        if self.body.is_some() {
            request = request.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let request = request.body(Full::new(self.body.unwrap_or_default()))?;
        let (parts, body) = client.request(request).await?.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts, body))
    }

    /// Sends the request and checks the status and body length.
    async fn send(self, client: &HttpClient) -> anyhow::Result<HttpAnswer> {
        let (status, body_len) = (self.status, self.body_len);
        let (parts, body) = self.exchange(client).await?;
        ensure!(
            parts.status == status,
            "HTTP {} (expected {status}): {}",
            parts.status,
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        ensure!(
            body.len() == body_len,
            "HTTP body of {} bytes, expected {body_len}",
            body.len()
        );
        Ok((parts, body))
    }
}

/// The call a scenario makes on one side; cloned per call so both sides pay
/// the same client-side cost.
#[derive(Debug, Clone)]
enum Call {
    Http(HttpClient, HttpCall),
    GetState(DaprClient<Channel>, dpb::GetStateRequest, usize),
    Publish(DaprClient<Channel>, dpb::PublishEventRequest),
}

impl Call {
    async fn send(self) -> anyhow::Result<()> {
        match self {
            Call::Http(client, call) => {
                call.send(&client).await?;
            }
            Call::GetState(mut client, req, expected) => {
                let got = client.get_state(req).await?.into_inner().data.len();
                ensure!(
                    got == expected,
                    "GetState returned {got} bytes, expected {expected}"
                );
            }
            Call::Publish(mut client, req) => {
                client.publish_event(req).await?;
            }
        }
        Ok(())
    }
}

/// A sidecar (the bare server or the candidate) as the benchmark reaches it.
#[derive(Debug)]
struct Front {
    label: String,
    proc: Proc,
    http: SocketAddr,
    grpc: DaprClient<Channel>,
}

/// An HTTP server on the Invoke path that is not a sidecar: the app, or
/// haproxy in front of it.
#[derive(Debug, Clone, Copy)]
struct Hop {
    proc: Proc,
    http: SocketAddr,
}

/// Who answers a measured call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The bare server; for Invoke HTTP, the app called directly.
    Baseline,
    /// haproxy in front of the app (Invoke HTTP only), a second baseline.
    Haproxy,
    /// Plinth (or, with `--candidate bare`, a second bare server).
    Candidate,
}

impl Lane {
    fn side(self) -> Side {
        match self {
            Lane::Baseline | Lane::Haproxy => Side::Baseline,
            Lane::Candidate => Side::Candidate,
        }
    }
}

/// The servers of one run and the clients that reach them.
#[derive(Debug)]
struct Wire {
    http: HttpClient,
    bare: Front,
    candidate: Front,
    app: Hop,
    haproxy: Option<Hop>,
}

/// What is sent.
#[derive(Debug)]
struct Payload {
    value: Bytes,
    store: String,
    pubsub: String,
    topic: String,
}

/// The route invoking the app's `/echo` through a sidecar; haproxy is sent
/// the same path.
fn invoke_path() -> String {
    format!("/v1.0/invoke/{APP_ID}/method/echo")
}

/// haproxy's `replace-path` from [`invoke_path`] to the app's route: the
/// method part of an invoke path becomes the app's path, as a Dapr sidecar
/// maps it.
fn haproxy_rewrite() -> (String, String) {
    (
        format!(r"^/v1\.0/invoke/{APP_ID}/method/(.*)$"),
        r"/\1".to_owned(),
    )
}

fn uri(addr: SocketAddr, path: &str) -> anyhow::Result<Uri> {
    format!("http://{addr}{path}")
        .parse()
        .with_context(|| format!("building a URI for {path}"))
}

impl Wire {
    fn front(&self, side: Side) -> &Front {
        match side {
            Side::Baseline => &self.bare,
            Side::Candidate => &self.candidate,
        }
    }

    /// Who is measured on `scenario`, in the order measured: the baselines,
    /// then the candidate.
    fn lanes(&self, scenario: Scenario) -> Vec<Lane> {
        let haproxy = scenario == Scenario::InvokeHttp && self.haproxy.is_some();
        [
            Some(Lane::Baseline),
            haproxy.then_some(Lane::Haproxy),
            Some(Lane::Candidate),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The label and process measured, and the call, for `scenario` on
    /// `lane`.
    fn target(
        &self,
        scenario: Scenario,
        lane: Lane,
        p: &Payload,
    ) -> anyhow::Result<(String, Proc, Call)> {
        let side = lane.side();
        let front = self.front(side);
        let http = |call: HttpCall| Call::Http(self.http.clone(), call);
        let call = match scenario {
            Scenario::GetStateHttp => http(HttpCall {
                method: Method::GET,
                uri: uri(front.http, &format!("/v1.0/state/{}/{GET_KEY}", p.store))?,
                body: None,
                status: StatusCode::OK,
                body_len: p.value.len(),
            }),
            Scenario::GetStateGrpc => Call::GetState(
                front.grpc.clone(),
                dpb::GetStateRequest {
                    store_name: p.store.clone(),
                    key: GET_KEY.into(),
                    ..Default::default()
                },
                p.value.len(),
            ),
            Scenario::PublishHttp => http(HttpCall {
                method: Method::POST,
                uri: uri(
                    front.http,
                    &format!("/v1.0/publish/{}/{}", p.pubsub, p.topic),
                )?,
                body: Some(p.value.clone()),
                status: StatusCode::NO_CONTENT,
                body_len: 0,
            }),
            Scenario::PublishGrpc => Call::Publish(
                front.grpc.clone(),
                dpb::PublishEventRequest {
                    pubsub_name: p.pubsub.clone(),
                    topic: p.topic.clone(),
                    data: p.value.to_vec(),
                    data_content_type: "application/json".into(),
                    ..Default::default()
                },
            ),
            Scenario::InvokeHttp => {
                let (addr, path) = match lane {
                    Lane::Baseline => (self.app.http, APP_PATH.to_owned()),
                    Lane::Haproxy => (self.haproxy()?.http, invoke_path()),
                    Lane::Candidate => (front.http, invoke_path()),
                };
                http(HttpCall {
                    method: Method::POST,
                    uri: uri(addr, &path)?,
                    body: Some(p.value.clone()),
                    status: StatusCode::OK,
                    body_len: p.value.len(),
                })
            }
        };
        Ok(match (scenario, lane) {
            (Scenario::InvokeHttp, Lane::Baseline) => (APP_LABEL.into(), self.app.proc, call),
            (Scenario::InvokeHttp, Lane::Haproxy) => {
                (HAPROXY_LABEL.into(), self.haproxy()?.proc, call)
            }
            (_, Lane::Haproxy) => bail!("haproxy serves only Invoke HTTP"),
            _ => (front.label.clone(), front.proc, call),
        })
    }

    fn haproxy(&self) -> anyhow::Result<Hop> {
        self.haproxy.context("haproxy is not running")
    }
}

/// Saves the value over HTTP (on a sidecar), then checks that `lane`
/// answers every selected scenario it serves correctly; returns what it saw,
/// for the log.
async fn preflight(
    wire: &Wire,
    lane: Lane,
    p: &Payload,
    scenarios: &[Scenario],
) -> anyhow::Result<Vec<String>> {
    let mut seen = Vec::new();
    if lane != Lane::Haproxy {
        let front = wire.front(lane.side());
        let items = format!(
            r#"[{{"key":"{GET_KEY}","value":{}}}]"#,
            String::from_utf8_lossy(&p.value)
        );
        HttpCall {
            method: Method::POST,
            uri: uri(front.http, &format!("/v1.0/state/{}", p.store))?,
            body: Some(Bytes::from(items)),
            status: StatusCode::NO_CONTENT,
            body_len: 0,
        }
        .send(&wire.http)
        .await
        .context("saving state over HTTP")?;
    }

    for &scenario in scenarios {
        if !wire.lanes(scenario).contains(&lane) {
            continue;
        }
        let (label, _, call) = wire.target(scenario, lane, p)?;
        let what = format!("{} on {label}", scenario.name());
        match call {
            Call::Http(client, call) => {
                if scenario == Scenario::InvokeHttp && lane == Lane::Candidate {
                    let (parts, _) = call.clone().exchange(&client).await?;
                    if parts.status == StatusCode::NOT_IMPLEMENTED {
                        bail!(
                            "{what}: 501: this Plinth does not serve /v1.0/invoke; \
                             leave invoke-http out of --scenarios"
                        );
                    }
                }
                let (parts, body) = call.send(&client).await.with_context(|| what.clone())?;
                if scenario != Scenario::PublishHttp {
                    ensure!(
                        body == p.value,
                        "{what}: the body is not the value sent: {}",
                        String::from_utf8_lossy(&body)
                    );
                    let content_type = parts.headers.get(header::CONTENT_TYPE);
                    ensure!(
                        content_type.is_some_and(|c| c.as_bytes().starts_with(b"application/json")),
                        "{what}: Content-Type {content_type:?}, expected application/json"
                    );
                }
                let mut note = format!("{what}: {}", parts.status);
                for name in [header::CONTENT_TYPE, header::ETAG] {
                    if let Some(v) = parts.headers.get(&name) {
                        note.push_str(&format!(", {name}: {}", v.to_str().unwrap_or("?")));
                    }
                }
                note.push_str(&format!(", {} bytes", body.len()));
                seen.push(note);
                if scenario == Scenario::GetStateHttp {
                    ensure!(parts.headers.contains_key(header::ETAG), "{what}: no ETag");
                }
            }
            Call::GetState(mut client, req, _) => {
                let got = client
                    .get_state(req)
                    .await
                    .with_context(|| what.clone())?
                    .into_inner();
                ensure!(
                    got.data == p.value,
                    "{what}: returned {} bytes, not the value saved over HTTP",
                    got.data.len()
                );
                ensure!(!got.etag.is_empty(), "{what}: no etag");
                seen.push(format!(
                    "{what}: OK, etag {}, {} bytes",
                    got.etag,
                    got.data.len()
                ));
            }
            Call::Publish(mut client, req) => {
                client
                    .publish_event(req)
                    .await
                    .with_context(|| what.clone())?;
                seen.push(format!("{what}: OK"));
            }
        }
    }
    Ok(seen)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let common = &args.common;
    // Before any thread exists: re-exec under taskset if pinning.
    let pinning = pin::pin_generator(!common.no_pin, common.generator_core, common.sut_core);
    let cfg = Config::resolve(&args, pinning)?;
    let run_cfg = &cfg.run;
    let payload = Payload {
        value: json_value(cfg.value_size)?,
        store: cfg.store.clone(),
        pubsub: cfg.pubsub.clone(),
        topic: cfg.topic.clone(),
    };

    let bare = |label: &str, args: &[&str]| SutSpec {
        label: label.into(),
        program: run_cfg.bare_bin.clone(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        readiness: Readiness::ListeningLine,
        startup_timeout: common.startup_timeout(),
        stop_signal: StopSignal::Term,
    };
    let app_spec = bare(APP_LABEL, &["--app", "--port", "0"]);
    let baseline = bare("bare", &["--port", "0", "--http-port", "0"]);
    // Plinth needs the app's port, which changes every run.
    let candidate_spec = |app_port: u16| match run_cfg.candidate {
        Candidate::Bare => SutSpec {
            label: "bare#2".into(),
            ..baseline.clone()
        },
        Candidate::Plinth => SutSpec::plinth(
            run_cfg.plinth_bin.clone(),
            "dapr-grpc",
            [
                "--app-id".to_owned(),
                APP_ID.to_owned(),
                "--app-port".to_owned(),
                app_port.to_string(),
                "--app-protocol".to_owned(),
                "http".to_owned(),
            ]
            .into_iter()
            .chain(common.plinth_arg.iter().cloned()),
            common.startup_timeout(),
        ),
    };
    let candidate_label = candidate_spec(0).label;
    // haproxy proxies to the app, whose port changes every run.
    let haproxy_spec = |app: SocketAddr| {
        cfg.haproxy_bin.as_ref().map(|program| HaproxySpec {
            label: HAPROXY_LABEL.into(),
            program: program.clone(),
            backend: app,
            // Every call in flight may hold a client connection.
            max_connections: run_cfg.max_in_flight.max(run_cfg.concurrency) + 100,
            replace_path: Some(haproxy_rewrite()),
            startup_timeout: common.startup_timeout(),
            listen_tls: None,
            backend_tls: None,
        })
    };

    let generator_cpus = Proc::Current.cpus_allowed().unwrap_or_default();
    let core = |c: Option<usize>| c.map_or("any core".to_owned(), |c| format!("core {c}"));
    let invoke_baselines = match cfg.haproxy_bin {
        Some(_) => format!("{APP_LABEL} and {HAPROXY_LABEL}"),
        None => APP_LABEL.to_owned(),
    };
    eprintln!(
        "bench-dapr: {candidate_label} vs {} ({invoke_baselines} for invocation), {} run(s), generator on CPUs {generator_cpus}, SUTs on {}, app on {}",
        baseline.label,
        run_cfg.runs,
        core(pinning.sut_core()),
        core(cfg.app_core),
    );

    let phases = run_cfg.phases();
    let mut session = Session::new(pinning, run_cfg.max_in_flight);
    let mut process = ProcessSeries::default();
    let mut rss_under_load = Series::default();

    for run in 1..=run_cfg.runs {
        let mut app = Sut::start(&app_spec, cfg.app_core)?;
        let mut haproxy = haproxy_spec(app.addr())
            .map(|spec| spec.start(pinning.sut_core()))
            .transpose()?;
        let mut suts = Vec::new();
        for (side, spec) in [
            (Side::Baseline, baseline.clone()),
            (Side::Candidate, candidate_spec(app.addr().port())),
        ] {
            let sut = Sut::start(&spec, pinning.sut_core())?;
            process
                .startup_ms
                .push(side, run, sut.startup_time().as_secs_f64() * 1e3);
            suts.push((side, sut));
        }
        if run == 1 {
            let others = haproxy.iter().chain(suts.iter().map(|(_, s)| s));
            for sut in std::iter::once(&app).chain(others) {
                if let Ok(cpus) = sut.proc().cpus_allowed() {
                    eprintln!("  {} pid {} on CPUs {cpus}", sut.label(), sut.pid());
                }
            }
        }
        // Idle RSS: after startup, before any client connects.
        std::thread::sleep(Duration::from_secs_f64(run_cfg.settle_secs));
        for (side, sut) in &suts {
            let kib = sut
                .proc()
                .rss_kib()
                .with_context(|| format!("reading RSS of {}", sut.label()))?;
            process.idle_rss_kib.push(*side, run, kib as f64);
        }

        // A fresh runtime per run: dropping it at the end of the run closes
        // every client connection, so the servers can shut down gracefully.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let mut fronts = Vec::new();
            for (side, sut) in &suts {
                let http_listener = match (side, run_cfg.candidate) {
                    (Side::Candidate, Candidate::Plinth) => "dapr-http",
                    _ => "http",
                };
                let http = sut.listener(http_listener).with_context(|| {
                    format!("{} announced no {http_listener} listener", sut.label())
                })?;
                fronts.push(Front {
                    label: sut.label().to_owned(),
                    proc: sut.proc(),
                    http,
                    grpc: connect(sut.addr()).await?,
                });
            }
            let candidate = fronts.pop().context("no candidate")?;
            let bare = fronts.pop().context("no baseline")?;
            let hop = |sut: &Sut| Hop {
                proc: sut.proc(),
                http: sut.addr(),
            };
            let wire = Wire {
                http: http_client(),
                bare,
                candidate,
                app: hop(&app),
                haproxy: haproxy.as_ref().map(hop),
            };
            let mut lanes = vec![Lane::Baseline, Lane::Candidate];
            if wire.haproxy.is_some() {
                lanes.insert(1, Lane::Haproxy);
            }
            for lane in lanes {
                let label = match lane {
                    Lane::Haproxy => HAPROXY_LABEL,
                    _ => &wire.front(lane.side()).label,
                };
                let seen = tokio::time::timeout(
                    PREFLIGHT_TIMEOUT,
                    preflight(&wire, lane, &payload, &cfg.scenarios),
                )
                .await
                .map_err(|_| anyhow::anyhow!("no answer within {PREFLIGHT_TIMEOUT:?}"))
                .and_then(|r| r)
                .with_context(|| format!("preflight against {label} failed"))?;
                if run == 1 {
                    for line in seen {
                        eprintln!("  {line}");
                    }
                }
            }
            for &scenario in &cfg.scenarios {
                for phase in &phases {
                    for lane in wire.lanes(scenario) {
                        let side = lane.side();
                        let (label, proc, call) = wire.target(scenario, lane, &payload)?;
                        let m = session
                            .measure(scenario.name(), side, &label, run, proc, *phase, || {
                                call.clone().send()
                            })
                            .await;
                        eprintln!(
                            "{}",
                            report::progress_line(m, run_cfg.runs, Scenario::NAME_WIDTH)
                        );
                        if phase.load == run_cfg.high_load()
                            && scenario != Scenario::InvokeHttp
                            && let Some(kib) = m.sut_rss_max_kib
                        {
                            rss_under_load.keep_max(side, run, kib as f64);
                        }
                        app.check_alive()?;
                        for sut in haproxy.iter_mut() {
                            sut.check_alive()?;
                        }
                        for (_, sut) in &mut suts {
                            sut.check_alive()?;
                        }
                    }
                }
            }
            anyhow::Ok(())
        })?;

        drop(rt);
        // The app last: the candidate and haproxy hold connections to it.
        while let Some((_, sut)) = suts.pop() {
            sut.stop_or_warn();
        }
        if let Some(haproxy) = haproxy {
            haproxy.stop_or_warn();
        }
        app.stop_or_warn();
    }

    let results = session.results();
    let checks = checks(
        &cfg,
        &candidate_label,
        &baseline.label,
        &results.comparisons,
    );

    let haproxy_note = match cfg.haproxy_bin {
        Some(_) => format!(
            " and with haproxy in front of the app (`{HAPROXY_LABEL}` rows: HTTP mode, one thread, keep-alive \
             to the app, pinned with {candidate_label}; sent `POST {}` and rewriting it to `{APP_PATH}`), \
             the like-for-like baseline: {candidate_label} and haproxy each share their core with the app",
            invoke_path()
        ),
        None => String::new(),
    };
    let notes = [
        format!(
            "Invoke HTTP compares the same app through {candidate_label} (`POST {}`) with the app called directly \
             (`{APP_LABEL}` rows, `POST {APP_PATH}`){haproxy_note}; the app runs on {}. \
             Its SUT cpu column is the app's on the `{APP_LABEL}` row and the proxy's alone on the others; \
             its ratio rows are labelled with the baseline they divide by.",
            invoke_path(),
            core(cfg.app_core)
        ),
        format!(
            "Payload: a {}-byte JSON document, read back by GetState, published, and echoed.",
            payload.value.len()
        ),
    ];
    let extra = ProcessExtra {
        process,
        // Of the scenarios served by the bare server and the candidate themselves (not
        // Invoke, whose baseline is the app).
        rss_under_load_kib: rss_under_load,
        checks,
    };
    let report = Report::new(
        &args.name,
        &baseline.label,
        &candidate_label,
        cfg,
        generator_cpus,
        pinning,
        results,
        extra,
    );
    report.finish_process(
        &format!(
            "Plinth Dapr compatibility: {candidate_label} vs {}",
            baseline.label
        ),
        &report.config.run,
        pinning,
        &notes,
        &args.common.results_dir(),
    )
}

/// The targets: for the scenarios the bare server answers, against it; for
/// Invoke HTTP, against haproxy, with the direct call for information only
/// (the app shares the core of whoever proxies to it, so the ratio to a
/// direct call mostly counts the proxy's share of that core).
fn checks(
    cfg: &Config,
    candidate: &str,
    bare: &str,
    comparisons: &[stats::Comparison],
) -> Vec<Check> {
    // (baseline, informational) per scenario.
    let baselines = |s: Scenario| match s {
        Scenario::InvokeHttp => {
            let mut b = Vec::new();
            if cfg.haproxy_bin.is_some() {
                b.push((HAPROXY_LABEL, false));
            }
            b.push((APP_LABEL, true));
            b
        }
        _ => vec![(bare, false)],
    };
    let mut checks = Vec::new();
    for &scenario in cfg.scenarios.iter().filter(|s| s.is_http()) {
        for (baseline, informational) in baselines(scenario) {
            let check = Check::added_p99(
                scenario.name(),
                candidate,
                baseline,
                cfg.run.low_load(),
                comparisons,
                TARGET_ADDED_P99_HTTP_US,
            );
            checks.push(if informational {
                check.informational()
            } else {
                check
            });
        }
    }
    for &scenario in &cfg.scenarios {
        for (baseline, informational) in baselines(scenario) {
            let check = Check::throughput(
                scenario.name(),
                candidate,
                baseline,
                cfg.run.max_load(),
                comparisons,
                TARGET_THROUGHPUT_RATIO,
            );
            checks.push(if informational {
                check.informational()
            } else {
                check
            });
        }
    }
    checks
}
