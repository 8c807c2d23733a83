//! Dapr's long-lived streams: SubscribeConfiguration (server streaming, cancelled by id)
//! and SubscribeTopicEventsAlpha1 (bidirectional).

use std::collections::HashMap;
use std::sync::Arc;

use ::dapr::dapr::proto::runtime::v1 as pb;
use plinth_core::component::configuration::ConfigurationQuery;
use plinth_runtime::Runtime;
use plinth_runtime::pubsub::{Outcome, SubscriptionSpec, TopicEvent};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{BoxStream, convert};
use crate::config_subscriptions::ConfigSubscriptions;
use crate::event_stream::{STREAM_BUFFER, StreamHandler};
use crate::status::IntoStatus;

/// As Dapr does, the first message carries only the subscription id; each later one carries
/// the changed items.
pub(super) async fn subscribe_configuration(
    rt: Arc<Runtime>,
    req: pb::SubscribeConfigurationRequest,
    subscriptions: ConfigSubscriptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<BoxStream<pb::SubscribeConfigurationResponse>, Status> {
    let query = ConfigurationQuery {
        app_id: String::new(),
        group: String::new(),
        label: String::new(),
        keys: req.keys,
        metadata: req.metadata,
    };
    let mut changes = rt
        .configuration
        .subscribe(&req.store_name, query)
        .await
        .status()?;
    let id = uuid::Uuid::new_v4().to_string();
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    // The channel is empty, so the first message cannot fail to be queued.
    let _ = tx.try_send(Ok(pb::SubscribeConfigurationResponse {
        id: id.clone(),
        items: HashMap::new(),
    }));
    let task = {
        let (id, subscriptions) = (id.clone(), subscriptions.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = crate::stopped(&mut shutdown) => break,
                    _ = tx.closed() => break,
                    batch = changes.recv() => {
                        let Some(batch) = batch else { break };
                        let msg = batch
                            .map(|items| pb::SubscribeConfigurationResponse {
                                id: id.clone(),
                                items: items.into_iter().map(convert::config_item_out).collect(),
                            })
                            .map_err(crate::status::to_status);
                        let end = msg.is_err();
                        if tx.send(msg).await.is_err() || end {
                            break;
                        }
                    }
                }
            }
            subscriptions.remove(&id);
        })
    };
    subscriptions.insert(id, task.abort_handle());
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn event_message(event: &TopicEvent) -> pb::SubscribeTopicEventsResponseAlpha1 {
    use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    pb::SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(Out::EventMessage(convert::event_request(
            event,
        ))),
    }
}

/// The first message names the subscription; then each event waits for an EventProcessed.
pub(super) async fn subscribe_topic_events(
    rt: Arc<Runtime>,
    mut incoming: Streaming<pb::SubscribeTopicEventsRequestAlpha1>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<BoxStream<pb::SubscribeTopicEventsResponseAlpha1>, Status> {
    use pb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
    use pb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
    let first = incoming
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("stream closed before the initial request"))?;
    let Some(In::InitialRequest(initial)) = first.subscribe_topic_events_request_type else {
        return Err(Status::invalid_argument(
            "the first message must be an initial request naming pubsub and topic",
        ));
    };
    let spec = SubscriptionSpec::new(
        initial.pubsub_name,
        initial.topic,
        initial.metadata,
        initial.dead_letter_topic,
    )
    .status()?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let handler = Arc::new(StreamHandler::new(tx.clone(), event_message));
    // Acknowledge the subscription before any event can be sent.
    tx.send(Ok(pb::SubscribeTopicEventsResponseAlpha1 {
        subscribe_topic_events_response_type: Some(Out::InitialResponse(
            pb::SubscribeTopicEventsResponseInitialAlpha1 {},
        )),
    }))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;
    let subscription = rt.pubsub.subscribe(spec, handler.clone()).await.status()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
                msg = incoming.message() => match msg {
                    Ok(Some(pb::SubscribeTopicEventsRequestAlpha1 { subscribe_topic_events_request_type: Some(In::EventProcessed(done)) })) => {
                        let outcome = match done.status.map(|s| s.status) {
                            Some(s) => convert::outcome_of(s),
                            None => Outcome::Success,
                        };
                        handler.answer(&done.id, outcome);
                    }
                    Ok(Some(_)) => {
                        let _ = handler.tx.send(Err(Status::invalid_argument("only event-processed messages may follow the initial request"))).await;
                        break;
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        handler.close();
        subscription.cancel();
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
