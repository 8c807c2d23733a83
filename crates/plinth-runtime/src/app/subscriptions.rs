//! The app's subscriptions: ask the app for its own (it may start after Plinth), add the
//! declarative ones, and deliver each topic's events to the path its routes select.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plinth_core::{ErrorKind, Result};
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::{AppChannel, AppHealth, AppSubscription, BulkSubscribe, RouteRule};
use crate::Runtime;
use crate::config::SubscriptionResource;
use crate::pubsub::routes::Routes;
use crate::pubsub::{EventHandler, Outcome, SubscriptionHandle, SubscriptionSpec, TopicEvent};

/// Subscriptions kept alive for the process's lifetime.
pub type Subscriptions = Arc<Mutex<Vec<SubscriptionHandle>>>;

/// Delivers a subscription's events to the app, at the path its routes pick.
#[derive(Debug)]
struct AppHandler {
    channel: Arc<dyn AppChannel>,
    routes: Routes,
    health: AppHealth,
}

#[async_trait]
impl EventHandler for AppHandler {
    async fn handle(&self, event: TopicEvent) -> Outcome {
        if !self.health.is_healthy() {
            return Outcome::Error("the app is unhealthy; delivery waits for it".into());
        }
        let Some(path) = self.routes.select(&event) else {
            tracing::warn!(topic = %event.topic, id = %event.id, "no route matches the event and there is no default; acknowledged without delivery");
            return Outcome::Unimplemented;
        };
        self.channel.deliver(&event, &path).await
    }
}

/// Delivers a bulk subscription's events in batches: each event's delivery task hands its
/// event to the batcher and waits for its own outcome, so delivery, retries and settling stay
/// per event while the app sees one call per batch.
/// An event waiting in a batch, with where its outcome goes.
type Pending = (TopicEvent, oneshot::Sender<Outcome>);

#[derive(Debug)]
struct BulkHandler {
    tx: mpsc::Sender<Pending>,
    health: AppHealth,
}

#[async_trait]
impl EventHandler for BulkHandler {
    async fn handle(&self, event: TopicEvent) -> Outcome {
        if !self.health.is_healthy() {
            return Outcome::Error("the app is unhealthy; delivery waits for it".into());
        }
        let (done, outcome) = oneshot::channel();
        if self.tx.send((event, done)).await.is_err() {
            return Outcome::Gone;
        }
        outcome.await.unwrap_or(Outcome::Gone)
    }
}

impl BulkHandler {
    fn start(
        channel: Arc<dyn AppChannel>,
        routes: Routes,
        bulk: BulkSubscribe,
        health: AppHealth,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(bulk.max_messages);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + bulk.max_await;
                while batch.len() < bulk.max_messages {
                    tokio::select! {
                        next = rx.recv() => match next {
                            Some(item) => batch.push(item),
                            None => break,
                        },
                        _ = tokio::time::sleep_until(deadline) => break,
                    }
                }
                // One call per path: events the routes send elsewhere form their own batch.
                let mut by_path: Vec<(String, Vec<Pending>)> = Vec::new();
                for (event, done) in batch {
                    let Some(path) = routes.select(&event) else {
                        tracing::warn!(topic = %event.topic, id = %event.id, "no route matches the event and there is no default; acknowledged without delivery");
                        let _ = done.send(Outcome::Unimplemented);
                        continue;
                    };
                    match by_path.iter_mut().find(|(p, _)| *p == path) {
                        Some((_, group)) => group.push((event, done)),
                        None => by_path.push((path, vec![(event, done)])),
                    }
                }
                for (path, group) in by_path {
                    let channel = channel.clone();
                    tokio::spawn(async move {
                        let (events, waiters): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                        let outcomes = channel.deliver_bulk(&events, &path).await;
                        let mut outcomes = outcomes.into_iter();
                        for done in waiters {
                            let outcome = outcomes.next().unwrap_or_else(|| {
                                Outcome::Error(
                                    "the app's bulk answer has no status for this event".into(),
                                )
                            });
                            let _ = done.send(outcome);
                        }
                    });
                }
            }
        });
        Self { tx, health }
    }
}

