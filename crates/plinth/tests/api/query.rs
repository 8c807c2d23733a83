//! State query (Dapr's `QueryStateAlpha1`) on the in-memory store, through the dapr crate's
//! generated client on the Dapr gRPC listener.

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use dpb::dapr_client::DaprClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, unique};

type Client = DaprClient<Channel>;

const STORE: &str = "statestore";

async fn dapr(plinth: &Plinth) -> Client {
    DaprClient::connect(format!("http://{}", plinth.dapr_grpc))
        .await
        .expect("connect to the Dapr listener")
}

/// Employees as in Dapr's query how-to, each tagged with this run's id so that a query can
/// select exactly what the test wrote. Returns the run id and the keys, by employee id.
async fn seed(c: &mut Client) -> (String, Vec<(u64, String)>) {
    let run = unique("run");
    let people = [
        (1036, "Dev Ops", "CA"),
        (1028, "Hardware", "WA"),
        (1071, "Finance", "NY"),
        (1042, "Dev Ops", "WA"),
        (1013, "Finance", "CA"),
        (1007, "Hardware", "TX"),
        (1099, "Dev Ops", "NY"),
    ];
    let mut keys = Vec::new();
    let mut states = Vec::new();
    for (id, org, state) in people {
        let key = format!("{run}-{id}");
        let value = json!({"run": run, "person": {"org": org, "id": id}, "state": state});
        states.push(common::StateItem {
            key: key.clone(),
            value: value.to_string().into_bytes(),
            ..Default::default()
        });
        keys.push((id, key));
    }
    // Not JSON: never matches, even a query without a filter.
    states.push(common::StateItem {
        key: format!("{run}-text"),
        value: b"plain text".to_vec(),
        ..Default::default()
    });
    c.save_state(dpb::SaveStateRequest {
        store_name: STORE.into(),
        states,
    })
    .await
    .expect("save");
    (run, keys)
}

async fn query(c: &mut Client, q: Value) -> Result<dpb::QueryStateResponse, tonic::Status> {
    c.query_state_alpha1(dpb::QueryStateRequest {
        store_name: STORE.into(),
        query: q.to_string(),
        ..Default::default()
    })
    .await
    .map(tonic::Response::into_inner)
}

/// `filter` restricted to this run's documents.
fn of_run(run: &str, filter: Value) -> Value {
    json!({"AND": [{"EQ": {"run": run}}, filter]})
}

