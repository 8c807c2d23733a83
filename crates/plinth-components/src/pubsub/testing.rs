//! What the broker components' unit tests share: requests, waiting for deliveries (or for
//! their absence) with a bound, and the checks every broker passes when its server does not
//! listen. Helpers that know a broker stay in its own tests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use plinth_core::component::PubSub;
use plinth_core::component::pubsub::{Delivery, PublishRequest, SubscribeRequest, Subscription};
use plinth_core::{Error, ErrorKind, Metadata};

/// The bound on every wait for something that should happen.
pub(crate) const WAIT: Duration = Duration::from_secs(15);
/// How long a test watches for a delivery that must not come.
pub(crate) const QUIET: Duration = Duration::from_millis(700);

/// A `text/plain` message of `data` to `topic`, without metadata.
pub(crate) fn message(topic: &str, data: impl AsRef<[u8]>) -> PublishRequest {
    PublishRequest {
        topic: topic.into(),
        data: Bytes::copy_from_slice(data.as_ref()),
        content_type: "text/plain".into(),
        metadata: Metadata::new(),
    }
}

/// Publish [`message`]`(topic, data)`; panics when the broker refuses it.
pub(crate) async fn publish(broker: &dyn PubSub, topic: &str, data: &str) {
    if let Err(err) = broker.publish(message(topic, data)).await {
        panic!("publish {data} to {topic}: {err}");
    }
}

/// A subscription of `group` to `topic`, without metadata.
pub(crate) fn request(topic: &str, group: &str, max_in_flight: usize) -> SubscribeRequest {
    SubscribeRequest {
        topic: topic.into(),
        group: group.into(),
        max_in_flight,
        metadata: Metadata::new(),
    }
}

/// Subscribe `group` to `topic`; panics when the broker refuses it.
pub(crate) async fn subscribe(
    broker: &dyn PubSub,
    topic: &str,
    group: &str,
    max_in_flight: usize,
) -> Subscription {
    subscribe_with(broker, topic, group, max_in_flight, Metadata::new()).await
}

/// [`subscribe`] with subscription metadata.
pub(crate) async fn subscribe_with(
    broker: &dyn PubSub,
    topic: &str,
    group: &str,
    max_in_flight: usize,
    metadata: Metadata,
) -> Subscription {
    let req = SubscribeRequest {
        metadata,
        ..request(topic, group, max_in_flight)
    };
    broker
        .subscribe(req)
        .await
        .unwrap_or_else(|e| panic!("subscribe to {topic} as {group}: {e}"))
}

/// The next delivery, within [`WAIT`]; panics naming `what` when none comes or the
/// subscription ends.
pub(crate) async fn recv(sub: &mut Subscription, what: &str) -> Delivery {
    match tokio::time::timeout(WAIT, sub.receiver.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// The next delivery if one comes within `wait`; `None` when none does or the subscription
/// ends.
pub(crate) async fn recv_within(sub: &mut Subscription, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, sub.receiver.recv())
        .await
        .ok()
        .flatten()
}

/// A delivery that comes within [`QUIET`], for checking that none does.
pub(crate) async fn quiet(sub: &mut Subscription) -> Option<Delivery> {
    recv_within(sub, QUIET).await
}

/// Whether the subscription neither delivers nor ends for `wait`.
pub(crate) async fn nothing_for(sub: &mut Subscription, wait: Duration) -> bool {
    tokio::time::timeout(wait, sub.receiver.recv())
        .await
        .is_err()
}

/// Asserts that the subscription ends, without delivering, within `within`.
pub(crate) async fn assert_ends(sub: &mut Subscription, within: Duration, what: &str) {
    match tokio::time::timeout(within, sub.receiver.recv()).await {
        Ok(None) => {}
        Ok(Some(d)) => panic!("{what}: the subscription delivered {:?}", text(&d)),
        Err(_) => panic!("{what}: the subscription did not end within {within:?}"),
    }
}

/// Asserts that a publish to `topic` fails with UNAVAILABLE within `within`: the broker is
/// cut off.
pub(crate) async fn assert_publish_fails_fast(broker: &dyn PubSub, topic: &str, within: Duration) {
    let started = Instant::now();
    let err = broker
        .publish(message(topic, "during"))
        .await
        .expect_err("the broker is cut off");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < within,
        "failing took {:?}",
        started.elapsed()
    );
}

/// The payload as text.
pub(crate) fn text(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.message.data).into_owned()
}

/// A port on 127.0.0.1 that nothing listens on: bound, read, released.
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Checks a broker built for a server that does not listen: `init` fails with UNAVAILABLE
/// and a message naming the server (`names`, e.g. its port), then publish, subscribe and
/// ping fail with UNAVAILABLE too, all within `within`. Returns the error of `init`, for the
/// broker's own checks.
pub(crate) async fn assert_unreachable(
    broker: &dyn PubSub,
    names: &str,
    within: Duration,
) -> Error {
    const TOPIC: &str = "plinth-test.unreachable";
    let started = Instant::now();
    let err = broker.init().await.expect_err("nothing listens");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains(names), "names the broker: {err}");
    let published = broker
        .publish(message(TOPIC, "x"))
        .await
        .expect_err("publish");
    assert_eq!(published.kind(), ErrorKind::Unavailable, "{published}");
    let subscribed = broker
        .subscribe(request(TOPIC, "g", 1))
        .await
        .expect_err("subscribe");
    assert_eq!(subscribed.kind(), ErrorKind::Unavailable, "{subscribed}");
    let pinged = broker.ping().await.expect_err("ping");
    assert_eq!(pinged.kind(), ErrorKind::Unavailable, "{pinged}");
    assert!(
        started.elapsed() < within,
        "failing took {:?}",
        started.elapsed()
    );
    err
}
