//! A function's configuration: its limits, what it is granted, and its variables.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Requests one component instance serves by default (see [`Limits::instance_reuse`]).
pub const DEFAULT_INSTANCE_REUSE: u32 = 1;

/// The limits of one function. Each has a default; a function's config may lower or raise it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// The linear-memory cap per instance, in bytes (every memory of the instance counted
    /// together). Growing past it fails inside the guest, which usually traps.
    pub memory_bytes: u64,
    /// The execution-time budget of one request, in milliseconds of wall time spent inside
    /// the guest (epoch-based: time spent in host calls is not counted).
    pub cpu_ms: u64,
    /// The wall-clock timeout of one request, in milliseconds, host calls included.
    pub timeout_ms: u64,
    /// The most requests this function serves at once; more wait for a slot until the
    /// timeout, then fail with RESOURCE_EXHAUSTED.
    pub max_concurrency: u32,
    /// How many requests one instance of a component function may serve before it is
    /// dropped. 1 gives every request a fresh instance, so that nothing one request leaves in
    /// guest memory reaches the next; above 1, an instance that answered cleanly serves the
    /// function's next requests too, as a warm container does. An instance that trapped, hit
    /// a limit or left a request's resources open is never reused. proxy-wasm modules keep
    /// Layotto's model (one VM per function) and ignore this.
    pub instance_reuse: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            cpu_ms: 1_000,
            timeout_ms: 10_000,
            max_concurrency: 64,
            instance_reuse: DEFAULT_INSTANCE_REUSE,
        }
    }
}

impl Limits {
    /// The execution-time budget.
    pub fn cpu(&self) -> Duration {
        Duration::from_millis(self.cpu_ms)
    }

    /// The wall-clock timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Check the limits make sense, naming the field that does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes < 64 << 10 {
            return Err("limits.memoryBytes must be at least 65536 (one wasm page)".into());
        }
        if self.cpu_ms == 0 {
            return Err("limits.cpuMs must be above 0".into());
        }
        if self.timeout_ms == 0 {
            return Err("limits.timeoutMs must be above 0".into());
        }
        if self.max_concurrency == 0 {
            return Err("limits.maxConcurrency must be above 0".into());
        }
        if self.instance_reuse == 0 {
            return Err(
                "limits.instanceReuse must be at least 1 (1: a fresh instance per request)".into(),
            );
        }
        Ok(())
    }
}

/// What a function may reach beyond the Runtime ABI. Nothing by default: no filesystem, no
/// network, no environment variables and no secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Grants {
    /// Environment variables: `NAME=value`, or `NAME` to pass the host's value on.
    pub env: Vec<String>,
    /// Host directories, as `host-path:guest-path`, read-only unless suffixed `:rw`.
    pub dirs: Vec<String>,
    /// Outbound network (WASI sockets). Off by default.
    pub network: bool,
    /// The secret stores the function may read through the secrets import.
    pub secret_stores: Vec<String>,
}

/// Everything about one function but its code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FunctionConfig {
    /// The app id its state keys, locks and publishes go under, and that callees see as the
    /// caller. The host's app id when absent.
    pub app_id: Option<String>,
    /// Its limits.
    pub limits: Limits,
    /// What it is granted.
    pub grants: Grants,
    /// Opaque configuration handed to a proxy-wasm module's `proxy_on_configure`.
    pub plugin_config: Option<String>,
    /// Topics whose events are delivered to the function.
    pub subscriptions: Vec<FunctionSubscription>,
    /// Configuration values a component reads through `wasi:config/store` (`get`,
    /// `get-all`). Not secrets: they show in the function's listing. proxy-wasm modules do
    /// not see them (they have `plugin_config`).
    #[serde(deserialize_with = "variables")]
    pub variables: BTreeMap<String, String>,
}

impl FunctionConfig {
    /// Check the config makes sense, naming the field that does not.
    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate()?;
        if self.variables.keys().any(String::is_empty) {
            return Err("variables: a key is empty".into());
        }
        Ok(())
    }
}

