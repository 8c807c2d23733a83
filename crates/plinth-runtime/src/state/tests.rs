use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use plinth_components::state::memory::InMemoryStateStore;
use plinth_core::component::state::{GetRequest, GetResponse, SetRequest, StateFeatures};
use plinth_core::component::{Component, Instance};
use plinth_core::registry::Registry;
use plinth_core::{ComponentSpec, ErrorKind};

use super::*;
use crate::components::Status;
use crate::metrics::Metrics;

/// A store without the query capability, as most key/value backends are.
#[derive(Debug, Default)]
struct NoQuery(InMemoryStateStore);

#[async_trait]
impl Component for NoQuery {}

#[async_trait]
impl StateStore for NoQuery {
    fn features(&self) -> StateFeatures {
        StateFeatures::default()
    }
    async fn get(&self, req: GetRequest) -> Result<Option<GetResponse>> {
        self.0.get(req).await
    }
    async fn set(&self, req: SetRequest) -> Result<()> {
        self.0.set(req).await
    }
    async fn delete(&self, req: DeleteRequest) -> Result<()> {
        self.0.delete(req).await
    }
}

async fn host() -> Arc<ComponentHost> {
    let mut registry = Registry::new();
    registry.register("state.in-memory", |_| {
        Ok(Instance::State(Arc::new(InMemoryStateStore::new())))
    });
    registry.register("state.noquery", |_| {
        Ok(Instance::State(Arc::new(NoQuery::default())))
    });
    let host = ComponentHost::new(registry, BTreeMap::new(), Arc::new(Metrics::new()));
    host.add_all(vec![
        ComponentSpec::new("store", "state.in-memory"),
        ComponentSpec::new("shared", "state.in-memory").with_metadata(keys::KEY_PREFIX, "none"),
        ComponentSpec::new("plain", "state.noquery"),
    ])
    .expect("add");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while host.health().iter().any(|c| c.status != Status::Up) {
        assert!(tokio::time::Instant::now() < deadline, "components not UP");
        tokio::task::yield_now().await;
    }
    host
}

fn put(key: &str, json: &str) -> SetRequest {
    SetRequest {
        key: key.into(),
        value: Bytes::from(json.to_owned()),
        ..Default::default()
    }
}

fn keys_of(resp: &QueryResponse) -> Vec<&str> {
    resp.results.iter().map(|r| r.key.as_str()).collect()
}

#[tokio::test]
async fn query_sees_only_the_apps_keys_and_returns_them_unprefixed() {
    let host = host().await;
    let (a, b) = (StateApi::new(host.clone(), "a"), StateApi::new(host, "b"));
    for (api, name) in [(&a, "store"), (&a, "shared"), (&b, "store")] {
        api.save(
            name,
            vec![put("k1", r#"{"n": 1}"#), put("k2", r#"{"n": 2}"#)],
        )
        .await
        .expect("save");
    }
    b.save("store", vec![put("k3", r#"{"n": 3}"#)])
        .await
        .expect("save");
    let filter = br#"{"filter": {"GTE": {"n": 2}}}"#;
    let of_a = a
        .query("store", filter, Metadata::new())
        .await
        .expect("query");
    assert_eq!(keys_of(&of_a), ["k2"]);
    let of_b = b
        .query("store", filter, Metadata::new())
        .await
        .expect("query");
    assert_eq!(keys_of(&of_b), ["k2", "k3"]);
    // Under keyPrefix none every key is everyone's.
    let shared = b
        .query("shared", b"{}", Metadata::new())
        .await
        .expect("query");
    assert_eq!(keys_of(&shared), ["k1", "k2"]);
}

#[tokio::test]
async fn query_errors() {
    let host = host().await;
    let api = StateApi::new(host, "a");
    let unsupported = api
        .query("plain", b"{}", Metadata::new())
        .await
        .expect_err("no query capability");
    assert_eq!(unsupported.kind(), ErrorKind::Internal);
    assert!(
        unsupported.message().contains("does not support querying"),
        "{unsupported}"
    );
    let malformed = api
        .query(
            "store",
            br#"{"filter": {"LIKE": {"a": 1}}}"#,
            Metadata::new(),
        )
        .await
        .expect_err("unknown operator");
    assert_eq!(malformed.kind(), ErrorKind::InvalidArgument);
    assert!(malformed.message().contains("LIKE"), "{malformed}");
    let token = api
        .query(
            "store",
            br#"{"page": {"limit": 1, "token": "abc"}}"#,
            Metadata::new(),
        )
        .await
        .expect_err("a token the store did not issue");
    assert_eq!(token.kind(), ErrorKind::InvalidArgument);
    let missing = api
        .query("nope", b"{}", Metadata::new())
        .await
        .expect_err("no such store");
    assert_eq!(missing.kind(), ErrorKind::InvalidArgument);
}
