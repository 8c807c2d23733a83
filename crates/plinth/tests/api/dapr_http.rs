//! Dapr's HTTP API (`/v1.0`) on the `dapr-http` listener: routes, bodies, statuses and
//! Dapr error bodies, and the same building blocks as the gRPC APIs behind them.

use std::collections::HashMap;
use std::time::Duration;

use ::dapr::dapr::proto::common::v1 as common;
use ::dapr::dapr::proto::runtime::v1 as dpb;
use plinth_proto::runtime::v1 as lpb;
use serde_json::json;

use crate::common::{DaprHttp, Plinth, scratch, unique, write};
use crate::dapr::{EventStream, dapr};
use crate::upstream::Upstream;

const STORE: &str = "statestore";
const READY: Duration = Duration::from_secs(10);

fn state_path(key: &str) -> String {
    format!("/v1.0/state/{STORE}/{key}")
}

async fn save(http: &DaprHttp, items: serde_json::Value) -> crate::common::HttpResponse {
    http.post_json(&format!("/v1.0/state/{STORE}"), &items)
        .await
}

#[tokio::test]
async fn state_values_etags_and_missing_keys() {
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let (text, object, number) = (unique("text"), unique("object"), unique("number"));

    let saved = save(
        &http,
        json!([
            {"key": text, "value": "abc"},
            {"key": object, "value": {"b": 1, "a": [true, null]}},
        ]),
    )
    .await;
    assert_eq!(saved.status, 204, "{}", saved.text());
    // Raw JSON text, exactly as sent: big integers and decimals are not rounded.
    let raw = format!(r#"[{{"key": "{number}", "value": 12345678901234567890.50}}]"#);
    let saved = http
        .request(
            "POST",
            &format!("/v1.0/state/{STORE}"),
            &[("content-type", "application/json")],
            raw,
        )
        .await;
    assert_eq!(saved.status, 204, "{}", saved.text());

    let got = http.get(&state_path(&text)).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        &got.body[..],
        br#""abc""#,
        "a string is stored JSON-encoded"
    );
    assert_eq!(got.header("content-type"), Some("application/json"));
    let etag = got.header("etag").expect("ETag header").to_string();
    assert_eq!(
        http.get(&state_path(&object)).await.json(),
        json!({"b": 1, "a": [true, null]})
    );
    assert_eq!(
        &http.get(&state_path(&number)).await.body[..],
        b"12345678901234567890.50"
    );

    // A missing key is 204 with no body.
    let missing = http.get(&state_path(&unique("missing"))).await;
    assert_eq!(missing.status, 204);
    assert!(missing.body.is_empty());

    // ETags: the current one wins, a stale one conflicts, a malformed one is rejected.
    let updated = save(&http, json!([{"key": text, "value": "v2", "etag": etag}])).await;
    assert_eq!(updated.status, 204, "{}", updated.text());
    let message = save(&http, json!([{"key": text, "value": "v3", "etag": etag}]))
        .await
        .assert_error(409, "ERR_STATE_SAVE");
    assert!(message.contains("etag"), "{message}");
    save(
        &http,
        json!([{"key": text, "value": "v3", "etag": "not-a-number"}]),
    )
    .await
    .assert_error(400, "ERR_STATE_SAVE");
    // first-write without an ETag on an existing key conflicts.
    save(
        &http,
        json!([{"key": text, "value": "v3", "options": {"concurrency": "first-write"}}]),
    )
    .await
    .assert_error(409, "ERR_STATE_SAVE");
    let current = http
        .get(&state_path(&text))
        .await
        .header("etag")
        .expect("etag")
        .to_string();
    assert_ne!(current, etag);

    // DELETE takes the ETag in If-Match.
    http.delete(&state_path(&text), &[("if-match", &etag)])
        .await
        .assert_error(409, "ERR_STATE_DELETE");
    http.delete(&state_path(&text), &[("if-match", "bogus")])
        .await
        .assert_error(400, "ERR_STATE_DELETE");
    let deleted = http
        .delete(&state_path(&text), &[("if-match", &current)])
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text());
    assert_eq!(http.get(&state_path(&text)).await.status, 204);
    // Without If-Match, a delete is unconditional, and deleting a missing key succeeds.
    assert_eq!(http.delete(&state_path(&object), &[]).await.status, 204);
    assert_eq!(http.delete(&state_path(&object), &[]).await.status, 204);

    // Query metadata reaches the store (TTL) and comes back as metadata.* headers.
    let ttl = unique("ttl");
    let saved = http
        .post_json(
            &format!("/v1.0/state/{STORE}?metadata.ttlInSeconds=600"),
            &json!([{"key": ttl, "value": 1}]),
        )
        .await;
    assert_eq!(saved.status, 204, "{}", saved.text());
    let got = http
        .get(&format!("{}?consistency=strong", state_path(&ttl)))
        .await;
    assert_eq!(got.status, 200);
    assert!(
        got.header("metadata.ttlexpiretime").is_some(),
        "{:?}",
        got.headers
    );
    http.get(&format!("{}?consistency=sometimes", state_path(&ttl)))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
}

