//! Dapr's `accessControl`: which calling apps may invoke which methods on this app.
//!
//! The callee's sidecar enforces it, with the caller's identity from its mTLS certificate
//! (see [`crate::tls::MeshTls::accept`]). The section is Dapr's, from a Configuration's
//! `spec.accessControl`:
//!
//! ```yaml
//! accessControl:
//!   defaultAction: deny
//!   trustDomain: public
//!   policies:
//!   - appId: app1
//!     defaultAction: allow
//!     trustDomain: public
//!     namespace: default
//!     operations:
//!     - name: /op1
//!       httpVerb: ['POST', 'GET']
//!       action: deny
//!     - name: /op2/*
//!       httpVerb: ['*']
//!       action: allow
//! ```
//!
//! How a call is decided, in Dapr's order:
//! 1. No `accessControl` (or an empty one): every call is allowed.
//! 2. The caller's policy is the one with its app id, namespace and trust domain. Without
//!    one, the global `defaultAction` decides; when that is not set it is `deny` if any
//!    policy is listed (the safer reading Dapr takes) and `allow` otherwise.
//! 3. Within the policy, the most specific operation that matches the method (and, for
//!    HTTP, the verb) decides with its `action`.
//! 4. No operation matches: the policy's `defaultAction`, or the global one when the policy
//!    sets none.
//!
//! Where Plinth is stricter or plainer than Dapr, on purpose:
//! - `*` in an operation name is exactly one path segment (`/op2/*` matches `/op2/x`, not
//!   `/op2` nor `/op2/x/y`); `**` is any number of segments, none included (`/op3/**`
//!   matches `/op3`, `/op3/x` and `/op3/x/y`); `*` inside a segment matches any characters
//!   in that segment (`/order*` matches `/orders`). A name without wildcards matches that
//!   path only, not the paths below it.
//! - Operations are tried most specific first: segment by segment from the left, a literal
//!   beats a partial wildcard, which beats `*`, which beats `**`; a path ending there beats
//!   one that goes on with `**`; a listed verb beats `*`; then the order written. An HTTP
//!   call whose verb an operation does not list moves on to the next matching operation
//!   (Dapr falls back to the policy's default instead).
//! - Two policies for the same app id, namespace and trust domain are an error (Dapr keeps
//!   the last), and so are unknown verbs and actions.

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use plinth_core::{Error, Result};
use serde::Deserialize;

use crate::tls::{DEFAULT_TRUST_DOMAIN, Identity};

/// The `accessControl` section of a Configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessControlSpec {
    /// `allow` or `deny`: the answer for callers without a policy (and, for callers with
    /// one, when neither an operation nor the policy's own `defaultAction` decides). Default
    /// `deny` when `policies` are listed, `allow` otherwise.
    #[serde(default)]
    pub default_action: Option<String>,
    /// This app's trust domain. Default `public`.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// One policy per calling app.
    #[serde(default)]
    pub policies: Vec<AppPolicySpec>,
}

/// What one calling app may do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppPolicySpec {
    /// The calling app's id. Required.
    #[serde(default)]
    pub app_id: String,
    /// The calling app's namespace. Required.
    #[serde(default)]
    pub namespace: String,
    /// The calling app's trust domain. Default `public`.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// `allow` or `deny` for this caller's calls that no operation matches. Default: the
    /// global `defaultAction`.
    #[serde(default)]
    pub default_action: Option<String>,
    /// Rules for particular methods.
    #[serde(default)]
    pub operations: Vec<OperationSpec>,
}

/// A rule for the methods matching `name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperationSpec {
    /// The method path, as in `/v1.0/invoke/<app>/method/<name>`; a leading `/` is
    /// optional. `*` matches one path segment, `**` any number, and `*` within a segment any
    /// characters. HTTP methods match case-insensitively, gRPC methods exactly. Required.
    #[serde(default)]
    pub name: String,
    /// The HTTP verbs this rule covers (`GET`, `POST`, ...), `*` for all. Ignored for gRPC
    /// calls; with no verbs listed the rule applies to gRPC calls only, as in Dapr.
    #[serde(default)]
    pub http_verb: Vec<String>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub action: Option<String>,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Refuse the call (403 / PERMISSION_DENIED).
    Deny,
}

