//! The service-invocation building block: calls to the local app from any front door.
//! Remote targets (other sidecars) come with the mesh; until then only the app Plinth serves
//! is reachable.

use std::sync::Arc;
use std::time::Duration;

use plinth_core::{Error, Result};
use tokio::sync::Semaphore;

use crate::app::{AppSlot, InvokeRequest, InvokeResponse};

/// How long an invocation of the app may take before the caller gets DEADLINE_EXCEEDED /
/// 504. Every call to the app has a deadline; a caller's own shorter deadline still applies.
pub const APP_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The verbs an invocation may use.
const VERBS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Headers Plinth sets on every invocation, so the app knows who called.
pub mod headers {
    /// The calling app's id.
    pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
    /// The called app's id.
    pub const CALLEE_APP_ID: &str = "dapr-callee-app-id";
}

/// The invocation API every front door calls.
#[derive(Debug, Clone)]
pub struct InvokeApi {
    app_id: Arc<str>,
    namespace: Arc<str>,
    app: Arc<AppSlot>,
    concurrency: Option<Arc<Semaphore>>,
}

impl InvokeApi {
    /// Invocation of the app behind `app`, known as `app_id` in `namespace`;
    /// `concurrency` is the bound shared with every other call to the app.
    pub fn new(
        app_id: &str,
        namespace: &str,
        app: Arc<AppSlot>,
        concurrency: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            app_id: app_id.into(),
            namespace: namespace.into(),
            app,
            concurrency,
        }
    }

    /// Whether `target` names the local app: its id, or `id.namespace`.
    fn is_local(&self, target: &str) -> bool {
        match target.split_once('.') {
            None => target == &*self.app_id,
            Some((id, ns)) => id == &*self.app_id && ns == &*self.namespace,
        }
    }

    /// Invoke `req.method` on app `target`. The app's answer comes back whatever its status;
    /// an error means the call did not reach the app or did not finish.
    pub async fn invoke(&self, target: &str, mut req: InvokeRequest) -> Result<InvokeResponse> {
        if target.is_empty() {
            return Err(Error::invalid_argument("the target app id is empty"));
        }
        if !self.is_local(target) {
            return Err(Error::unavailable(format!(
                "app {target:?} is not reachable: this sidecar serves app {:?}, and invoking other apps needs the mesh, which is not configured",
                self.app_id
            )));
        }
        if req.method.is_empty() {
            return Err(Error::invalid_argument("the method is empty"));
        }
        req.verb = if req.verb.is_empty() {
            "POST".to_string()
        } else {
            req.verb.to_ascii_uppercase()
        };
        if !VERBS.contains(&req.verb.as_str()) {
            return Err(Error::invalid_argument(format!(
                "{:?} is not an HTTP verb",
                req.verb
            )));
        }
        let Some(channel) = self.app.get() else {
            return Err(Error::failed_precondition(format!(
                "app {:?} has no channel: start Plinth with --app-port to invoke it",
                self.app_id
            )));
        };
        req.headers
            .retain(|(k, _)| k != headers::CALLER_APP_ID && k != headers::CALLEE_APP_ID);
        req.headers
            .push((headers::CALLER_APP_ID.into(), self.app_id.to_string()));
        req.headers
            .push((headers::CALLEE_APP_ID.into(), self.app_id.to_string()));
        let _permit = match &self.concurrency {
            Some(s) => Some(
                s.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::unavailable("shutting down"))?,
            ),
            None => None,
        };
        match tokio::time::timeout(APP_CALL_TIMEOUT, channel.invoke(req)).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(format!(
                "app {:?} did not answer within {}s",
                self.app_id,
                APP_CALL_TIMEOUT.as_secs()
            ))),
        }
    }
}
