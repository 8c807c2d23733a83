//! Dapr's templated metadata values: `{uuid}`, `{podName}`, `{namespace}` and `{appID}` in a
//! component's plain metadata values are replaced when the component is loaded.
//!
//! - `{uuid}`: a fresh random UUID (v4) for every occurrence;
//! - `{podName}`: `POD_NAME`; a value that uses it while `POD_NAME` is unset or empty is a
//!   config error, as in Dapr;
//! - `{namespace}`: `NAMESPACE` (`default` when unset) joined to the app id with a dot,
//!   `default.myapp`, as Dapr expands it;
//! - `{appID}`: the app id.
//!
//! Tags are case-sensitive and are expanded in one pass, so text a tag expands to is never
//! expanded again. Values from `secretKeyRef` and `envRef` are taken as they are.

/// The environment variable naming the pod (set by Kubernetes' downward API).
pub(super) const POD_NAME: &str = "POD_NAME";
/// The environment variable naming the namespace.
pub(super) const NAMESPACE: &str = "NAMESPACE";
/// The namespace when `NAMESPACE` is unset, as in Dapr.
pub(super) const DEFAULT_NAMESPACE: &str = "default";

/// What the tags expand to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tags {
    /// `{appID}`.
    pub app_id: String,
    /// The namespace part of `{namespace}`.
    pub namespace: String,
    /// `{podName}`; `None` makes a value using it an error.
    pub pod_name: Option<String>,
}

impl Tags {
    /// Tags for `app_id` from the process environment.
    pub fn from_env(app_id: &str) -> Self {
        // An empty NAMESPACE stays empty; only an unset one defaults, as in Dapr.
        let namespace = std::env::var(NAMESPACE).unwrap_or_else(|_| DEFAULT_NAMESPACE.into());
        let pod_name = std::env::var(POD_NAME).ok().filter(|p| !p.is_empty());
        Self {
            app_id: app_id.to_string(),
            namespace,
            pod_name,
        }
    }

    /// Expand every tag in `value`; the error says what is missing.
    pub fn expand(&self, value: &str) -> Result<String, String> {
        if !value.contains('{') {
            return Ok(value.to_string());
        }
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(at) = rest.find('{') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            let (tag, expanded) = if tail.starts_with("{uuid}") {
                ("{uuid}", uuid::Uuid::new_v4().to_string())
            } else if tail.starts_with("{podName}") {
                let pod = self.pod_name.clone().ok_or_else(|| {
                    format!(
                        "refers to {{podName}} but the {POD_NAME} environment variable is not set"
                    )
                })?;
                ("{podName}", pod)
            } else if tail.starts_with("{namespace}") {
                ("{namespace}", format!("{}.{}", self.namespace, self.app_id))
            } else if tail.starts_with("{appID}") {
                ("{appID}", self.app_id.clone())
            } else {
                ("{", "{".to_string())
            };
            out.push_str(&expanded);
            rest = &tail[tag.len()..];
        }
        out.push_str(rest);
        Ok(out)
    }
}