impl Action {
    fn parse(raw: &str, field: &str) -> Result<Self> {
        if raw.eq_ignore_ascii_case("allow") {
            Ok(Action::Allow)
        } else if raw.eq_ignore_ascii_case("deny") {
            Ok(Action::Deny)
        } else {
            Err(Error::invalid_argument(format!(
                "{field}: {raw:?} is not an action; use allow or deny"
            )))
        }
    }
}

/// Which rule made a decision, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecidedBy {
    /// No `accessControl` is configured.
    Unconfigured,
    /// The global `defaultAction` (no policy for the caller, or a policy without a default
    /// and no matching operation).
    Global,
    /// The caller's policy's `defaultAction`.
    App,
    /// An operation rule in the caller's policy.
    Operation,
}

/// The answer for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny.
    pub action: Action,
    /// Which rule answered.
    pub by: DecidedBy,
}

impl Decision {
    /// Whether the call may proceed.
    pub fn allowed(&self) -> bool {
        self.action == Action::Allow
    }
}

/// An `accessControl` section compiled for lookups on every call.
#[derive(Clone)]
pub struct AccessControl {
    configured: bool,
    default_action: Action,
    trust_domain: String,
    /// By the caller's app id; the few policies for one app id differ in namespace or trust
    /// domain. Keyed by app id alone so a lookup borrows the caller's id, no allocation.
    policies: HashMap<String, Vec<Policy>>,
}

#[derive(Debug, Clone)]
struct Policy {
    trust_domain: String,
    namespace: String,
    default_action: Option<Action>,
    operations: Vec<Operation>,
}

#[derive(Debug, Clone)]
struct Operation {
    segments: Vec<Segment>,
    /// Upper-case verbs; `*` for any.
    verbs: Vec<String>,
    action: Action,
    /// Segment ranks for ordering by specificity, ending with `END`.
    rank: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// A plain segment, and its lower-case form for HTTP.
    Literal { exact: String, lower: String },
    /// A segment with `*` inside, and its lower-case form for HTTP.
    Glob { exact: String, lower: String },
    /// `*`: one segment.
    One,
    /// `**`: any number of segments.
    Any,
}

/// Specificity of one pattern segment; higher is more specific. `END` marks a pattern that
/// ends, which is more specific than one that continues with `**`.
const RANK_ANY: u8 = 0;
const RANK_ONE: u8 = 1;
const RANK_GLOB: u8 = 2;
const RANK_LITERAL: u8 = 3;
const RANK_END: u8 = 4;

const HTTP_VERBS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

