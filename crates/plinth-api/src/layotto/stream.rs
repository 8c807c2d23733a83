//! The long-lived streams: SubscribeConfiguration and SubscribeTopicEvents.

use std::sync::Arc;

use crate::status::IntoStatus;
use plinth_core::component::configuration::ConfigurationQuery;
use plinth_proto::runtime::v1 as pb;
use plinth_runtime::Runtime;
use plinth_runtime::pubsub::{Outcome, SubscriptionSpec, TopicEvent};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{BoxStream, convert};
use crate::event_stream::{STREAM_BUFFER, StreamHandler};

/// Every request on the stream adds a subscription; all of them end with the stream.
pub(super) fn subscribe_configuration(
    rt: Arc<Runtime>,
    mut incoming: Streaming<pb::SubscribeConfigurationRequest>,
    mut shutdown: watch::Receiver<bool>,
) -> BoxStream<pb::SubscribeConfigurationResponse> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut forwarders = Vec::new();
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
                _ = tx.closed() => break,
                msg = incoming.message() => {
                    let req = match msg {
                        Ok(Some(req)) => req,
                        Ok(None) | Err(_) => break,
                    };
                    let query = ConfigurationQuery {
                        app_id: req.app_id.clone(),
                        group: req.group.clone(),
                        label: req.label.clone(),
                        keys: req.keys.clone(),
                        metadata: req.metadata.clone(),
                    };
                    match rt.configuration.subscribe(&req.store_name, query).await {
                        Ok(mut changes) => {
                            let tx = tx.clone();
                            let (store, app_id) = (req.store_name.clone(), if req.app_id.is_empty() { rt.app_id.clone() } else { req.app_id.clone() });
                            forwarders.push(tokio::spawn(async move {
                                while let Some(batch) = changes.recv().await {
                                    let msg = batch
                                        .map(|items| pb::SubscribeConfigurationResponse {
                                            store_name: store.clone(),
                                            app_id: app_id.clone(),
                                            items: items.into_iter().map(convert::config_item_out).collect(),
                                        })
                                        .map_err(crate::status::to_status);
                                    let end = msg.is_err();
                                    if tx.send(msg).await.is_err() || end {
                                        return;
                                    }
                                }
                            }));
                        }
                        Err(err) => {
                            let _ = tx.send(Err(crate::status::to_status(err))).await;
                            break;
                        }
                    }
                }
            }
        }
        for f in forwarders {
            f.abort();
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn event_message(event: &TopicEvent) -> pb::SubscribeTopicEventsResponse {
    pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(
            pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType::EventMessage(
                super::callback::event_request(event),
            ),
        ),
    }
}

/// The first message names the subscription; then each event waits for an EventProcessed.
pub(super) async fn subscribe_topic_events(
    rt: Arc<Runtime>,
    mut incoming: Streaming<pb::SubscribeTopicEventsRequest>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<BoxStream<pb::SubscribeTopicEventsResponse>, Status> {
    use pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType as In;
    use pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Out;
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
    tx.send(Ok(pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(Out::InitialResponse(
            pb::SubscribeTopicEventsResponseInitial {},
        )),
    }))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;
    let subscription = rt
        .pubsub
        .subscribe(spec, handler.clone())
        .await
        .map_err(crate::status::to_status)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = crate::stopped(&mut shutdown) => break,
                msg = incoming.message() => match msg {
                    Ok(Some(pb::SubscribeTopicEventsRequest { subscribe_topic_events_request_type: Some(In::EventProcessed(done)) })) => {
                        let outcome = match done.status.map(|s| s.status) {
                            Some(s) => super::callback::outcome_of(s),
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
