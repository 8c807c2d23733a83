use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use plinth_proto::runtime::v1 as pb;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::common::{Plinth, unique};

/// Sends and receives message bodies as raw bytes, so tests can send what no generated
/// client would.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A unary call of `method` on the Layotto service with `body` as the message bytes.
async fn raw_call(channel: Channel, method: &str, body: Vec<u8>) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {e}")))?;
    let path =
        PathAndQuery::try_from(format!("/spec.proto.runtime.v1.Runtime/{method}")).expect("path");
    grpc.unary(tonic::Request::new(Bytes::from(body)), path, RawCodec)
        .await
        .map(|r| r.into_inner())
}

/// A hand-built HTTP/2 gRPC request whose body is exactly `body` (framing included);
/// returns the grpc-status, from the headers (trailers-only) or the trailers.
async fn h2_call(addr: SocketAddr, path: &str, body: Vec<u8>) -> (i32, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await.expect("send");
    assert_eq!(
        resp.status(),
        200,
        "gRPC errors travel in grpc-status, not the HTTP status"
    );
    let header = |map: &hyper::HeaderMap| {
        map.get("grpc-status").map(|v| {
            (
                v.to_str().unwrap_or_default().parse::<i32>().unwrap_or(-1),
                map.get("grpc-message")
                    .map(|m| m.to_str().unwrap_or_default().to_string())
                    .unwrap_or_default(),
            )
        })
    };
    if let Some(found) = header(resp.headers()) {
        return found;
    }
    let collected = resp.into_body().collect().await.expect("body");
    collected
        .trailers()
        .and_then(header)
        .expect("a grpc-status in the trailers")
}

/// A gRPC message frame: flag 0, big-endian length, bytes.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Fails unless the process still answers ordinary calls.
async fn still_serves(plinth: &Plinth) {
    let mut c = plinth.client().await;
    let key = unique("alive");
    c.save_state(pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![pb::StateItem {
            key: key.clone(),
            value: b"yes".to_vec(),
            ..Default::default()
        }],
    })
    .await
    .expect("save after bad input");
    let got = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.data, b"yes");
}

/// The same fields as `GetStateRequest`, with the strings as bytes so they can be invalid.
#[derive(Clone, PartialEq, prost::Message)]
struct RawGetStateRequest {
    #[prost(bytes = "vec", tag = "1")]
    store_name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    key: Vec<u8>,
}

#[tokio::test]
async fn garbage_request_bodies_are_invalid_arguments() {
    let plinth = Plinth::start_ready().await;
    // An over-long varint: no protobuf message parses from this.
    let err = raw_call(plinth.channel().await, "GetState", vec![0xff; 16])
        .await
        .expect_err("garbage");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A field of wire type 7, which does not exist.
    let err = raw_call(plinth.channel().await, "SaveState", vec![0x0f, 0x01, 0x02])
        .await
        .expect_err("bad wire type");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    // A length-delimited field longer than the message.
    let err = raw_call(plinth.channel().await, "TryLock", vec![0x0a, 0x7f, b'x'])
        .await
        .expect_err("truncated field");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    still_serves(&plinth).await;

    // The same by hand over HTTP/2: a well-framed message of garbage ...
    let (code, message) = h2_call(
        plinth.grpc,
        "/spec.proto.runtime.v1.Runtime/GetState",
        frame(&[0xff; 16]),
    )
    .await;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    // ... and a frame whose length prefix promises more bytes than the body holds.
    let mut truncated = frame(&[0x0a, 0x01, b'x']);
    truncated[1..5].copy_from_slice(&100u32.to_be_bytes());
    let (code, message) = h2_call(
        plinth.grpc,
        "/spec.proto.runtime.v1.Runtime/GetState",
        truncated,
    )
    .await;
    assert_eq!(code, Code::InvalidArgument as i32, "{message}");
    still_serves(&plinth).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_an_invalid_argument() {
    let plinth = Plinth::start_ready().await;
    let good = RawGetStateRequest {
        store_name: b"statestore".to_vec(),
        key: b"fine".to_vec(),
    };
    // The stand-in type encodes like the real one.
    let decoded = pb::GetStateRequest::decode(good.encode_to_vec().as_slice())
        .expect("decodes as GetStateRequest");
    assert_eq!(
        (decoded.store_name.as_str(), decoded.key.as_str()),
        ("statestore", "fine")
    );
    raw_call(plinth.channel().await, "GetState", good.encode_to_vec())
        .await
        .expect("valid bytes are accepted");

    let bad = RawGetStateRequest {
        store_name: b"statestore".to_vec(),
        key: vec![b'k', 0xff, 0xfe, 0x80],
    };
    let err = raw_call(plinth.channel().await, "GetState", bad.encode_to_vec())
        .await
        .expect_err("invalid UTF-8");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let bad_store = RawGetStateRequest {
        store_name: vec![0xc3, 0x28],
        key: b"k".to_vec(),
    };
    let err = raw_call(
        plinth.channel().await,
        "GetState",
        bad_store.encode_to_vec(),
    )
    .await
    .expect_err("invalid UTF-8 store");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    still_serves(&plinth).await;
}

#[tokio::test]
async fn messages_over_the_size_limit_are_refused() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let save = |key: String, size: usize| pb::SaveStateRequest {
        store_name: "statestore".into(),
        states: vec![pb::StateItem {
            key,
            value: vec![7u8; size],
            ..Default::default()
        }],
    };
    // Under the 4 MiB limit: accepted.
    let key = unique("big");
    c.save_state(save(key.clone(), 3 * 1024 * 1024))
        .await
        .expect("3 MiB save");
    let got = c
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: key.clone(),
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.data.len(), 3 * 1024 * 1024);
    // Over it: refused, whatever the client does with the rest of the body.
    let err = c
        .save_state(save(unique("huge"), 5 * 1024 * 1024))
        .await
        .expect_err("5 MiB save");
    assert!(err.code() == Code::ResourceExhausted, "{err:?}");
    // On a fresh connection too, and the process keeps serving.
    let err = plinth
        .client()
        .await
        .save_state(save(unique("huge"), 5 * 1024 * 1024))
        .await
        .expect_err("5 MiB save");
    assert!(err.code() == Code::ResourceExhausted, "{err:?}");
    still_serves(&plinth).await;
}

#[tokio::test]
async fn hello_and_unimplemented_calls() {
    let plinth = Plinth::start_ready().await;
    let mut c = plinth.client().await;
    let data = prost_types::Any {
        type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
        value: b"\n\x03pad".to_vec(),
    };
    let resp = c
        .say_hello(pb::SayHelloRequest {
            service_name: "helloworld".into(),
            name: "tests".into(),
            data: Some(data.clone()),
        })
        .await
        .expect("hello")
        .into_inner();
    assert!(resp.hello.contains("tests"), "{}", resp.hello);
    assert_eq!(resp.data, Some(data), "the payload is echoed");

    let err = c
        .say_hello(pb::SayHelloRequest {
            service_name: "nosuchhello".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown hello");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("nosuchhello"), "{}", err.message());

    let err = c
        .invoke_service(pb::InvokeServiceRequest {
            id: "other-app".into(),
            message: Some(pb::CommonInvokeRequest {
                method: "m".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invoke");
    // Other apps are the mesh's to reach.
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("other-app"), "{err:?}");

    // A method the service does not have.
    let err = raw_call(plinth.channel().await, "NoSuchMethod", Vec::new())
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
}
