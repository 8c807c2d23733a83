//! Dapr's gRPC API (`dapr.proto.runtime.v1.Dapr`), translated onto the building blocks.
//!
//! Dapr's and Layotto's messages of the same name are different wire types, so this front
//! door has its own conversions ([`convert`]) and shares only the building blocks and the
//! streaming event handler with the Layotto one.

pub(crate) mod convert;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as pb;
use futures::Stream;
use plinth_core::component::binding::BindingRequest;
use plinth_core::component::configuration::ConfigurationQuery;
use plinth_core::component::lock::LockStatus;
use plinth_core::component::state::{DeleteRequest, TransactionOp};
use plinth_runtime::Runtime;
use plinth_runtime::pubsub::BulkEntry;
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::config_subscriptions::ConfigSubscriptions;
use crate::status::IntoStatus;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Dapr `Dapr` service.
#[derive(Debug, Clone)]
pub struct DaprService {
    rt: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    shutdown_request: Arc<Notify>,
    config_subscriptions: ConfigSubscriptions,
}

impl DaprService {
    /// The service over `rt`; long-lived streams end when `shutdown` turns true, and the
    /// Shutdown rpc notifies `shutdown_request`. `config_subscriptions` is shared with the
    /// HTTP API, so either can end a subscription the other made.
    pub fn new(
        rt: Arc<Runtime>,
        shutdown: watch::Receiver<bool>,
        shutdown_request: Arc<Notify>,
        config_subscriptions: ConfigSubscriptions,
    ) -> Self {
        Self {
            rt,
            shutdown,
            shutdown_request,
            config_subscriptions,
        }
    }

    async fn get_configuration_items(
        &self,
        req: pb::GetConfigurationRequest,
    ) -> Result<pb::GetConfigurationResponse, Status> {
        let query = ConfigurationQuery {
            app_id: String::new(),
            group: String::new(),
            label: String::new(),
            keys: req.keys,
            metadata: req.metadata,
        };
        let items = self
            .rt
            .configuration
            .get(&req.store_name, query)
            .await
            .status()?;
        Ok(pb::GetConfigurationResponse {
            items: items.into_iter().map(convert::config_item_out).collect(),
        })
    }

    async fn subscribe_configuration_items(
        &self,
        req: pb::SubscribeConfigurationRequest,
    ) -> Result<BoxStream<pb::SubscribeConfigurationResponse>, Status> {
        stream::subscribe_configuration(
            self.rt.clone(),
            req,
            self.config_subscriptions.clone(),
            self.shutdown.clone(),
        )
        .await
    }

    fn unsubscribe_configuration_id(
        &self,
        req: pb::UnsubscribeConfigurationRequest,
    ) -> pb::UnsubscribeConfigurationResponse {
        // Dapr answers an unknown id with ok=false and a message, not an error status.
        if self.config_subscriptions.cancel(&req.id) {
            pb::UnsubscribeConfigurationResponse {
                ok: true,
                message: String::new(),
            }
        } else {
            pb::UnsubscribeConfigurationResponse {
                ok: false,
                message: format!("subscription {:?} does not exist", req.id),
            }
        }
    }

    async fn bulk_publish(
        &self,
        req: pb::BulkPublishRequest,
    ) -> Result<pb::BulkPublishResponse, Status> {
        let entries = req
            .entries
            .into_iter()
            .map(|e| BulkEntry {
                entry_id: e.entry_id,
                event: e.event,
                content_type: e.content_type,
                metadata: e.metadata,
            })
            .collect();
        let failed = self
            .rt
            .pubsub
            .bulk_publish(&req.pubsub_name, &req.topic, entries, req.metadata)
            .await
            .status()?;
        let failed_entries = failed
            .into_iter()
            .map(|(entry_id, e)| pb::BulkPublishResponseFailedEntry {
                entry_id,
                error: e.to_string(),
            })
            .collect();
        Ok(pb::BulkPublishResponse { failed_entries })
    }
}

fn unsupported(rpc: &str) -> Status {
    // The SDKs fall back on UNIMPLEMENTED, so no other code will do here.
    Status::unimplemented(format!("{rpc} is not supported by Plinth"))
}

/// The rpcs Plinth has no building block for: each answers UNIMPLEMENTED with its name.
/// Written as the functions `#[tonic::async_trait]` would generate, because that attribute
/// does not see inside macro invocations.
macro_rules! unsupported {
    ($($rpc:ident => $name:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _request: Request<$req>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(std::future::ready(Err(unsupported(stringify!($rpc)))))
        }
    )*};
}

