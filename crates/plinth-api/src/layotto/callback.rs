//! The app channel for Layotto apps: Plinth calls the app's `AppCallback` service to list its
//! subscriptions and deliver events. The app may start before or after Plinth.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::app_callback_client::AppCallbackClient;
use plinth_runtime::Runtime;
use plinth_runtime::config::SubscriptionResource;
use plinth_runtime::pubsub::{
    EventHandler, Outcome, SubscriptionHandle, SubscriptionSpec, TopicEvent,
};
use tokio::sync::{Mutex, watch};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// How long one event delivery to the app may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The gRPC connection to the app's callback port.
#[derive(Debug, Clone)]
pub struct AppChannel {
    client: AppCallbackClient<Channel>,
    address: String,
}

impl AppChannel {
    /// A lazily connected channel to `127.0.0.1:port` (or `host:port`); it reconnects by
    /// itself when the app restarts.
    pub fn new(host: &str, port: u16) -> plinth_core::Result<Self> {
        let address = format!("http://{host}:{port}");
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| {
                plinth_core::Error::invalid_argument(format!("app address {address}: {e}"))
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        Ok(Self {
            client: AppCallbackClient::new(endpoint.connect_lazy()),
            address,
        })
    }

    /// The app's address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

pub(super) fn outcome_of(status: i32) -> Outcome {
    use pb::topic_event_response::TopicEventResponseStatus as S;
    match S::try_from(status) {
        Ok(S::Success) => Outcome::Success,
        Ok(S::Retry) => Outcome::Retry,
        Ok(S::Drop) => Outcome::Drop,
        Err(_) => Outcome::Error(format!("unknown status {status} from the app")),
    }
}

pub(super) fn event_request(event: &TopicEvent) -> pb::TopicEventRequest {
    pb::TopicEventRequest {
        id: event.id.clone(),
        source: event.source.clone(),
        r#type: event.event_type.clone(),
        spec_version: event.spec_version.clone(),
        data_content_type: event.data_content_type.clone(),
        data: event.data.to_vec(),
        topic: event.topic.clone(),
        pubsub_name: event.pubsub_name.clone(),
        metadata: event.metadata.clone(),
    }
}

#[async_trait]
impl EventHandler for AppChannel {
    async fn handle(&self, event: TopicEvent) -> Outcome {
        let mut request = tonic::Request::new(event_request(&event));
        request.set_timeout(DELIVERY_TIMEOUT);
        match self.client.clone().on_topic_event(request).await {
            Ok(resp) => outcome_of(resp.into_inner().status),
            Err(status) if status.code() == Code::Unimplemented => Outcome::Unimplemented,
            Err(status) => Outcome::Error(format!(
                "app answered {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}

/// Subscriptions kept alive for the process's lifetime.
pub type Subscriptions = Arc<Mutex<Vec<SubscriptionHandle>>>;

/// Ask the app for its subscriptions until it answers (it may start after Plinth), then
/// subscribe to each, together with the declarative ones. Runs in the background.
pub fn start_app_subscriptions(
    rt: Arc<Runtime>,
    app: AppChannel,
    declarative: Vec<SubscriptionResource>,
    mut shutdown: watch::Receiver<bool>,
) -> Subscriptions {
    let handles: Subscriptions = Arc::default();
    let out = handles.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        let listed = loop {
            let mut client = app.client.clone();
            let call = client.list_topic_subscriptions(tonic::Request::new(()));
            let result = tokio::select! {
                _ = crate::stopped(&mut shutdown) => return,
                r = call => r,
            };
            match result {
                Ok(resp) => break resp.into_inner().subscriptions,
                Err(status) if status.code() == Code::Unimplemented => {
                    tracing::info!(app = %app.address, "app has no ListTopicSubscriptions; using declarative subscriptions only");
                    break Vec::new();
                }
                Err(status) => {
                    tracing::debug!(app = %app.address, code = ?status.code(), "app not answering yet; retrying");
                    tokio::select! {
                        _ = crate::stopped(&mut shutdown) => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(app = %app.address, count = listed.len(), "app subscriptions listed");
        let mut specs = Vec::new();
        for s in listed {
            let (pubsub, topic) = (s.pubsub_name.clone(), s.topic.clone());
            match SubscriptionSpec::new(s.pubsub_name, s.topic, s.metadata, None) {
                Ok(spec) => specs.push(spec),
                Err(err) => tracing::error!(%pubsub, %topic, error = %err, "subscription rejected"),
            }
        }
        for d in declarative {
            let metadata = d.metadata.into_iter().collect();
            match SubscriptionSpec::new(d.pubsubname, d.topic, metadata, d.dead_letter_topic) {
                Ok(spec) => specs.push(spec),
                Err(err) => {
                    tracing::error!(subscription = %d.name, file = %d.source, error = %err, "subscription rejected")
                }
            }
        }
        let handler: Arc<dyn EventHandler> = Arc::new(app);
        for spec in specs {
            let (pubsub, topic) = (spec.pubsub.clone(), spec.topic.clone());
            match rt.pubsub.subscribe_durably(spec, handler.clone()) {
                Ok(h) => out.lock().await.push(h),
                Err(err) => tracing::error!(%pubsub, %topic, error = %err, "subscription rejected"),
            }
        }
    });
    handles
}
