use std::convert::Infallible;
use std::net::SocketAddr;

use http::Response;
use http_body_util::StreamBody;
use http_body_util::combinators::BoxBody;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::config::parse_size;
use super::*;

type Body = BoxBody<Bytes, Infallible>;

fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into()).boxed()
}

/// A test server. `/status/N` answers with status N; `/big/N` sends N bytes with a length,
/// `/chunked/N` without; `/slow` never answers; anything else echoes the method, the path
/// and query, and the request's `x-test` header, and returns the request body.
async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<usize>().ok())
    };
    if let Some(code) = number("/status/") {
        let status = StatusCode::from_u16(code as u16).unwrap_or(StatusCode::OK);
        let mut response = Response::new(full(format!("status {code}")));
        *response.status_mut() = status;
        return Ok(response);
    }
    if let Some(size) = number("/big/") {
        return Ok(Response::new(full(vec![b'x'; size])));
    }
    if let Some(size) = number("/chunked/") {
        let frames = (0..size.div_ceil(100))
            .map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 100]))));
        return Ok(Response::new(
            StreamBody::new(futures::stream::iter(frames)).boxed(),
        ));
    }
    if path == "/slow" {
        futures::future::pending::<()>().await;
    }
    let method = req.method().to_string();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let test_header = req.headers().get("x-test").cloned();
    let has_path_header = req.headers().contains_key("path");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut response = Response::new(full(body));
    let headers = response.headers_mut();
    headers.insert(
        "x-method",
        HeaderValue::from_str(&method).unwrap_or(HeaderValue::from_static("?")),
    );
    headers.insert(
        "x-path",
        HeaderValue::from_str(&path_and_query).unwrap_or(HeaderValue::from_static("?")),
    );
    headers.insert(
        "x-path-header",
        HeaderValue::from_static(if has_path_header { "yes" } else { "no" }),
    );
    if let Some(value) = test_header {
        headers.insert("x-test-echo", value);
    }
    headers.append("x-multi", HeaderValue::from_static("a"));
    headers.append("x-multi", HeaderValue::from_static("b"));
    Ok(response)
}

async fn server() -> SocketAddr {
    let Ok(listener) = TcpListener::bind("127.0.0.1:0").await else {
        panic!("cannot bind a loopback port");
    };
    let Ok(addr) = listener.local_addr() else {
        panic!("no local address");
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle)),
            );
        }
    });
    addr
}

fn binding(url: &str, extra: &[(&str, &str)]) -> HttpBinding {
    let mut spec = ComponentSpec::new("http", TYPE_NAME).with_metadata(URL, url);
    for (k, v) in extra {
        spec = spec.with_metadata(*k, *v);
    }
    match HttpBindingConfig::from_spec(&spec).and_then(HttpBinding::new) {
        Ok(binding) => binding,
        Err(err) => panic!("binding: {err}"),
    }
}

fn request(operation: &str, data: &str, metadata: &[(&str, &str)]) -> BindingRequest {
    BindingRequest {
        operation: operation.into(),
        data: Bytes::from(data.to_owned()),
        metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn meta<'a>(response: &'a Result<BindingResponse>, key: &str) -> Option<&'a str> {
    response
        .as_ref()
        .ok()
        .and_then(|r| r.metadata.get(key))
        .map(String::as_str)
}

#[tokio::test]
async fn methods_paths_headers_and_bodies() {
    let addr = server().await;
    let http = binding(&format!("http://{addr}/base/"), &[]);
    let md = [
        (PATH, "/things/1?q=2"),
        ("X-Test", "hello"),
        ("bad key", "x"),
        ("X-Bad-Value", "a\nb"),
    ];
    let response = http.invoke(request("post", "payload", &md)).await;
    assert_eq!(
        response.as_ref().map(|r| r.data.clone()).ok(),
        Some(Bytes::from("payload"))
    );
    assert_eq!(meta(&response, "X-Method"), Some("POST"));
    assert_eq!(meta(&response, "X-Path"), Some("/base/things/1?q=2"));
    assert_eq!(meta(&response, "X-Test-Echo"), Some("hello"));
    assert_eq!(meta(&response, "X-Path-Header"), Some("no"));
    assert_eq!(meta(&response, "X-Multi"), Some("a, b"));
    assert_eq!(meta(&response, "statusCode"), Some("200"));
    assert_eq!(meta(&response, "status"), Some("200 OK"));

    for (operation, method) in [
        ("create", "POST"),
        ("get", "GET"),
        ("put", "PUT"),
        ("patch", "PATCH"),
        ("delete", "DELETE"),
        ("options", "OPTIONS"),
        ("trace", "TRACE"),
    ] {
        let response = http.invoke(request(operation, "", &[])).await;
        assert_eq!(meta(&response, "X-Method"), Some(method), "{operation}");
        assert_eq!(meta(&response, "X-Path"), Some("/base/"));
    }
    let head = http.invoke(request("head", "", &[])).await;
    assert!(head.as_ref().is_ok_and(|r| r.data.is_empty()));
    assert_eq!(meta(&head, "X-Method"), Some("HEAD"));

    let unknown = http
        .invoke(request("connect", "", &[]))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(unknown, Some(ErrorKind::InvalidArgument));
    assert_eq!(http.operations().len(), 9);
}

