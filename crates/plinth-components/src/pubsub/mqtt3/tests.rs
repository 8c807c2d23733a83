//! Against the machine's Mosquitto (`PLINTH_TEST_MQTT`, by default tcp://127.0.0.1:1883),
//! which other tests share: every topic, group and client id holds a fresh uuid, and every
//! test removes the persistent sessions it created. Tests that restart a broker or need TLS
//! start a private `mosquitto` of their own in a temporary directory. A
//! [`plinth_testkit::FaultProxy`] cuts and restores connections.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use plinth_core::{ErrorKind, Metadata};
use plinth_testkit::{CertFiles, FaultProxy, TestPki};

use super::*;
use crate::pubsub::testing::{
    WAIT, assert_ends, assert_publish_fails_fast, assert_unreachable, closed_port, message,
    publish, quiet, recv, request, subscribe, text,
};

fn broker_url() -> String {
    std::env::var("PLINTH_TEST_MQTT").unwrap_or_else(|_| "tcp://127.0.0.1:1883".into())
}

fn fresh(tag: &str) -> String {
    format!("plinth-test-{tag}-{}", uuid::Uuid::new_v4().simple())
}

fn spec_for(url: &str) -> ComponentSpec {
    ComponentSpec::new("mqtt", TYPE_NAME)
        .with_metadata(URL, url)
        .with_metadata(CLIENT_ID, fresh("client"))
}

/// A component built from `spec` and initialised; fails loudly naming the broker when it
/// cannot be reached.
async fn connected(spec: &ComponentSpec) -> Mqtt3PubSub {
    let component = Mqtt3PubSub::new(spec).expect("valid metadata");
    if let Err(err) = component.init().await {
        panic!(
            "the MQTT broker at {} must be reachable (Mosquitto; set PLINTH_TEST_MQTT): {err}",
            spec.get(URL).unwrap_or_default()
        );
    }
    component
}

async fn take(sub: &mut Subscription, what: &str) -> String {
    let d = recv(sub, what).await;
    let body = text(&d);
    d.ack().await.unwrap_or_else(|e| panic!("ack {body}: {e}"));
    body
}

/// Close the components (their sessions disconnect for good), then remove the persistent
/// session of every (spec, group, topic).
async fn forget(components: &[&Mqtt3PubSub], sessions: &[(&ComponentSpec, &str, &str)]) {
    for c in components {
        c.close().await;
    }
    for (spec, group, topic) in sessions {
        remove_session(spec, group, topic)
            .await
            .unwrap_or_else(|e| panic!("removing the session of {group}/{topic}: {e}"));
    }
}

fn kind<T: fmt::Debug>(result: Result<T>) -> ErrorKind {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind(),
    }
}

// ---- metadata --------------------------------------------------------------------------

fn parse(pairs: &[(&str, &str)]) -> Result<Config> {
    let mut spec = ComponentSpec::new("m", TYPE_NAME).with_metadata(URL, "tcp://broker");
    for (k, v) in pairs {
        spec = spec.with_metadata(*k, *v);
    }
    Config::from_spec(&spec)
}

