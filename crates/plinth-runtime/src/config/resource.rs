//! Resources in Dapr's envelope: `Component`, `Subscription`, `Resiliency`, `Configuration`
//! (Dapr's `dapr.io/v1alpha1` and Plinth's `plinth.dev/v1alpha1`), and Plinth's `Function`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use plinth_core::metadata::parse_duration;
use plinth_core::{ComponentSpec, Error, Result};
use serde::Deserialize;
use serde_json::Value;

use super::secrets::{SecretRef, no_store};
use super::tags::Tags;
use super::{Declared, Loaded};
use crate::resilience::{Backoff, BreakerConfig, PolicyConfig, RetryConfig};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Value,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    auth: Option<Auth>,
}

#[derive(Debug, Default, Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(flatten)]
    _rest: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Auth {
    secret_store: Option<String>,
}

/// `spec` of a Component.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ComponentBody {
    /// The component type, `kind.name`.
    #[serde(rename = "type")]
    type_name: String,
    /// Version (`v1`).
    #[serde(default)]
    version: String,
    /// How long init may take (`5s`).
    #[serde(default)]
    init_timeout: Option<String>,
    /// A failing component does not block readiness.
    #[serde(default)]
    ignore_errors: bool,
    /// Name/value pairs. `metadata:` with nothing under it (YAML null) is an empty list,
    /// as Dapr and Kubernetes read it.
    #[serde(default, deserialize_with = "null_as_empty")]
    metadata: Vec<MetadataItem>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetadataItem {
    name: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    secret_key_ref: Option<SecretKeyRef>,
    #[serde(default)]
    env_ref: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretKeyRef {
    name: String,
    #[serde(default)]
    key: String,
}

/// A declarative subscription (`dapr.io/v1alpha1` with `route`, `v2alpha1` with `routes`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionResource {
    /// Resource name.
    #[serde(skip)]
    pub name: String,
    /// Where it was declared.
    #[serde(skip)]
    pub source: String,
    /// The pub/sub component.
    pub pubsubname: String,
    /// The topic.
    pub topic: String,
    /// v1alpha1 route.
    #[serde(default)]
    pub route: Option<String>,
    /// v2alpha1 routes (`default`, `rules`), kept for HTTP apps.
    #[serde(default)]
    pub routes: Option<Value>,
    /// Dead-letter topic.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Subscription metadata (also carries Plinth's delivery keys).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Bulk subscribe settings (accepted, not used yet).
    #[serde(default)]
    pub bulk_subscribe: Option<Value>,
    /// App ids this subscription applies to.
    #[serde(skip)]
    pub scopes: Vec<String>,
}

/// Components read from files but not built yet: which ones load depends on their
/// `scopes` and their metadata on template tags, both of which need the final app id, known
/// only once every source is read.
#[derive(Debug, Default)]
pub(super) struct Pending {
    components: Vec<(String, Envelope)>,
}

impl Pending {
    /// Whether any Component resource was declared, in scope or not.
    pub(super) fn declares_components(&self) -> bool {
        !self.components.is_empty()
    }
}

