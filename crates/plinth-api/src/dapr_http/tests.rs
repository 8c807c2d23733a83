use axum::http::{HeaderMap, HeaderValue, StatusCode, header};

use super::error::MALFORMED_REQUEST;
use super::extract::{Query, check_json_content_type, decode_json};
use super::unimplemented_api;

fn with_content_type(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(value).expect("header"),
    );
    headers
}

#[test]
fn json_routes_take_json_text_and_form_content_types_only() {
    assert!(check_json_content_type(&HeaderMap::new()).is_ok());
    for ok in [
        "application/json",
        "Application/JSON; charset=utf-8",
        "application/cloudevents+json",
        "application/vnd.api+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
    ] {
        assert!(
            check_json_content_type(&with_content_type(ok)).is_ok(),
            "{ok}"
        );
    }
    for bad in [
        "application/xml",
        "image/png",
        "text/html",
        "multipart/form-data",
        "json",
    ] {
        let err = check_json_content_type(&with_content_type(bad)).expect_err(bad);
        assert_eq!(err.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad}");
        assert_eq!(err.code(), MALFORMED_REQUEST);
        assert!(err.message().contains(bad), "{}", err.message());
    }
}

#[derive(Debug, serde::Deserialize)]
struct Item {
    #[allow(dead_code)]
    key: String,
    #[allow(dead_code)]
    value: Option<Box<serde_json::value::RawValue>>,
}