#[test]
fn metadata_defaults() {
    let config = parse(&[]).expect("url alone is enough");
    assert_eq!(
        config.endpoint,
        config::Endpoint {
            host: "broker".into(),
            port: 1883,
            tls: false
        }
    );
    assert!(!config.retain && !config.clean_session && config.tls.is_none());
    assert_eq!(config.consumer_id, None);
    assert_eq!(config.client_id, None);
    assert_eq!(config.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(config.timeout, DEFAULT_TIMEOUT);
    assert_eq!(config.keep_alive, DEFAULT_KEEP_ALIVE);
    assert!(config.credentials.is_none());
    assert!(config.shared, "shared subscriptions by default");
    let plain = parse(&[(SHARED_SUBSCRIPTION, "false")]).expect("plain subscriptions");
    assert!(!plain.shared);
    assert!(parse(&[(SHARED_SUBSCRIPTION, "sometimes")]).is_err());

    let tls = parse(&[(URL, "mqtts://user:pw@[::1]/")]).expect("TLS without caCert");
    assert_eq!(
        (tls.endpoint.host.as_str(), tls.endpoint.port),
        ("[::1]", 8883)
    );
    assert!(tls.endpoint.tls && tls.tls.is_some());
    assert_eq!(tls.credentials, Some(("user".into(), "pw".into())));
    for scheme in ["tcp", "mqtt", "ssl", "mqtts", "tls", "tcps"] {
        let url = format!("{scheme}://h:1884");
        let config = parse(&[(URL, &url)]).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(config.endpoint.port, 1884);
    }
    let escaped = parse(&[(URL, "tcp://a%40b:p%3Aw%25@h")]).expect("escapes");
    assert_eq!(escaped.credentials, Some(("a@b".into(), "p:w%".into())));
    let qos1 = parse(&[(QOS, "1"), (CLEAN_SESSION, "true"), (RETAIN, "true")]).expect("qos 1");
    assert!(qos1.clean_session && qos1.retain);

    let durable = Mqtt3PubSub::new(&spec_for("tcp://h")).expect("builds");
    assert_eq!(
        durable.features(),
        PubSubFeatures {
            ordered: true,
            durable: true
        }
    );
    let clean = Mqtt3PubSub::new(&spec_for("tcp://h").with_metadata(CLEAN_SESSION, "true"))
        .expect("builds");
    assert!(!clean.features().durable);
    assert!(
        factory(&ComponentSpec::new("m", TYPE_NAME)).is_err(),
        "url is required"
    );
}

#[test]
fn every_bad_value_names_its_field() {
    let pem_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[(URL, "broker:1883")], "metadata.url"),
        (&[(URL, "ws://broker")], "metadata.url"),
        (&[(URL, "tcp://broker:0")], "metadata.url"),
        (&[(URL, "tcp://broker:99999")], "metadata.url"),
        (&[(URL, "tcp://broker/path")], "metadata.url"),
        (&[(URL, "tcp://:1883")], "metadata.url"),
        (&[(URL, "tcp://:secret@broker")], "metadata.url"),
        (&[(URL, "tcp://[::1")], "metadata.url"),
        (&[(QOS, "0")], "metadata.qos"),
        (&[(QOS, "2")], "metadata.qos"),
        (&[(QOS, "one")], "metadata.qos"),
        (&[(RETAIN, "sometimes")], "metadata.retain"),
        (&[(CLEAN_SESSION, "maybe")], "metadata.cleanSession"),
        (&[("consumerID", "a/b")], "metadata.consumerID"),
        (&[("consumerID", "a+")], "metadata.consumerID"),
        (&[(CLIENT_ID, "tab\there")], "metadata.clientID"),
        (&[("maxMessageBytes", "0")], "metadata.maxMessageBytes"),
        (
            &[("maxMessageBytes", "268435457")],
            "metadata.maxMessageBytes",
        ),
        (&[("maxMessageBytes", "lots")], "metadata.maxMessageBytes"),
        (&[(TIMEOUT, "0s")], "metadata.timeout"),
        (&[(TIMEOUT, "soon")], "metadata.timeout"),
        (&[(KEEP_ALIVE, "500ms")], "metadata.keepAlive"),
        (&[(KEEP_ALIVE, "0")], "metadata.keepAlive"),
        (&[(KEEP_ALIVE, "70000s")], "metadata.keepAlive"),
        (&[(CA_CERT, pem_cert)], "metadata.caCert"),
        (&[(URL, "ssl://h"), (CA_CERT, "not pem")], "metadata.caCert"),
        (&[(URL, "ssl://h"), (CA_CERT, pem_cert)], "metadata.caCert"),
        (
            &[(URL, "ssl://h"), (CLIENT_CERT, pem_cert)],
            "metadata.clientKey",
        ),
        (
            &[(URL, "ssl://h"), (CLIENT_KEY, "k")],
            "metadata.clientCert",
        ),
        (
            &[(URL, "ssl://h"), (CLIENT_CERT, pem_cert), (CLIENT_KEY, "k")],
            "metadata.clientKey",
        ),
    ];
    for (pairs, field) in cases {
        let err = parse(pairs).expect_err(&format!("{pairs:?} is invalid"));
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{pairs:?}");
        assert!(err.message().contains(field), "{pairs:?}: {err}");
    }
}

