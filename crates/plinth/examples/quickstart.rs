//! The README quickstart: state, pub/sub, lock and sequencer from a Layotto gRPC client
//! against a running `plinth run` (embedded default components).
//!
//! ```text
//! cargo run --release -p plinth -- run            # terminal 1
//! cargo run -p plinth --example quickstart         # terminal 2
//! ```
//!
//! `PLINTH_GRPC` overrides the address (default `http://127.0.0.1:34904`).

use std::collections::HashMap;
use std::time::Duration;

use pb::runtime_client::RuntimeClient;
use pb::subscribe_topic_events_request::SubscribeTopicEventsRequestType as In;
use pb::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Out;
use plinth_proto::runtime::v1 as pb;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("PLINTH_GRPC").unwrap_or_else(|_| "http://127.0.0.1:34904".into());
    let mut client = RuntimeClient::connect(addr.clone()).await?;
    println!("connected to {addr}");

    // State: save, read back with its ETag, delete.
    client
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![pb::StateItem {
                key: "book1".into(),
                value: b"100".to_vec(),
                ..Default::default()
            }],
        })
        .await?;
    let got = client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "book1".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!(
        "state: book1 = {} (etag {})",
        String::from_utf8_lossy(&got.data),
        got.etag
    );

    // Lock: take it, see a second owner refused, release it.
    let lock = |owner: &str| pb::TryLockRequest {
        store_name: "lockstore".into(),
        resource_id: "order-42".into(),
        lock_owner: owner.into(),
        expire: 10,
    };
    let first = client
        .try_lock(lock("worker-a"))
        .await?
        .into_inner()
        .success;
    let second = client
        .try_lock(lock("worker-b"))
        .await?
        .into_inner()
        .success;
    println!("lock: worker-a got it: {first}; worker-b got it: {second}");
    let unlocked = client
        .unlock(pb::UnlockRequest {
            store_name: "lockstore".into(),
            resource_id: "order-42".into(),
            lock_owner: "worker-a".into(),
        })
        .await?
        .into_inner();
    println!("lock: released with status {:?}", unlocked.status());

    // Sequencer: strictly increasing ids.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let options = Some(pb::SequencerOptions {
            increment: pb::sequencer_options::AutoIncrement::Strong as i32,
        });
        let resp = client
            .get_next_id(pb::GetNextIdRequest {
                store_name: "sequencer".into(),
                key: "order-id".into(),
                options,
                metadata: HashMap::new(),
            })
            .await?;
        ids.push(resp.into_inner().next_id);
    }
    println!("sequencer: ids {ids:?}");

    // Pub/sub: subscribe with a stream, publish, receive, acknowledge.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::SubscribeTopicEventsRequest {
        subscribe_topic_events_request_type: Some(In::InitialRequest(
            pb::SubscribeTopicEventsRequestInitial {
                pubsub_name: "pubsub".into(),
                topic: "orders".into(),
                metadata: HashMap::new(),
                dead_letter_topic: None,
            },
        )),
    })
    .await?;
    let mut events = client
        .subscribe_topic_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // The first message confirms the subscription is in place before we publish.
    events.message().await?;
    client
        .publish_event(pb::PublishEventRequest {
            pubsub_name: "pubsub".into(),
            topic: "orders".into(),
            data: br#"{"order":42}"#.to_vec(),
            data_content_type: "application/json".into(),
            metadata: HashMap::new(),
        })
        .await?;
    let msg = tokio::time::timeout(Duration::from_secs(10), events.message()).await??;
    if let Some(pb::SubscribeTopicEventsResponse {
        subscribe_topic_events_response_type: Some(Out::EventMessage(event)),
    }) = msg
    {
        println!(
            "pubsub: received {} on {:?} (event id {})",
            String::from_utf8_lossy(&event.data),
            event.topic,
            event.id
        );
        tx.send(pb::SubscribeTopicEventsRequest {
            subscribe_topic_events_request_type: Some(In::EventProcessed(
                pb::SubscribeTopicEventsRequestProcessed {
                    id: event.id,
                    status: Some(pb::TopicEventResponse {
                        status: pb::topic_event_response::TopicEventResponseStatus::Success as i32,
                    }),
                },
            )),
        })
        .await?;
    } else {
        return Err("pubsub: expected an event".into());
    }
    println!("quickstart: OK");
    Ok(())
}
