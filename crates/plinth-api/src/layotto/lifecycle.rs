//! Layotto's `Lifecycle.ApplyConfiguration`: change a component's metadata at run time.
//!
//! The named component is rebuilt from its current spec with the given metadata entries
//! merged in (an empty value removes the entry), initialised, and swapped in; callers never
//! see a half-built component, and a failing init leaves the old one serving. The kind must
//! match; the type, name and secret references cannot change.

use std::sync::Arc;

use plinth_proto::runtime::v1 as pb;
use plinth_runtime::Runtime;
use tonic::{Request, Response, Status};

use crate::status::IntoStatus;

/// The Layotto `Lifecycle` service.
#[derive(Debug, Clone)]
pub struct LifecycleService {
    rt: Arc<Runtime>,
}

impl LifecycleService {
    /// The service over `rt`.
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt }
    }
}

#[tonic::async_trait]
impl pb::lifecycle_server::Lifecycle for LifecycleService {
    async fn apply_configuration(
        &self,
        request: Request<pb::DynamicConfiguration>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        let config = request
            .into_inner()
            .component_config
            .ok_or_else(|| Status::invalid_argument("component_config is missing"))?;
        let hosted = self.rt.host.get(&config.name).ok_or_else(|| {
            Status::invalid_argument(format!("component {:?} is not configured", config.name))
        })?;
        let mut spec = hosted.spec().clone();
        let kind = spec.kind().to_string();
        let asked = config.kind.trim();
        let same_kind = asked.is_empty()
            || asked == kind
            || (asked == "pub_subs" && kind == "pubsub")
            || (asked == "config_store" && kind == "configuration")
            || (asked == "secret_store" && kind == "secretstores");
        if !same_kind {
            return Err(Status::invalid_argument(format!(
                "component {:?} is a {kind} component, not {asked:?}",
                config.name
            )));
        }
        for (k, v) in config.metadata {
            if v.is_empty() {
                spec.metadata.remove(&k);
            } else {
                spec.metadata.insert(k, v);
            }
        }
        spec.source = format!("{} (changed by ApplyConfiguration)", spec.source);
        self.rt.host.replace(spec).await.status()?;
        tracing::info!(component = %config.name, "component reconfigured");
        Ok(Response::new(pb::ApplyConfigurationResponse {}))
    }
}
