//! `bare-server`: the baseline for Plinth's benchmarks.
//!
//! Plain servers with no middleware that answer the calls the benchmarks
//! make from one `Mutex<HashMap>`, and nothing else. Whatever Plinth adds on
//! top of this (routing, components, telemetry, resilience) is what the
//! benchmarks measure.
//!
//! - gRPC on `--port`: Layotto's `Runtime` (SayHello, GetState, SaveState)
//!   and Dapr's `Dapr` (GetState, PublishEvent); every other rpc answers
//!   `UNIMPLEMENTED`.
//! - HTTP on `--http-port`, when given (axum): Dapr's
//!   `POST /v1.0/state/{store}`, `GET /v1.0/state/{store}/{key}` (the value
//!   with `Content-Type: application/json` and an `ETag`, as Plinth answers),
//!   `POST /v1.0/publish/{pubsub}/{topic}` (204) and
//!   `POST /v1.0/invoke/{app}/method/{method}`, answered by echoing the body
//!   as if the bare sidecar were its own app.
//! - With `--app`: only the invocation benchmark's app, HTTP on `--port`:
//!   `POST /echo` answers the body back with its content type; anything else
//!   is 404 (so Plinth's `GET /dapr/subscribe` finds no subscriptions).
//!
//! Prints `LISTENING http 127.0.0.1:PORT` for the HTTP listener, if any, then
//! `LISTENING 127.0.0.1:PORT` for the main one, once both are bound; exits on
//! SIGTERM or Ctrl-C.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use bytes::Bytes;
use clap::Parser;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as dpb;
use dapr::dapr::proto::runtime::v1::dapr_server::{Dapr, DaprServer};
use plinth_proto::runtime::v1::runtime_server::{Runtime, RuntimeServer};
use plinth_proto::runtime::v1::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// Baseline server for the Plinth benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind (gRPC; with --app, the app's HTTP); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Also serve Dapr's HTTP routes on this port; 0 picks a free one.
    #[arg(long)]
    http_port: Option<u16>,
    /// Be the invocation benchmark's HTTP app instead: `POST /echo` on --port.
    #[arg(long, conflicts_with = "http_port")]
    app: bool,
    /// Answer to SayHello, the same text Plinth's `helloworld` component
    /// returns.
    #[arg(long, default_value = "greeting")]
    hello: String,
}

/// A stored value and its version (returned as the etag, as Plinth's
/// in-memory store does).
#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    version: u64,
}

#[derive(Debug)]
struct Bare {
    hello: String,
    state: Mutex<Store>,
}

/// Values by (store name, key).
type Store = HashMap<(String, String), Entry>;

impl Bare {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, Store>, Status> {
        self.state
            .lock()
            .map_err(|_| Status::internal("state lock poisoned"))
    }
}

type Empty<T> = futures::stream::Empty<Result<T, Status>>;
type Rpc<T> = Result<Response<T>, Status>;

fn unimplemented<T>(method: &str) -> Rpc<T> {
    Err(Status::unimplemented(format!(
        "{method} is not implemented by the bare server"
    )))
}

#[tonic::async_trait]
impl Runtime for Bare {
    async fn say_hello(&self, request: Request<SayHelloRequest>) -> Rpc<SayHelloResponse> {
        let req = request.into_inner();
        // The same text Plinth's helloworld component builds.
        let hello = if req.name.is_empty() {
            self.hello.clone()
        } else {
            format!("{}, {}", self.hello, req.name)
        };
        Ok(Response::new(SayHelloResponse { hello, data: None }))
    }

    async fn get_state(&self, request: Request<GetStateRequest>) -> Rpc<GetStateResponse> {
        let req = request.into_inner();
        if req.store_name.is_empty() {
            return Err(Status::invalid_argument("store_name is empty"));
        }
        let state = self.state()?;
        let resp = match state.get(&(req.store_name, req.key)) {
            Some(e) => GetStateResponse {
                data: e.value.clone(),
                etag: e.version.to_string(),
                metadata: HashMap::new(),
            },
            None => GetStateResponse::default(),
        };
        Ok(Response::new(resp))
    }

