//! PublishEvent input errors: INVALID_ARGUMENT naming what is wrong, and nothing published.

use plinth_proto::runtime::v1::topic_event_response::TopicEventResponseStatus as Status;
use tonic::Code;

use crate::app::PUBSUB;
use crate::common::{Plinth, unique};
use crate::streaming::EventStream;
use crate::support::{publish, try_publish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publications_are_rejected() {
    let plinth = Plinth::start();
    let topic = unique("bad");
    let mut sub = EventStream::open(&plinth, &topic, &[]).await;
    let mut c = plinth.client().await;

    let missing = unique("nope");
    let err = try_publish(&mut c, &missing, &topic, b"x", "text/plain")
        .await
        .expect_err("unknown pubsub");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains(&missing),
        "the error names the pubsub: {}",
        err.message()
    );

    let err = try_publish(&mut c, PUBSUB, "", b"x", "text/plain")
        .await
        .expect_err("empty topic");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("topic"), "{}", err.message());

    let err = try_publish(&mut c, PUBSUB, &topic, b"{not json", "application/json")
        .await
        .expect_err("non-JSON data");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("JSON"), "{}", err.message());

    let err = try_publish(
        &mut c,
        PUBSUB,
        &topic,
        b"[1]",
        "application/cloudevents+json",
    )
    .await
    .expect_err("not an event");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let err = try_publish(&mut c, PUBSUB, &topic, &[0xff, 0xfe], "text/plain")
        .await
        .expect_err("text that is not UTF-8");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // None of those reached the topic: the first event there is the next valid one.
    publish(&mut c, &topic, br#"{"ok":true}"#, "application/json").await;
    let event = sub.next_event().await;
    assert_eq!(
        (event.data.as_slice(), event.data_content_type.as_str()),
        (&br#"{"ok":true}"#[..], "application/json")
    );
    sub.answer(&event.id, Status::Success).await;
}