/// Read one file: Components are kept in `pending` until [`finish`]; the rest goes into
/// `loaded` (subscriptions with their scopes, filtered by [`finish`]).
pub(super) fn load_file(
    path: &Path,
    text: &str,
    loaded: &mut Loaded,
    pending: &mut Pending,
) -> Result<()> {
    let file = path.display().to_string();
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| Error::invalid_argument(format!("{file}: invalid YAML: {e}")))?;
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let where_ = if index == 0 {
            file.clone()
        } else {
            format!("{file} (document {})", index + 1)
        };
        let env: Envelope = serde_json::from_value(doc)
            .map_err(|e| Error::invalid_argument(format!("{where_}: {e}")))?;
        let kind = env.kind.clone().unwrap_or_default();
        let api = env.api_version.clone().unwrap_or_default();
        if !(api.starts_with("dapr.io/") || api.starts_with("plinth.dev/")) {
            return Err(Error::invalid_argument(format!(
                "{where_}: apiVersion {api:?} is not dapr.io/* or plinth.dev/*"
            )));
        }
        if env.metadata.name.is_empty() && kind != "Configuration" {
            return Err(Error::invalid_argument(format!(
                "{where_}: {kind}: metadata.name is required"
            )));
        }
        match kind.as_str() {
            "Component" => pending.components.push((where_, env)),
            "Subscription" => {
                let scopes = env.scopes.clone();
                let mut sub: SubscriptionResource =
                    serde_json::from_value(env.spec).map_err(|e| {
                        Error::invalid_argument(format!(
                            "{where_}: Subscription {:?}: spec: {e}",
                            env.metadata.name
                        ))
                    })?;
                sub.name = env.metadata.name;
                sub.source = where_;
                sub.scopes = scopes;
                loaded.subscriptions.push(sub);
            }
            "Resiliency" => resiliency(&where_, &env.metadata.name, &env.spec, loaded)?,
            "Configuration" => configuration(&where_, &env.spec, loaded)?,
            "TrafficPolicy" | "HTTPEndpoint" => {
                let raw = super::RawResource {
                    name: env.metadata.name,
                    source: where_,
                    spec: env.spec,
                    scopes: env.scopes,
                };
                if kind == "HTTPEndpoint" {
                    loaded.mesh.http_endpoints.push(raw);
                } else {
                    loaded.mesh.traffic_policies.push(raw);
                }
            }
            "Function" => loaded.functions.push(super::FunctionResource {
                name: env.metadata.name,
                source: where_,
                dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                spec: env.spec,
                scopes: env.scopes,
            }),
            other => {
                tracing::warn!(file = %where_, kind = other, "ignoring resource of a kind Plinth does not know")
            }
        }
    }
    Ok(())
}

/// Whether a resource with these `scopes` applies to `app_id`: no scopes means every app.
fn in_scope(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| s == app_id)
}

/// Now that the app id is final: build the components scoped to it (ahead of those already
/// in `loaded`, which came from a Layotto config after the resource files), with their
/// template tags expanded, and drop the subscriptions scoped to other apps. A component
/// scoped to other apps is neither validated nor built, as in Dapr.
pub(super) fn finish(pending: Pending, tags: &Tags, loaded: &mut Loaded) -> Result<()> {
    let app_id = tags.app_id.as_str();
    let mut built = Vec::with_capacity(pending.components.len());
    for (where_, env) in pending.components {
        if in_scope(&env.scopes, app_id) {
            built.push(component(&where_, env, tags)?);
        } else {
            tracing::info!(file = %where_, component = %env.metadata.name, scopes = ?env.scopes, app_id, "component not loaded: scoped to other apps");
        }
    }
    loaded.components.splice(0..0, built);
    loaded.subscriptions.retain(|sub| {
        let keep = in_scope(&sub.scopes, app_id);
        if !keep {
            tracing::info!(file = %sub.source, subscription = %sub.name, scopes = ?sub.scopes, app_id, "subscription not loaded: scoped to other apps");
        }
        keep
    });
    Ok(())
}

fn component(where_: &str, env: Envelope, tags: &Tags) -> Result<Declared> {
    let name = env.metadata.name.clone();
    let body: ComponentBody = serde_json::from_value(env.spec)
        .map_err(|e| Error::invalid_argument(format!("{where_}: component {name:?}: spec: {e}")))?;
    let mut spec = ComponentSpec::new(name.clone(), body.type_name.clone());
    spec.source = where_.to_string();
    spec.version = body.version;
    spec.ignore_errors = body.ignore_errors;
    if let Some(raw) = body.init_timeout {
        spec.init_timeout = parse_duration(&raw).ok_or_else(|| {
            spec.invalid("spec.initTimeout", format!("{raw:?} is not a duration"))
        })?;
    }
    if !body.type_name.contains('.') {
        return Err(spec.invalid(
            "spec.type",
            format!(
                "{:?} is not of the form kind.name (e.g. state.redis)",
                body.type_name
            ),
        ));
    }
    let store = env.auth.and_then(|a| a.secret_store);
    let mut secret_refs = Vec::new();
    for item in body.metadata {
        if item.name.is_empty() {
            return Err(spec.invalid("spec.metadata", "an entry has an empty name"));
        }
        if let Some(r) = item.secret_key_ref {
            let store = store.clone().ok_or_else(|| no_store(&spec, &item.name))?;
            secret_refs.push(SecretRef {
                field: item.name,
                store,
                name: r.name,
                key: r.key,
            });
        } else if let Some(var) = item.env_ref {
            let value = std::env::var(&var).map_err(|_| {
                spec.invalid(
                    &format!("metadata.{}.envRef", item.name),
                    format!("environment variable {var:?} is not set"),
                )
            })?;
            spec.metadata.insert(item.name, value);
        } else {
            let value = match item.value {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s,
                Some(other @ (Value::Bool(_) | Value::Number(_))) => other.to_string(),
                Some(other) => serde_json::to_string(&other).unwrap_or_default(),
            };
            let value = tags
                .expand(&value)
                .map_err(|problem| spec.invalid(&format!("metadata.{}", item.name), problem))?;
            spec.metadata.insert(item.name, value);
        }
    }
    Ok(Declared {
        spec,
        secret_refs,
        scopes: env.scopes,
    })
}