    async fn save_state(&self, request: Request<SaveStateRequest>) -> Rpc<()> {
        let req = request.into_inner();
        if req.store_name.is_empty() {
            return Err(Status::invalid_argument("store_name is empty"));
        }
        let mut state = self.state()?;
        for item in req.states {
            let entry = state
                .entry((req.store_name.clone(), item.key))
                .or_insert(Entry {
                    value: Vec::new(),
                    version: 0,
                });
            entry.value = item.value;
            entry.version += 1;
        }
        Ok(Response::new(()))
    }

    async fn invoke_service(&self, _: Request<InvokeServiceRequest>) -> Rpc<InvokeResponse> {
        unimplemented("InvokeService")
    }
    async fn get_configuration(
        &self,
        _: Request<GetConfigurationRequest>,
    ) -> Rpc<GetConfigurationResponse> {
        unimplemented("GetConfiguration")
    }
    async fn save_configuration(&self, _: Request<SaveConfigurationRequest>) -> Rpc<()> {
        unimplemented("SaveConfiguration")
    }
    async fn delete_configuration(&self, _: Request<DeleteConfigurationRequest>) -> Rpc<()> {
        unimplemented("DeleteConfiguration")
    }
    type SubscribeConfigurationStream = Empty<SubscribeConfigurationResponse>;
    async fn subscribe_configuration(
        &self,
        _: Request<Streaming<SubscribeConfigurationRequest>>,
    ) -> Rpc<Self::SubscribeConfigurationStream> {
        unimplemented("SubscribeConfiguration")
    }
    async fn try_lock(&self, _: Request<TryLockRequest>) -> Rpc<TryLockResponse> {
        unimplemented("TryLock")
    }
    async fn unlock(&self, _: Request<UnlockRequest>) -> Rpc<UnlockResponse> {
        unimplemented("Unlock")
    }
    async fn lock_keep_alive(
        &self,
        _: Request<LockKeepAliveRequest>,
    ) -> Rpc<LockKeepAliveResponse> {
        unimplemented("LockKeepAlive")
    }
    async fn get_next_id(&self, _: Request<GetNextIdRequest>) -> Rpc<GetNextIdResponse> {
        unimplemented("GetNextId")
    }
    async fn get_bulk_state(&self, _: Request<GetBulkStateRequest>) -> Rpc<GetBulkStateResponse> {
        unimplemented("GetBulkState")
    }
    async fn delete_state(&self, _: Request<DeleteStateRequest>) -> Rpc<()> {
        unimplemented("DeleteState")
    }
    async fn delete_bulk_state(&self, _: Request<DeleteBulkStateRequest>) -> Rpc<()> {
        unimplemented("DeleteBulkState")
    }
    async fn execute_state_transaction(
        &self,
        _: Request<ExecuteStateTransactionRequest>,
    ) -> Rpc<()> {
        unimplemented("ExecuteStateTransaction")
    }
    async fn publish_event(&self, _: Request<PublishEventRequest>) -> Rpc<()> {
        unimplemented("PublishEvent")
    }
    type SubscribeTopicEventsStream = Empty<SubscribeTopicEventsResponse>;
    async fn subscribe_topic_events(
        &self,
        _: Request<Streaming<SubscribeTopicEventsRequest>>,
    ) -> Rpc<Self::SubscribeTopicEventsStream> {
        unimplemented("SubscribeTopicEvents")
    }
    type GetFileStream = Empty<GetFileResponse>;
    async fn get_file(&self, _: Request<GetFileRequest>) -> Rpc<Self::GetFileStream> {
        unimplemented("GetFile")
    }
    async fn put_file(&self, _: Request<Streaming<PutFileRequest>>) -> Rpc<()> {
        unimplemented("PutFile")
    }
    async fn list_file(&self, _: Request<ListFileRequest>) -> Rpc<ListFileResp> {
        unimplemented("ListFile")
    }
    async fn del_file(&self, _: Request<DelFileRequest>) -> Rpc<()> {
        unimplemented("DelFile")
    }
    async fn get_file_meta(&self, _: Request<GetFileMetaRequest>) -> Rpc<GetFileMetaResponse> {
        unimplemented("GetFileMeta")
    }
    async fn invoke_binding(&self, _: Request<InvokeBindingRequest>) -> Rpc<InvokeBindingResponse> {
        unimplemented("InvokeBinding")
    }
    async fn get_secret(&self, _: Request<GetSecretRequest>) -> Rpc<GetSecretResponse> {
        unimplemented("GetSecret")
    }
    async fn get_bulk_secret(
        &self,
        _: Request<GetBulkSecretRequest>,
    ) -> Rpc<GetBulkSecretResponse> {
        unimplemented("GetBulkSecret")
    }
}