#[tokio::test]
async fn error_statuses_map_to_kinds() {
    let addr = server().await;
    let http = binding(&format!("http://{addr}"), &[]);
    for (code, kind) in [
        (400, ErrorKind::InvalidArgument),
        (404, ErrorKind::NotFound),
        (503, ErrorKind::Unavailable),
        (500, ErrorKind::Unavailable),
        (418, ErrorKind::Internal),
    ] {
        let path = format!("/status/{code}");
        let err = http
            .invoke(request("get", "", &[(PATH, &path)]))
            .await
            .err();
        assert_eq!(err.as_ref().map(|e| e.kind()), Some(kind), "{code}");
        assert!(err.is_some_and(|e| e.message().contains(&code.to_string())));
    }
    let lenient = binding(&format!("http://{addr}"), &[(ERROR_IF_NOT_2XX, "false")]);
    let response = lenient
        .invoke(request("get", "", &[(PATH, "/status/404")]))
        .await;
    assert_eq!(meta(&response, "statusCode"), Some("404"));
    assert_eq!(
        response.map(|r| r.data).ok(),
        Some(Bytes::from("status 404"))
    );
}

#[tokio::test]
async fn response_bodies_are_bounded() {
    let addr = server().await;
    let http = binding(
        &format!("http://{addr}"),
        &[(MAX_RESPONSE_BODY_SIZE, "1Ki")],
    );
    let ok = http
        .invoke(request("get", "", &[(PATH, "/big/1024")]))
        .await;
    assert_eq!(ok.map(|r| r.data.len()).ok(), Some(1024));
    for path in ["/big/1025", "/chunked/2000"] {
        let err = http
            .invoke(request("get", "", &[(PATH, path)]))
            .await
            .err()
            .map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::ResourceExhausted), "{path}");
    }
    let default = binding(&format!("http://{addr}"), &[]);
    let path = format!("/big/{}", DEFAULT_MAX_RESPONSE_BODY_SIZE + 1);
    let err = default
        .invoke(request("get", "", &[(PATH, &path)]))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::ResourceExhausted));
}

#[tokio::test]
async fn timeouts_and_unreachable_hosts() {
    let addr = server().await;
    let http = binding(&format!("http://{addr}"), &[(RESPONSE_TIMEOUT, "5s")]);
    let md = [(PATH, "/slow"), (RESPONSE_TIMEOUT, "100ms")];
    let err = http
        .invoke(request("get", "", &md))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Timeout));
    let bad = http
        .invoke(request("get", "", &[(RESPONSE_TIMEOUT, "soon")]))
        .await
        .err()
        .map(|e| e.kind());
    assert_eq!(bad, Some(ErrorKind::InvalidArgument));

    // A port that was just free: nothing listens there.
    let closed = match TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|l| l.local_addr())
    {
        Ok(addr) => addr,
        Err(err) => panic!("cannot bind a loopback port: {err}"),
    };
    let http = binding(&format!("http://user:secret@{closed}/"), &[]);
    let err = http.invoke(request("get", "", &[])).await.err();
    assert_eq!(err.as_ref().map(|e| e.kind()), Some(ErrorKind::Unavailable));
    assert!(
        err.is_some_and(|e| !e.message().contains("secret")),
        "no URL in errors"
    );
}

#[test]
fn config_validation() {
    let spec = |url: &str| ComponentSpec::new("http", TYPE_NAME).with_metadata(URL, url);
    assert!(HttpBindingConfig::from_spec(&ComponentSpec::new("http", TYPE_NAME)).is_err());
    for bad in ["not a url", "ftp://host/x", "/relative/path", "http://"] {
        assert!(HttpBindingConfig::from_spec(&spec(bad)).is_err(), "{bad}");
    }
    let config = HttpBindingConfig::from_spec(&spec("https://example.com/api"));
    assert!(
        config
            .as_ref()
            .is_ok_and(|c| c.response_timeout == DEFAULT_RESPONSE_TIMEOUT
                && c.max_response_body_size == DEFAULT_MAX_RESPONSE_BODY_SIZE
                && c.error_if_not_2xx)
    );
    assert!(
        !format!("{config:?}").contains("example.com"),
        "the URL may hold credentials"
    );
    for (key, bad) in [
        (RESPONSE_TIMEOUT, "later"),
        (RESPONSE_TIMEOUT, "0s"),
        (MAX_RESPONSE_BODY_SIZE, "lots"),
        (ERROR_IF_NOT_2XX, "perhaps"),
    ] {
        assert!(
            HttpBindingConfig::from_spec(&spec("http://h").with_metadata(key, bad)).is_err(),
            "{key}={bad}"
        );
    }
    // The factory needs no runtime: the client connects lazily.
    assert!(factory(&spec("https://example.com")).is_ok());
}

#[test]
fn sizes_and_header_names() {
    assert_eq!(parse_size("1048576"), Some(1 << 20));
    assert_eq!(parse_size("16Mi"), Some(16 << 20));
    assert_eq!(parse_size("2K"), Some(2000));
    assert_eq!(parse_size("1Ti"), None);
    assert_eq!(parse_size(""), None);
    assert_eq!(canonical("content-type"), "Content-Type");
    assert_eq!(canonical("x-b3-traceid"), "X-B3-Traceid");
    let headers = headers_of(&Metadata::from([
        ("path".to_owned(), "/x".to_owned()),
        ("Content-Length".to_owned(), "5".to_owned()),
        ("Authorization".to_owned(), "Bearer t".to_owned()),
    ]));
    assert_eq!(headers.len(), 1);
    assert!(headers.contains_key("authorization"));
}
