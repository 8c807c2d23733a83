//! Dapr's gRPC API (`dapr.proto.runtime.v1.Dapr`) through the dapr crate's generated client,
//! on the Dapr gRPC listener, over the same building blocks as the Layotto API.

use std::collections::HashMap;
use std::time::Duration;

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use dpb::dapr_client::DaprClient;
use dpb::subscribe_topic_events_request_alpha1::SubscribeTopicEventsRequestType as In;
use dpb::subscribe_topic_events_response_alpha1::SubscribeTopicEventsResponseType as Out;
use plinth_proto::runtime::v1 as lpb;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, unique};

type Client = DaprClient<Channel>;

const STORE: &str = "statestore";
const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn dapr(plinth: &Plinth) -> Client {
    DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect to the Dapr listener")
}

fn item(key: &str, value: &[u8], etag: Option<&str>) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| common::Etag { value: e.into() }),
        ..Default::default()
    }
}

async fn save(c: &mut Client, items: Vec<common::StateItem>) -> Result<(), tonic::Status> {
    c.save_state(dpb::SaveStateRequest {
        store_name: STORE.into(),
        states: items,
    })
    .await
    .map(|_| ())
}

async fn get(c: &mut Client, key: &str) -> dpb::GetStateResponse {
    c.get_state(dpb::GetStateRequest {
        store_name: STORE.into(),
        key: key.into(),
        ..Default::default()
    })
    .await
    .expect("get")
    .into_inner()
}

#[tokio::test]
async fn state_with_etags_is_the_same_state_as_layotto_sees() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let key = unique("k");

    save(&mut c, vec![item(&key, b"v1", None)])
        .await
        .expect("save");
    let got = get(&mut c, &key).await;
    assert_eq!(got.data, b"v1");
    assert!(!got.etag.is_empty());

    let stale = got.etag.clone();
    save(&mut c, vec![item(&key, b"v2", Some(&stale))])
        .await
        .expect("save with the current etag");
    let conflict = save(&mut c, vec![item(&key, b"v3", Some(&stale))])
        .await
        .expect_err("a stale etag conflicts");
    assert_eq!(conflict.code(), Code::Aborted, "{conflict:?}");

    // One building block: the Layotto API reads what the Dapr API wrote, under the same key.
    let mut layotto = plinth.client().await;
    let seen = layotto
        .get_state(lpb::GetStateRequest {
            store_name: STORE.into(),
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("layotto get")
        .into_inner();
    assert_eq!(seen.data, b"v2");

    let current = get(&mut c, &key).await.etag;
    let wrong = c
        .delete_state(dpb::DeleteStateRequest {
            store_name: STORE.into(),
            key: key.clone(),
            etag: Some(common::Etag { value: stale }),
            ..Default::default()
        })
        .await
        .expect_err("delete with a stale etag");
    assert_eq!(wrong.code(), Code::Aborted);
    c.delete_state(dpb::DeleteStateRequest {
        store_name: STORE.into(),
        key: key.clone(),
        etag: Some(common::Etag { value: current }),
        ..Default::default()
    })
    .await
    .expect("delete");
    // A missing key is an empty answer, not an error, as in Dapr.
    assert_eq!(get(&mut c, &key).await, dpb::GetStateResponse::default());
}

#[tokio::test]
async fn bulk_state_and_transactions() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let (a, b, missing) = (unique("a"), unique("b"), unique("missing"));
    save(&mut c, vec![item(&a, b"1", None), item(&b, b"2", None)])
        .await
        .expect("save");
    let bulk = c
        .get_bulk_state(dpb::GetBulkStateRequest {
            store_name: STORE.into(),
            keys: vec![a.clone(), b.clone(), missing.clone()],
            ..Default::default()
        })
        .await
        .expect("bulk get")
        .into_inner();
    let by_key: HashMap<_, _> = bulk
        .items
        .iter()
        .map(|i| (i.key.clone(), i.data.clone()))
        .collect();
    assert_eq!(by_key[&a], b"1");
    assert_eq!(by_key[&b], b"2");
    assert!(by_key[&missing].is_empty());

    let op = |kind: &str, it: common::StateItem| dpb::TransactionalStateOperation {
        operation_type: kind.into(),
        request: Some(it),
    };
    c.execute_state_transaction(dpb::ExecuteStateTransactionRequest {
        store_name: STORE.into(),
        operations: vec![
            op("upsert", item(&a, b"10", None)),
            op("delete", item(&b, b"", None)),
        ],
        metadata: HashMap::new(),
    })
    .await
    .expect("transaction");
    assert_eq!(get(&mut c, &a).await.data, b"10");
    assert!(get(&mut c, &b).await.data.is_empty());

    let bad = c
        .execute_state_transaction(dpb::ExecuteStateTransactionRequest {
            store_name: STORE.into(),
            operations: vec![op("merge", item(&a, b"x", None))],
            metadata: HashMap::new(),
        })
        .await
        .expect_err("unknown operation type");
    assert_eq!(bad.code(), Code::InvalidArgument);

    c.delete_bulk_state(dpb::DeleteBulkStateRequest {
        store_name: STORE.into(),
        states: vec![item(&a, b"", None)],
    })
    .await
    .expect("bulk delete");
    assert!(get(&mut c, &a).await.data.is_empty());
}

