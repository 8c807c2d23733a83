//! The bridge between `wasi:http/incoming-handler` and a plain handler function.

use wasi::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

use crate::{IntoResponse, Request, Response};

/// The most a single `blocking-write-and-flush` may carry.
const WRITE_CHUNK: usize = 4096;

/// Read `request`, run `handler`, and answer through `out`.
pub fn serve<R: IntoResponse>(
    request: IncomingRequest,
    out: ResponseOutparam,
    handler: impl FnOnce(Request) -> R,
) {
    let response = match read_request(&request) {
        Ok(req) => handler(req).into_response(),
        Err(e) => Response::text(e).with_status(400),
    };
    drop(request);
    write_response(out, response);
}

fn read_request(request: &IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m,
    };
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path_with_query, String::new()),
    };
    let headers = request
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let mut body = Vec::new();
    if let Ok(incoming) = request.consume() {
        let stream = incoming
            .stream()
            .map_err(|()| "the request body was already taken".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!("reading the request body: {}", e.to_debug_string()));
                }
            }
        }
    }
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn write_response(out: ResponseOutparam, response: Response) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // Forbidden (hop-by-hop) or malformed headers are left out rather than failing the
        // whole response.
        let _ = headers.append(name, value.as_bytes());
    }
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(outgoing));
    if let Ok(stream) = body.write() {
        for chunk in response.body.chunks(WRITE_CHUNK) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}