/// The rpcs the benchmarks do not call: each answers UNIMPLEMENTED. Written
/// as the functions `#[tonic::async_trait]` would generate, because that
/// attribute does not see inside macro invocations.
macro_rules! unimplemented_rpcs {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _request: Request<$req>,
        ) -> Pin<Box<dyn Future<Output = Rpc<$resp>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(std::future::ready(unimplemented(stringify!($name))))
        }
    )*};
}

#[tonic::async_trait]
impl Dapr for Bare {
    async fn get_state(
        &self,
        request: Request<dpb::GetStateRequest>,
    ) -> Rpc<dpb::GetStateResponse> {
        let req = request.into_inner();
        if req.store_name.is_empty() {
            return Err(Status::invalid_argument("store_name is empty"));
        }
        let state = self.state()?;
        let resp = match state.get(&(req.store_name, req.key)) {
            Some(e) => dpb::GetStateResponse {
                data: e.value.clone(),
                etag: e.version.to_string(),
                metadata: HashMap::new(),
            },
            None => dpb::GetStateResponse::default(),
        };
        Ok(Response::new(resp))
    }

    async fn publish_event(&self, request: Request<dpb::PublishEventRequest>) -> Rpc<()> {
        let req = request.into_inner();
        if req.pubsub_name.is_empty() || req.topic.is_empty() {
            return Err(Status::invalid_argument("pubsub_name or topic is empty"));
        }
        Ok(Response::new(()))
    }

