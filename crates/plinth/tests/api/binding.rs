use std::collections::HashMap;
use std::time::Duration;

use pb::runtime_client::RuntimeClient;
use plinth_proto::runtime::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{Plinth, scratch, write};
use crate::upstream::Upstream;

type Client = RuntimeClient<Channel>;

/// Plinth with one `bindings.http` component named `webhook` pointing at `url`.
pub(crate) async fn start_with_http_binding(url: &str) -> Plinth {
    let dir = scratch("binding");
    write(
        &dir,
        "resources/binding.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: webhook
spec:
  type: bindings.http
  version: v1
  metadata:
    - name: url
      value: {url}
"
        ),
    );
    Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await
}

pub(crate) async fn invoke(
    c: &mut Client,
    operation: &str,
    data: &[u8],
    metadata: &[(&str, &str)],
) -> Result<pb::InvokeBindingResponse, tonic::Status> {
    c.invoke_binding(pb::InvokeBindingRequest {
        name: "webhook".into(),
        operation: operation.into(),
        data: data.to_vec(),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    })
    .await
    .map(|r| r.into_inner())
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn post_reaches_the_server_and_the_response_comes_back() {
    let mut upstream = Upstream::start("binding-test").await;
    let plinth = start_with_http_binding(&upstream.url()).await;
    let mut c = plinth.client().await;

    let resp = invoke(
        &mut c,
        "post",
        b"hello binding",
        &[("path", "/orders/7"), ("x-trace", "abc")],
    )
    .await
    .expect("post");
    let seen = upstream.next_request(WAIT).await;
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/orders/7");
    assert_eq!(seen.body, b"hello binding");
    assert_eq!(
        seen.headers.get("x-trace").map(String::as_str),
        Some("abc"),
        "metadata goes out as headers"
    );
    assert!(
        !seen.headers.contains_key("path"),
        "the path is not sent as a header"
    );

    assert_eq!(resp.data, b"echo:hello binding");
    assert_eq!(
        resp.metadata.get("statusCode").map(String::as_str),
        Some("200")
    );
    assert_eq!(
        resp.metadata.get("X-Upstream").map(String::as_str),
        Some("binding-test"),
        "{:?}",
        resp.metadata
    );

    // `create` is Dapr's other name for POST; `get` sends no body.
    invoke(&mut c, "create", b"made", &[])
        .await
        .expect("create");
    let seen = upstream.next_request(WAIT).await;
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", b"made".as_slice())
    );
    let resp = invoke(&mut c, "get", b"", &[("path", "items")])
        .await
        .expect("get");
    let seen = upstream.next_request(WAIT).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/items")
    );
    assert_eq!(resp.data, b"echo:");
}

#[tokio::test]
async fn error_statuses_from_the_server_are_errors() {
    let mut upstream = Upstream::start("binding-errors").await;
    let plinth = start_with_http_binding(&upstream.url()).await;
    let mut c = plinth.client().await;

    let err = invoke(&mut c, "post", b"x", &[("path", "/status/404")])
        .await
        .expect_err("404");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("404"), "{}", err.message());
    assert_eq!(upstream.next_request(WAIT).await.path, "/status/404");

    let err = invoke(&mut c, "get", b"", &[("path", "/status/500")])
        .await
        .expect_err("500");
    assert_ne!(err.code(), Code::Ok);
    assert!(err.message().contains("500"), "{}", err.message());
    assert!(
        !err.message().contains(&upstream.addr.port().to_string()),
        "the URL is not in the error: {}",
        err.message()
    );
    assert_eq!(upstream.next_request(WAIT).await.path, "/status/500");

    // A 2xx other than 200 is a success.
    let resp = invoke(&mut c, "put", b"", &[("path", "/status/201")])
        .await
        .expect("201");
    assert_eq!(
        resp.metadata.get("statusCode").map(String::as_str),
        Some("201")
    );
    assert_eq!(upstream.next_request(WAIT).await.method, "PUT");
}

#[tokio::test]
async fn bad_binding_requests_are_invalid_arguments() {
    let mut upstream = Upstream::start("binding-bad").await;
    let plinth = start_with_http_binding(&upstream.url()).await;
    let mut c = plinth.client().await;
    for op in ["frobnicate", ""] {
        let err = invoke(&mut c, op, b"x", &[]).await.expect_err(op);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "operation {op:?}: {err:?}"
        );
    }
    let err = c
        .invoke_binding(pb::InvokeBindingRequest {
            name: "nope".into(),
            operation: "post".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown binding");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nope"), "{}", err.message());
    // Nothing was sent for the rejected calls.
    invoke(&mut c, "post", b"last", &[])
        .await
        .expect("valid call");
    assert_eq!(upstream.next_request(WAIT).await.body, b"last");
    assert!(upstream.try_next_request().is_none());
}
