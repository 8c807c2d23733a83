//! Layotto's gRPC API (`spec.proto.runtime.v1.Runtime`), translated onto the building blocks.

mod callback;
mod convert;
mod lifecycle;
mod stream;

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use plinth_core::Error;
use plinth_core::component::binding::BindingRequest;
use plinth_core::component::configuration::ConfigurationQuery;
use plinth_core::component::lock::LockStatus;
use plinth_core::component::state::{DeleteRequest, TransactionOp};
use plinth_proto::runtime::v1 as pb;
use plinth_runtime::Runtime;
use plinth_runtime::sequencer::Increment;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

pub(crate) use callback::{event_request, outcome_of};
pub use lifecycle::LifecycleService;

use crate::status::IntoStatus;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Size of the chunks GetFile streams.
const FILE_CHUNK: usize = 64 * 1024;

/// The Layotto `Runtime` service.
#[derive(Debug, Clone)]
pub struct LayottoService {
    rt: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
}

impl LayottoService {
    /// The service over `rt`; long-lived streams end when `shutdown` turns true.
    pub fn new(rt: Arc<Runtime>, shutdown: watch::Receiver<bool>) -> Self {
        Self { rt, shutdown }
    }
}

fn lock_status(status: LockStatus) -> i32 {
    use pb::unlock_response::Status as S;
    match status {
        LockStatus::Success => S::Success as i32,
        LockStatus::NotExist => S::LockUnexist as i32,
        LockStatus::BelongsToOthers => S::LockBelongToOthers as i32,
    }
}