#[test]
fn secrets_never_show() {
    let key =
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----";
    let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let spec = ComponentSpec::new("m", TYPE_NAME)
        .with_metadata(URL, "tcp://alice:hunter2@broker:1883")
        .with_metadata(CLIENT_ID, "c");
    let component = Mqtt3PubSub::new(&spec).expect("builds");
    let debug = format!("{component:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("alice:<redacted>"), "{debug}");

    // Errors about the URL or the key never repeat them.
    for url in [
        "tcp://alice:hunter2@broker:port",
        "ws://alice:hunter2@broker",
    ] {
        let err = parse(&[(URL, url)]).expect_err("bad url");
        assert!(!err.message().contains("hunter2"), "{err}");
    }
    let err = parse(&[(URL, "ssl://h"), (CLIENT_CERT, cert), (CLIENT_KEY, key)])
        .expect_err("not a usable key");
    assert!(err.message().contains("metadata.clientKey"), "{err}");
    assert!(!err.message().contains("c2VjcmV0"), "{err}");
    let err = parse(&[(CLIENT_KEY, key)]).expect_err("TLS is off");
    assert!(!err.message().contains("c2VjcmV0"), "{err}");
}

#[test]
fn session_client_ids_are_stable_and_distinct() {
    let id = session_client_id("app-host", "orders", "created");
    assert_eq!(id, session_client_id("app-host", "orders", "created"));
    assert!(
        id.starts_with("app-host-") && id.len() == "app-host-".len() + 16,
        "{id}"
    );
    let others = [
        session_client_id("app-host", "orders", "deleted"),
        session_client_id("app-host", "billing", "created"),
        // The separator keeps (a, bc) and (ab, c) apart.
        session_client_id("app-host", "ordersc", "reated"),
    ];
    assert!(others.iter().all(|o| *o != id), "{others:?}");
    // Fixed: a changed hash would orphan every persistent session.
    assert_eq!(session_client_id("b", "g", "t"), "b-d4805518fa5797d2");
}

// ---- input checks ------------------------------------------------------------------------

#[tokio::test]
async fn topics_and_groups_mqtt_cannot_take_are_refused() {
    let c = Mqtt3PubSub::new(&spec_for("tcp://127.0.0.1:1")).expect("builds");
    for topic in ["a/+/b", "a/#", "$SYS/broker", "nul\0"] {
        let err = c.publish(message(topic, "x")).await.expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(&format!("{topic:?}")), "{err}");
        let err = c
            .subscribe(request(topic, "g", 1))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    for group in ["a/b", "a+", "#"] {
        let err = c
            .subscribe(request("t", group, 1))
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains(&format!("{group:?}")), "{err}");
    }
    let mut md = Metadata::new();
    md.insert(RETAIN.into(), "perhaps".into());
    let err = c
        .publish(PublishRequest {
            topic: "t".into(),
            data: "x".into(),
            metadata: md,
            ..Default::default()
        })
        .await
        .expect_err("bad retain");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains(RETAIN), "{err}");
}

// ---- against the machine's broker --------------------------------------------------------

#[tokio::test]
async fn an_unreachable_broker_fails_fast_with_unavailable() {
    let port = closed_port();
    let c = Mqtt3PubSub::new(&spec_for(&format!("tcp://127.0.0.1:{port}"))).expect("builds");
    assert_unreachable(&c, &port.to_string(), Duration::from_secs(2)).await;
    // A second init fails fast too (it retries at once rather than waiting for a backoff).
    let again = Instant::now();
    assert_eq!(kind(c.init().await), ErrorKind::Unavailable);
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "{:?}",
        again.elapsed()
    );
}

