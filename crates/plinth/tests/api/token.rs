//! The API token: with `DAPR_API_TOKEN` set, both gRPC APIs and the admin listener's
//! changes require it; health checks, probes and metrics stay open.

use dapr::dapr::proto::runtime::v1 as dpb;
use plinth_proto::runtime::v1 as pb;
use tonic::metadata::MetadataValue;
use tonic_health::pb::health_client::HealthClient;

use super::common::{Plinth, http_request};

const TOKEN: &str = "tok-3f9a1c";

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("dapr-api-token", MetadataValue::try_from(t).expect("ascii"));
    }
    request
}

fn get(key: &str) -> pb::GetStateRequest {
    pb::GetStateRequest {
        store_name: "statestore".into(),
        key: key.into(),
        ..Default::default()
    }
}

async fn admin_post_with(plinth: &Plinth, token: Option<&str>, body: &str) -> u16 {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(plinth.admin)
        .await
        .expect("connect admin");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method("POST")
        .uri("/actuator/logger")
        .header("host", plinth.admin.to_string())
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("dapr-api-token", t);
    }
    let resp = sender
        .send_request(
            req.body(Full::new(bytes::Bytes::from(body.to_string())))
                .expect("request"),
        )
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn every_grpc_api_requires_the_token_except_health() {
    let plinth = Plinth::start_with_env(&[], &[("DAPR_API_TOKEN", TOKEN)]);
    let mut layotto = plinth.client().await;
    for (token, what) in [
        (None, "missing"),
        (Some("tok-wrong!"), "wrong"),
        (Some("tok"), "prefix"),
    ] {
        let err = layotto
            .get_state(with_token(get("k"), token))
            .await
            .expect_err(what);
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{what}: {err}");
        assert!(!err.message().contains(TOKEN), "{err}");
    }
    layotto
        .get_state(with_token(get("k"), Some(TOKEN)))
        .await
        .expect("the right token");

    let mut dapr = dpb::dapr_client::DaprClient::new(plinth.channel().await);
    let err = dapr
        .get_metadata(with_token(dpb::GetMetadataRequest {}, None))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    let metadata = dapr
        .get_metadata(with_token(dpb::GetMetadataRequest {}, Some(TOKEN)))
        .await
        .expect("token")
        .into_inner();
    assert!(!format!("{metadata:?}").contains(TOKEN));

    // Kubernetes-style probes need no token.
    let mut health = HealthClient::new(plinth.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without a token");
    // The env secret store never hands the token out.
    let err = layotto
        .get_secret(with_token(
            pb::GetSecretRequest {
                store_name: "secretstore".into(),
                key: "DAPR_API_TOKEN".into(),
                ..Default::default()
            },
            Some(TOKEN),
        ))
        .await;
    match err {
        Ok(resp) => assert!(
            !format!("{:?}", resp.into_inner()).contains(TOKEN),
            "the secret store returned the token"
        ),
        Err(status) => assert!(!status.message().contains(TOKEN), "{status}"),
    }
}

#[tokio::test]
async fn admin_changes_require_the_token_and_probes_do_not() {
    let plinth = Plinth::start_with_env(&[], &[("DAPR_API_TOKEN", TOKEN)]);
    for path in ["/actuator/health/liveness", "/actuator/info", "/metrics"] {
        let (status, _) = http_request(plinth.admin, "GET", path, None).await;
        assert_eq!(status, 200, "{path}");
    }
    let body = r#"{"logger": "plinth_api", "level": "debug"}"#;
    assert_eq!(admin_post_with(&plinth, None, body).await, 401);
    assert_eq!(admin_post_with(&plinth, Some("nope"), body).await, 401);
    assert_eq!(admin_post_with(&plinth, Some(TOKEN), body).await, 200);
}

#[tokio::test]
async fn without_a_token_nothing_is_required() {
    let plinth = Plinth::start();
    plinth
        .client()
        .await
        .get_state(get("k"))
        .await
        .expect("no token needed");
}