impl fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessControl")
            .field("configured", &self.configured)
            .field("default_action", &self.default_action)
            .field("trust_domain", &self.trust_domain)
            .field(
                "policies",
                &self.policies.values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

impl Default for AccessControl {
    /// No access control: every call is allowed.
    fn default() -> Self {
        Self {
            configured: false,
            default_action: Action::Allow,
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            policies: HashMap::new(),
        }
    }
}

impl AccessControl {
    /// Compile the `accessControl` section as it appears in a Configuration (`null` when
    /// absent). Errors name the field, e.g. `accessControl.policies[1].namespace`.
    pub fn from_spec(spec: &serde_json::Value) -> Result<Self> {
        if spec.is_null() {
            return Ok(Self::default());
        }
        let spec: AccessControlSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." {
                "accessControl".to_owned()
            } else {
                format!("accessControl.{path}")
            };
            Error::invalid_argument(format!("{at}: {}", e.inner()))
        })?;
        Self::compile(&spec)
    }

    /// Compile an already parsed section.
    pub fn compile(spec: &AccessControlSpec) -> Result<Self> {
        if *spec == AccessControlSpec::default() {
            return Ok(Self::default());
        }
        let default_action = match &spec.default_action {
            Some(raw) if !raw.is_empty() => Action::parse(raw, "accessControl.defaultAction")?,
            _ if spec.policies.is_empty() => Action::Allow,
            _ => Action::Deny,
        };
        let trust_domain = non_empty(&spec.trust_domain).unwrap_or(DEFAULT_TRUST_DOMAIN);

        let mut policies: HashMap<String, Vec<Policy>> = HashMap::new();
        for (i, policy) in spec.policies.iter().enumerate() {
            let at = format!("accessControl.policies[{i}]");
            let required = |value: &str, field: &str| {
                if value.trim().is_empty() {
                    Err(Error::invalid_argument(format!("{at}.{field}: required")))
                } else {
                    Ok(())
                }
            };
            required(&policy.app_id, "appId")?;
            required(&policy.namespace, "namespace")?;
            let policy_td = non_empty(&policy.trust_domain).unwrap_or(DEFAULT_TRUST_DOMAIN);
            let default_action = non_empty(&policy.default_action)
                .map(|raw| Action::parse(raw, &format!("{at}.defaultAction")))
                .transpose()?;
            let operations = policy
                .operations
                .iter()
                .enumerate()
                .map(|(j, op)| Operation::compile(op, &format!("{at}.operations[{j}]")))
                .collect::<Result<Vec<_>>>()?;
            let same_app = policies.entry(policy.app_id.clone()).or_default();
            if same_app
                .iter()
                .any(|p| p.trust_domain == policy_td && p.namespace == policy.namespace)
            {
                return Err(Error::invalid_argument(format!(
                    "{at}: a second policy for app {} in namespace {} (trust domain {policy_td})",
                    policy.app_id, policy.namespace
                )));
            }
            same_app.push(Policy {
                trust_domain: policy_td.to_owned(),
                namespace: policy.namespace.clone(),
                default_action,
                operations,
            });
        }
        Ok(Self {
            configured: true,
            default_action,
            trust_domain: trust_domain.to_owned(),
            policies,
        })
    }

    /// Whether an `accessControl` section is in force (otherwise every call is allowed).
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// This app's trust domain as configured (default `public`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Whether `caller` may call `method`. `verb` is the HTTP verb of an HTTP call and
    /// `None` for a gRPC call, whose operations match on the method alone. `method` is the
    /// decoded path after `/method/` (a leading `/`, repeated slashes and `.` / `..`
    /// segments are normalised); a query string must already be removed.
    pub fn allows(&self, caller: &Identity, verb: Option<&str>, method: &str) -> bool {
        self.decide(caller, verb, method).allowed()
    }

    /// As [`AccessControl::allows`], also telling which rule decided.
    pub fn decide(&self, caller: &Identity, verb: Option<&str>, method: &str) -> Decision {
        if !self.configured {
            return Decision {
                action: Action::Allow,
                by: DecidedBy::Unconfigured,
            };
        }
        let global = Decision {
            action: self.default_action,
            by: DecidedBy::Global,
        };
        let policy = self.policies.get(&caller.app_id).and_then(|same_app| {
            same_app
                .iter()
                .find(|p| p.trust_domain == caller.trust_domain && p.namespace == caller.namespace)
        });
        let Some(policy) = policy else {
            return global;
        };
        let fallback = match policy.default_action {
            Some(action) => Decision {
                action,
                by: DecidedBy::App,
            },
            None => global,
        };

        let http = verb.is_some();
        let verb = verb.map(str::to_ascii_uppercase);
        let path = normalise(method, http);
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let mut best: Option<(&Operation, bool)> = None;
        for op in &policy.operations {
            let exact_verb = match &verb {
                None => false,
                Some(v) if op.verbs.iter().any(|x| x == v) => true,
                Some(_) if op.verbs.iter().any(|x| x == "*") => false,
                Some(_) => continue,
            };
            if !matches(&op.segments, &segments, http) {
                continue;
            }
            let better = match best {
                None => true,
                Some((b, b_exact)) => match op.rank.cmp(&b.rank) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    // Same path shape: a listed verb beats `*`; otherwise the first wins.
                    Ordering::Equal => exact_verb && !b_exact,
                },
            };
            if better {
                best = Some((op, exact_verb));
            }
        }
        match best {
            Some((op, _)) => Decision {
                action: op.action,
                by: DecidedBy::Operation,
            },
            None => fallback,
        }
    }
}

