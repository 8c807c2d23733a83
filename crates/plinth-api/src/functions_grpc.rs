//! `plinth.admin.v1.Functions`: function management over gRPC, on the gRPC listeners (the
//! API token applies as to every other service there).

use std::sync::Arc;

use plinth_proto::admin::v1 as pb;
use plinth_proto::admin::v1::functions_server::Functions;
use plinth_wasm::registry::{FunctionInfo, InstallMode};
use plinth_wasm::{FunctionConfig, FunctionRegistry};
use tonic::{Request, Response, Status};

use crate::status::to_status;

/// The service.
#[derive(Debug, Clone)]
pub(crate) struct FunctionsService {
    registry: Arc<FunctionRegistry>,
}

impl FunctionsService {
    /// Management of `registry`'s functions.
    pub(crate) fn new(registry: Arc<FunctionRegistry>) -> Self {
        Self { registry }
    }
}

fn info(i: &FunctionInfo) -> pb::FunctionInfo {
    pb::FunctionInfo {
        id: i.id.clone(),
        kind: i.kind.to_string(),
        version: i.version,
        digest: i.digest.clone(),
        info_json: serde_json::to_string(i).unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl Functions for FunctionsService {
    async fn install(
        &self,
        request: Request<pb::InstallFunctionRequest>,
    ) -> Result<Response<pb::FunctionInfo>, Status> {
        let req = request.into_inner();
        let mut config: FunctionConfig = if req.config_json.trim().is_empty() {
            FunctionConfig::default()
        } else {
            serde_json::from_str(&req.config_json)
                .map_err(|e| Status::invalid_argument(format!("config_json: {e}")))?
        };
        config.variables.extend(req.variables);
        config.validate().map_err(Status::invalid_argument)?;
        let mode = match pb::InstallMode::try_from(req.mode) {
            Ok(pb::InstallMode::Upsert) => InstallMode::Upsert,
            Ok(pb::InstallMode::Create) => InstallMode::Create,
            Ok(pb::InstallMode::Update) => InstallMode::Update,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "mode {} is not an InstallMode",
                    req.mode
                )));
            }
        };
        let installed = self
            .registry
            .install(&req.id, req.wasm, config, mode)
            .await
            .map_err(to_status)?;
        Ok(Response::new(info(&installed)))
    }

    async fn uninstall(
        &self,
        request: Request<pb::UninstallFunctionRequest>,
    ) -> Result<Response<pb::UninstallFunctionResponse>, Status> {
        self.registry
            .uninstall(&request.into_inner().id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::UninstallFunctionResponse {}))
    }

    async fn list(
        &self,
        _request: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsResponse>, Status> {
        Ok(Response::new(pb::ListFunctionsResponse {
            functions: self.registry.list().iter().map(info).collect(),
        }))
    }
}