fn duration_field(where_: &str, what: &str, raw: Option<&Value>) -> Result<Option<Duration>> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
            Error::invalid_argument(format!("{where_}: {what}: {s:?} is not a duration"))
        }),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(|s| Some(Duration::from_secs_f64(s.max(0.0))))
            .ok_or_else(|| Error::invalid_argument(format!("{where_}: {what}: not a duration"))),
        Some(other) => Err(Error::invalid_argument(format!(
            "{where_}: {what}: {other} is not a duration"
        ))),
    }
}

/// Dapr's Resiliency: named policies, applied to component targets (outbound).
fn resiliency(where_: &str, name: &str, spec: &Value, loaded: &mut Loaded) -> Result<()> {
    let at = |field: &str| format!("Resiliency {name:?}: {field}");
    let policies = spec.get("policies").cloned().unwrap_or(Value::Null);
    let mut timeouts = BTreeMap::new();
    if let Some(map) = policies.get("timeouts").and_then(Value::as_object) {
        for (k, v) in map {
            if let Some(d) =
                duration_field(where_, &at(&format!("spec.policies.timeouts.{k}")), Some(v))?
            {
                timeouts.insert(k.clone(), d);
            }
        }
    }
    let mut retries = BTreeMap::new();
    if let Some(map) = policies.get("retries").and_then(Value::as_object) {
        for (k, v) in map {
            let field = |f: &str| at(&format!("spec.policies.retries.{k}.{f}"));
            let duration = duration_field(where_, &field("duration"), v.get("duration"))?
                .unwrap_or(Duration::from_secs(5));
            let max_interval = duration_field(where_, &field("maxInterval"), v.get("maxInterval"))?
                .unwrap_or(Duration::from_secs(60));
            let max_retries = match v.get("maxRetries").and_then(Value::as_i64) {
                None | Some(-1) => None,
                Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                Some(n) => {
                    return Err(Error::invalid_argument(format!(
                        "{where_}: {}: {n} is invalid; use -1 or more",
                        field("maxRetries")
                    )));
                }
            };
            let backoff = match v
                .get("policy")
                .and_then(Value::as_str)
                .unwrap_or("constant")
            {
                "constant" => Backoff::Constant(duration),
                "exponential" => Backoff::Exponential {
                    initial: duration_field(
                        where_,
                        &field("initialInterval"),
                        v.get("initialInterval"),
                    )?
                    .unwrap_or(Duration::from_millis(500)),
                    max: max_interval,
                },
                other => {
                    return Err(Error::invalid_argument(format!(
                        "{where_}: {}: {other:?} is not constant or exponential",
                        field("policy")
                    )));
                }
            };
            retries.insert(
                k.clone(),
                RetryConfig {
                    max_retries,
                    backoff,
                    budget_ratio: 0.2,
                },
            );
        }
    }
    let mut breakers = BTreeMap::new();
    if let Some(map) = policies.get("circuitBreakers").and_then(Value::as_object) {
        for (k, v) in map {
            let field = |f: &str| at(&format!("spec.policies.circuitBreakers.{k}.{f}"));
            let open_for = duration_field(where_, &field("timeout"), v.get("timeout"))?
                .unwrap_or(Duration::from_secs(60));
            let probes = v
                .get("maxRequests")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 1000) as u32;
            let trip = v
                .get("trip")
                .and_then(Value::as_str)
                .unwrap_or("consecutiveFailures >= 5");
            let consecutive = parse_trip(trip).ok_or_else(|| {
                Error::invalid_argument(format!(
                    "{where_}: {}: {trip:?} is not supported; use consecutiveFailures > N or >= N",
                    field("trip")
                ))
            })?;
            breakers.insert(
                k.clone(),
                BreakerConfig {
                    consecutive_failures: consecutive,
                    open_for,
                    half_open_probes: probes,
                },
            );
        }
    }
    for (section, outbound_key) in [("components", true), ("apps", false)] {
        let Some(map) = spec
            .pointer(&format!("/targets/{section}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (component, target) in map {
            // Component targets nest their policies under `outbound`; app targets do not.
            let (outbound, prefix) = match target.get("outbound") {
                Some(o) if outbound_key => {
                    (o, format!("spec.targets.{section}.{component}.outbound"))
                }
                _ => (target, format!("spec.targets.{section}.{component}")),
            };
            let field = |f: &str| at(&format!("{prefix}.{f}"));
            let mut policy = PolicyConfig::default();
            if section == "apps" {
                // An app call without a timeout policy keeps the invocation's own deadline.
                policy.timeout = crate::invoke::APP_CALL_TIMEOUT;
            }
            if let Some(t) = outbound.get("timeout").and_then(Value::as_str) {
                policy.timeout = match timeouts.get(t) {
                    Some(d) => *d,
                    None => parse_duration(t).ok_or_else(|| {
                        Error::invalid_argument(format!(
                            "{where_}: {}: no timeout policy named {t:?}",
                            field("timeout")
                        ))
                    })?,
                };
            }
            if let Some(r) = outbound.get("retry").and_then(Value::as_str) {
                policy.retry = Some(retries.get(r).cloned().ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "{where_}: {}: no retry policy named {r:?}",
                        field("retry")
                    ))
                })?);
            }
            if let Some(b) = outbound.get("circuitBreaker").and_then(Value::as_str) {
                policy.breaker = Some(breakers.get(b).cloned().ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "{where_}: {}: no circuit breaker named {b:?}",
                        field("circuitBreaker")
                    ))
                })?);
            }
            if section == "apps" {
                loaded.mesh.app_policies.insert(component.clone(), policy);
            } else {
                loaded.policies.insert(component.clone(), policy);
            }
        }
    }
    Ok(())
}