#[tokio::test]
async fn values_cross_between_http_and_grpc_as_dapr_stores_them() {
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let mut grpc = dapr(&plinth).await;
    let (from_http, from_grpc, typed, binary) = (
        unique("from-http"),
        unique("from-grpc"),
        unique("typed"),
        unique("binary"),
    );

    // Saved over HTTP, read over Dapr gRPC: the JSON encoding's bytes.
    save(
        &http,
        json!([{"key": from_http, "value": "abc"}, {"key": typed, "value": {"n": 1}}]),
    )
    .await;
    let got = grpc
        .get_state(dpb::GetStateRequest {
            store_name: STORE.into(),
            key: from_http.clone(),
            ..Default::default()
        })
        .await
        .expect("grpc get")
        .into_inner();
    assert_eq!(got.data, br#""abc""#);

    // Saved over gRPC as raw bytes, read over HTTP: the bytes as they are.
    grpc.save_state(dpb::SaveStateRequest {
        store_name: STORE.into(),
        states: vec![
            common::StateItem {
                key: from_grpc.clone(),
                value: b"plain text".to_vec(),
                metadata: HashMap::from([("contentType".to_string(), "text/plain".to_string())]),
                ..Default::default()
            },
            common::StateItem {
                key: binary.clone(),
                value: vec![0, 159, 146, 150],
                ..Default::default()
            },
        ],
    })
    .await
    .expect("grpc save");
    let got = http.get(&state_path(&from_grpc)).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"plain text");
    assert_eq!(
        got.header("content-type"),
        Some("text/plain"),
        "the content type the value was saved with"
    );
    let got = http.get(&state_path(&binary)).await;
    assert_eq!(&got.body[..], &[0, 159, 146, 150]);

    // Bulk answers are JSON: stored JSON as it is, other text as a string, bytes as base64.
    let bulk = http
        .post_json(
            &format!("/v1.0/state/{STORE}/bulk"),
            &json!({"keys": [from_http, typed, from_grpc, binary]}),
        )
        .await;
    assert_eq!(bulk.status, 200, "{}", bulk.text());
    let items = bulk.json();
    assert_eq!(items[0]["data"], "abc");
    assert_eq!(items[1]["data"], json!({"n": 1}));
    assert_eq!(items[2]["data"], "plain text");
    assert_eq!(items[3]["data"], "AJ+Slg==");

    // The Layotto API reads the same key too.
    let mut layotto = plinth.client().await;
    let seen = layotto
        .get_state(lpb::GetStateRequest {
            store_name: STORE.into(),
            key: typed.clone(),
            ..Default::default()
        })
        .await
        .expect("layotto get")
        .into_inner();
    assert_eq!(seen.data, br#"{"n":1}"#);
}

#[tokio::test]
async fn bulk_get_and_transactions() {
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let (a, b, c, missing) = (unique("a"), unique("b"), unique("c"), unique("missing"));
    save(
        &http,
        json!([{"key": a, "value": 1}, {"key": b, "value": "two"}]),
    )
    .await;

    for verb in ["POST", "PUT"] {
        let bulk = http
            .request(
                verb,
                &format!("/v1.0/state/{STORE}/bulk"),
                &[],
                json!({"keys": [a, b, missing], "parallelism": 2}).to_string(),
            )
            .await;
        assert_eq!(bulk.status, 200, "{}", bulk.text());
        let items = bulk.json();
        let items = items.as_array().expect("array");
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["key"], a.as_str());
        assert_eq!(items[0]["data"], 1);
        assert!(items[0]["etag"].is_string());
        assert_eq!(items[1]["data"], "two");
        assert_eq!(items[2]["key"], missing.as_str());
        assert!(items[2].get("data").is_none(), "{:?}", items[2]);
        assert!(items[2].get("etag").is_none(), "{:?}", items[2]);
    }
    let empty = http
        .post_json(&format!("/v1.0/state/{STORE}/bulk"), &json!({"keys": []}))
        .await;
    assert_eq!(empty.json(), json!([]));

    let a_etag = http
        .get(&state_path(&a))
        .await
        .header("etag")
        .expect("etag")
        .to_string();
    let tx = http
        .post_json(
            &format!("/v1.0/state/{STORE}/transaction"),
            &json!({
                "operations": [
                    {"operation": "upsert", "request": {"key": c, "value": {"x": 3}}},
                    {"operation": "upsert", "request": {"key": a, "value": 10, "etag": a_etag}},
                    {"operation": "delete", "request": {"key": b}},
                ],
                "metadata": {"partitionKey": "p"},
            }),
        )
        .await;
    assert_eq!(tx.status, 204, "{}", tx.text());
    assert_eq!(http.get(&state_path(&c)).await.json(), json!({"x": 3}));
    assert_eq!(http.get(&state_path(&a)).await.json(), json!(10));
    assert_eq!(http.get(&state_path(&b)).await.status, 204);

    // A stale ETag fails the whole transaction.
    let tx = http
        .post_json(
            &format!("/v1.0/state/{STORE}/transaction"),
            &json!({"operations": [
                {"operation": "upsert", "request": {"key": c, "value": "lost"}},
                {"operation": "delete", "request": {"key": a, "etag": a_etag}},
            ]}),
        )
        .await;
    tx.assert_error(409, "ERR_STATE_TRANSACTION");
    assert_eq!(http.get(&state_path(&c)).await.json(), json!({"x": 3}));

    let message = http
        .post_json(
            &format!("/v1.0/state/{STORE}/transaction"),
            &json!({"operations": [{"operation": "merge", "request": {"key": c}}]}),
        )
        .await
        .assert_error(400, "ERR_NOT_SUPPORTED_STATE_OPERATION");
    assert!(message.contains("merge"), "{message}");
    let message = http
        .post_json(
            &format!("/v1.0/state/{STORE}/transaction"),
            &json!({"operations": [{"operation": "upsert"}]}),
        )
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("operations[0].request"), "{message}");

    // `bulk` and `transaction` are keys too when read or deleted.
    save(
        &http,
        json!([{"key": "bulk", "value": "b"}, {"key": "transaction", "value": "t"}]),
    )
    .await;
    assert_eq!(http.get(&state_path("bulk")).await.json(), "b");
    assert_eq!(http.get(&state_path("transaction")).await.json(), "t");
    assert_eq!(http.delete(&state_path("bulk"), &[]).await.status, 204);
    assert_eq!(http.get(&state_path("bulk")).await.status, 204);
}