#[tonic::async_trait]
impl pb::dapr_server::Dapr for DaprService {
    async fn invoke_service(
        &self,
        request: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
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
        let mut response = Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: data.to_vec(),
            }),
            content_type,
        });
        *response.metadata_mut() = metadata;
        Ok(response)
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
        // A missing key is an empty response, not NOT_FOUND, as in Dapr.
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

    async fn query_state_alpha1(
        &self,
        request: Request<pb::QueryStateRequest>,
    ) -> Result<Response<pb::QueryStateResponse>, Status> {
        let req = request.into_inner();
        let resp = self
            .rt
            .state
            .query(&req.store_name, req.query.as_bytes(), req.metadata)
            .await
            .status()?;
        Ok(Response::new(pb::QueryStateResponse {
            results: resp
                .results
                .into_iter()
                .map(|item| pb::QueryStateItem {
                    key: item.key,
                    data: item.data.to_vec(),
                    etag: item.etag.unwrap_or_default(),
                    error: item.error.unwrap_or_default(),
                })
                .collect(),
            token: resp.token.unwrap_or_default(),
            metadata: resp.metadata,
        }))
    }

    async fn delete_state(
        &self,
        request: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        let options = convert::options(req.options)?;
        let del = DeleteRequest {
            key: req.key,
            etag: req.etag.map(|e| e.value).filter(|e| !e.is_empty()),
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

    async fn bulk_publish_event_alpha1(
        &self,
        request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        Ok(Response::new(
            self.bulk_publish(request.into_inner()).await?,
        ))
    }

    async fn bulk_publish_event(
        &self,
        request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        Ok(Response::new(
            self.bulk_publish(request.into_inner()).await?,
        ))
    }

    type SubscribeTopicEventsAlpha1Stream = BoxStream<pb::SubscribeTopicEventsResponseAlpha1>;

    async fn subscribe_topic_events_alpha1(
        &self,
        request: Request<Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        let stream = stream::subscribe_topic_events(
            self.rt.clone(),
            request.into_inner(),
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(stream))
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

    async fn get_configuration_alpha1(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Ok(Response::new(
            self.get_configuration_items(request.into_inner()).await?,
        ))
    }

    async fn get_configuration(
        &self,
        request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Ok(Response::new(
            self.get_configuration_items(request.into_inner()).await?,
        ))
    }

    type SubscribeConfigurationAlpha1Stream = BoxStream<pb::SubscribeConfigurationResponse>;

    async fn subscribe_configuration_alpha1(
        &self,
        request: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationAlpha1Stream>, Status> {
        Ok(Response::new(
            self.subscribe_configuration_items(request.into_inner())
                .await?,
        ))
    }

    type SubscribeConfigurationStream = BoxStream<pb::SubscribeConfigurationResponse>;

    async fn subscribe_configuration(
        &self,
        request: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        Ok(Response::new(
            self.subscribe_configuration_items(request.into_inner())
                .await?,
        ))
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        request: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Ok(Response::new(
            self.unsubscribe_configuration_id(request.into_inner()),
        ))
    }

    async fn unsubscribe_configuration(
        &self,
        request: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Ok(Response::new(
            self.unsubscribe_configuration_id(request.into_inner()),
        ))
    }

    async fn try_lock_alpha1(
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
                i64::from(req.expiry_in_seconds),
            )
            .await
            .status()?;
        Ok(Response::new(pb::TryLockResponse { success }))
    }

    async fn unlock_alpha1(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        use pb::unlock_response::Status as S;
        let req = request.into_inner();
        let status = self
            .rt
            .lock
            .unlock(&req.store_name, &req.resource_id, &req.lock_owner)
            .await
            .status()?;
        let status = match status {
            LockStatus::Success => S::Success,
            LockStatus::NotExist => S::LockDoesNotExist,
            LockStatus::BelongsToOthers => S::LockBelongsToOthers,
        };
        Ok(Response::new(pb::UnlockResponse {
            status: status as i32,
        }))
    }

    type EncryptAlpha1Stream = BoxStream<pb::EncryptResponse>;

    async fn encrypt_alpha1(
        &self,
        _request: Request<Streaming<pb::EncryptRequest>>,
    ) -> Result<Response<Self::EncryptAlpha1Stream>, Status> {
        Err(unsupported("EncryptAlpha1"))
    }

    type DecryptAlpha1Stream = BoxStream<pb::DecryptResponse>;

    async fn decrypt_alpha1(
        &self,
        _request: Request<Streaming<pb::DecryptRequest>>,
    ) -> Result<Response<Self::DecryptAlpha1Stream>, Status> {
        Err(unsupported("DecryptAlpha1"))
    }

    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        Ok(Response::new(convert::metadata(
            self.rt.metadata.snapshot(),
        )))
    }

    async fn set_metadata(
        &self,
        request: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let req = request.into_inner();
        if req.key.is_empty() {
            return Err(Status::invalid_argument("metadata key is empty"));
        }
        self.rt.metadata.set(req.key, req.value);
        Ok(Response::new(()))
    }

    async fn shutdown(
        &self,
        _request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<()>, Status> {
        // Answer first: the shutdown drains in-flight requests, this one included.
        self.shutdown_request.notify_one();
        Ok(Response::new(()))
    }

    unsupported! {
        RegisterActorTimer => register_actor_timer(pb::RegisterActorTimerRequest) -> ();
        UnregisterActorTimer => unregister_actor_timer(pb::UnregisterActorTimerRequest) -> ();
        RegisterActorReminder => register_actor_reminder(pb::RegisterActorReminderRequest) -> ();
        UnregisterActorReminder => unregister_actor_reminder(pb::UnregisterActorReminderRequest) -> ();
        UnregisterActorRemindersByType => unregister_actor_reminders_by_type(pb::UnregisterActorRemindersByTypeRequest) -> pb::UnregisterActorRemindersByTypeResponse;
        ListActorReminders => list_actor_reminders(pb::ListActorRemindersRequest) -> pb::ListActorRemindersResponse;
        GetActorState => get_actor_state(pb::GetActorStateRequest) -> pb::GetActorStateResponse;
        GetActorReminder => get_actor_reminder(pb::GetActorReminderRequest) -> pb::GetActorReminderResponse;
        ExecuteActorStateTransaction => execute_actor_state_transaction(pb::ExecuteActorStateTransactionRequest) -> ();
        InvokeActor => invoke_actor(pb::InvokeActorRequest) -> pb::InvokeActorResponse;
        SubtleGetKeyAlpha1 => subtle_get_key_alpha1(pb::SubtleGetKeyRequest) -> pb::SubtleGetKeyResponse;
        SubtleEncryptAlpha1 => subtle_encrypt_alpha1(pb::SubtleEncryptRequest) -> pb::SubtleEncryptResponse;
        SubtleDecryptAlpha1 => subtle_decrypt_alpha1(pb::SubtleDecryptRequest) -> pb::SubtleDecryptResponse;
        SubtleWrapKeyAlpha1 => subtle_wrap_key_alpha1(pb::SubtleWrapKeyRequest) -> pb::SubtleWrapKeyResponse;
        SubtleUnwrapKeyAlpha1 => subtle_unwrap_key_alpha1(pb::SubtleUnwrapKeyRequest) -> pb::SubtleUnwrapKeyResponse;
        SubtleSignAlpha1 => subtle_sign_alpha1(pb::SubtleSignRequest) -> pb::SubtleSignResponse;
        SubtleVerifyAlpha1 => subtle_verify_alpha1(pb::SubtleVerifyRequest) -> pb::SubtleVerifyResponse;
        StartWorkflowAlpha1 => start_workflow_alpha1(pb::StartWorkflowRequest) -> pb::StartWorkflowResponse;
        GetWorkflowAlpha1 => get_workflow_alpha1(pb::GetWorkflowRequest) -> pb::GetWorkflowResponse;
        PurgeWorkflowAlpha1 => purge_workflow_alpha1(pb::PurgeWorkflowRequest) -> ();
        TerminateWorkflowAlpha1 => terminate_workflow_alpha1(pb::TerminateWorkflowRequest) -> ();
        PauseWorkflowAlpha1 => pause_workflow_alpha1(pb::PauseWorkflowRequest) -> ();
        ResumeWorkflowAlpha1 => resume_workflow_alpha1(pb::ResumeWorkflowRequest) -> ();
        RaiseEventWorkflowAlpha1 => raise_event_workflow_alpha1(pb::RaiseEventWorkflowRequest) -> ();
        StartWorkflowBeta1 => start_workflow_beta1(pb::StartWorkflowRequest) -> pb::StartWorkflowResponse;
        GetWorkflowBeta1 => get_workflow_beta1(pb::GetWorkflowRequest) -> pb::GetWorkflowResponse;
        PurgeWorkflowBeta1 => purge_workflow_beta1(pb::PurgeWorkflowRequest) -> ();
        TerminateWorkflowBeta1 => terminate_workflow_beta1(pb::TerminateWorkflowRequest) -> ();
        PauseWorkflowBeta1 => pause_workflow_beta1(pb::PauseWorkflowRequest) -> ();
        ResumeWorkflowBeta1 => resume_workflow_beta1(pb::ResumeWorkflowRequest) -> ();
        RaiseEventWorkflowBeta1 => raise_event_workflow_beta1(pb::RaiseEventWorkflowRequest) -> ();
        ScheduleJobAlpha1 => schedule_job_alpha1(pb::ScheduleJobRequest) -> pb::ScheduleJobResponse;
        ScheduleJob => schedule_job(pb::ScheduleJobRequest) -> pb::ScheduleJobResponse;
        GetJobAlpha1 => get_job_alpha1(pb::GetJobRequest) -> pb::GetJobResponse;
        GetJob => get_job(pb::GetJobRequest) -> pb::GetJobResponse;
        DeleteJobAlpha1 => delete_job_alpha1(pb::DeleteJobRequest) -> pb::DeleteJobResponse;
        DeleteJob => delete_job(pb::DeleteJobRequest) -> pb::DeleteJobResponse;
        DeleteJobsByPrefixAlpha1 => delete_jobs_by_prefix_alpha1(pb::DeleteJobsByPrefixRequestAlpha1) -> pb::DeleteJobsByPrefixResponseAlpha1;
        DeleteJobsByPrefix => delete_jobs_by_prefix(pb::DeleteJobsByPrefixRequest) -> pb::DeleteJobsByPrefixResponse;
        ListJobsAlpha1 => list_jobs_alpha1(pb::ListJobsRequestAlpha1) -> pb::ListJobsResponseAlpha1;
        ListJobs => list_jobs(pb::ListJobsRequest) -> pb::ListJobsResponse;
        ConverseAlpha1 => converse_alpha1(pb::ConversationRequest) -> pb::ConversationResponse;
        ConverseAlpha2 => converse_alpha2(pb::ConversationRequestAlpha2) -> pb::ConversationResponseAlpha2;
        CreateIndexAlpha1 => create_index_alpha1(pb::CreateIndexRequestAlpha1) -> ();
        GetIndexAlpha1 => get_index_alpha1(pb::GetIndexRequestAlpha1) -> pb::GetIndexResponseAlpha1;
        ListIndexesAlpha1 => list_indexes_alpha1(pb::ListIndexesRequestAlpha1) -> pb::ListIndexesResponseAlpha1;
        DeleteIndexAlpha1 => delete_index_alpha1(pb::DeleteIndexRequestAlpha1) -> ();
        IndexDocumentsAlpha1 => index_documents_alpha1(pb::IndexDocumentsRequestAlpha1) -> pb::IndexDocumentsResponseAlpha1;
        GetDocumentsAlpha1 => get_documents_alpha1(pb::GetDocumentsRequestAlpha1) -> pb::GetDocumentsResponseAlpha1;
        DeleteDocumentsAlpha1 => delete_documents_alpha1(pb::DeleteDocumentsRequestAlpha1) -> pb::DeleteDocumentsResponseAlpha1;
        SearchAlpha1 => search_alpha1(pb::SearchRequestAlpha1) -> pb::SearchResponseAlpha1;
        CreateCollectionAlpha1 => create_collection_alpha1(pb::CreateCollectionRequestAlpha1) -> ();
        GetCollectionAlpha1 => get_collection_alpha1(pb::GetCollectionRequestAlpha1) -> pb::GetCollectionResponseAlpha1;
        ListCollectionsAlpha1 => list_collections_alpha1(pb::ListCollectionsRequestAlpha1) -> pb::ListCollectionsResponseAlpha1;
        DeleteCollectionAlpha1 => delete_collection_alpha1(pb::DeleteCollectionRequestAlpha1) -> ();
        UpsertVectorsAlpha1 => upsert_vectors_alpha1(pb::UpsertVectorsRequestAlpha1) -> pb::UpsertVectorsResponseAlpha1;
        DeleteVectorsAlpha1 => delete_vectors_alpha1(pb::DeleteVectorsRequestAlpha1) -> pb::DeleteVectorsResponseAlpha1;
        GetVectorsAlpha1 => get_vectors_alpha1(pb::GetVectorsRequestAlpha1) -> pb::GetVectorsResponseAlpha1;
        QueryVectorsAlpha1 => query_vectors_alpha1(pb::QueryVectorsRequestAlpha1) -> pb::QueryVectorsResponseAlpha1;
        BatchQueryVectorsAlpha1 => batch_query_vectors_alpha1(pb::BatchQueryVectorsRequestAlpha1) -> pb::BatchQueryVectorsResponseAlpha1;
    }
}