    type SubscribeTopicEventsAlpha1Stream = Empty<dpb::SubscribeTopicEventsResponseAlpha1>;
    async fn subscribe_topic_events_alpha1(
        &self,
        _: Request<Streaming<dpb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Rpc<Self::SubscribeTopicEventsAlpha1Stream> {
        unimplemented("SubscribeTopicEventsAlpha1")
    }
    type SubscribeConfigurationAlpha1Stream = Empty<dpb::SubscribeConfigurationResponse>;
    async fn subscribe_configuration_alpha1(
        &self,
        _: Request<dpb::SubscribeConfigurationRequest>,
    ) -> Rpc<Self::SubscribeConfigurationAlpha1Stream> {
        unimplemented("SubscribeConfigurationAlpha1")
    }
    type SubscribeConfigurationStream = Empty<dpb::SubscribeConfigurationResponse>;
    async fn subscribe_configuration(
        &self,
        _: Request<dpb::SubscribeConfigurationRequest>,
    ) -> Rpc<Self::SubscribeConfigurationStream> {
        unimplemented("SubscribeConfiguration")
    }
    type EncryptAlpha1Stream = Empty<dpb::EncryptResponse>;
    async fn encrypt_alpha1(
        &self,
        _: Request<Streaming<dpb::EncryptRequest>>,
    ) -> Rpc<Self::EncryptAlpha1Stream> {
        unimplemented("EncryptAlpha1")
    }
    type DecryptAlpha1Stream = Empty<dpb::DecryptResponse>;
    async fn decrypt_alpha1(
        &self,
        _: Request<Streaming<dpb::DecryptRequest>>,
    ) -> Rpc<Self::DecryptAlpha1Stream> {
        unimplemented("DecryptAlpha1")
    }

    unimplemented_rpcs! {
        invoke_service(dpb::InvokeServiceRequest) -> common::InvokeResponse;
        get_bulk_state(dpb::GetBulkStateRequest) -> dpb::GetBulkStateResponse;
        save_state(dpb::SaveStateRequest) -> ();
        query_state_alpha1(dpb::QueryStateRequest) -> dpb::QueryStateResponse;
        delete_state(dpb::DeleteStateRequest) -> ();
        delete_bulk_state(dpb::DeleteBulkStateRequest) -> ();
        execute_state_transaction(dpb::ExecuteStateTransactionRequest) -> ();
        bulk_publish_event_alpha1(dpb::BulkPublishRequest) -> dpb::BulkPublishResponse;
        bulk_publish_event(dpb::BulkPublishRequest) -> dpb::BulkPublishResponse;
        invoke_binding(dpb::InvokeBindingRequest) -> dpb::InvokeBindingResponse;
        get_secret(dpb::GetSecretRequest) -> dpb::GetSecretResponse;
        get_bulk_secret(dpb::GetBulkSecretRequest) -> dpb::GetBulkSecretResponse;
        register_actor_timer(dpb::RegisterActorTimerRequest) -> ();
        unregister_actor_timer(dpb::UnregisterActorTimerRequest) -> ();
        register_actor_reminder(dpb::RegisterActorReminderRequest) -> ();
        unregister_actor_reminder(dpb::UnregisterActorReminderRequest) -> ();
        unregister_actor_reminders_by_type(dpb::UnregisterActorRemindersByTypeRequest) -> dpb::UnregisterActorRemindersByTypeResponse;
        list_actor_reminders(dpb::ListActorRemindersRequest) -> dpb::ListActorRemindersResponse;
        get_actor_state(dpb::GetActorStateRequest) -> dpb::GetActorStateResponse;
        get_actor_reminder(dpb::GetActorReminderRequest) -> dpb::GetActorReminderResponse;
        execute_actor_state_transaction(dpb::ExecuteActorStateTransactionRequest) -> ();
        invoke_actor(dpb::InvokeActorRequest) -> dpb::InvokeActorResponse;
        get_configuration_alpha1(dpb::GetConfigurationRequest) -> dpb::GetConfigurationResponse;
        get_configuration(dpb::GetConfigurationRequest) -> dpb::GetConfigurationResponse;
        unsubscribe_configuration_alpha1(dpb::UnsubscribeConfigurationRequest) -> dpb::UnsubscribeConfigurationResponse;
        unsubscribe_configuration(dpb::UnsubscribeConfigurationRequest) -> dpb::UnsubscribeConfigurationResponse;
        try_lock_alpha1(dpb::TryLockRequest) -> dpb::TryLockResponse;
        unlock_alpha1(dpb::UnlockRequest) -> dpb::UnlockResponse;
        get_metadata(dpb::GetMetadataRequest) -> dpb::GetMetadataResponse;
        set_metadata(dpb::SetMetadataRequest) -> ();
        subtle_get_key_alpha1(dpb::SubtleGetKeyRequest) -> dpb::SubtleGetKeyResponse;
        subtle_encrypt_alpha1(dpb::SubtleEncryptRequest) -> dpb::SubtleEncryptResponse;
        subtle_decrypt_alpha1(dpb::SubtleDecryptRequest) -> dpb::SubtleDecryptResponse;
        subtle_wrap_key_alpha1(dpb::SubtleWrapKeyRequest) -> dpb::SubtleWrapKeyResponse;
        subtle_unwrap_key_alpha1(dpb::SubtleUnwrapKeyRequest) -> dpb::SubtleUnwrapKeyResponse;
        subtle_sign_alpha1(dpb::SubtleSignRequest) -> dpb::SubtleSignResponse;
        subtle_verify_alpha1(dpb::SubtleVerifyRequest) -> dpb::SubtleVerifyResponse;
        start_workflow_alpha1(dpb::StartWorkflowRequest) -> dpb::StartWorkflowResponse;
        get_workflow_alpha1(dpb::GetWorkflowRequest) -> dpb::GetWorkflowResponse;
        purge_workflow_alpha1(dpb::PurgeWorkflowRequest) -> ();
        terminate_workflow_alpha1(dpb::TerminateWorkflowRequest) -> ();
        pause_workflow_alpha1(dpb::PauseWorkflowRequest) -> ();
        resume_workflow_alpha1(dpb::ResumeWorkflowRequest) -> ();
        raise_event_workflow_alpha1(dpb::RaiseEventWorkflowRequest) -> ();
        start_workflow_beta1(dpb::StartWorkflowRequest) -> dpb::StartWorkflowResponse;
        get_workflow_beta1(dpb::GetWorkflowRequest) -> dpb::GetWorkflowResponse;
        purge_workflow_beta1(dpb::PurgeWorkflowRequest) -> ();
        terminate_workflow_beta1(dpb::TerminateWorkflowRequest) -> ();
        pause_workflow_beta1(dpb::PauseWorkflowRequest) -> ();
        resume_workflow_beta1(dpb::ResumeWorkflowRequest) -> ();
        raise_event_workflow_beta1(dpb::RaiseEventWorkflowRequest) -> ();
        shutdown(dpb::ShutdownRequest) -> ();
        schedule_job_alpha1(dpb::ScheduleJobRequest) -> dpb::ScheduleJobResponse;
        schedule_job(dpb::ScheduleJobRequest) -> dpb::ScheduleJobResponse;
        get_job_alpha1(dpb::GetJobRequest) -> dpb::GetJobResponse;
        get_job(dpb::GetJobRequest) -> dpb::GetJobResponse;
        delete_job_alpha1(dpb::DeleteJobRequest) -> dpb::DeleteJobResponse;
        delete_job(dpb::DeleteJobRequest) -> dpb::DeleteJobResponse;
        delete_jobs_by_prefix_alpha1(dpb::DeleteJobsByPrefixRequestAlpha1) -> dpb::DeleteJobsByPrefixResponseAlpha1;
        delete_jobs_by_prefix(dpb::DeleteJobsByPrefixRequest) -> dpb::DeleteJobsByPrefixResponse;
        list_jobs_alpha1(dpb::ListJobsRequestAlpha1) -> dpb::ListJobsResponseAlpha1;
        list_jobs(dpb::ListJobsRequest) -> dpb::ListJobsResponse;
        converse_alpha1(dpb::ConversationRequest) -> dpb::ConversationResponse;
        converse_alpha2(dpb::ConversationRequestAlpha2) -> dpb::ConversationResponseAlpha2;
        create_index_alpha1(dpb::CreateIndexRequestAlpha1) -> ();
        get_index_alpha1(dpb::GetIndexRequestAlpha1) -> dpb::GetIndexResponseAlpha1;
        list_indexes_alpha1(dpb::ListIndexesRequestAlpha1) -> dpb::ListIndexesResponseAlpha1;
        delete_index_alpha1(dpb::DeleteIndexRequestAlpha1) -> ();
        index_documents_alpha1(dpb::IndexDocumentsRequestAlpha1) -> dpb::IndexDocumentsResponseAlpha1;
        get_documents_alpha1(dpb::GetDocumentsRequestAlpha1) -> dpb::GetDocumentsResponseAlpha1;
        delete_documents_alpha1(dpb::DeleteDocumentsRequestAlpha1) -> dpb::DeleteDocumentsResponseAlpha1;
        search_alpha1(dpb::SearchRequestAlpha1) -> dpb::SearchResponseAlpha1;
        create_collection_alpha1(dpb::CreateCollectionRequestAlpha1) -> ();
        get_collection_alpha1(dpb::GetCollectionRequestAlpha1) -> dpb::GetCollectionResponseAlpha1;
        list_collections_alpha1(dpb::ListCollectionsRequestAlpha1) -> dpb::ListCollectionsResponseAlpha1;
        delete_collection_alpha1(dpb::DeleteCollectionRequestAlpha1) -> ();
        upsert_vectors_alpha1(dpb::UpsertVectorsRequestAlpha1) -> dpb::UpsertVectorsResponseAlpha1;
        delete_vectors_alpha1(dpb::DeleteVectorsRequestAlpha1) -> dpb::DeleteVectorsResponseAlpha1;
        get_vectors_alpha1(dpb::GetVectorsRequestAlpha1) -> dpb::GetVectorsResponseAlpha1;
        query_vectors_alpha1(dpb::QueryVectorsRequestAlpha1) -> dpb::QueryVectorsResponseAlpha1;
        batch_query_vectors_alpha1(dpb::BatchQueryVectorsRequestAlpha1) -> dpb::BatchQueryVectorsResponseAlpha1;
    }
}

/// Dapr's HTTP routes the benchmarks call.
fn dapr_http(bare: Arc<Bare>) -> Router {
    Router::new()
        .route("/v1.0/state/{store}", post(http_save_state))
        .route("/v1.0/state/{store}/{key}", get(http_get_state))
        .route("/v1.0/publish/{pubsub}/{*topic}", post(http_publish))
        .route("/v1.0/invoke/{app}/method/{*method}", post(echo))
        .with_state(bare)
}

/// The invocation benchmark's app.
fn app_http() -> Router {
    Router::new().route("/echo", post(echo))
}

/// One item of Dapr's `POST /v1.0/state/{store}` body.
#[derive(Debug, Deserialize)]
struct HttpStateItem {
    key: String,
    value: Box<RawValue>,
}

/// Stores each item's value as the JSON text it was sent as (as Dapr and
/// Plinth do, so gRPC reads the same bytes).
async fn http_save_state(
    State(bare): State<Arc<Bare>>,
    Path(store): Path<String>,
    body: Bytes,
) -> HttpResponse {
    let items: Vec<HttpStateItem> = match serde_json::from_slice(&body) {
        Ok(items) => items,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let Ok(mut state) = bare.state() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    for item in items {
        let entry = state.entry((store.clone(), item.key)).or_insert(Entry {
            value: Vec::new(),
            version: 0,
        });
        entry.value = item.value.get().as_bytes().to_vec();
        entry.version += 1;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The value with `Content-Type: application/json` and its version as the
/// `ETag`, or 204 when there is none: Plinth's answer.
async fn http_get_state(
    State(bare): State<Arc<Bare>>,
    Path((store, key)): Path<(String, String)>,
) -> HttpResponse {
    let Ok(state) = bare.state() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match state.get(&(store, key)) {
        Some(e) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::ETAG, HeaderValue::from(e.version));
            (StatusCode::OK, headers, e.value.clone()).into_response()
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Takes the event and answers 204.
async fn http_publish(Path((_pubsub, _topic)): Path<(String, String)>, _body: Bytes) -> StatusCode {
    StatusCode::NO_CONTENT
}

/// 200 with the request's body and content type.
async fn echo(headers: HeaderMap, body: Bytes) -> HttpResponse {
    let mut out = HeaderMap::new();
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        out.insert(header::CONTENT_TYPE, ct.clone());
    }
    (StatusCode::OK, out, body).into_response()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One worker per CPU this process may use: one when pinned with taskset.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let addr = SocketAddr::new(args.host, args.port);
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };

    if args.app {
        let listener = bind_http(addr).await?;
        announce(None, listener.local_addr()?)?;
        axum::serve(listener.tap_io(set_nodelay), app_http())
            .with_graceful_shutdown(stopped(stop))
            .await?;
        return Ok(());
    }

    let bare = Arc::new(Bare {
        hello: args.hello,
        state: Mutex::new(HashMap::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(port) = args.http_port {
        let listener = bind_http(SocketAddr::new(args.host, port)).await?;
        announce(Some("http"), listener.local_addr()?)?;
        let router = dapr_http(bare.clone());
        let stop = stop.clone();
        tasks.spawn(async move {
            axum::serve(listener.tap_io(set_nodelay), router)
                .with_graceful_shutdown(stopped(stop))
                .await
                .context("HTTP listener")
        });
    }

    let incoming = TcpIncoming::bind(addr)
        .with_context(|| format!("binding {addr}"))?
        .with_nodelay(Some(true));
    announce(None, incoming.local_addr()?)?;
    tonic::transport::Server::builder()
        .add_service(RuntimeServer::from_arc(bare.clone()))
        .add_service(DaprServer::from_arc(bare))
        .serve_with_incoming_shutdown(incoming, stopped(stop))
        .await?;
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn bind_http(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Small request/response exchanges must not wait for delayed ACKs (Nagle),
/// as on Plinth's listeners.
fn set_nodelay(tcp: &mut tokio::net::TcpStream) {
    let _ = tcp.set_nodelay(true);
}

/// `LISTENING [name] addr` on stdout: the benchmark's startup protocol.
fn announce(name: Option<&str>, addr: SocketAddr) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout();
    match name {
        Some(name) => writeln!(stdout, "LISTENING {name} {addr}")?,
        None => writeln!(stdout, "LISTENING {addr}")?,
    }
    stdout.flush()?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