#[tokio::test]
async fn messages_have_fresh_ids_and_no_content_type_or_metadata() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    c.ping().await.expect("ping");
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 2).await;
    let mut md = Metadata::new();
    md.insert("k".into(), "v".into());
    for _ in 0..2 {
        c.publish(PublishRequest {
            topic: topic.clone(),
            data: "same".into(),
            content_type: "text/plain".into(),
            metadata: md.clone(),
        })
        .await
        .expect("publish");
    }
    let (a, b) = (
        recv(&mut sub, "first").await,
        recv(&mut sub, "second").await,
    );
    for d in [&a, &b] {
        assert_eq!(d.message.topic, topic);
        assert_eq!(d.message.content_type, "");
        assert!(d.message.metadata.is_empty());
        assert!(uuid::Uuid::parse_str(&d.message.id).is_ok());
    }
    assert_ne!(a.message.id, b.message.id);
    a.ack().await.expect("ack");
    b.ack().await.expect("ack");
    drop(sub);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

#[tokio::test]
async fn replicas_with_their_own_client_ids_share_a_group() {
    let url = broker_url();
    let (spec_a, spec_b) = (spec_for(&url), spec_for(&url));
    let (a, b) = (connected(&spec_a).await, connected(&spec_b).await);
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub_a = subscribe(&a, &topic, &group, 10).await;
    let mut sub_b = subscribe(&b, &topic, &group, 10).await;
    for i in 0..20 {
        publish(&a, &topic, &format!("r{i}")).await;
    }
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < 20 {
        tokio::select! {
            d = recv(&mut sub_a, "replica a") => { got_a.push(text(&d)); d.ack().await.expect("ack"); }
            d = recv(&mut sub_b, "replica b") => { got_b.push(text(&d)); d.ack().await.expect("ack"); }
        }
    }
    assert!(quiet(&mut sub_a).await.is_none() && quiet(&mut sub_b).await.is_none());
    assert!(
        !got_a.is_empty() && !got_b.is_empty(),
        "both replicas get a share: {got_a:?} {got_b:?}"
    );
    let all: BTreeSet<String> = got_a.iter().chain(&got_b).cloned().collect();
    assert_eq!(all.len(), 20, "no duplicates: {got_a:?} {got_b:?}");
    drop((sub_a, sub_b));
    forget(
        &[&a, &b],
        &[(&spec_a, &group, &topic), (&spec_b, &group, &topic)],
    )
    .await;
}

#[tokio::test]
async fn a_session_that_comes_back_gets_what_it_missed_and_what_it_held() {
    let spec = spec_for(&broker_url());
    let (topic, group) = (fresh("t"), fresh("g"));
    let first = connected(&spec).await;
    let mut sub = subscribe(&first, &topic, &group, 5).await;
    publish(&first, &topic, "held").await;
    publish(&first, &topic, "acked").await;
    let held = recv(&mut sub, "held").await;
    assert_eq!(text(&held), "held");
    assert_eq!(take(&mut sub, "acked").await, "acked");
    // The process goes away while holding a delivery: the session disconnects, the
    // broker keeps it.
    drop(sub);
    first.close().await;
    drop(held);
    drop(first);

    let other = connected(&spec_for(&broker_url())).await;
    publish(&other, &topic, "missed-1").await;
    publish(&other, &topic, "missed-2").await;

    // The same client id in a new process finds the session again.
    let second = connected(&spec).await;
    let mut sub = subscribe(&second, &topic, &group, 5).await;
    let mut got = Vec::new();
    for n in 0..3 {
        got.push(take(&mut sub, &format!("after coming back ({n})")).await);
    }
    assert_eq!(
        got,
        ["held", "missed-1", "missed-2"],
        "held first, in order"
    );
    assert!(quiet(&mut sub).await.is_none(), "the acked one stays acked");
    drop(sub);
    forget(&[&second, &other], &[(&spec, &group, &topic)]).await;
}