/// Read a declarative Subscription into the app's subscription model.
pub fn from_resource(d: &SubscriptionResource) -> Result<AppSubscription> {
    let mut rules = Vec::new();
    let mut default_path = d.route.clone().unwrap_or_default();
    if let Some(routes) = &d.routes {
        #[derive(serde::Deserialize)]
        struct Rule {
            #[serde(default, rename = "match")]
            matches: String,
            path: String,
        }
        #[derive(serde::Deserialize)]
        struct Routes {
            #[serde(default)]
            rules: Vec<Rule>,
            #[serde(default)]
            default: String,
        }
        let parsed: Routes = serde_json::from_value(routes.clone()).map_err(|e| {
            plinth_core::Error::invalid_argument(format!(
                "{}: subscription {}: spec.routes: {e}",
                d.source, d.name
            ))
        })?;
        rules = parsed
            .rules
            .into_iter()
            .map(|r| RouteRule {
                matches: r.matches,
                path: r.path,
            })
            .collect();
        if !parsed.default.is_empty() {
            default_path = parsed.default;
        }
    }
    Ok(AppSubscription {
        pubsub: d.pubsubname.clone(),
        topic: d.topic.clone(),
        metadata: d.metadata.clone().into_iter().collect(),
        rules,
        default_path,
        dead_letter_topic: d.dead_letter_topic.clone(),
        bulk: bulk_of(d.bulk_subscribe.as_ref()),
    })
}

/// Bulk settings from a declarative Subscription's `bulkSubscribe`.
fn bulk_of(value: Option<&serde_json::Value>) -> Option<BulkSubscribe> {
    let v = value?;
    if !v.get("enabled").and_then(|e| e.as_bool()).unwrap_or(false) {
        return None;
    }
    let int = |k: &str| v.get(k).and_then(|n| n.as_i64()).unwrap_or(0);
    Some(BulkSubscribe::new(
        int("maxMessagesCount"),
        int("maxAwaitDurationMs"),
    ))
}

/// Subscribe to one app subscription, delivering through `channel`.
fn subscribe(
    rt: &Runtime,
    channel: &Arc<dyn AppChannel>,
    health: &AppHealth,
    sub: AppSubscription,
) -> Result<SubscriptionHandle> {
    let routes = Routes::compile(&sub.rules, &sub.default_path)?;
    let mut spec =
        SubscriptionSpec::new(sub.pubsub, sub.topic, sub.metadata, sub.dead_letter_topic)?;
    let handler: Arc<dyn EventHandler> = match sub.bulk {
        Some(bulk) => {
            // A batch can only fill with that many events in flight.
            spec.policy.max_in_flight = spec.policy.max_in_flight.max(bulk.max_messages);
            Arc::new(BulkHandler::start(
                channel.clone(),
                routes,
                bulk,
                health.clone(),
            ))
        }
        None => Arc::new(AppHandler {
            channel: channel.clone(),
            routes,
            health: health.clone(),
        }),
    };
    rt.pubsub.subscribe_durably(spec, handler)
}

/// Ask the app for its subscriptions until it answers, then subscribe to each, together
/// with the declarative ones (the app's own win where both name the same topic). Runs in
/// the background until `shutdown`.
pub fn start(rt: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) -> Subscriptions {
    let handles: Subscriptions = Arc::default();
    let out = handles.clone();
    let (Some(channel), Some(health)) = (rt.app.get().cloned(), rt.app.health().cloned()) else {
        if !rt.loaded.subscriptions.is_empty() {
            tracing::warn!(
                "declarative subscriptions need --app-port to deliver to; they are not started"
            );
        }
        return handles;
    };
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let listed = loop {
            let result = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                r = channel.list_subscriptions() => r,
            };
            match result {
                Ok(list) => break list,
                Err(err) if err.kind() == ErrorKind::Unavailable => {
                    tracing::debug!(app = %channel.address(), error = %err, "app not answering yet; retrying");
                    tokio::select! {
                        _ = shutdown.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(err) => {
                    tracing::error!(app = %channel.address(), error = %err, "the app's subscriptions cannot be read; using declarative subscriptions only");
                    break Vec::new();
                }
            }
        };
        tracing::info!(app = %channel.address(), count = listed.len(), "app subscriptions listed");
        let mut seen = HashSet::new();
        let mut subs = Vec::new();
        for s in listed {
            seen.insert((s.pubsub.clone(), s.topic.clone()));
            subs.push(s);
        }
        for d in &rt.loaded.subscriptions {
            match from_resource(d) {
                Ok(s) if seen.contains(&(s.pubsub.clone(), s.topic.clone())) => {
                    tracing::warn!(subscription = %d.name, file = %d.source, pubsub = %s.pubsub, topic = %s.topic, "the app subscribes to this topic itself; the declarative subscription is ignored");
                }
                Ok(s) => subs.push(s),
                Err(err) => {
                    tracing::error!(subscription = %d.name, file = %d.source, error = %err, "subscription rejected")
                }
            }
        }
        for sub in subs {
            let (pubsub, topic) = (sub.pubsub.clone(), sub.topic.clone());
            match subscribe(&rt, &channel, &health, sub) {
                Ok(h) => out.lock().await.push(h),
                Err(err) => tracing::error!(%pubsub, %topic, error = %err, "subscription rejected"),
            }
        }
    });
    handles
}