#[tokio::test]
async fn state_errors_have_dapr_codes_and_bodies() {
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let key = unique("k");

    // An unknown store, on every state route, before the body is read.
    let message = http
        .get("/v1.0/state/nostore/k")
        .await
        .assert_error(400, "ERR_STATE_STORE_NOT_FOUND");
    assert!(
        message.contains("nostore") && message.contains(STORE),
        "names the store and the configured ones: {message}"
    );
    http.delete("/v1.0/state/nostore/k", &[])
        .await
        .assert_error(400, "ERR_STATE_STORE_NOT_FOUND");
    for route in ["", "/bulk", "/transaction"] {
        http.request(
            "POST",
            &format!("/v1.0/state/nostore{route}"),
            &[],
            "not json",
        )
        .await
        .assert_error(400, "ERR_STATE_STORE_NOT_FOUND");
    }
    // A component of another kind is not a state store.
    http.get("/v1.0/state/pubsub/k")
        .await
        .assert_error(400, "ERR_STATE_STORE_NOT_FOUND");

    // Bad JSON names what was wrong.
    let message = http
        .request(
            "POST",
            &format!("/v1.0/state/{STORE}"),
            &[("content-type", "application/json")],
            "[{\"key\": ",
        )
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("line 1"), "{message}");
    let message = save(&http, json!([{"key": key, "value": 1}, {"key": 5}]))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("[1].key"), "{message}");
    let message = save(&http, json!({"key": key}))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("sequence"), "{message}");
    let message = save(&http, json!([{"value": 1}]))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("[0].key"), "{message}");
    let message = save(
        &http,
        json!([{"key": key, "value": 1, "options": {"concurrency": "sometimes"}}]),
    )
    .await
    .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("[0].options.concurrency"), "{message}");
    http.request("POST", &format!("/v1.0/state/{STORE}"), &[], "")
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");

    // Content types: JSON, text and curl's form default pass; others are 415.
    for ok in [
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/merge-patch+json",
    ] {
        let resp = http
            .request(
                "POST",
                &format!("/v1.0/state/{STORE}"),
                &[("content-type", ok)],
                json!([{"key": key, "value": ok}]).to_string(),
            )
            .await;
        assert_eq!(resp.status, 204, "{ok}: {}", resp.text());
    }
    let message = http
        .request(
            "POST",
            &format!("/v1.0/state/{STORE}"),
            &[("content-type", "application/xml")],
            "<state/>",
        )
        .await
        .assert_error(415, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("application/xml"), "{message}");
    http.request(
        "POST",
        &format!("/v1.0/state/{STORE}/bulk"),
        &[("content-type", "image/png")],
        "{}",
    )
    .await
    .assert_error(415, "ERR_MALFORMED_REQUEST");

    // Keys the building block refuses.
    save(&http, json!([{"key": "a||b", "value": 1}]))
        .await
        .assert_error(400, "ERR_STATE_SAVE");
}