/// One open SubscribeTopicEventsAlpha1 stream.
pub(crate) struct EventStream {
    requests: mpsc::Sender<dpb::SubscribeTopicEventsRequestAlpha1>,
    responses: tonic::Streaming<dpb::SubscribeTopicEventsResponseAlpha1>,
}

impl EventStream {
    pub(crate) async fn open(c: &mut Client, topic: &str) -> Self {
        let (requests, rx) = mpsc::channel(16);
        requests
            .send(dpb::SubscribeTopicEventsRequestAlpha1 {
                subscribe_topic_events_request_type: Some(In::InitialRequest(
                    dpb::SubscribeTopicEventsRequestInitialAlpha1 {
                        pubsub_name: "pubsub".into(),
                        topic: topic.into(),
                        metadata: HashMap::new(),
                        dead_letter_topic: None,
                    },
                )),
            })
            .await
            .expect("queue the initial request");
        let mut responses = timeout(
            WAIT,
            c.subscribe_topic_events_alpha1(ReceiverStream::new(rx)),
        )
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
                first.and_then(|m| m.subscribe_topic_events_response_type),
                Some(Out::InitialResponse(_))
            ),
            "the first message is the initial response"
        );
        Self {
            requests,
            responses,
        }
    }

    pub(crate) async fn next_event(&mut self) -> dpb::TopicEventRequest {
        let msg = timeout(WAIT, self.responses.message())
            .await
            .expect("an event in time")
            .expect("stream error");
        match msg.and_then(|m| m.subscribe_topic_events_response_type) {
            Some(Out::EventMessage(event)) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    pub(crate) async fn answer(
        &self,
        id: &str,
        status: dpb::topic_event_response::TopicEventResponseStatus,
    ) {
        self.requests
            .send(dpb::SubscribeTopicEventsRequestAlpha1 {
                subscribe_topic_events_request_type: Some(In::EventProcessed(
                    dpb::SubscribeTopicEventsRequestProcessedAlpha1 {
                        id: id.into(),
                        status: Some(dpb::TopicEventResponse {
                            status: status as i32,
                        }),
                    },
                )),
            })
            .await
            .expect("send the answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_bulk_publish_reach_a_streaming_subscriber() {
    use dpb::topic_event_response::TopicEventResponseStatus as S;
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let topic = unique("dapr-topic");
    let mut stream = EventStream::open(&mut c, &topic).await;

    c.publish_event(dpb::PublishEventRequest {
        pubsub_name: "pubsub".into(),
        topic: topic.clone(),
        data: b"hello".to_vec(),
        data_content_type: "text/plain".into(),
        metadata: HashMap::new(),
    })
    .await
    .expect("publish");
    let event = stream.next_event().await;
    assert_eq!(
        (
            event.data.as_slice(),
            event.topic.as_str(),
            event.pubsub_name.as_str()
        ),
        (&b"hello"[..], topic.as_str(), "pubsub")
    );
    assert_eq!(event.data_content_type, "text/plain");
    // RETRY redelivers; SUCCESS acknowledges.
    stream.answer(&event.id, S::Retry).await;
    let again = stream.next_event().await;
    assert_eq!(again.id, event.id);
    stream.answer(&again.id, S::Success).await;

    let entry = |id: &str, data: &[u8]| dpb::BulkPublishRequestEntry {
        entry_id: id.into(),
        event: data.to_vec(),
        content_type: "text/plain".into(),
        metadata: HashMap::new(),
    };
    let resp = c
        .bulk_publish_event(dpb::BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: topic.clone(),
            entries: vec![entry("1", b"one"), entry("2", b"two")],
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk publish")
        .into_inner();
    assert!(resp.failed_entries.is_empty(), "{resp:?}");
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = stream.next_event().await;
        got.push(e.data.clone());
        stream.answer(&e.id, S::Success).await;
    }
    got.sort();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);

    // The Alpha1 name is deprecated in the SDK but still served, by the same handler.
    #[allow(deprecated)]
    let dup = c
        .bulk_publish_event_alpha1(dpb::BulkPublishRequest {
            pubsub_name: "pubsub".into(),
            topic: topic.clone(),
            entries: vec![entry("1", b"one"), entry("1", b"again")],
            metadata: HashMap::new(),
        })
        .await
        .expect_err("entry ids must be unique");
    assert_eq!(dup.code(), Code::InvalidArgument);
    let unknown = c
        .bulk_publish_event(dpb::BulkPublishRequest {
            pubsub_name: "nope".into(),
            topic,
            entries: vec![entry("1", b"one")],
            metadata: HashMap::new(),
        })
        .await
        .expect_err("unknown pubsub");
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn secrets_from_the_env_store() {
    // Not DAPR_-prefixed: the env store never returns those (tokens live there).
    let name = unique("MY_SECRET_VIA_DAPR")
        .replace('-', "_")
        .to_ascii_uppercase();
    let value = unique("value");
    let plinth = Plinth::start_with_env(&[], &[(&name, &value)]);
    let mut c = dapr(&plinth).await;
    let got = c
        .get_secret(dpb::GetSecretRequest {
            store_name: "secretstore".into(),
            key: name.clone(),
            metadata: HashMap::new(),
        })
        .await
        .expect("secret")
        .into_inner()
        .data;
    assert_eq!(got, HashMap::from([(name, value)]));
    // Without a prefix or allowlist the env store lists nothing in bulk.
    let bulk = c
        .get_bulk_secret(dpb::GetBulkSecretRequest {
            store_name: "secretstore".into(),
            metadata: HashMap::new(),
        })
        .await
        .expect("bulk secrets")
        .into_inner();
    assert!(bulk.data.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_get_subscribe_and_unsubscribe() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let mut layotto = plinth.client().await;
    let key = unique("cfg");
    // Dapr has no write rpc for configuration: write through the Layotto API.
    let write = |content: &str| lpb::SaveConfigurationRequest {
        store_name: "configstore".into(),
        items: vec![lpb::ConfigurationItem {
            key: key.clone(),
            content: content.into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    layotto.save_configuration(write("v1")).await.expect("save");

    let items = c
        .get_configuration(dpb::GetConfigurationRequest {
            store_name: "configstore".into(),
            keys: vec![key.clone()],
            metadata: HashMap::new(),
        })
        .await
        .expect("get")
        .into_inner()
        .items;
    assert_eq!(items[&key].value, "v1");
    assert!(!items[&key].version.is_empty());

    let mut sub = c
        .subscribe_configuration(dpb::SubscribeConfigurationRequest {
            store_name: "configstore".into(),
            keys: vec![key.clone()],
            metadata: HashMap::new(),
        })
        .await
        .expect("subscribe")
        .into_inner();
    let first = timeout(WAIT, sub.message())
        .await
        .expect("first message in time")
        .expect("stream")
        .expect("first message");
    assert!(!first.id.is_empty() && first.items.is_empty(), "{first:?}");

    layotto.save_configuration(write("v2")).await.expect("save");
    let change = timeout(WAIT, sub.message())
        .await
        .expect("change in time")
        .expect("stream")
        .expect("change");
    assert_eq!(change.id, first.id);
    assert_eq!(change.items[&key].value, "v2");

    let unsub = |id: &str| dpb::UnsubscribeConfigurationRequest {
        store_name: "configstore".into(),
        id: id.into(),
    };
    let ok = c
        .unsubscribe_configuration(unsub(&first.id))
        .await
        .expect("unsubscribe")
        .into_inner();
    assert!(ok.ok, "{ok:?}");
    let end = timeout(WAIT, sub.message())
        .await
        .expect("the stream ends in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let unknown = c
        .unsubscribe_configuration_alpha1(unsub("no-such-id"))
        .await
        .expect("unsubscribe an unknown id")
        .into_inner();
    assert!(!unknown.ok && !unknown.message.is_empty(), "{unknown:?}");
}

#[tokio::test]
async fn locks_report_dapr_statuses() {
    use dpb::unlock_response::Status as S;
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let resource = unique("res");
    let try_lock = |owner: &str| dpb::TryLockRequest {
        store_name: "lockstore".into(),
        resource_id: resource.clone(),
        lock_owner: owner.into(),
        expiry_in_seconds: 30,
    };
    let unlock = |owner: &str| dpb::UnlockRequest {
        store_name: "lockstore".into(),
        resource_id: resource.clone(),
        lock_owner: owner.into(),
    };
    assert!(
        c.try_lock_alpha1(try_lock("a"))
            .await
            .expect("lock")
            .into_inner()
            .success
    );
    assert!(
        !c.try_lock_alpha1(try_lock("b"))
            .await
            .expect("lock")
            .into_inner()
            .success
    );
    let status = |r: dpb::UnlockResponse| S::try_from(r.status).expect("known status");
    let other = c
        .unlock_alpha1(unlock("b"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(status(other), S::LockBelongsToOthers);
    let mine = c
        .unlock_alpha1(unlock("a"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(status(mine), S::Success);
    let gone = c
        .unlock_alpha1(unlock("a"))
        .await
        .expect("unlock")
        .into_inner();
    assert_eq!(status(gone), S::LockDoesNotExist);
}

#[tokio::test]
async fn metadata_lists_components_and_attributes() {
    let plinth = Plinth::start_with(&["--app-id", "dapr-meta"], None);
    let mut c = dapr(&plinth).await;
    c.set_metadata(dpb::SetMetadataRequest {
        key: "team".into(),
        value: "platform".into(),
    })
    .await
    .expect("set metadata");
    let meta = c
        .get_metadata(dpb::GetMetadataRequest {})
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(meta.id, "dapr-meta");
    assert_eq!(meta.registered_components.len(), 7, "{meta:?}");
    let state = meta
        .registered_components
        .iter()
        .find(|c| c.name == STORE)
        .expect("the state store is listed");
    assert_eq!(state.r#type, "state.in-memory");
    assert!(state.capabilities.iter().any(|c| c == "ETAG"), "{state:?}");
    assert!(state.capabilities.iter().any(|c| c == "TRANSACTIONAL"));
    assert_eq!(meta.extended_metadata["team"], "platform");
    assert!(meta.extended_metadata["daprRuntimeVersion"].starts_with("plinth-"));
    assert!(meta.runtime_version.starts_with("plinth-"));
}

#[tokio::test]
async fn unsupported_rpcs_and_unknown_stores() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let actors = c
        .get_actor_state(dpb::GetActorStateRequest::default())
        .await
        .expect_err("actors are not supported");
    assert_eq!(actors.code(), Code::Unimplemented);
    assert!(actors.message().contains("GetActorState"), "{actors:?}");
    let invoke = c
        .invoke_service(dpb::InvokeServiceRequest::default())
        .await
        .expect_err("an invocation without a message");
    assert_eq!(invoke.code(), Code::InvalidArgument);

    let unknown = c
        .get_state(dpb::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn shutdown_stops_plinth_cleanly() {
    let mut plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    c.shutdown(dpb::ShutdownRequest {}).await.expect("shutdown");
    assert_eq!(plinth.wait_exit(WAIT), Some(0));
}