fn ids(resp: &dpb::QueryStateResponse) -> Vec<u64> {
    resp.results
        .iter()
        .map(|r| {
            let doc: Value = serde_json::from_slice(&r.data).expect("JSON data");
            doc["person"]["id"].as_u64().expect("an id")
        })
        .collect()
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

#[tokio::test]
async fn eq_in_and_nested_and_or() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let (run, keys) = seed(&mut c).await;

    let dev_ops = query(
        &mut c,
        json!({"filter": of_run(&run, json!({"EQ": {"person.org": "Dev Ops"}}))}),
    )
    .await
    .expect("EQ");
    assert_eq!(sorted(ids(&dev_ops)), [1036, 1042, 1099]);
    assert!(dev_ops.token.is_empty(), "one page only");
    // Keys come back as the app wrote them, without the app-id prefix, with their ETags.
    let first = &dev_ops.results[0];
    let expected_key = &keys
        .iter()
        .find(|(id, _)| *id == ids(&dev_ops)[0])
        .expect("key")
        .1;
    assert_eq!(&first.key, expected_key);
    let got = c
        .get_state(dpb::GetStateRequest {
            store_name: STORE.into(),
            key: first.key.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(first.etag, got.etag);
    assert_eq!(first.data, got.data);

    let west = query(
        &mut c,
        json!({"filter": of_run(&run, json!({"IN": {"state": ["CA", "WA"]}}))}),
    )
    .await
    .expect("IN");
    assert_eq!(sorted(ids(&west)), [1013, 1028, 1036, 1042]);

    // Dev Ops anywhere, or Finance in CA or WA.
    let nested = json!({"OR": [
        {"EQ": {"person.org": "Dev Ops"}},
        {"AND": [
            {"EQ": {"person.org": "Finance"}},
            {"IN": {"state": ["CA", "WA"]}}
        ]}
    ]});
    let found = query(&mut c, json!({"filter": of_run(&run, nested)}))
        .await
        .expect("OR of AND");
    assert_eq!(sorted(ids(&found)), [1013, 1036, 1042, 1099]);

    let ranged = query(
        &mut c,
        json!({"filter": of_run(&run, json!({"AND": [
            {"GT": {"person.id": 1013}},
            {"NEQ": {"person.org": "Dev Ops"}}
        ]}))}),
    )
    .await
    .expect("GT and NEQ");
    assert_eq!(sorted(ids(&ranged)), [1028, 1071]);

    let everything = query(&mut c, json!({"filter": {"EQ": {"run": run}}}))
        .await
        .expect("EQ on the run");
    assert_eq!(everything.results.len(), 7, "the text value never matches");
}

#[tokio::test]
async fn sort_on_nested_keys_both_ways() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let (run, _) = seed(&mut c).await;
    let filter = json!({"EQ": {"run": run}});

    let asc = query(
        &mut c,
        json!({"filter": filter, "sort": [{"key": "person.id", "order": "ASC"}]}),
    )
    .await
    .expect("ASC");
    assert_eq!(ids(&asc), [1007, 1013, 1028, 1036, 1042, 1071, 1099]);

    let desc = query(
        &mut c,
        json!({"filter": filter, "sort": [{"key": "person.id", "order": "DESC"}]}),
    )
    .await
    .expect("DESC");
    assert_eq!(ids(&desc), [1099, 1071, 1042, 1036, 1028, 1013, 1007]);

    // Two keys: by org descending, then by id (ascending by default).
    let two = query(
        &mut c,
        json!({"filter": filter, "sort": [
            {"key": "person.org", "order": "DESC"},
            {"key": "person.id"}
        ]}),
    )
    .await
    .expect("two sort keys");
    assert_eq!(ids(&two), [1007, 1028, 1013, 1071, 1036, 1042, 1099]);
}

#[tokio::test]
async fn pages_follow_tokens_to_the_end() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let (run, _) = seed(&mut c).await;

    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let mut q = json!({
            "filter": {"EQ": {"run": run}},
            "sort": [{"key": "person.id", "order": "DESC"}],
            "page": {"limit": 3}
        });
        if !token.is_empty() {
            q["page"]["token"] = json!(token);
        }
        let page = query(&mut c, q).await.expect("page");
        assert!(page.results.len() <= 3);
        pages.push(ids(&page));
        token = page.token;
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "tokens never ended");
    }
    assert_eq!(
        pages,
        [vec![1099, 1071, 1042], vec![1036, 1028, 1013], vec![1007]]
    );

    let bad_token = query(
        &mut c,
        json!({"filter": {"EQ": {"run": run}}, "page": {"limit": 3, "token": "not-a-token"}}),
    )
    .await
    .expect_err("a token the store never issued");
    assert_eq!(bad_token.code(), Code::InvalidArgument, "{bad_token:?}");
    assert!(bad_token.message().contains("page.token"), "{bad_token:?}");
}

#[tokio::test]
async fn malformed_queries_are_invalid_arguments_naming_the_problem() {
    let plinth = Plinth::start();
    let mut c = dapr(&plinth).await;
    let cases = [
        (
            json!({"filter": {"LIKE": {"a": "b"}}}),
            "unknown operator \"LIKE\"",
        ),
        (
            json!({"filter": {"AND": [{"EQ": {"a": 1}}]}}),
            "filter.AND: must have at least two operands",
        ),
        (
            json!({"filter": {"IN": {"a": "b"}}}),
            "filter.IN.a: must be an array",
        ),
        (json!({"page": {"limit": -2}}), "page.limit"),
        (
            json!({"sort": [{"key": "a", "order": "SIDEWAYS"}]}),
            "sort[0].order",
        ),
    ];
    for (q, expected) in cases {
        let err = query(&mut c, q.clone()).await.expect_err("malformed");
        assert_eq!(err.code(), Code::InvalidArgument, "{q}: {err:?}");
        assert!(err.message().contains(expected), "{q}: {err:?}");
    }
    let not_json = c
        .query_state_alpha1(dpb::QueryStateRequest {
            store_name: STORE.into(),
            query: "{filter".into(),
            ..Default::default()
        })
        .await
        .expect_err("not JSON");
    assert_eq!(not_json.code(), Code::InvalidArgument);
    assert!(
        not_json.message().contains("not valid JSON"),
        "{not_json:?}"
    );
    let no_store = c
        .query_state_alpha1(dpb::QueryStateRequest {
            store_name: "nope".into(),
            query: "{}".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such store");
    assert_eq!(no_store.code(), Code::InvalidArgument);
}
