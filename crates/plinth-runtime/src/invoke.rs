//! The service-invocation building block: calls to the local app, to the WebAssembly
//! functions hosted in this process, and (through the mesh, when one is set) to other apps'
//! sidecars and to HTTP endpoints, from any front door.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::{Error, Result};
use tokio::sync::Semaphore;

use crate::app::passthrough::Guarded;
use crate::app::{AppSlot, HttpCall, InvokeAnswer, InvokeRequest, InvokeResponse};

/// How long an invocation of the app may take before the caller gets DEADLINE_EXCEEDED /
/// 504. Every call to the app has a deadline; a caller's own shorter deadline still applies.
pub const APP_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The verbs an invocation may use.
pub const VERBS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Headers Plinth sets on every invocation, so the app knows who called.
pub mod headers {
    /// The calling app's id.
    pub const CALLER_APP_ID: &str = "dapr-caller-app-id";
    /// The called app's id.
    pub const CALLEE_APP_ID: &str = "dapr-callee-app-id";
}

/// The functions hosted in this process, as invocation targets. A function's id takes
/// precedence over every other app id: a target that names a function never leaves the
/// process.
#[async_trait]
pub trait LocalFunctions: Send + Sync + std::fmt::Debug {
    /// Whether a function with this id is installed.
    fn contains(&self, id: &str) -> bool;
    /// Call function `id` with `req`, on behalf of `caller` (an app id). `Ok` whatever
    /// status the function answered; an error when it could not run to the end (not found,
    /// a limit, a trap).
    async fn call(&self, id: &str, caller: &str, req: InvokeRequest) -> Result<InvokeResponse>;
}

/// Apps served by other sidecars, and HTTP endpoints: the mesh, as the building block sees
/// it.
#[async_trait]
pub trait RemoteApps: Send + Sync + std::fmt::Debug {
    /// Call `req.method` on `target` (an app id, `id.namespace`, an HTTPEndpoint's name or
    /// an `http(s)://` URL) on behalf of `caller`. The verb is already normalised and the
    /// method is not empty. `Ok` whatever status the target answered.
    async fn invoke(
        &self,
        target: &str,
        caller: &str,
        req: InvokeRequest,
    ) -> Result<InvokeResponse>;

    /// Pass an HTTP invocation through to `target`, streaming. The verb is one of
    /// [`VERBS`] and the method is not empty. This default reads the call whole and
    /// [`invoke`](Self::invoke)s it.
    async fn invoke_http(
        &self,
        target: &str,
        caller: &str,
        call: HttpCall,
    ) -> Result<InvokeAnswer> {
        let req = call.into_buffered().await?;
        self.invoke(target, caller, req)
            .await
            .map(InvokeAnswer::Buffered)
    }
}