#[tonic::async_trait]
impl pb::runtime_server::Runtime for LayottoService {
    async fn say_hello(
        &self,
        request: Request<pb::SayHelloRequest>,
    ) -> Result<Response<pb::SayHelloResponse>, Status> {
        let req = request.into_inner();
        match req.service_name.as_str() {
            "" | "helloworld" | "quick_start_demo" => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "hello service {other:?} is not configured; use \"helloworld\""
                )));
            }
        }
        let hello = if req.name.is_empty() {
            "greeting".to_string()
        } else {
            format!("greeting, {}", req.name)
        };
        Ok(Response::new(pb::SayHelloResponse {
            hello,
            data: req.data,
        }))
    }

    async fn invoke_service(
        &self,
        request: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let message = req
            .message
            .ok_or_else(|| Status::invalid_argument("InvokeServiceRequest.message is empty"))?;
        let http = message.http_extension.unwrap_or_default();
        let call = crate::invoke::request(
            &metadata,
            message.method,
            message.data,
            message.content_type,
            http.verb,
            http.querystring,
        );
        let answer = self.rt.invoke.invoke(&req.id, call).await.status()?;
        let (metadata, content_type, data) = crate::invoke::response(answer)?;
        let mut response = Response::new(pb::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: data.to_vec(),
            }),
            content_type,
        });
        *response.metadata_mut() = metadata;
        Ok(response)
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let req = request.into_inner();
        let query = ConfigurationQuery {
            app_id: req.app_id,
            group: req.group,
            label: req.label,
            keys: req.keys,
            metadata: req.metadata,
        };
        let items = self
            .rt
            .configuration
            .get(&req.store_name, query)
            .await
            .status()?;
        Ok(Response::new(pb::GetConfigurationResponse {
            items: items.into_iter().map(convert::config_item_out).collect(),
        }))
    }

    async fn save_configuration(
        &self,
        request: Request<pb::SaveConfigurationRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let items = req.items.into_iter().map(convert::config_item_in).collect();
        self.rt
            .configuration
            .save(&req.store_name, &req.app_id, items)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn delete_configuration(
        &self,
        request: Request<pb::DeleteConfigurationRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        if req.keys.is_empty() {
            return Err(Status::invalid_argument(
                "keys are empty: name the configuration keys to delete",
            ));
        }
        let query = ConfigurationQuery {
            app_id: req.app_id,
            group: req.group,
            label: req.label,
            keys: req.keys,
            metadata: req.metadata,
        };
        self.rt
            .configuration
            .delete(&req.store_name, query)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    type SubscribeConfigurationStream = BoxStream<pb::SubscribeConfigurationResponse>;

    async fn subscribe_configuration(
        &self,
        request: Request<Streaming<pb::SubscribeConfigurationRequest>>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        Ok(Response::new(stream::subscribe_configuration(
            self.rt.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )))
    }

    async fn try_lock(
        &self,
        request: Request<pb::TryLockRequest>,
    ) -> Result<Response<pb::TryLockResponse>, Status> {
        let req = request.into_inner();
        let success = self
            .rt
            .lock
            .try_lock(
                &req.store_name,
                &req.resource_id,
                &req.lock_owner,
                i64::from(req.expire),
            )
            .await
            .status()?;
        Ok(Response::new(pb::TryLockResponse { success }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let req = request.into_inner();
        let status = self
            .rt
            .lock
            .unlock(&req.store_name, &req.resource_id, &req.lock_owner)
            .await
            .status()?;
        Ok(Response::new(pb::UnlockResponse {
            status: lock_status(status),
        }))
    }

    async fn lock_keep_alive(
        &self,
        request: Request<pb::LockKeepAliveRequest>,
    ) -> Result<Response<pb::LockKeepAliveResponse>, Status> {
        let req = request.into_inner();
        let status = self
            .rt
            .lock
            .keep_alive(
                &req.store_name,
                &req.resource_id,
                &req.lock_owner,
                i64::from(req.expire),
            )
            .await
            .status()?;
        Ok(Response::new(pb::LockKeepAliveResponse {
            status: lock_status(status),
        }))
    }

    async fn get_next_id(
        &self,
        request: Request<pb::GetNextIdRequest>,
    ) -> Result<Response<pb::GetNextIdResponse>, Status> {
        let req = request.into_inner();
        let increment = match req.options.map(|o| o.increment) {
            None => Increment::Weak,
            Some(v) => match pb::sequencer_options::AutoIncrement::try_from(v) {
                Ok(pb::sequencer_options::AutoIncrement::Weak) => Increment::Weak,
                Ok(pb::sequencer_options::AutoIncrement::Strong) => Increment::Strong,
                Err(_) => {
                    return Err(Status::invalid_argument(format!(
                        "options.increment {v} is not WEAK (0) or STRONG (1)"
                    )));
                }
            },
        };
        let next_id = self
            .rt
            .sequencer
            .next_id(&req.store_name, &req.key, increment)
            .await
            .status()?;
        Ok(Response::new(pb::GetNextIdResponse { next_id }))
    }

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        let req = request.into_inner();
        let consistency = convert::consistency(req.consistency)?;
        let got = self
            .rt
            .state
            .get(&req.store_name, &req.key, req.metadata, consistency)
            .await
            .status()?;
        Ok(Response::new(match got {
            Some(v) => pb::GetStateResponse {
                data: v.data.to_vec(),
                etag: v.etag.unwrap_or_default(),
                metadata: v.metadata,
            },
            None => pb::GetStateResponse::default(),
        }))
    }

    async fn get_bulk_state(
        &self,
        request: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        let req = request.into_inner();
        if req.parallelism < 0 {
            return Err(Status::invalid_argument(format!(
                "parallelism must not be negative, got {}",
                req.parallelism
            )));
        }
        let items = self
            .rt
            .state
            .bulk_get(&req.store_name, req.keys, req.metadata)
            .await
            .status()?;
        let items = items
            .into_iter()
            .map(|item| {
                let (data, etag, metadata) = match item.value {
                    Some(v) => (v.data.to_vec(), v.etag.unwrap_or_default(), v.metadata),
                    None => Default::default(),
                };
                pb::BulkStateItem {
                    key: item.key,
                    data,
                    etag,
                    error: item.error.unwrap_or_default(),
                    metadata,
                }
            })
            .collect();
        Ok(Response::new(pb::GetBulkStateResponse { items }))
    }

    async fn save_state(
        &self,
        request: Request<pb::SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        if req.states.is_empty() {
            return Ok(Response::new(()));
        }
        let items = req
            .states
            .into_iter()
            .map(convert::set_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.rt.state.save(&req.store_name, items).await.status()?;
        Ok(Response::new(()))
    }

    async fn delete_state(
        &self,
        request: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let options = convert::options(req.options)?;
        let del = DeleteRequest {
            key: req.key,
            etag: req.etag.map(|e| e.value),
            metadata: req.metadata,
            options,
        };
        self.rt.state.delete(&req.store_name, del).await.status()?;
        Ok(Response::new(()))
    }

    async fn delete_bulk_state(
        &self,
        request: Request<pb::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let dels = req
            .states
            .into_iter()
            .map(convert::delete_request)
            .collect::<Result<Vec<_>, _>>()?;
        self.rt
            .state
            .bulk_delete(&req.store_name, dels)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn execute_state_transaction(
        &self,
        request: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let mut ops = Vec::with_capacity(req.operations.len());
        for (i, op) in req.operations.into_iter().enumerate() {
            let item = op.request.ok_or_else(|| {
                Status::invalid_argument(format!("operations[{i}]: request is missing"))
            })?;
            ops.push(match op.operation_type.to_ascii_lowercase().as_str() {
                "upsert" => TransactionOp::Upsert(convert::set_request(item)?),
                "delete" => TransactionOp::Delete(convert::delete_request(item)?),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "operations[{i}]: operationType {other:?} is not \"upsert\" or \"delete\""
                    )));
                }
            });
        }
        self.rt
            .state
            .transact(&req.store_name, ops, req.metadata)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn publish_event(
        &self,
        request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        self.rt
            .pubsub
            .publish(
                &req.pubsub_name,
                &req.topic,
                &req.data,
                &req.data_content_type,
                req.metadata,
            )
            .await
            .status()?;
        Ok(Response::new(()))
    }

    type SubscribeTopicEventsStream = BoxStream<pb::SubscribeTopicEventsResponse>;

    async fn subscribe_topic_events(
        &self,
        request: Request<Streaming<pb::SubscribeTopicEventsRequest>>,
    ) -> Result<Response<Self::SubscribeTopicEventsStream>, Status> {
        let stream = stream::subscribe_topic_events(
            self.rt.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    type GetFileStream = BoxStream<pb::GetFileResponse>;

    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> Result<Response<Self::GetFileStream>, Status> {
        let req = request.into_inner();
        let body = self
            .rt
            .file
            .get(&req.store_name, &req.name, &req.metadata)
            .await
            .status()?;
        // Re-chunk so that no message exceeds the gRPC size limit whatever the store yields.
        let stream = body.flat_map(|chunk| {
            let items: Vec<Result<pb::GetFileResponse, Status>> = match chunk {
                Ok(bytes) => bytes
                    .chunks(FILE_CHUNK)
                    .map(|c| Ok(pb::GetFileResponse { data: c.to_vec() }))
                    .collect(),
                Err(e) => vec![Err(crate::status::to_status(e))],
            };
            futures::stream::iter(items)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn put_file(
        &self,
        request: Request<Streaming<pb::PutFileRequest>>,
    ) -> Result<Response<()>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Status::invalid_argument(
                "PutFile stream is empty: the first message must name the store and file",
            )
        })?;
        let (store, name, metadata) = (
            first.store_name.clone(),
            first.name.clone(),
            first.metadata.clone(),
        );
        let head = futures::stream::once(async move { Ok(bytes::Bytes::from(first.data)) });
        let rest = incoming.map(|m| match m {
            Ok(m) => Ok(bytes::Bytes::from(m.data)),
            Err(status) => Err(Error::invalid_argument(format!(
                "PutFile stream failed: {}",
                status.message()
            ))),
        });
        self.rt
            .file
            .put(&store, &name, &metadata, Box::pin(head.chain(rest)))
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn list_file(
        &self,
        request: Request<pb::ListFileRequest>,
    ) -> Result<Response<pb::ListFileResp>, Status> {
        let req = request.into_inner();
        let file = req.request.ok_or_else(|| {
            Status::invalid_argument("request is missing: name the store and directory")
        })?;
        let list = self
            .rt
            .file
            .list(
                &file.store_name,
                &file.name,
                i64::from(req.page_size),
                &req.marker,
                file.metadata,
            )
            .await
            .status()?;
        let files = list
            .files
            .into_iter()
            .map(|f| pb::FileInfo {
                file_name: f.name,
                size: i64::try_from(f.size).unwrap_or(i64::MAX),
                last_modified: f.last_modified,
                metadata: f.metadata,
            })
            .collect();
        Ok(Response::new(pb::ListFileResp {
            files,
            marker: list.marker,
            is_truncated: list.truncated,
        }))
    }

    async fn del_file(&self, request: Request<pb::DelFileRequest>) -> Result<Response<()>, Status> {
        let file = request.into_inner().request.ok_or_else(|| {
            Status::invalid_argument("request is missing: name the store and file")
        })?;
        self.rt
            .file
            .delete(&file.store_name, &file.name, &file.metadata)
            .await
            .status()?;
        Ok(Response::new(()))
    }

    async fn get_file_meta(
        &self,
        request: Request<pb::GetFileMetaRequest>,
    ) -> Result<Response<pb::GetFileMetaResponse>, Status> {
        let file = request.into_inner().request.ok_or_else(|| {
            Status::invalid_argument("request is missing: name the store and file")
        })?;
        let meta = self
            .rt
            .file
            .stat(&file.store_name, &file.name, &file.metadata)
            .await
            .status()?;
        Ok(Response::new(pb::GetFileMetaResponse {
            size: i64::try_from(meta.size).unwrap_or(i64::MAX),
            last_modified: meta.last_modified,
            response: Some(pb::FileMeta {
                metadata: meta
                    .metadata
                    .into_iter()
                    .map(|(k, v)| (k, pb::FileMetaValue { value: v }))
                    .collect(),
            }),
        }))
    }

    async fn invoke_binding(
        &self,
        request: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        let req = request.into_inner();
        let out = self
            .rt
            .binding
            .invoke(
                &req.name,
                BindingRequest {
                    operation: req.operation,
                    data: req.data.into(),
                    metadata: req.metadata,
                },
            )
            .await
            .status()?;
        Ok(Response::new(pb::InvokeBindingResponse {
            data: out.data.to_vec(),
            metadata: out.metadata,
        }))
    }

    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let req = request.into_inner();
        let data = self
            .rt
            .secrets
            .get(&req.store_name, &req.key, req.metadata)
            .await
            .status()?;
        Ok(Response::new(pb::GetSecretResponse { data }))
    }

    async fn get_bulk_secret(
        &self,
        request: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        let req = request.into_inner();
        let all = self
            .rt
            .secrets
            .bulk_get(&req.store_name, req.metadata)
            .await
            .status()?;
        let data = all
            .into_iter()
            .map(|(k, secrets)| (k, pb::SecretResponse { secrets }))
            .collect();
        Ok(Response::new(pb::GetBulkSecretResponse { data }))
    }
}
