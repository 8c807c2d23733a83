//! `bare-server`: the baseline for Plinth's core benchmark.
//!
//! A plain tonic server for the Layotto `Runtime` service that answers
//! SayHello, GetState and SaveState from a `Mutex<HashMap>`, with no
//! middleware, and `UNIMPLEMENTED` for everything else. Whatever Plinth adds
//! on top of this (routing, components, telemetry, resilience) is what the
//! benchmark measures.
//!
//! Prints `LISTENING 127.0.0.1:PORT` on stdout once bound; exits on SIGTERM or
//! Ctrl-C.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use anyhow::Context as _;
use clap::Parser;
use plinth_proto::runtime::v1::runtime_server::{Runtime, RuntimeServer};
use plinth_proto::runtime::v1::*;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// Baseline gRPC server for the Plinth benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
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
    let incoming = TcpIncoming::bind(addr)
        .with_context(|| format!("binding {addr}"))?
        .with_nodelay(Some(true));
    let local = incoming.local_addr()?;
    let svc = Bare {
        hello: args.hello,
        state: Mutex::new(HashMap::new()),
    };

    let mut stdout = std::io::stdout();
    writeln!(stdout, "LISTENING {local}")?;
    stdout.flush()?;

    tonic::transport::Server::builder()
        .add_service(RuntimeServer::new(svc))
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await?;
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
