//! `SubscribeTopicEvents`: the client subscribes over a bidirectional stream and answers
//! each event by id.

use std::collections::HashMap;

use plinth_proto::runtime::v1 as pb;
use plinth_proto::runtime::v1::subscribe_topic_events_request::SubscribeTopicEventsRequestType as In;
use plinth_proto::runtime::v1::subscribe_topic_events_response::SubscribeTopicEventsResponseType as Out;
use plinth_proto::runtime::v1::topic_event_response::TopicEventResponseStatus as Status;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::PUBSUB;
use crate::common::{Plinth, unique};
use crate::support::{WAIT, outcome_count, publish, wait_outcome};

/// One open `SubscribeTopicEvents` stream.
pub(crate) struct EventStream {
    requests: mpsc::Sender<pb::SubscribeTopicEventsRequest>,
    responses: tonic::Streaming<pb::SubscribeTopicEventsResponse>,
}

impl EventStream {
    /// Subscribe and wait for the initial response; the subscription is active then.
    pub(crate) async fn open(plinth: &Plinth, topic: &str, metadata: &[(&str, &str)]) -> Self {
        Self::open_with_dead_letters(plinth, topic, metadata, None).await
    }

    /// [`EventStream::open`], naming a dead-letter topic in the initial request.
    pub(crate) async fn open_with_dead_letters(
        plinth: &Plinth,
        topic: &str,
        metadata: &[(&str, &str)],
        dead_letter_topic: Option<&str>,
    ) -> Self {
        let (requests, rx) = mpsc::channel(16);
        let initial = pb::SubscribeTopicEventsRequestInitial {
            pubsub_name: PUBSUB.into(),
            topic: topic.into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dead_letter_topic: dead_letter_topic.map(str::to_string),
        };
        requests
            .send(pb::SubscribeTopicEventsRequest {
                subscribe_topic_events_request_type: Some(In::InitialRequest(initial)),
            })
            .await
            .expect("queue the initial request");
        let mut c = plinth.client().await;
        let mut responses = timeout(WAIT, c.subscribe_topic_events(ReceiverStream::new(rx)))
            .await
            .expect("subscribe in time")
            .expect("subscribe")
            .into_inner();
        let first = timeout(WAIT, responses.message())
            .await
            .expect("initial response in time")
            .expect("initial response");
        assert!(
            matches!(
                first
                    .as_ref()
                    .and_then(|r| r.subscribe_topic_events_response_type.as_ref()),
                Some(Out::InitialResponse(_))
            ),
            "the first message is the initial response: {first:?}"
        );
        Self {
            requests,
            responses,
        }
    }