#[tokio::test]
async fn a_full_window_on_one_topic_does_not_stall_another() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    let (busy, free, group) = (fresh("busy"), fresh("free"), fresh("g"));
    // The subscription would take 100, so the broker's in-flight window is what stops it.
    let mut busy_sub = subscribe(&c, &busy, &group, 100).await;
    let mut free_sub = subscribe(&c, &free, &group, 1).await;
    for i in 0..30 {
        publish(&c, &busy, &format!("b{i}")).await;
    }
    let mut held = vec![recv(&mut busy_sub, "busy").await];
    while let Some(d) = quiet(&mut busy_sub).await {
        held.push(d);
    }
    assert!(
        held.len() < 30,
        "the broker's max_inflight_messages bounds one session's unacked messages: {}",
        held.len()
    );
    publish(&c, &free, "f0").await;
    assert_eq!(take(&mut free_sub, "the other topic").await, "f0");
    let mut seen: BTreeSet<String> = held.iter().map(text).collect();
    let count = held.len();
    for d in held {
        d.ack().await.expect("ack");
    }
    for n in count..30 {
        seen.insert(take(&mut busy_sub, &format!("busy after acks ({n})")).await);
    }
    assert_eq!(seen.len(), 30);
    drop((busy_sub, free_sub));
    forget(&[&c], &[(&spec, &group, &busy), (&spec, &group, &free)]).await;
}

#[tokio::test]
async fn local_subscriptions_share_a_session_and_a_nack_goes_to_the_other() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut one = subscribe(&c, &topic, &group, 1).await;
    publish(&c, &topic, "m").await;
    let busy = recv(&mut one, "the first subscription").await;
    let id = busy.message.id.clone();
    let mut two = subscribe(&c, &topic, &group, 1).await;
    assert_eq!(lock(&c.sessions).len(), 1, "one session for both");
    // `one` holds its only permit, so the next message goes to `two`.
    publish(&c, &topic, "n").await;
    let n = recv(&mut two, "the second subscription").await;
    assert_eq!(text(&n), "n");
    // `one` goes away; its delivery still settles, and a nack hands it to `two`.
    drop(one);
    busy.nack().await.expect("nack");
    n.ack().await.expect("ack");
    let again = recv(&mut two, "the nacked message").await;
    assert_eq!((text(&again), again.message.id.clone()), ("m".into(), id));
    again.ack().await.expect("ack");
    assert!(quiet(&mut two).await.is_none());
    drop(two);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

#[tokio::test]
async fn a_delivery_outlives_its_subscription_and_unsent_messages_go_back() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 1).await;
    publish(&c, &topic, "a").await;
    publish(&c, &topic, "b").await;
    let a = recv(&mut sub, "a").await;
    assert_eq!(text(&a), "a");
    // "b" reached the session but was never handed out.
    drop(sub);
    a.ack()
        .await
        .expect("a delivery settles after its subscription is gone");
    let mut sub = subscribe(&c, &topic, &group, 1).await;
    assert_eq!(take(&mut sub, "b, from the broker again").await, "b");
    assert!(quiet(&mut sub).await.is_none(), "the acked one stays acked");
    drop(sub);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

#[tokio::test]
async fn nack_after_redelivers_no_sooner_than_the_delay() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 2).await;
    publish(&c, &topic, "later").await;
    let d = recv(&mut sub, "first").await;
    let delay = Duration::from_millis(400);
    let started = Instant::now();
    let nack = tokio::spawn(d.nack_after(delay));
    let again = recv(&mut sub, "after the delay").await;
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(text(&again), "later");
    nack.await.expect("joined").expect("nack_after");
    again.ack().await.expect("ack");
    drop(sub);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

