//! Dapr's Resiliency resource wraps component calls: retries (counted at the upstream), a
//! circuit breaker that fails fast without calling the backend, and per-attempt timeouts.

use std::time::Duration;

use tonic::Code;

use crate::binding::invoke;
use crate::common::{Plinth, scratch, write};
use crate::upstream::Upstream;

const WAIT: Duration = Duration::from_secs(5);

/// Plinth with two http bindings at `url`: `webhook` under the given outbound policy, and
/// `plain` with none.
async fn start(url: &str, policies: &str, outbound: &str) -> Plinth {
    let dir = scratch("resiliency");
    let component = |name: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {name}
spec:
  type: bindings.http
  metadata:
    - name: url
      value: {url}
"
        )
    };
    write(&dir, "resources/webhook.yaml", &component("webhook"));
    write(&dir, "resources/plain.yaml", &component("plain"));
    write(
        &dir,
        "resources/resiliency.yaml",
        &format!(
            "apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: policies
spec:
  policies:
{policies}
  targets:
    components:
      webhook:
        outbound:
{outbound}
"
        ),
    );
    Plinth::start_ready_with(&["--resources-path", "resources"], Some(&dir)).await
}

fn drain(upstream: &mut Upstream) -> usize {
    let mut n = 0;
    while upstream.try_next_request().is_some() {
        n += 1;
    }
    n
}

#[tokio::test]
async fn retries_follow_the_policy_and_only_for_backend_failures() {
    let mut upstream = Upstream::start("retry").await;
    let plinth = start(
        &upstream.url(),
        "    retries:
      three:
        policy: constant
        duration: 10ms
        maxRetries: 2",
        "          retry: three",
    )
    .await;
    let mut c = plinth.client().await;

    // A 503 is a backend failure: 1 attempt + 2 retries reach the upstream.
    let err = invoke(&mut c, "get", b"", &[("path", "/status/503")])
        .await
        .expect_err("503");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for _ in 0..3 {
        upstream.next_request(WAIT).await;
    }
    assert_eq!(drain(&mut upstream), 0, "exactly 3 attempts");

    // A 400 is the caller's fault: never retried.
    let err = invoke(&mut c, "get", b"", &[("path", "/status/400")])
        .await
        .expect_err("400");
    assert_eq!(err.code(), Code::InvalidArgument);
    upstream.next_request(WAIT).await;
    assert_eq!(drain(&mut upstream), 0, "a bad request is not retried");

    // The component without a policy is called once.
    let mut plain = c.clone();
    let err = plain
        .invoke_binding(plinth_proto::runtime::v1::InvokeBindingRequest {
            name: "plain".into(),
            operation: "get".into(),
            metadata: [("path".to_string(), "/status/503".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect_err("503");
    assert_eq!(err.code(), Code::Unavailable);
    upstream.next_request(WAIT).await;
    assert_eq!(drain(&mut upstream), 0, "no policy, no retry");
}

#[tokio::test]
async fn an_open_circuit_breaker_fails_fast_without_calling_the_backend() {
    let mut upstream = Upstream::start("breaker").await;
    let plinth = start(
        &upstream.url(),
        "    circuitBreakers:
      cb:
        maxRequests: 1
        timeout: 60s
        trip: consecutiveFailures >= 3",
        "          circuitBreaker: cb",
    )
    .await;
    let mut c = plinth.client().await;
    for _ in 0..3 {
        let err = invoke(&mut c, "get", b"", &[("path", "/status/500")])
            .await
            .expect_err("500");
        assert_eq!(err.code(), Code::Unavailable);
        upstream.next_request(WAIT).await;
    }
    let err = invoke(&mut c, "get", b"", &[("path", "/ok")])
        .await
        .expect_err("breaker open");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("circuit breaker"),
        "{}",
        err.message()
    );
    assert_eq!(
        drain(&mut upstream),
        0,
        "an open breaker does not call the backend"
    );

    let (_, metrics) = plinth.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("plinth_resilience_circuit_breaker_state{") && l.contains("webhook")
        })
        .unwrap_or_default();
    assert!(
        line.ends_with(" 2"),
        "breaker state metric shows open: {line:?}"
    );
}

#[tokio::test]
async fn a_timeout_policy_bounds_each_attempt() {
    let upstream = Upstream::start("timeout").await;
    let plinth = start(
        &upstream.url(),
        "    timeouts:
      quick: 300ms",
        "          timeout: quick",
    )
    .await;
    let mut c = plinth.client().await;
    let err = invoke(&mut c, "get", b"", &[("path", "/hold")])
        .await
        .expect_err("held past the timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    upstream.release();
}