    /// The next event, or panic after [`WAIT`].
    pub(crate) async fn next_event(&mut self) -> pb::TopicEventRequest {
        let msg = timeout(WAIT, self.responses.message())
            .await
            .expect("an event in time")
            .expect("stream error");
        match msg.and_then(|m| m.subscribe_topic_events_response_type) {
            Some(Out::EventMessage(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// Answer the event `id`.
    pub(crate) async fn answer(&self, id: &str, status: Status) {
        let processed = pb::SubscribeTopicEventsRequestProcessed {
            id: id.into(),
            status: Some(pb::TopicEventResponse {
                status: status as i32,
            }),
        };
        self.requests
            .send(pb::SubscribeTopicEventsRequest {
                subscribe_topic_events_request_type: Some(In::EventProcessed(processed)),
            })
            .await
            .expect("send the answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_delivers_retries_and_hands_unanswered_events_to_the_next_subscriber() {
    let plinth = Plinth::start();
    let topic = unique("stream");
    let meta = [("retryInitialInterval", "10ms")];
    let mut a = EventStream::open(&plinth, &topic, &meta).await;
    let mut c = plinth.client().await;

    // SUCCESS, after a RETRY that redelivers the same event.
    publish(&mut c, &topic, b"one", "text/plain").await;
    let e1 = a.next_event().await;
    assert_eq!(
        (
            e1.topic.as_str(),
            e1.pubsub_name.as_str(),
            e1.data.as_slice()
        ),
        (topic.as_str(), PUBSUB, &b"one"[..])
    );
    assert_eq!(
        (e1.spec_version.as_str(), e1.data_content_type.as_str()),
        ("1.0", "text/plain")
    );
    a.answer(&e1.id, Status::Retry).await;
    let again = a.next_event().await;
    assert_eq!(
        (again.id.as_str(), again.data.as_slice()),
        (e1.id.as_str(), &b"one"[..]),
        "RETRY redelivers the event"
    );
    a.answer(&e1.id, Status::Success).await;
    wait_outcome(&plinth, &topic, "success", 1).await;

    // An event in flight when the stream closes is not lost: it goes back to the group.
    publish(&mut c, &topic, b"two", "text/plain").await;
    let e2 = a.next_event().await;
    assert_eq!(e2.data, b"two");
    drop(a);
    publish(&mut c, &topic, b"three", "text/plain").await;
    let mut b = EventStream::open(&plinth, &topic, &meta).await;
    let mut got = HashMap::new();
    for _ in 0..2 {
        let e = b.next_event().await;
        b.answer(&e.id, Status::Success).await;
        got.insert(e.data.clone(), e.id.clone());
    }
    assert_eq!(
        got.get(&b"two"[..]),
        Some(&e2.id),
        "the unanswered event reaches the next subscriber with its id: {got:?}"
    );
    assert!(got.contains_key(&b"three"[..]), "{got:?}");
    wait_outcome(&plinth, &topic, "success", 3).await;
    assert_eq!(outcome_count(&plinth, &topic, "retry").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_client_closes_hands_back_every_event_at_once() {
    // One delivery slot: the second event waits for it while the first is on stream A.
    let plinth = Plinth::start_with(&["--app-max-concurrency", "1"], None);
    let topic = unique("halfclose");
    let mut a = EventStream::open(&plinth, &topic, &[]).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, b"first", "text/plain").await;
    publish(&mut c, &topic, b"second", "text/plain").await;
    // Two delivery tasks race for the one slot, so either event may come first (order is
    // only promised with maxInFlight 1).
    let first = a.next_event().await;
    let other: &[u8] = match first.data.as_slice() {
        b"first" => b"second",
        b"second" => b"first",
        data => panic!("unexpected event {data:?}"),
    };

    // The client ends its side of the stream without answering: the subscription is over, so
    // stream A gets nothing more and ends, and both events go to the next subscriber.
    let EventStream {
        requests,
        mut responses,
    } = a;
    drop(requests);
    match timeout(WAIT, responses.message())
        .await
        .expect("stream A ends in time")
    {
        Ok(None) | Err(_) => {}
        Ok(Some(msg)) => panic!("stream A got a message after the client closed it: {msg:?}"),
    }
    let mut b = EventStream::open(&plinth, &topic, &[]).await;
    let mut got = HashMap::new();
    for _ in 0..2 {
        let e = b.next_event().await;
        b.answer(&e.id, Status::Success).await;
        got.insert(e.data.clone(), e.id.clone());
    }
    assert_eq!(got.get(first.data.as_slice()), Some(&first.id), "{got:?}");
    assert!(got.contains_key(other), "{got:?}");
    wait_outcome(&plinth, &topic, "success", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_drop_goes_to_the_dead_letter_topic_of_the_initial_request() {
    let plinth = Plinth::start();
    let (topic, dlq) = (unique("stream-drop"), unique("stream-drop-dlq"));
    let mut dead = EventStream::open(&plinth, &dlq, &[]).await;
    let mut a = EventStream::open_with_dead_letters(&plinth, &topic, &[], Some(&dlq)).await;
    let mut c = plinth.client().await;
    publish(&mut c, &topic, br#"{"bad":1}"#, "application/json").await;
    let event = a.next_event().await;
    a.answer(&event.id, Status::Drop).await;
    let letter = dead.next_event().await;
    assert_eq!(
        (letter.id.as_str(), letter.topic.as_str()),
        (event.id.as_str(), dlq.as_str())
    );
    assert_eq!(
        (letter.data.as_slice(), letter.data_content_type.as_str()),
        (&br#"{"bad":1}"#[..], "application/json")
    );
    dead.answer(&letter.id, Status::Success).await;
    wait_outcome(&plinth, &topic, "dead_letter", 1).await;
    wait_outcome(&plinth, &dlq, "success", 1).await;
}