/// `consecutiveFailures > N` trips after N+1 failures; `>= N` after N.
fn parse_trip(expr: &str) -> Option<u32> {
    let expr = expr.trim();
    let rest = expr.strip_prefix("consecutiveFailures")?.trim();
    let (strict, num) = if let Some(n) = rest.strip_prefix(">=") {
        (false, n)
    } else {
        (true, rest.strip_prefix('>')?)
    };
    let n: u32 = num.trim().parse().ok()?;
    let n = if strict { n.checked_add(1)? } else { n };
    (n >= 1).then_some(n)
}

/// A Configuration: Dapr's sections Plinth does not implement are ignored with a warning;
/// Plinth's settings (`appId`) are read.
fn configuration(where_: &str, spec: &Value, loaded: &mut Loaded) -> Result<()> {
    let Some(map) = spec.as_object() else {
        return Ok(());
    };
    for (key, value) in map {
        match key.as_str() {
            "appId" => {
                let id = value.as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "{where_}: Configuration: spec.appId must be a non-empty string"
                    ))
                })?;
                loaded.settings.app_id = Some(id.to_string());
            }
            "nameResolution" | "accessControl" | "mesh" => {
                let section = Some(super::Section {
                    source: where_.to_string(),
                    value: value.clone(),
                });
                match key.as_str() {
                    "nameResolution" => loaded.mesh.name_resolution = section,
                    "accessControl" => loaded.mesh.access_control = section,
                    _ => loaded.mesh.settings = section,
                }
            }
            other => {
                tracing::warn!(file = %where_, section = other, "Configuration section not used by Plinth yet")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) fn trip(expr: &str) -> Option<u32> {
    parse_trip(expr)
}