#[tokio::test]
async fn consumer_id_is_the_group_of_every_subscription() {
    let group = fresh("shared");
    // No clientID: the session's client id derives from the group and the host name.
    let spec = ComponentSpec::new("mqtt", TYPE_NAME)
        .with_metadata(URL, broker_url())
        .with_metadata("consumerID", group.as_str());
    let c = connected(&spec).await;
    let topic = fresh("t");
    let mut one = subscribe(&c, &topic, "app-a", 1).await;
    let mut two = subscribe(&c, &topic, "app-b", 1).await;
    let session = {
        let sessions = lock(&c.sessions);
        assert_eq!(sessions.len(), 1, "both joined the consumerID group");
        sessions
            .get(&(group.clone(), topic.clone()))
            .cloned()
            .expect("keyed by consumerID")
    };
    let base = format!("{group}-{}", hostname());
    assert!(
        format!("{session:?}").contains(&session_client_id(&base, &group, &topic)),
        "{session:?}"
    );
    publish(&c, &topic, "x").await;
    let got = tokio::select! {
        d = recv(&mut one, "one") => d,
        d = recv(&mut two, "two") => d,
    };
    got.ack().await.expect("ack");
    assert!(quiet(&mut one).await.is_none() && quiet(&mut two).await.is_none());
    drop((one, two));
    forget(&[&c], &[(&spec, "any group: consumerID wins", &topic)]).await;
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_publishing() {
    let spec = spec_for(&broker_url());
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 1).await;
    c.close().await;
    assert_ends(&mut sub, WAIT, "closed").await;
    let err = c.publish(message(&topic, "x")).await.expect_err("closed");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(kind(c.init().await), ErrorKind::Unavailable);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

// ---- connection loss ---------------------------------------------------------------------

/// Wait until the session of (group, topic) noticed that its connection is gone.
async fn session_down(c: &Mqtt3PubSub, group: &str, topic: &str) {
    let session = lock(&c.sessions)
        .get(&(group.to_owned(), topic.to_owned()))
        .cloned()
        .expect("a session");
    let mut link = session.link.subscribe();
    tokio::time::timeout(WAIT, link.wait_for(|l| !matches!(l, Link::Up(_))))
        .await
        .expect("the session notices the cut")
        .expect("the session is alive");
}

async fn upstream() -> SocketAddr {
    let url = broker_url();
    let hostport = url
        .split_once("://")
        .map_or(url.as_str(), |(_, rest)| rest)
        .trim_end_matches('/');
    tokio::net::lookup_host(hostport)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("cannot resolve the MQTT broker {url} (PLINTH_TEST_MQTT)"))
}

#[tokio::test]
async fn publishing_and_subscriptions_recover_after_the_connection_is_cut() {
    let proxy = FaultProxy::start(upstream().await.to_string()).await;
    let spec = spec_for(&format!("tcp://{}", proxy.addr())).with_metadata(TIMEOUT, "3s");
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 4).await;
    publish(&c, &topic, "before").await;
    assert_eq!(take(&mut sub, "before the cut").await, "before");
    publish(&c, &topic, "held").await;
    let held = recv(&mut sub, "held across the cut").await;

    proxy.cut();
    session_down(&c, &group, &topic).await;
    // The first publish may meet the connection still closing; either way it fails, fast.
    for _ in 0..3 {
        assert_publish_fails_fast(&c, &topic, Duration::from_secs(1)).await;
    }
    assert_eq!(kind(c.ping().await), ErrorKind::Unavailable);
    let err = held
        .ack()
        .await
        .expect_err("the connection it came on is gone");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    proxy.restore().await;
    // init waits for the publishing connection to come back.
    c.init().await.expect("reconnected");
    publish(&c, &topic, "after").await;
    // The same subscription: the broker sends the unacknowledged message again, first.
    assert_eq!(take(&mut sub, "redelivered after the cut").await, "held");
    assert_eq!(take(&mut sub, "published after the cut").await, "after");
    assert!(quiet(&mut sub).await.is_none());
    drop(sub);
    forget(&[&c], &[(&spec, &group, &topic)]).await;
}

// ---- private brokers ---------------------------------------------------------------------