impl Operation {
    fn compile(spec: &OperationSpec, at: &str) -> Result<Self> {
        if spec.name.trim().is_empty() {
            return Err(Error::invalid_argument(format!("{at}.name: required")));
        }
        let mut segments = Vec::new();
        for part in spec.name.split('/').filter(|p| !p.is_empty()) {
            let segment = match part {
                "**" => {
                    // `/a/**/**` is `/a/**`; keeping one bounds the matcher's backtracking.
                    if matches!(segments.last(), Some(Segment::Any)) {
                        continue;
                    }
                    Segment::Any
                }
                "*" => Segment::One,
                p if p.contains("**") => {
                    return Err(Error::invalid_argument(format!(
                        "{at}.name: {:?}: `**` must be a whole path segment",
                        spec.name
                    )));
                }
                p if p.contains('*') => Segment::Glob {
                    exact: p.to_owned(),
                    lower: p.to_lowercase(),
                },
                p => Segment::Literal {
                    exact: p.to_owned(),
                    lower: p.to_lowercase(),
                },
            };
            segments.push(segment);
        }
        let mut rank: Vec<u8> = segments
            .iter()
            .map(|s| match s {
                Segment::Literal { .. } => RANK_LITERAL,
                Segment::Glob { .. } => RANK_GLOB,
                Segment::One => RANK_ONE,
                Segment::Any => RANK_ANY,
            })
            .collect();
        rank.push(RANK_END);

        let mut verbs = Vec::with_capacity(spec.http_verb.len());
        for (k, raw) in spec.http_verb.iter().enumerate() {
            let verb = raw.trim().to_ascii_uppercase();
            if verb != "*" && !HTTP_VERBS.contains(&verb.as_str()) {
                return Err(Error::invalid_argument(format!(
                    "{at}.httpVerb[{k}]: {raw:?} is not an HTTP verb; use one of {} or *",
                    HTTP_VERBS.join(", ")
                )));
            }
            verbs.push(verb);
        }
        let action = non_empty(&spec.action)
            .map(|raw| Action::parse(raw, &format!("{at}.action")))
            .transpose()?
            .unwrap_or(Action::Allow);
        Ok(Self {
            segments,
            verbs,
            action,
            rank,
        })
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.trim().is_empty())
}

/// The method's path segments: empty and `.` segments dropped, `..` removing the one before
/// (never above the root), lower-cased for HTTP.
fn normalise(method: &str, http: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in method.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p if http => out.push(p.to_lowercase()),
            p => out.push(p.to_owned()),
        }
    }
    out
}

fn matches(pattern: &[Segment], path: &[&str], http: bool) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=path.len()).any(|skip| matches(rest, &path[skip..], http))
        }
        Some((segment, rest)) => match path.split_first() {
            None => false,
            Some((first, tail)) => {
                segment_matches(segment, first, http) && matches(rest, tail, http)
            }
        },
    }
}

fn segment_matches(segment: &Segment, part: &str, http: bool) -> bool {
    match segment {
        Segment::One | Segment::Any => true,
        Segment::Literal { exact, lower } => part == if http { lower } else { exact },
        Segment::Glob { exact, lower } => glob(if http { lower } else { exact }, part),
    }
}

/// `*` matches any run of characters (the segment is already cut at `/`).
fn glob(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    // `split` always yields at least one piece.
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let pieces: Vec<&str> = pieces.collect();
    let Some((last, middle)) = pieces.split_last() else {
        // No `*` at all: the whole text must be the pattern.
        return rest.is_empty();
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}
