use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use pb::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::common::{Plinth, unique};

type Client = RuntimeClient<Channel>;

const STORE: &str = "configstore";
const WAIT: Duration = Duration::from_secs(10);

fn item(key: &str, content: &str, group: &str, label: &str) -> pb::ConfigurationItem {
    pb::ConfigurationItem {
        key: key.into(),
        content: content.into(),
        group: group.into(),
        label: label.into(),
        tags: HashMap::from([("owner".to_string(), "tests".to_string())]),
        ..Default::default()
    }
}

async fn save(
    c: &mut Client,
    app: &str,
    items: Vec<pb::ConfigurationItem>,
) -> Result<(), tonic::Status> {
    c.save_configuration(pb::SaveConfigurationRequest {
        store_name: STORE.into(),
        app_id: app.into(),
        items,
        metadata: HashMap::new(),
    })
    .await
    .map(|_| ())
}

async fn get(
    c: &mut Client,
    app: &str,
    group: &str,
    label: &str,
    keys: &[&str],
) -> BTreeMap<String, pb::ConfigurationItem> {
    c.get_configuration(pb::GetConfigurationRequest {
        store_name: STORE.into(),
        app_id: app.into(),
        group: group.into(),
        label: label.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    })
    .await
    .expect("get configuration")
    .into_inner()
    .items
    .into_iter()
    .map(|i| (i.key.clone(), i))
    .collect()
}

async fn delete(
    c: &mut Client,
    app: &str,
    group: &str,
    label: &str,
    keys: &[&str],
) -> Result<(), tonic::Status> {
    c.delete_configuration(pb::DeleteConfigurationRequest {
        store_name: STORE.into(),
        app_id: app.into(),
        group: group.into(),
        label: label.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        metadata: HashMap::new(),
    })
    .await
    .map(|_| ())
}

#[tokio::test]
async fn save_get_and_delete() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (app, group) = (unique("app"), unique("group"));
    save(
        &mut c,
        &app,
        vec![
            item("a", "1", &group, "prod"),
            item("b", "2", &group, "prod"),
            item("c", "3", &group, "prod"),
            item("a", "dev-1", &group, "dev"),
        ],
    )
    .await
    .expect("save");

    // Empty keys: every key of the app, group and label.
    let all = get(&mut c, &app, &group, "prod", &[]).await;
    assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(all["b"].content, "2");
    assert_eq!(all["b"].group, group);
    assert_eq!(all["b"].label, "prod");
    assert_eq!(
        all["b"].tags.get("owner").map(String::as_str),
        Some("tests")
    );
    // Labels, groups and apps are separate namespaces.
    let dev = get(&mut c, &app, &group, "dev", &[]).await;
    assert_eq!(dev.len(), 1);
    assert_eq!(dev["a"].content, "dev-1");
    assert!(
        get(&mut c, &app, &unique("other-group"), "prod", &[])
            .await
            .is_empty()
    );
    assert!(
        get(&mut c, &unique("other-app"), &group, "prod", &[])
            .await
            .is_empty()
    );
    // Named keys; unknown keys are simply absent.
    let some = get(&mut c, &app, &group, "prod", &["a", "c", "missing"]).await;
    assert_eq!(some.keys().collect::<Vec<_>>(), ["a", "c"]);

    // Saving again replaces.
    save(&mut c, &app, vec![item("a", "1b", &group, "prod")])
        .await
        .expect("replace");
    assert_eq!(
        get(&mut c, &app, &group, "prod", &["a"]).await["a"].content,
        "1b"
    );

    delete(&mut c, &app, &group, "prod", &["a", "b"])
        .await
        .expect("delete");
    let left = get(&mut c, &app, &group, "prod", &[]).await;
    assert_eq!(left.keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(
        get(&mut c, &app, &group, "dev", &[]).await.len(),
        1,
        "delete is limited to its label"
    );

    // Without an app id, the sidecar's own app id is used for both save and get.
    let own = unique("own");
    save(&mut c, "", vec![item(&own, "x", &group, "")])
        .await
        .expect("save without app id");
    assert_eq!(
        get(&mut c, "", &group, "", &[&own]).await[&own].content,
        "x"
    );
    assert_eq!(
        get(&mut c, "plinth", &group, "", &[&own]).await[&own].content,
        "x"
    );

    let err = save(&mut c, &app, vec![item("", "x", &group, "")])
        .await
        .expect_err("empty key");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = delete(&mut c, &app, &group, "prod", &[])
        .await
        .expect_err("delete without keys");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .get_configuration(pb::GetConfigurationRequest {
            store_name: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown store");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A SubscribeConfiguration stream: the request side stays open until dropped.
struct Subscriber {
    requests: Option<mpsc::Sender<pb::SubscribeConfigurationRequest>>,
    responses: Streaming<pb::SubscribeConfigurationResponse>,
}

impl Subscriber {
    async fn open(c: &mut Client, app: &str, group: &str) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::SubscribeConfigurationRequest {
            store_name: STORE.into(),
            app_id: app.into(),
            group: group.into(),
            ..Default::default()
        })
        .await
        .expect("queue subscribe request");
        let responses = c
            .subscribe_configuration(ReceiverStream::new(rx))
            .await
            .expect("subscribe")
            .into_inner();
        Self {
            requests: Some(tx),
            responses,
        }
    }

    /// The next batch of items that are not warm-up writes, as (key, content).
    async fn next(&mut self) -> Vec<(String, String)> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.responses.message())
                .await
                .expect("no configuration change within the deadline")
                .expect("stream error")
                .expect("stream ended");
            let items: Vec<_> = msg
                .items
                .into_iter()
                .filter(|i| !i.key.starts_with("warmup"))
                .map(|i| (i.key, i.content))
                .collect();
            if !items.is_empty() {
                return items;
            }
        }
    }
}

