use std::collections::HashMap;
use std::time::Duration;

use pb::lifecycle_client::LifecycleClient;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::binding::{invoke, start_with_http_binding};
use crate::common::{Plinth, unique};
use crate::upstream::Upstream;

async fn lifecycle(plinth: &Plinth) -> LifecycleClient<Channel> {
    LifecycleClient::connect(format!("http://{}", plinth.grpc))
        .await
        .expect("connect")
}

async fn apply(
    c: &mut LifecycleClient<Channel>,
    kind: &str,
    name: &str,
    metadata: &[(&str, &str)],
) -> Result<(), tonic::Status> {
    c.apply_configuration(pb::DynamicConfiguration {
        component_config: Some(pb::ComponentConfig {
            kind: kind.into(),
            name: name.into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        }),
    })
    .await
    .map(|_| ())
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn apply_configuration_repoints_a_binding() {
    let mut first = Upstream::start("first").await;
    let mut second = Upstream::start("second").await;
    let plinth = start_with_http_binding(&first.url()).await;
    let mut c = plinth.client().await;
    let mut l = lifecycle(&plinth).await;

    let resp = invoke(&mut c, "post", b"one", &[]).await.expect("before");
    assert_eq!(
        resp.metadata.get("X-Upstream").map(String::as_str),
        Some("first")
    );
    assert_eq!(first.next_request(WAIT).await.body, b"one");

    apply(&mut l, "bindings", "webhook", &[("url", &second.url())])
        .await
        .expect("apply new url");
    let resp = invoke(&mut c, "post", b"two", &[]).await.expect("after");
    assert_eq!(
        resp.metadata.get("X-Upstream").map(String::as_str),
        Some("second"),
        "the new url is used"
    );
    assert_eq!(second.next_request(WAIT).await.body, b"two");
    assert!(
        first.try_next_request().is_none(),
        "nothing more reaches the old url"
    );

    // Invalid new metadata is refused and the running component keeps serving unchanged.
    let err = apply(
        &mut l,
        "bindings",
        "webhook",
        &[("url", "ftp://example.invalid")],
    )
    .await
    .expect_err("bad url");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("url"),
        "names the field: {}",
        err.message()
    );
    let resp = invoke(&mut c, "post", b"three", &[])
        .await
        .expect("still serving");
    assert_eq!(
        resp.metadata.get("X-Upstream").map(String::as_str),
        Some("second")
    );
    assert_eq!(second.next_request(WAIT).await.body, b"three");

    // Readiness still lists it UP.
    plinth.wait_ready(WAIT).await;
}

#[tokio::test]
async fn apply_configuration_changes_a_sequencer_floor() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let mut l = lifecycle(&plinth).await;
    let key = unique("orders");
    apply(
        &mut l,
        "sequencer",
        "sequencer",
        &[(&format!("biggerThan.{key}"), "7000")],
    )
    .await
    .expect("apply floor");
    let id = c
        .get_next_id(pb::GetNextIdRequest {
            store_name: "sequencer".into(),
            key: key.clone(),
            options: Some(pb::SequencerOptions {
                increment: pb::sequencer_options::AutoIncrement::Strong as i32,
            }),
            ..Default::default()
        })
        .await
        .expect("next id")
        .into_inner()
        .next_id;
    assert!(id > 7000, "the floor set at run time applies: {id}");
}

#[tokio::test]
async fn bad_apply_configuration_requests_are_invalid_arguments() {
    let plinth = Plinth::start_ready().await;
    let mut l = lifecycle(&plinth).await;
    let err = apply(
        &mut l,
        "state",
        "no-such-component",
        &[("keyPrefix", "none")],
    )
    .await
    .expect_err("unknown component");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("no-such-component"),
        "{}",
        err.message()
    );
    let err = apply(&mut l, "lock", "statestore", &[("keyPrefix", "none")])
        .await
        .expect_err("wrong kind");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = l
        .apply_configuration(pb::DynamicConfiguration {
            component_config: None,
        })
        .await
        .expect_err("no config");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

/// Reconfiguring an in-memory component keeps its data: saved state stays readable and a
/// sequencer never issues an id twice.
#[tokio::test]
async fn apply_configuration_keeps_in_memory_data() {
    let plinth = Plinth::start();
    let mut c = plinth.client().await;
    let mut l = lifecycle(&plinth).await;
    let key = unique("kept");
    c.save_state(pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![pb::StateItem {
            key: key.clone(),
            value: b"v".to_vec(),
            ..Default::default()
        }],
    })
    .await
    .expect("save");
    let seq_key = unique("seq");
    let next = |c: &mut pb::runtime_client::RuntimeClient<Channel>, strong: bool| {
        let req = pb::GetNextIdRequest {
            store_name: "sequencer".into(),
            key: seq_key.clone(),
            options: Some(pb::SequencerOptions {
                increment: if strong { 1 } else { 0 },
            }),
            metadata: HashMap::new(),
        };
        let mut c = c.clone();
        async move {
            c.get_next_id(req)
                .await
                .expect("next id")
                .into_inner()
                .next_id
        }
    };
    let before_strong = next(&mut c, true).await;
    let before_weak = next(&mut c, false).await;

    apply(&mut l, "state", "statestore", &[("someSetting", "1")])
        .await
        .expect("reconfigure state");
    apply(&mut l, "sequencer", "sequencer", &[("segmentSize", "10")])
        .await
        .expect("reconfigure sequencer");

    let got = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.data, b"v", "state survives a reconfiguration");
    let after_strong = next(&mut c, true).await;
    let after_weak = next(&mut c, false).await;
    let before_max = before_strong.max(before_weak);
    assert!(
        after_strong > before_max,
        "strong id {after_strong} reissued (had {before_max})"
    );
    assert!(
        after_weak > before_max && after_weak != after_strong,
        "weak id {after_weak} reissued"
    );
}