#[test]
fn bad_json_names_the_field_and_position() {
    let err = decode_json::<Vec<Item>>(br#"[{"key": "a"}, {"key": 7}]"#).expect_err("type");
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    assert_eq!(err.code(), MALFORMED_REQUEST);
    assert!(err.message().contains("[1].key"), "{}", err.message());

    let err = decode_json::<Vec<Item>>(b"[{").expect_err("truncated");
    assert!(err.message().contains("line 1"), "{}", err.message());
    let err = decode_json::<Vec<Item>>(b"  ").expect_err("empty");
    assert!(err.message().contains("empty"), "{}", err.message());
    let err = decode_json::<Vec<Item>>(br#"[] []"#).expect_err("trailing");
    assert!(err.message().contains("trailing"), "{}", err.message());

    // Raw JSON values come through the path-tracking deserializer untouched.
    let items =
        decode_json::<Vec<Item>>(br#"[{"key": "a", "value": {"n": 1.50}}]"#).expect("raw value");
    assert_eq!(
        items[0].value.as_ref().map(|v| v.get()),
        Some(r#"{"n": 1.50}"#)
    );
}

#[test]
fn query_metadata_takes_the_first_value_of_each_metadata_key() {
    let q = Query(vec![
        ("metadata.ttlInSeconds".into(), "10".into()),
        ("metadata.ttlInSeconds".into(), "20".into()),
        ("consistency".into(), "strong".into()),
        ("key".into(), "a".into()),
        ("key".into(), "b".into()),
        ("metadatax".into(), "no".into()),
    ]);
    let md = q.metadata();
    assert_eq!(md.len(), 1);
    assert_eq!(md.get("ttlInSeconds").map(String::as_str), Some("10"));
    assert_eq!(q.get("consistency"), Some("strong"));
    assert_eq!(q.all("key"), vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn apis_without_a_building_block_are_named() {
    for (path, what) in [
        ("/v1.0/actors/a/b/method/m", "actors"),
        ("/v1.0-beta1/workflows/dapr/wf/start", "workflows"),
        ("/v1.0-alpha1/jobs/j", "jobs"),
        ("/v1.0-alpha1/crypto/c/encrypt", "cryptography"),
        ("/v1.0-alpha1/subtlecrypto/getkey", "cryptography"),
        ("/v1.0-alpha2/conversation/c/converse", "conversation"),
    ] {
        let got = unimplemented_api(path).unwrap_or_else(|| panic!("{path}"));
        assert!(got.contains(what), "{path}: {got}");
    }
    for path in [
        "/v1.0/nothing",
        "/v2.0/actors/a",
        "/",
        "/v1.0/state/s/k/extra",
        // Served now: invocation, query, configuration subscriptions.
        "/v1.0/invoke/app/method/hello",
        "/v1.0-alpha1/state/statestore/query",
        "/v1.0/configuration/store/subscribe",
    ] {
        assert_eq!(unimplemented_api(path), None, "{path}");
    }
}

#[test]
fn building_block_errors_get_dapr_statuses_and_codes() {
    use crate::status::{DaprComponent as C, DaprHttpOp as Op, dapr_http_error, dapr_http_missing};
    use plinth_core::ErrorKind as K;
    let cases = [
        (Op::StateSave, K::EtagMismatch, 409, "ERR_STATE_SAVE"),
        (Op::StateDelete, K::EtagInvalid, 400, "ERR_STATE_DELETE"),
        (Op::StateGet, K::Unavailable, 503, "ERR_STATE_GET"),
        (
            Op::StateTransaction,
            K::EtagMismatch,
            409,
            "ERR_STATE_TRANSACTION",
        ),
        (
            Op::StateTransaction,
            K::Unimplemented,
            500,
            "ERR_STATE_STORE_NOT_SUPPORTED",
        ),
        (
            Op::StateSave,
            K::Unimplemented,
            501,
            "ERR_STATE_STORE_NOT_SUPPORTED",
        ),
        (
            Op::Publish,
            K::PermissionDenied,
            403,
            "ERR_PUBSUB_FORBIDDEN",
        ),
        (
            Op::BulkPublish,
            K::PermissionDenied,
            403,
            "ERR_PUBSUB_FORBIDDEN",
        ),
        (
            Op::BulkPublish,
            K::InvalidArgument,
            400,
            "ERR_PUBSUB_EVENTS_SER",
        ),
        (Op::Publish, K::Internal, 500, "ERR_PUBSUB_PUBLISH_MESSAGE"),
        (
            Op::GetSecret,
            K::PermissionDenied,
            403,
            "ERR_PERMISSION_DENIED",
        ),
        (Op::GetSecret, K::NotFound, 404, "ERR_SECRET_GET"),
        (
            Op::TryLock,
            K::InvalidArgument,
            400,
            "ERR_MALFORMED_REQUEST",
        ),
        (Op::Unlock, K::Timeout, 504, "ERR_UNLOCK"),
        (
            Op::InvokeBinding,
            K::Unavailable,
            503,
            "ERR_INVOKE_OUTPUT_BINDING",
        ),
        (
            Op::GetConfiguration,
            K::Internal,
            500,
            "ERR_CONFIGURATION_GET",
        ),
    ];
    for (op, kind, status, code) in cases {
        let (got_status, got_code) = dapr_http_error(op, kind);
        assert_eq!(
            (got_status.as_u16(), got_code),
            (status, code),
            "{op:?} {kind:?}"
        );
    }
    let missing = [
        (C::StateStore, false, 400, "ERR_STATE_STORE_NOT_FOUND"),
        (C::StateStore, true, 500, "ERR_STATE_STORE_NOT_CONFIGURED"),
        (C::PubSub, false, 404, "ERR_PUBSUB_NOT_FOUND"),
        (C::PubSub, true, 400, "ERR_PUBSUB_NOT_CONFIGURED"),
        (C::SecretStore, false, 401, "ERR_SECRET_STORE_NOT_FOUND"),
        (C::LockStore, false, 400, "ERR_LOCK_STORE_NOT_FOUND"),
        (
            C::ConfigurationStore,
            true,
            500,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
        ),
        (C::Binding, false, 500, "ERR_INVOKE_OUTPUT_BINDING"),
    ];
    for (component, none, status, code) in missing {
        let (got_status, got_code) = dapr_http_missing(component, none);
        assert_eq!(
            (got_status.as_u16(), got_code),
            (status, code),
            "{component:?}"
        );
    }
}