/// The subscription is set up after the stream opens, with no acknowledgement in Layotto's
/// protocol: write a warm-up key until every subscriber has seen one (bounded).
async fn warm_up(c: &mut Client, app: &str, group: &str, subscribers: &mut [&mut Subscriber]) {
    let deadline = Instant::now() + WAIT;
    let mut ready = vec![false; subscribers.len()];
    let mut n = 0;
    while ready.iter().any(|r| !r) {
        assert!(
            Instant::now() < deadline,
            "subscriptions never became active"
        );
        n += 1;
        save(c, app, vec![item("warmup", &n.to_string(), group, "")])
            .await
            .expect("warm-up save");
        for (i, s) in subscribers.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Ok(msg) =
                tokio::time::timeout(Duration::from_millis(100), s.responses.message()).await
            {
                let msg = msg.expect("stream error").expect("stream ended");
                ready[i] = msg.items.iter().any(|i| i.key == "warmup");
            }
        }
    }
}

#[tokio::test]
async fn two_subscribers_see_every_change_until_they_leave() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (app, group) = (unique("app"), unique("group"));
    let mut first = Subscriber::open(&mut plinth.client().await, &app, &group).await;
    let mut second = Subscriber::open(&mut plinth.client().await, &app, &group).await;
    warm_up(&mut c, &app, &group, &mut [&mut first, &mut second]).await;

    save(&mut c, &app, vec![item("k1", "v1", &group, "")])
        .await
        .expect("save k1");
    save(&mut c, &app, vec![item("k2", "v2", &group, "")])
        .await
        .expect("save k2");
    save(&mut c, &app, vec![item("k1", "v1b", &group, "")])
        .await
        .expect("update k1");
    // Another group's and another app's changes are not delivered.
    save(
        &mut c,
        &app,
        vec![item("elsewhere", "x", &unique("other"), "")],
    )
    .await
    .expect("save in other group");
    save(
        &mut c,
        &unique("other-app"),
        vec![item("elsewhere", "x", &group, "")],
    )
    .await
    .expect("save in other app");
    delete(&mut c, &app, &group, "", &["k2"])
        .await
        .expect("delete k2");
    for s in [&mut first, &mut second] {
        assert_eq!(s.next().await, [("k1".to_string(), "v1".to_string())]);
        assert_eq!(s.next().await, [("k2".to_string(), "v2".to_string())]);
        assert_eq!(s.next().await, [("k1".to_string(), "v1b".to_string())]);
        // A deletion arrives as the item with empty content.
        assert_eq!(s.next().await, [("k2".to_string(), String::new())]);
    }

    // The first unsubscribes by dropping its stream; the second still gets every change.
    drop(first);
    save(&mut c, &app, vec![item("k3", "v3", &group, "")])
        .await
        .expect("save k3");
    assert_eq!(second.next().await, [("k3".to_string(), "v3".to_string())]);

    // Closing the request side ends the subscription: the response stream finishes.
    second.requests.take();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, second.responses.message())
            .await
            .expect("stream did not end after the client closed it")
        {
            Ok(Some(msg)) => assert!(
                msg.items.iter().all(|i| i.key.starts_with("warmup")),
                "unexpected change {msg:?}"
            ),
            Ok(None) => break,
            Err(status) => panic!("stream failed instead of ending: {status:?}"),
        }
    }
}

#[tokio::test]
async fn subscribing_to_an_unknown_store_fails() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(pb::SubscribeConfigurationRequest {
        store_name: "nope".into(),
        ..Default::default()
    })
    .await
    .expect("queue");
    let result = c.subscribe_configuration(ReceiverStream::new(rx)).await;
    let status = match result {
        Err(status) => status,
        Ok(resp) => {
            let mut stream = resp.into_inner();
            tokio::time::timeout(WAIT, stream.message())
                .await
                .expect("no answer")
                .expect_err("an error on the stream")
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    drop(tx);
}