/// A topic a function subscribes to: each event is POSTed to the function as a CloudEvent
/// (`application/cloudevents+json`) at `/{route}`, and its answer is read as an HTTP app's
/// (2xx and `{"status": ...}`; 404 drops; anything else retries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSubscription {
    /// The pub/sub component.
    pub pubsubname: String,
    /// The topic.
    pub topic: String,
    /// The path the events are POSTed to; the topic when absent.
    #[serde(default)]
    pub route: Option<String>,
    /// Where events go after their last attempt, or when dropped.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata (`maxDeliveryAttempts`, `maxInFlight`, `consumerID`, ...).
    /// The consumer group defaults to `{appId}-{functionId}`, so replicas of one function
    /// compete for events and the app's own subscriptions stay separate.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The `spec` of a `Function` resource (`apiVersion: plinth.dev/v1alpha1`, `kind:
/// Function`, `metadata.name` = the function id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FunctionSpec {
    /// The `.wasm` file, relative to the resource file's directory. Without it, the resource
    /// only configures a function installed later (through the admin API or the functions
    /// directory) under the same id.
    pub module: Option<String>,
    /// See [`FunctionConfig::app_id`].
    pub app_id: Option<String>,
    /// See [`FunctionConfig::limits`].
    pub limits: Limits,
    /// See [`FunctionConfig::grants`].
    pub grants: Grants,
    /// See [`FunctionConfig::plugin_config`].
    pub plugin_config: Option<String>,
    /// See [`FunctionConfig::subscriptions`].
    pub subscriptions: Vec<FunctionSubscription>,
    /// See [`FunctionConfig::variables`].
    #[serde(deserialize_with = "variables")]
    pub variables: BTreeMap<String, String>,
}

/// `variables`, whose values must be strings; the error says so by name, since YAML reads
/// an unquoted `8080` or `true` as a number or a boolean.
fn variables<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct Text(String);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Expect;

            impl Visitor<'_> for Expect {
                type Value = String;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string (variables are strings: quote numbers and booleans)")
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                    Ok(v.to_string())
                }

                fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
                    Ok(v)
                }
            }

            d.deserialize_string(Expect).map(Text)
        }
    }

    let map = BTreeMap::<String, Text>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k, v.0)).collect())
}

impl FunctionSpec {
    /// The config part.
    pub fn config(&self) -> FunctionConfig {
        FunctionConfig {
            app_id: self.app_id.clone(),
            limits: self.limits.clone(),
            grants: self.grants.clone(),
            plugin_config: self.plugin_config.clone(),
            subscriptions: self.subscriptions.clone(),
            variables: self.variables.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_default_to_none_and_need_keys() {
        let config = FunctionConfig::default();
        assert!(config.variables.is_empty());
        assert_eq!(config.validate(), Ok(()));

        let mut config = FunctionConfig::default();
        config.variables.insert("region".into(), "eu".into());
        config.variables.insert("empty-value".into(), String::new());
        assert_eq!(config.validate(), Ok(()));

        config.variables.insert(String::new(), "x".into());
        assert_eq!(config.validate(), Err("variables: a key is empty".into()));
    }

    #[test]
    fn validate_checks_the_limits_too() {
        let mut config = FunctionConfig::default();
        config.limits.cpu_ms = 0;
        assert_eq!(
            config.validate(),
            Err("limits.cpuMs must be above 0".into())
        );
    }

    #[test]
    fn a_resource_spec_carries_its_variables() {
        let spec: FunctionSpec = serde_json::from_value(serde_json::json!({
            "module": "f.wasm",
            "variables": { "region": "eu", "greeting": "hello world" },
        }))
        .expect("spec");
        let config = spec.config();
        assert_eq!(config.variables["region"], "eu");
        assert_eq!(config.variables["greeting"], "hello world");
        // As the gRPC admin API's config_json and the listing spell it.
        let json = serde_json::to_value(&config).expect("json");
        assert_eq!(json["variables"]["region"], "eu");
        let back: FunctionConfig = serde_json::from_value(json).expect("config");
        assert_eq!(back, config);
    }

    #[test]
    fn variables_must_be_strings() {
        for bad in [
            serde_json::json!(1),
            serde_json::json!(true),
            serde_json::json!(null),
        ] {
            let err = serde_json::from_value::<FunctionSpec>(serde_json::json!({
                "variables": { "n": bad },
            }))
            .expect_err("not a string");
            assert!(err.to_string().contains("variables are strings"), "{err}");
        }
        let err = serde_json::from_value::<FunctionConfig>(serde_json::json!({
            "variables": ["a=b"],
        }))
        .expect_err("not a map");
        assert!(err.to_string().contains("map"), "{err}");
    }
}