/// A `mosquitto` of this test's own on a free port, with `extra` config lines; killed and
/// its directory removed on drop.
struct PrivateBroker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl PrivateBroker {
    fn dir() -> PathBuf {
        let dir = std::env::temp_dir().join(fresh("mosquitto"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn start(dir: PathBuf, extra: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // As root, mosquitto would switch to the `mosquitto` user, who cannot read here.
        let user = Command::new("id")
            .arg("-un")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let conf = format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser {user}\nlog_dest none\n\
             persistence true\npersistence_location {}/\nmax_queued_messages 0\n{extra}\n",
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).expect("write config");
        let mut broker = Self {
            child: None,
            dir,
            port,
        };
        broker.run();
        broker
    }

    fn run(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the mosquitto binary must be installed (Debian's mosquitto)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private mosquitto did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop with SIGTERM, so that mosquitto saves its persistence file, and wait for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_session_survives_a_broker_restart() {
    let mut broker = PrivateBroker::start(PrivateBroker::dir(), "");
    let spec = spec_for(&format!("tcp://127.0.0.1:{}", broker.port));
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    drop(subscribe(&c, &topic, &group, 1).await);
    for i in 0..3 {
        publish(&c, &topic, &format!("p{i}")).await;
    }
    broker.stop();
    let mut link = c.publisher.link();
    tokio::time::timeout(WAIT, link.wait_for(|l| !matches!(l, Link::Up(_))))
        .await
        .expect("the publisher notices the broker is gone")
        .expect("the publisher is alive");
    broker.run();
    c.init()
        .await
        .expect("the publisher reconnects to the restarted broker");
    // Mosquitto 2.0.11 restores the session and its queued messages, but not a shared
    // subscription: the session subscribes again on every connection, so later messages
    // reach it too.
    let mut sub = subscribe(&c, &topic, &group, 1).await;
    publish(&c, &topic, "p3").await;
    let mut got = Vec::new();
    for n in 0..4 {
        got.push(take(&mut sub, &format!("after the restart ({n})")).await);
    }
    assert_eq!(got, ["p0", "p1", "p2", "p3"]);
    c.close().await;
    // The private broker goes away with its sessions.
}

#[tokio::test]
async fn mutual_tls_with_a_private_broker() {
    let pki = TestPki::new();
    let broker = PrivateBroker::start(
        PrivateBroker::dir(),
        &format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            pki.ca.cert.display(),
            pki.server.cert.display(),
            pki.server.key.display()
        ),
    );
    let tls_spec = |ca: &CertFiles| {
        spec_for(&format!("mqtts://127.0.0.1:{}", broker.port))
            .with_metadata(CA_CERT, &ca.cert_pem)
            .with_metadata(CLIENT_CERT, &pki.client.cert_pem)
            .with_metadata(CLIENT_KEY, &pki.client.key_pem)
            .with_metadata(TIMEOUT, "3s")
    };
    let spec = tls_spec(&pki.ca);
    let c = connected(&spec).await;
    let (topic, group) = (fresh("t"), fresh("g"));
    let mut sub = subscribe(&c, &topic, &group, 1).await;
    publish(&c, &topic, "over tls").await;
    assert_eq!(take(&mut sub, "over TLS").await, "over tls");
    drop(sub);
    c.close().await;

    // A server certificate from a CA the component does not trust.
    let untrusting = Mqtt3PubSub::new(&tls_spec(&pki.other_ca)).expect("valid metadata");
    let err = untrusting.init().await.expect_err("untrusted server");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.message().contains("TLS"), "{err}");
    // Without a client certificate the broker refuses the handshake.
    let anonymous = spec_for(&format!("mqtts://127.0.0.1:{}", broker.port))
        .with_metadata(CA_CERT, &pki.ca.cert_pem);
    let anonymous = Mqtt3PubSub::new(&anonymous).expect("valid metadata");
    assert_eq!(kind(anonymous.init().await), ErrorKind::Unavailable);
}
