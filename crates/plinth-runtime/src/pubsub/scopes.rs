//! Topic scopes of a pub/sub component: which app may publish or subscribe to which topic,
//! from the component metadata Dapr defines for it.
//!
//! - `publishingScopes` / `subscriptionScopes`: `app1=topic1,topic2;app2=topic3`. An app
//!   listed may use only the topics listed for it (`app1=` lists none, so app1 may use no
//!   topic); an app not listed is unrestricted, except for protected topics.
//! - `allowedTopics`: `topic1,topic2`. When set, no app may use any other topic.
//! - `protectedTopics`: `topic1,topic2`. Only apps whose scope lists such a topic may use it.
//!
//! Metadata keys are matched without regard to case and spaces around names are ignored, as
//! in Dapr. Unlike Dapr, which skips what it cannot read, a malformed entry (no `=`, no app
//! id, two `=`) is a config error naming the field. These keys belong to the runtime: the
//! component is built without them.

use std::collections::{BTreeMap, BTreeSet};

use plinth_core::{ComponentSpec, Error, Result};

/// Topics each app may publish to.
pub const PUBLISHING_SCOPES: &str = "publishingScopes";
/// Topics each app may subscribe to.
pub const SUBSCRIPTION_SCOPES: &str = "subscriptionScopes";
/// The only topics any app may use.
pub const ALLOWED_TOPICS: &str = "allowedTopics";
/// Topics only the apps whose scopes list them may use.
pub const PROTECTED_TOPICS: &str = "protectedTopics";

const KEYS: [&str; 4] = [
    PUBLISHING_SCOPES,
    SUBSCRIPTION_SCOPES,
    ALLOWED_TOPICS,
    PROTECTED_TOPICS,
];

/// What an app wants to do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publish to it.
    Publish,
    /// Subscribe to it.
    Subscribe,
}

impl Access {
    fn scope_key(self) -> &'static str {
        match self {
            Access::Publish => PUBLISHING_SCOPES,
            Access::Subscribe => SUBSCRIPTION_SCOPES,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Access::Publish => "publishing to",
            Access::Subscribe => "subscribing to",
        }
    }
}

/// A pub/sub component's topic scopes, parsed once when it is built or reconfigured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicScopes {
    publishing: BTreeMap<String, BTreeSet<String>>,
    subscription: BTreeMap<String, BTreeSet<String>>,
    allowed: Option<BTreeSet<String>>,
    protected: BTreeSet<String>,
}

impl TopicScopes {
    /// Read the scopes from a component's metadata; errors name the component and field.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let allowed = topics(lookup(spec, ALLOWED_TOPICS)?.unwrap_or_default());
        Ok(Self {
            publishing: app_topics(spec, PUBLISHING_SCOPES)?,
            subscription: app_topics(spec, SUBSCRIPTION_SCOPES)?,
            allowed: (!allowed.is_empty()).then_some(allowed),
            protected: topics(lookup(spec, PROTECTED_TOPICS)?.unwrap_or_default()),
        })
    }

    /// The spec without the scope keys, for the component itself.
    pub fn strip(spec: &ComponentSpec) -> ComponentSpec {
        let mut stripped = spec.clone();
        stripped
            .metadata
            .retain(|k, _| !KEYS.iter().any(|key| key.eq_ignore_ascii_case(k)));
        stripped
    }

    /// Whether `app_id` may publish or subscribe to `topic` on pub/sub `pubsub`; the error
    /// (PERMISSION_DENIED) names the app, the topic and the rule that denies it.
    pub fn check(&self, access: Access, pubsub: &str, app_id: &str, topic: &str) -> Result<()> {
        let denied = |reason: String| {
            Err(Error::permission_denied(format!(
                "{} topic {topic:?} is not allowed for app id {app_id:?} on pub/sub {pubsub:?}: {reason}",
                access.verb()
            )))
        };
        if let Some(allowed) = &self.allowed
            && !allowed.contains(topic)
        {
            return denied(format!("{ALLOWED_TOPICS} does not list it"));
        }
        let scoped = match access {
            Access::Publish => self.publishing.get(app_id),
            Access::Subscribe => self.subscription.get(app_id),
        };
        let key = access.scope_key();
        match scoped {
            Some(topics) if topics.contains(topic) => Ok(()),
            Some(_) => denied(format!("{key} does not list it for this app")),
            None if self.protected.contains(topic) => denied(format!(
                "it is in {PROTECTED_TOPICS} and {key} does not list it for this app"
            )),
            None => Ok(()),
        }
    }
}

/// A metadata value by key regardless of case, as Dapr looks these up.
fn lookup<'s>(spec: &'s ComponentSpec, key: &str) -> Result<Option<&'s str>> {
    let mut found = spec
        .metadata
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key));
    let first = found.next();
    if let Some((other, _)) = found.next() {
        return Err(spec.invalid(
            &format!("metadata.{key}"),
            format!(
                "given twice ({:?} and {other:?})",
                first.map(|(k, _)| k.as_str()).unwrap_or_default()
            ),
        ));
    }
    Ok(first.map(|(_, v)| v.as_str()))
}

/// `topic1, topic2` as a set; empty names are skipped.
fn topics(raw: &str) -> BTreeSet<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `app1=topic1,topic2;app2=topic3`; entries for the same app add up.
fn app_topics(spec: &ComponentSpec, key: &str) -> Result<BTreeMap<String, BTreeSet<String>>> {
    let mut scopes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some(raw) = lookup(spec, key)? else {
        return Ok(scopes);
    };
    let field = format!("metadata.{key}");
    for entry in raw.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((app, list)) = entry.split_once('=') else {
            return Err(spec.invalid(
                &field,
                format!("entry {entry:?} is not of the form app=topic1,topic2"),
            ));
        };
        let app = app.trim();
        if app.is_empty() {
            return Err(spec.invalid(&field, format!("entry {entry:?} names no app id")));
        }
        if list.contains('=') {
            return Err(spec.invalid(
                &field,
                format!("entry {entry:?} has more than one '='; separate apps with ';'"),
            ));
        }
        scopes
            .entry(app.to_string())
            .or_default()
            .extend(topics(list));
    }
    Ok(scopes)
}

#[cfg(test)]
mod tests;
