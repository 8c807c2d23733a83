//! Service invocation for the gRPC front doors (Layotto's and Dapr's `InvokeService`, whose
//! request shapes match field for field): the caller's metadata becomes the app's headers,
//! and the app's answer comes back with its headers as response metadata. An HTTP app's
//! status other than 2xx, or a gRPC app's error, becomes the caller's gRPC status.

use bytes::Bytes;
use plinth_runtime::app::{AppStatus, InvokeRequest, InvokeResponse};
use tonic::metadata::{KeyAndValueRef, MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::app::forwardable;
use crate::status::grpc_code_of_http;

/// The HTTP verb of an `HTTPExtension.Verb` value (the same numbering in both protos);
/// NONE and unknown values leave the default to the building block.
fn verb(value: i32) -> &'static str {
    match value {
        1 => "GET",
        2 => "HEAD",
        3 => "POST",
        4 => "PUT",
        5 => "DELETE",
        6 => "CONNECT",
        7 => "OPTIONS",
        8 => "TRACE",
        9 => "PATCH",
        _ => "",
    }
}

/// Build the building block's request from a gRPC caller's message and metadata.
pub(crate) fn request(
    metadata: &MetadataMap,
    method: String,
    data: Option<prost_types::Any>,
    content_type: String,
    http_verb: i32,
    query: String,
) -> InvokeRequest {
    let headers = metadata
        .iter()
        .filter_map(|kv| match kv {
            KeyAndValueRef::Ascii(k, v)
                if forwardable(k.as_str()) && k.as_str() != "user-agent" =>
            {
                Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))
            }
            _ => None,
        })
        .collect();
    InvokeRequest {
        method,
        verb: verb(http_verb).to_string(),
        query,
        content_type,
        data: data.map(|a| Bytes::from(a.value)).unwrap_or_default(),
        headers,
    }
}

/// The app's answer for a gRPC caller: (response metadata, content type, body), or the
/// app's failure as a status.
pub(crate) fn response(resp: InvokeResponse) -> Result<(MetadataMap, String, Bytes), Status> {
    let mut metadata = MetadataMap::new();
    for (k, v) in &resp.headers {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) && !k.ends_with("-bin")
        {
            metadata.append(key, value);
        }
    }
    match resp.status {
        AppStatus::Grpc { code: 0, .. } => Ok((metadata, resp.content_type, resp.data)),
        AppStatus::Grpc { code, message } => Err(Status::with_metadata(
            Code::from_i32(code),
            message,
            metadata,
        )),
        AppStatus::Http(status) if (200..300).contains(&status) => {
            Ok((metadata, resp.content_type, resp.data))
        }
        AppStatus::Http(status) => {
            let body = String::from_utf8_lossy(&resp.data);
            let body: String = body.chars().take(1024).collect();
            Err(Status::with_metadata(
                grpc_code_of_http(status),
                format!("the app answered HTTP {status}: {body}"),
                metadata,
            ))
        }
    }
}