#[tokio::test]
async fn body_limit_unknown_routes_and_missing_kinds() {
    // No state store at all, and a 1 KiB body limit.
    let dir = scratch("dapr-http-limits");
    write(
        &dir,
        "resources/pubsub.yaml",
        "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
",
    );
    let plinth = Plinth::start_with(
        &[
            "--resources-path",
            "resources",
            "--max-message-size",
            "1024",
        ],
        Some(&dir),
    );
    let http = plinth.dapr_http();

    let topic = unique("limits");
    let small = http
        .request(
            "POST",
            &format!("/v1.0/publish/pubsub/{topic}"),
            &[("content-type", "text/plain")],
            "x".repeat(512),
        )
        .await;
    assert_eq!(small.status, 204, "{}", small.text());
    http.request(
        "POST",
        &format!("/v1.0/publish/pubsub/{topic}"),
        &[("content-type", "text/plain")],
        "x".repeat(4096),
    )
    .await
    .assert_error(413, "ERR_BODY_READ");
    let message = http
        .request(
            "POST",
            "/v1.0-alpha1/publish/bulk/pubsub/t",
            &[("content-type", "application/json")],
            format!(
                "[{{\"entryId\": \"1\", \"event\": \"{}\"}}]",
                "x".repeat(4096)
            ),
        )
        .await
        .assert_error(413, "ERR_BODY_READ");
    assert!(message.contains("1024 bytes"), "{message}");
    // Without a declared length, the limit stops the body as it streams in.
    let chunked = chunked_post(plinth.dapr_http, "/v1.0/publish/pubsub/t", 4096).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert!(chunked.contains("ERR_BODY_READ"), "{chunked}");

    http.get("/v1.0/state/statestore/k")
        .await
        .assert_error(500, "ERR_STATE_STORE_NOT_CONFIGURED");
    http.post_json(
        "/v1.0-alpha1/lock/lockstore",
        &json!({"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 5}),
    )
    .await
    .assert_error(500, "ERR_LOCK_STORE_NOT_CONFIGURED");
    http.get("/v1.0/secrets/secretstore/x")
        .await
        .assert_error(500, "ERR_SECRET_STORES_NOT_CONFIGURED");
    http.get("/v1.0/configuration/configstore")
        .await
        .assert_error(500, "ERR_CONFIGURATION_STORE_NOT_CONFIGURED");

    // Unknown routes are 404 and wrong verbs 405, with Dapr bodies.
    let message = http
        .get("/v1.0/nothing/here")
        .await
        .assert_error(404, "ERR_NOT_FOUND");
    assert!(message.contains("/v1.0/nothing/here"), "{message}");
    http.get("/").await.assert_error(404, "ERR_NOT_FOUND");
    let wrong = http
        .request("PATCH", "/v1.0/state/statestore/k", &[], "")
        .await;
    wrong.assert_error(405, "ERR_METHOD_NOT_ALLOWED");
    let allow = wrong.header("allow").unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
    http.get("/v1.0/publish/pubsub/t")
        .await
        .assert_error(405, "ERR_METHOD_NOT_ALLOWED");
    http.request("GET", "/v1.0/shutdown", &[], "")
        .await
        .assert_error(405, "ERR_METHOD_NOT_ALLOWED");

    // APIs without a building block say so.
    for (verb, path, what) in [
        ("POST", "/v1.0/actors/cart/1/method/add", "actors"),
        (
            "POST",
            "/v1.0-beta1/workflows/dapr/order/start",
            "workflows",
        ),
        ("POST", "/v1.0-alpha1/jobs/nightly", "jobs"),
        ("PUT", "/v1.0-alpha1/crypto/keys/encrypt", "cryptography"),
        (
            "POST",
            "/v1.0-alpha2/conversation/llm/converse",
            "conversation",
        ),
    ] {
        let message = http
            .request(verb, path, &[], "")
            .await
            .assert_error(501, "ERR_API_UNIMPLEMENTED");
        assert!(message.contains(what), "{path}: {message}");
    }
}

/// POST `size` bytes with chunked transfer encoding over a raw connection; the response
/// as text.
async fn chunked_post(addr: std::net::SocketAddr, path: &str, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: plinth\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.expect("head");
    for _ in 0..size / 256 {
        let chunk = format!("100\r\n{}\r\n", "y".repeat(256));
        // The server may answer and close before the whole body is sent.
        if conn.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(READY, conn.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_bulk_publish_reach_a_subscriber() {
    use dpb::topic_event_response::TopicEventResponseStatus as S;
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let mut grpc = dapr(&plinth).await;
    let topic = unique("http-topic");
    let mut stream = EventStream::open(&mut grpc, &topic).await;

    // The body is the event; the Content-Type is its content type.
    let published = http
        .request(
            "POST",
            &format!("/v1.0/publish/pubsub/{topic}?metadata.cloudevent.id=ev-1"),
            &[("content-type", "application/json")],
            r#"{"order": 7, "total": 12.50}"#,
        )
        .await;
    assert_eq!(published.status, 204, "{}", published.text());
    let event = stream.next_event().await;
    assert_eq!(event.id, "ev-1");
    assert_eq!(event.data_content_type, "application/json");
    assert_eq!(event.data, br#"{"order": 7, "total": 12.50}"#);
    assert_eq!(event.topic, topic);
    assert_eq!(event.source, "plinth");
    stream.answer(&event.id, S::Success).await;

    let published = http
        .request(
            "PUT",
            &format!("/v1.0/publish/pubsub/{topic}"),
            &[("content-type", "text/plain")],
            "hello",
        )
        .await;
    assert_eq!(published.status, 204, "{}", published.text());
    let event = stream.next_event().await;
    assert_eq!(event.data, b"hello");
    assert_eq!(event.data_content_type, "text/plain");
    stream.answer(&event.id, S::Success).await;

    // rawPayload: the body goes on the broker as it is.
    let published = http
        .request(
            "POST",
            &format!("/v1.0/publish/pubsub/{topic}?metadata.rawPayload=true"),
            &[("content-type", "application/octet-stream")],
            "raw bytes",
        )
        .await;
    assert_eq!(published.status, 204, "{}", published.text());
    let event = stream.next_event().await;
    assert_eq!(event.data, b"raw bytes");
    stream.answer(&event.id, S::Success).await;
    http.request(
        "POST",
        &format!("/v1.0/publish/pubsub/{topic}?metadata.rawPayload=maybe"),
        &[],
        "x",
    )
    .await
    .assert_error(400, "ERR_PUBSUB_PUBLISH_MESSAGE");
    http.request(
        "POST",
        &format!("/v1.0/publish/pubsub/{topic}"),
        &[("content-type", "application/json")],
        "{not json",
    )
    .await
    .assert_error(400, "ERR_PUBSUB_PUBLISH_MESSAGE");

    // Topics may hold slashes.
    let nested = format!("{topic}/orders/eu");
    let mut nested_stream = EventStream::open(&mut grpc, &nested).await;
    let published = http
        .request(
            "POST",
            &format!("/v1.0/publish/pubsub/{nested}"),
            &[("content-type", "text/plain")],
            "nested",
        )
        .await;
    assert_eq!(published.status, 204, "{}", published.text());
    let event = nested_stream.next_event().await;
    assert_eq!(event.topic, nested);
    nested_stream.answer(&event.id, S::Success).await;

    // Bulk: each entry by its content type; 204 when every entry was published.
    let bulk = http
        .post_json(
            &format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}"),
            &json!([
                {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
                {"entryId": "2", "event": "two", "contentType": "text/plain"},
                {"entryId": "3", "event": "AAEC", "contentType": "application/octet-stream",
                 "metadata": {"cloudevent.type": "bulk.test"}},
            ]),
        )
        .await;
    assert_eq!(bulk.status, 204, "{}", bulk.text());
    let mut seen = HashMap::new();
    for _ in 0..3 {
        let event = stream.next_event().await;
        stream.answer(&event.id, S::Success).await;
        seen.insert(event.data.clone(), event);
    }
    assert!(
        seen.contains_key(br#"{"n":1}"#.as_slice()),
        "{:?}",
        seen.keys()
    );
    assert!(seen.contains_key(b"two".as_slice()));
    let binary = seen.get([0u8, 1, 2].as_slice()).expect("base64 decoded");
    assert_eq!(binary.r#type, "bulk.test");

    // Dapr's partial failure: the failed entries with the error code, the others published.
    let partial = http
        .post_json(
            &format!("/v1.0/publish/bulk/pubsub/{topic}"),
            &json!([
                {"entryId": "ok", "event": "fine", "contentType": "text/plain"},
                {"entryId": "bad", "event": 5, "contentType": "application/cloudevents+json"},
            ]),
        )
        .await;
    assert_eq!(partial.status, 400, "{}", partial.text());
    let body = partial.json();
    assert_eq!(body["errorCode"], "ERR_PUBSUB_PUBLISH_MESSAGE");
    assert_eq!(
        body["failedEntries"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    assert_eq!(body["failedEntries"][0]["entryId"], "bad");
    assert!(body["failedEntries"][0]["error"].is_string());
    let event = stream.next_event().await;
    assert_eq!(event.data, b"fine");
    stream.answer(&event.id, S::Success).await;

    // Bulk requests refused whole.
    http.post_json(
        &format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}"),
        &json!([{"entryId": "1", "event": "a", "contentType": "text/plain"},
                {"entryId": "1", "event": "b", "contentType": "text/plain"}]),
    )
    .await
    .assert_error(400, "ERR_PUBSUB_EVENTS_SER");
    let message = http
        .post_json(
            &format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}"),
            &json!([{"entryId": "1", "event": {"not": "base64"}, "contentType": "application/octet-stream"}]),
        )
        .await
        .assert_error(400, "ERR_PUBSUB_EVENTS_SER");
    assert!(message.contains("entryId"), "{message}");
    http.request(
        "POST",
        &format!("/v1.0-alpha1/publish/bulk/pubsub/{topic}"),
        &[],
        "[{",
    )
    .await
    .assert_error(400, "ERR_PUBSUB_EVENTS_SER");

    // No topic.
    http.request("POST", "/v1.0/publish/pubsub/", &[], "x")
        .await
        .assert_error(404, "ERR_TOPIC_NAME_EMPTY");
    http.post_json("/v1.0-alpha1/publish/bulk/pubsub/", &json!([]))
        .await
        .assert_error(404, "ERR_TOPIC_NAME_EMPTY");

    // Unknown pub/sub.
    let message = http
        .request("POST", "/v1.0/publish/nopubsub/t", &[], "x")
        .await
        .assert_error(404, "ERR_PUBSUB_NOT_FOUND");
    assert!(message.contains("nopubsub"), "{message}");
    http.post_json("/v1.0-alpha1/publish/bulk/nopubsub/t", &json!([]))
        .await
        .assert_error(404, "ERR_PUBSUB_NOT_FOUND");
}

#[tokio::test]
async fn bindings_answer_with_data_and_metadata_headers() {
    let mut upstream = Upstream::start("http-binding").await;
    let plinth = crate::binding::start_with_http_binding(&upstream.url()).await;
    let http = plinth.dapr_http();

    let resp = http
        .post_json(
            "/v1.0/bindings/webhook",
            &json!({"operation": "post", "data": {"order": 1}, "metadata": {"path": "/orders"}}),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = upstream.next_request(READY).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/orders");
    assert_eq!(seen.body, br#"{"order":1}"#, "data goes out as its JSON");
    assert_eq!(&resp.body[..], br#"echo:{"order":1}"#);
    assert_eq!(
        resp.header("metadata.statuscode"),
        Some("200"),
        "{:?}",
        resp.headers
    );

    // A string is sent JSON-encoded, as Dapr sends it.
    let resp = http
        .request(
            "PUT",
            "/v1.0/bindings/webhook",
            &[],
            json!({"operation": "post", "data": "text"}).to_string(),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.next_request(READY).await.body, br#""text""#);

    let message = http
        .post_json("/v1.0/bindings/webhook", &json!({"operation": "explode"}))
        .await
        .assert_error(400, "ERR_INVOKE_OUTPUT_BINDING");
    assert!(message.contains("explode"), "{message}");
    http.post_json("/v1.0/bindings/nobinding", &json!({"operation": "post"}))
        .await
        .assert_error(500, "ERR_INVOKE_OUTPUT_BINDING");
    http.request(
        "POST",
        "/v1.0/bindings/webhook",
        &[("content-type", "application/json")],
        "{\"operation\": 1}",
    )
    .await
    .assert_error(400, "ERR_MALFORMED_REQUEST");
}

#[tokio::test]
async fn secrets_and_configuration() {
    let dir = scratch("dapr-http-secrets");
    let prefix = format!(
        "{}_",
        unique("HTTPSEC").replace('-', "_").to_ascii_uppercase()
    );
    write(
        &dir,
        "resources/secrets.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: prefixed
spec:
  type: secretstores.local.env
  version: v1
  metadata:
    - name: prefix
      value: {prefix}
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: configstore
spec:
  type: configuration.in-memory
  version: v1
"
        ),
    );
    let (db, api) = (format!("{prefix}DB"), format!("{prefix}API"));
    let plinth = Plinth::try_start_with_env(
        &["--resources-path", "resources"],
        &[(&db, "db-pass"), (&api, "api-key")],
        Some(&dir),
    )
    .expect("plinth starts");
    plinth.wait_ready(READY).await;
    let http = plinth.dapr_http();

    let one = http
        .get("/v1.0/secrets/prefixed/DB?metadata.version=1")
        .await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json(), json!({"DB": "db-pass"}));
    let all = http.get("/v1.0/secrets/prefixed/bulk").await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(
        all.json(),
        json!({"DB": {"DB": "db-pass"}, "API": {"API": "api-key"}})
    );
    http.get("/v1.0/secrets/prefixed/NOPE")
        .await
        .assert_error(404, "ERR_SECRET_GET");
    // Dapr answers an unknown secret store with 401.
    http.get("/v1.0/secrets/nostore/DB")
        .await
        .assert_error(401, "ERR_SECRET_STORE_NOT_FOUND");

    // Configuration items saved through Layotto's API, read through Dapr's HTTP API.
    let (k1, k2) = (unique("k1"), unique("k2"));
    let mut layotto = plinth.client().await;
    layotto
        .save_configuration(lpb::SaveConfigurationRequest {
            store_name: "configstore".into(),
            app_id: String::new(),
            items: [(&k1, "v1"), (&k2, "v2")]
                .into_iter()
                .map(|(k, v)| lpb::ConfigurationItem {
                    key: k.clone(),
                    content: v.into(),
                    ..Default::default()
                })
                .collect(),
            metadata: HashMap::new(),
        })
        .await
        .expect("save configuration");
    for version in ["v1.0", "v1.0-alpha1"] {
        let got = http
            .get(&format!(
                "/{version}/configuration/configstore?key={k1}&key={k2}"
            ))
            .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let items = got.json();
        assert_eq!(items[&k1]["value"], "v1", "{items}");
        assert_eq!(items[&k2]["value"], "v2", "{items}");
        assert!(items[&k1]["version"].is_string(), "{items}");
    }
    let one = http
        .get(&format!("/v1.0/configuration/configstore?key={k1}"))
        .await
        .json();
    assert_eq!(one.as_object().map(|o| o.len()), Some(1), "{one}");
    let none = http
        .get(&format!(
            "/v1.0/configuration/configstore?key={}",
            unique("absent")
        ))
        .await;
    assert_eq!(none.status, 204, "{}", none.text());
    http.get("/v1.0/configuration/nostore")
        .await
        .assert_error(400, "ERR_CONFIGURATION_STORE_NOT_FOUND");
}

#[tokio::test]
async fn lock_and_unlock_answer_with_dapr_statuses() {
    let plinth = Plinth::start();
    let http = plinth.dapr_http();
    let resource = unique("resource");
    let lock = |owner: &str, expiry: serde_json::Value| json!({"resourceId": resource, "lockOwner": owner, "expiryInSeconds": expiry});

    let got = http
        .post_json("/v1.0-alpha1/lock/lockstore", &lock("alice", json!(30)))
        .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), json!({"success": true}));
    // Taken: success is false, not an error. protojson also takes integers as strings.
    let got = http
        .post_json("/v1.0-alpha1/lock/lockstore", &lock("bob", json!("30")))
        .await;
    assert_eq!(got.json(), json!({"success": false}));

    let unlock = |owner: &str| json!({"resourceId": resource, "lockOwner": owner});
    let got = http
        .post_json("/v1.0-alpha1/unlock/lockstore", &unlock("bob"))
        .await;
    assert_eq!(got.json(), json!({"status": 2}), "belongs to others");
    let got = http
        .post_json("/v1.0-alpha1/unlock/lockstore", &unlock("alice"))
        .await;
    assert_eq!(got.json(), json!({"status": 0}), "success");
    let got = http
        .post_json("/v1.0-alpha1/unlock/lockstore", &unlock("alice"))
        .await;
    assert_eq!(got.json(), json!({"status": 1}), "does not exist");

    // Proto field names work too.
    let got = http
        .post_json(
            "/v1.0-alpha1/lock/lockstore",
            &json!({"resource_id": resource, "lock_owner": "carol", "expiry_in_seconds": 5}),
        )
        .await;
    assert_eq!(got.json(), json!({"success": true}));

    let message = http
        .post_json("/v1.0-alpha1/lock/lockstore", &lock("alice", json!(0)))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    assert!(message.contains("expiryInSeconds"), "{message}");
    http.post_json(
        "/v1.0-alpha1/lock/lockstore",
        &json!({"lockOwner": "a", "expiryInSeconds": 5}),
    )
    .await
    .assert_error(400, "ERR_MALFORMED_REQUEST");
    http.post_json(
        "/v1.0-alpha1/unlock/lockstore",
        &json!({"resourceId": resource}),
    )
    .await
    .assert_error(400, "ERR_MALFORMED_REQUEST");
    http.post_json("/v1.0-alpha1/lock/lockstore", &lock("alice", json!("soon")))
        .await
        .assert_error(400, "ERR_MALFORMED_REQUEST");
    http.post_json("/v1.0-alpha1/lock/nostore", &lock("alice", json!(5)))
        .await
        .assert_error(400, "ERR_LOCK_STORE_NOT_FOUND");
    http.post_json("/v1.0-alpha1/unlock/nostore", &unlock("alice"))
        .await
        .assert_error(400, "ERR_LOCK_STORE_NOT_FOUND");
}

#[tokio::test]
async fn metadata_health_and_metrics() {
    let dir = scratch("dapr-http-metadata");
    let topic = unique("declared");
    write(
        &dir,
        "resources/subscription.yaml",
        &format!(
            "apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders
spec:
  pubsubname: pubsub
  topic: {topic}
  routes:
    default: /orders
  deadLetterTopic: {topic}-dead
"
        ),
    );
    let plinth = Plinth::start_ready_with(
        &[
            "--resources-path",
            "resources",
            "--app-id",
            "http-meta",
            "--app-max-concurrency",
            "7",
        ],
        Some(&dir),
    )
    .await;
    let http = plinth.dapr_http();

    let attribute = unique("attr");
    let put = http
        .request(
            "PUT",
            &format!("/v1.0/metadata/{attribute}"),
            &[("content-type", "text/plain")],
            "the value",
        )
        .await;
    assert_eq!(put.status, 204, "{}", put.text());

    let got = http.get("/v1.0/metadata").await;
    assert_eq!(got.status, 200);
    let doc = got.json();
    assert_eq!(doc["id"], "http-meta");
    assert!(
        doc["runtimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("plinth-")),
        "{doc}"
    );
    assert_eq!(doc["extended"][&attribute], "the value", "{doc}");
    assert_eq!(doc["extended"]["daprRuntimeVersion"], doc["runtimeVersion"]);
    let components = doc["components"].as_array().expect("components");
    let state = components
        .iter()
        .find(|c| c["name"] == STORE)
        .expect("statestore listed");
    assert_eq!(state["type"], "state.in-memory");
    let caps = state["capabilities"].as_array().expect("capabilities");
    assert!(caps.iter().any(|c| c == "ETAG") && caps.iter().any(|c| c == "TRANSACTIONAL"));
    assert!(components.iter().any(|c| c["name"] == "pubsub"));
    assert_eq!(doc["subscriptions"][0]["pubsubname"], "pubsub");
    assert_eq!(doc["subscriptions"][0]["topic"], topic.as_str());
    assert_eq!(doc["subscriptions"][0]["type"], "DECLARATIVE");
    assert_eq!(
        doc["subscriptions"][0]["deadLetterTopic"],
        format!("{topic}-dead")
    );
    let app = &doc["appConnectionProperties"];
    assert_eq!(app["protocol"], "http", "{doc}");
    assert_eq!(app["channelAddress"], "127.0.0.1", "{doc}");
    assert_eq!(app["maxConcurrency"], 7, "{doc}");
    assert!(app.get("port").is_none(), "no app port: {doc}");
    assert_eq!(doc["actorRuntime"]["runtimeStatus"], "DISABLED");

    // Dapr's gRPC GetMetadata shows the same snapshot.
    let mut grpc = dapr(&plinth).await;
    let meta = grpc
        .get_metadata(dpb::GetMetadataRequest {})
        .await
        .expect("grpc metadata")
        .into_inner();
    assert_eq!(meta.id, "http-meta");
    assert_eq!(
        meta.extended_metadata.get(&attribute).map(String::as_str),
        Some("the value")
    );
    assert_eq!(meta.runtime_version, doc["runtimeVersion"]);
    assert_eq!(meta.registered_components.len(), components.len());
    assert_eq!(meta.subscriptions.len(), 1);
    let props = meta.app_connection_properties.expect("app connection");
    assert_eq!(
        (props.protocol.as_str(), props.max_concurrency),
        ("http", 7)
    );

    // Health: ready, the app id matches, and the outbound check passes.
    let healthz = http.get("/v1.0/healthz").await;
    assert_eq!(healthz.status, 204, "{}", healthz.text());
    assert!(healthz.body.is_empty());
    assert_eq!(http.get("/v1.0/healthz?appid=http-meta").await.status, 204);
    http.get("/v1.0/healthz?appid=someone-else")
        .await
        .assert_error(500, "ERR_HEALTH_APPID_NOT_MATCH");
    assert_eq!(http.get("/v1.0/healthz/outbound").await.status, 204);

    // Requests are counted by route template, never by raw path.
    let key = unique("metric-key");
    assert_eq!(http.get(&state_path(&key)).await.status, 204);
    let (_, metrics) = plinth.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("plinth_api_requests_total")
                && l.contains(r#"api="dapr-http""#)
                && l.contains(r#"method="GET /v1.0/state/{store}/{key}""#)
                && l.contains(r#"code="204""#)
        })
        .unwrap_or_else(|| panic!("no dapr-http state metric in:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
    assert!(!metrics.contains(&key), "the raw path is not a label");
    assert!(
        metrics.contains(r#"method="GET /v1.0/healthz""#),
        "healthz counted"
    );
}

#[tokio::test]
async fn healthz_is_500_while_a_component_is_down() {
    let dir = scratch("dapr-http-down");
    write(
        &dir,
        "blocker",
        "a regular file: no directory can be made beneath it",
    );
    write(
        &dir,
        "resources/files.yaml",
        "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: brokenfiles
spec:
  type: file.local
  version: v1
  metadata:
    - name: rootPath
      value: blocker/files
",
    );
    let plinth = Plinth::start_with(&["--resources-path", "resources"], Some(&dir));
    let http = plinth.dapr_http();
    let message = http
        .get("/v1.0/healthz")
        .await
        .assert_error(500, "ERR_HEALTH_NOT_READY");
    assert!(message.contains("brokenfiles"), "{message}");
    // The APIs serve nonetheless: that is what the SDKs wait for.
    assert_eq!(http.get("/v1.0/healthz/outbound").await.status, 204);
}

#[tokio::test]
async fn shutdown_answers_then_stops_the_process() {
    let mut plinth = Plinth::start();
    let http = plinth.dapr_http();
    let resp = http
        .request("POST", "/v1.0/shutdown", &[], bytes::Bytes::new())
        .await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    assert_eq!(plinth.wait_exit(Duration::from_secs(15)), Some(0));
    plinth.wait_log("shutdown requested through the API", Duration::from_secs(1));
}

#[tokio::test]
async fn state_query_over_http() {
    let plinth = Plinth::start_ready_with(&["--app-id", "http-query"], None).await;
    let http = plinth.dapr_http();
    let tag = unique("q");
    let items: Vec<serde_json::Value> = (1..=3)
        .map(|n| json!({"key": format!("{tag}-{n}"), "value": {"tag": tag, "n": n}}))
        .collect();
    assert_eq!(save(&http, json!(items)).await.status, 204);
    let query = json!({
        "filter": {"EQ": {"tag": tag}},
        "sort": [{"key": "n", "order": "DESC"}],
        "page": {"limit": 2},
    });
    let resp = http
        .post_json("/v1.0-alpha1/state/statestore/query", &query)
        .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let page = resp.json();
    let results = page["results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "{page}");
    assert_eq!(results[0]["key"], format!("{tag}-3"));
    assert_eq!(results[0]["data"], json!({"tag": tag, "n": 3}));
    assert!(results[0]["etag"].as_str().is_some(), "{page}");
    let token = page["token"].as_str().expect("a next page").to_string();
    let mut next = query.clone();
    next["page"]["token"] = json!(token);
    let resp = http
        .post_json("/v1.0-alpha1/state/statestore/query", &next)
        .await;
    let page = resp.json();
    assert_eq!(page["results"].as_array().map(Vec::len), Some(1), "{page}");
    assert!(page.get("token").is_none(), "{page}");

    let message = http
        .post_json(
            "/v1.0-alpha1/state/statestore/query",
            &json!({"filter": {"LIKE": {"tag": "x"}}}),
        )
        .await
        .assert_error(400, "ERR_STATE_QUERY");
    assert!(message.contains("LIKE"), "{message}");
    http.post_json("/v1.0-alpha1/state/nostore/query", &query)
        .await
        .assert_error(400, "ERR_STATE_STORE_NOT_FOUND");
}

#[tokio::test]
async fn answers_over_the_body_limit_are_refused_on_both_protocols() {
    let plinth = Plinth::start_ready_with(&["--max-body-size", "4Ki"], None).await;
    let http = plinth.dapr_http();
    let (a, b) = (unique("big-a"), unique("big-b"));
    let value = "v".repeat(3000);
    for key in [&a, &b] {
        let resp = save(&http, json!([{"key": key, "value": value}])).await;
        assert_eq!(resp.status, 204, "{}", resp.text());
    }
    // Each value fits; both together do not.
    assert_eq!(http.get(&state_path(&a)).await.status, 200);
    let message = http
        .post_json(
            &format!("/v1.0/state/{STORE}/bulk"),
            &json!({"keys": [a, b]}),
        )
        .await
        .assert_error(500, "ERR_RESPONSE_TOO_LARGE");
    assert!(message.contains("4096"), "{message}");
    let err = dapr(&plinth)
        .await
        .get_bulk_state(dpb::GetBulkStateRequest {
            store_name: STORE.into(),
            keys: vec![a, b],
            ..Default::default()
        })
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            err.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{err}"
    );
}