/// The invocation API every front door calls.
#[derive(Debug, Clone)]
pub struct InvokeApi {
    app_id: Arc<str>,
    namespace: Arc<str>,
    app: Arc<AppSlot>,
    concurrency: Option<Arc<Semaphore>>,
    functions: Arc<OnceLock<Arc<dyn LocalFunctions>>>,
    remote: Arc<OnceLock<Arc<dyn RemoteApps>>>,
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
            functions: Arc::default(),
            remote: Arc::default(),
        }
    }

    /// Route invocations of function ids to `functions` (set once, by the function host).
    pub fn set_functions(&self, functions: Arc<dyn LocalFunctions>) {
        let _ = self.functions.set(functions);
    }

    /// Route invocations of other apps to `remote` (set once, when the mesh starts).
    pub fn set_remote(&self, remote: Arc<dyn RemoteApps>) {
        let _ = self.remote.set(remote);
    }

    /// The app id this sidecar serves.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The function host, when one is set.
    pub fn functions(&self) -> Option<&Arc<dyn LocalFunctions>> {
        self.functions.get()
    }

    /// A place among the calls to the app (`--app-max-concurrency`), when they are bounded.
    async fn permit(&self) -> Result<Option<tokio::sync::OwnedSemaphorePermit>> {
        match &self.concurrency {
            Some(s) => s
                .clone()
                .acquire_owned()
                .await
                .map(Some)
                .map_err(|_| Error::unavailable("shutting down")),
            None => Ok(None),
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
    pub async fn invoke(&self, target: &str, req: InvokeRequest) -> Result<InvokeResponse> {
        self.invoke_as(target, &self.app_id.clone(), req).await
    }

    /// Invoke `call.method` on app `target`, passing HTTP through where every hop can: to
    /// an HTTP app, here or through the mesh, the body streams both ways. A function, or a
    /// gRPC app here, gets the call read whole, and the answer is then
    /// [`InvokeAnswer::Buffered`].
    pub async fn invoke_http(&self, target: &str, call: HttpCall) -> Result<InvokeAnswer> {
        self.invoke_http_as(target, &self.app_id.clone(), call)
            .await
    }

    /// [`invoke_http`](Self::invoke_http) on behalf of `caller`.
    pub async fn invoke_http_as(
        &self,
        target: &str,
        caller: &str,
        mut call: HttpCall,
    ) -> Result<InvokeAnswer> {
        let function = !target.is_empty()
            && self
                .functions
                .get()
                .is_some_and(|functions| functions.contains(target));
        // Where the call passes through: another app's sidecar, or this app's HTTP channel.
        enum Through<'a> {
            Remote(&'a Arc<dyn RemoteApps>),
            Local(&'a Arc<dyn crate::app::AppChannel>),
        }
        let through = if target.is_empty() || function {
            None
        } else if self.is_local(target) {
            self.app
                .get()
                .filter(|c| c.passes_http())
                .map(Through::Local)
        } else {
            self.remote.get().map(Through::Remote)
        };
        let Some(through) = through else {
            // Read whole; `invoke_as` gives the errors (no target, no mesh, no channel).
            let req = call.into_buffered().await?;
            return self
                .invoke_as(target, caller, req)
                .await
                .map(InvokeAnswer::Buffered);
        };
        if call.method.is_empty() {
            return Err(Error::invalid_argument("the method is empty"));
        }
        let verb = call.request.method().as_str();
        if !VERBS.contains(&verb) {
            let upper = verb.to_ascii_uppercase();
            if !VERBS.contains(&upper.as_str()) {
                return Err(Error::invalid_argument(format!(
                    "{verb:?} is not an HTTP verb"
                )));
            }
            *call.request.method_mut() = http::Method::from_bytes(upper.as_bytes())
                .map_err(|_| Error::invalid_argument(format!("{upper:?} is not an HTTP verb")))?;
        }
        let channel = match through {
            Through::Remote(remote) => return remote.invoke_http(target, caller, call).await,
            Through::Local(channel) => channel,
        };
        let headers = call.request.headers_mut();
        let caller = http::HeaderValue::try_from(caller).map_err(|_| {
            Error::invalid_argument(format!("{caller:?} cannot be sent as a header"))
        })?;
        let callee = http::HeaderValue::try_from(&*self.app_id).map_err(|_| {
            Error::invalid_argument(format!("{:?} cannot be sent as a header", self.app_id))
        })?;
        headers.insert(headers::CALLER_APP_ID, caller);
        headers.insert(headers::CALLEE_APP_ID, callee);
        let permit = self.permit().await?;
        let response =
            match tokio::time::timeout(APP_CALL_TIMEOUT, channel.forward_http(call)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Error::timeout(format!(
                        "app {:?} did not answer within {}s",
                        self.app_id,
                        APP_CALL_TIMEOUT.as_secs()
                    )));
                }
            };
        Ok(InvokeAnswer::Http(match permit {
            // The app works on the call until its answer's body ends.
            Some(permit) => response
                .map(|body| http_body_util::BodyExt::boxed_unsync(Guarded::new(body, permit))),
            None => response,
        }))
    }

    /// [`invoke`](Self::invoke) on behalf of `caller`: a function calling out gives its own
    /// app id, which the callee sees as the caller.
    pub async fn invoke_as(
        &self,
        target: &str,
        caller: &str,
        mut req: InvokeRequest,
    ) -> Result<InvokeResponse> {
        if target.is_empty() {
            return Err(Error::invalid_argument("the target app id is empty"));
        }
        if let Some(functions) = self.functions.get()
            && functions.contains(target)
        {
            return functions.call(target, caller, req).await;
        }
        let local = self.is_local(target);
        if !local && self.remote.get().is_none() {
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
        if !local && let Some(remote) = self.remote.get() {
            return remote.invoke(target, caller, req).await;
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
            .push((headers::CALLER_APP_ID.into(), caller.to_string()));
        req.headers
            .push((headers::CALLEE_APP_ID.into(), self.app_id.to_string()));
        let _permit = self.permit().await?;
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
