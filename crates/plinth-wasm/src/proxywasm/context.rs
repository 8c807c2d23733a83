//! The host's side of a proxy-wasm instance: what one function shares across its requests
//! ([`Shared`]) and what one store holds ([`HostState`]): the limits, WASI, and while a
//! request runs its HTTP context ([`HttpState`]) with the buffers and maps the guest reads
//! and writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plinth_runtime::app::InvokeRequest;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::abi::Status;
use super::wasi::WasiGrants;
use crate::env::FunctionEnv;
use crate::limits::{CallLimits, HasLimits};

/// The most entries in a header map the guest builds.
const MAX_FIELDS: usize = 1024;
/// The most bytes of names and values in a header map the guest builds.
const MAX_FIELD_BYTES: usize = 256 << 10;
/// The most keys in a function's shared data.
const MAX_SHARED_KEYS: usize = 1024;
/// The most bytes of keys and values in a function's shared data.
const MAX_SHARED_BYTES: usize = 1 << 20;

/// What one function's instances share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The function's id, in logs and errors.
    pub(crate) id: Arc<str>,
    /// The building blocks it reaches.
    pub(crate) env: FunctionEnv,
    /// What WASI gives it.
    pub(crate) wasi: WasiGrants,
    /// `proxy_on_configure`'s buffer (type 7).
    pub(crate) plugin_config: Vec<u8>,
    /// The export that allocates guest memory for results.
    pub(crate) allocator: &'static str,
    /// The largest a body buffer may grow to through `proxy_set_buffer_bytes`: the
    /// function's memory cap, so the host never holds more for a guest than the guest could.
    pub(crate) max_buffer: usize,
    /// `proxy_get_shared_data`/`proxy_set_shared_data`: this function's, not other
    /// functions'.
    pub(crate) data: Mutex<SharedData>,
}

/// A store's data.
pub(crate) struct HostState {
    pub(crate) limits: CallLimits,
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) shared: Arc<Shared>,
    /// Buffer type 8, where `proxy_get_id` writes.
    pub(crate) call_data: Vec<u8>,
    /// The request's HTTP context, from its creation to its end.
    pub(crate) http: Option<HttpState>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("function", &self.shared.id)
            .field("limits", &self.limits)
            .field("http", &self.http.is_some())
            .finish_non_exhaustive()
    }
}

impl HasLimits for HostState {
    fn limits(&mut self) -> &mut CallLimits {
        &mut self.limits
    }
}

impl HostState {
    pub(crate) fn new(shared: Arc<Shared>, limits: CallLimits, wasi: WasiP1Ctx) -> Self {
        Self {
            limits,
            wasi,
            shared,
            call_data: Vec::new(),
            http: None,
        }
    }
}

/// A local response sent with `proxy_send_http_response` (`proxy_send_local_response`).
#[derive(Debug, Clone)]
pub(crate) struct LocalResponse {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) headers: Fields,
}

/// One request's HTTP context.
#[derive(Debug)]
pub(crate) struct HttpState {
    pub(crate) verb: String,
    /// The path without the query: `/` and the invoked method.
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) request_headers: Fields,
    pub(crate) request_body: Vec<u8>,
    pub(crate) request_trailers: Fields,
    pub(crate) response_headers: Fields,
    pub(crate) response_body: Vec<u8>,
    pub(crate) response_trailers: Fields,
    pub(crate) local_response: Option<LocalResponse>,
}

impl HttpState {
    /// The context of `req`. As in Layotto, a request without a body gets its query string
    /// as the body, so that `GET /?name=book1` reaches `proxy_on_request_body` with
    /// `name=book1`. Request headers carry `:method` and `:path` as in other proxy-wasm
    /// hosts, then the request's own.
    pub(crate) fn new(req: InvokeRequest) -> Self {
        let verb = if req.verb.is_empty() {
            "POST".to_string()
        } else {
            req.verb.to_ascii_uppercase()
        };
        let path = format!("/{}", req.method.trim_start_matches('/'));
        let full_path = if req.query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", req.query)
        };
        let mut headers = Fields::default();
        headers.add(":method".into(), verb.clone());
        headers.add(":path".into(), full_path);
        for (k, v) in req.headers {
            headers.add(k.to_ascii_lowercase(), v);
        }
        if !req.content_type.is_empty() && headers.get("content-type").is_none() {
            headers.add("content-type".into(), req.content_type);
        }
        let body = if req.data.is_empty() {
            req.query.clone().into_bytes()
        } else {
            req.data.to_vec()
        };
        Self {
            verb,
            path,
            query: req.query,
            request_headers: headers,
            request_body: body,
            request_trailers: Fields::default(),
            response_headers: Fields::default(),
            response_body: Vec::new(),
            response_trailers: Fields::default(),
            local_response: None,
        }
    }
}

/// An HTTP field map as proxy-wasm sees it: ordered, names compared case-insensitively,
/// a name may repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fields(pub(crate) Vec<(String, String)>);

impl Fields {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn add(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }

    pub(crate) fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Whether one more field of `name` and `value` stays within the bounds.
    pub(crate) fn has_room(&self, name: &str, value: &str) -> bool {
        let bytes: usize = self.0.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.0.len() < MAX_FIELDS && bytes + name.len() + value.len() <= MAX_FIELD_BYTES
    }

    /// The proxy-wasm serialization: the number of pairs, every pair's name and value
    /// lengths, then every name and value each followed by a NUL, all lengths u32 LE.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        let size = 4 + self
            .0
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len() + 2)
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in &self.0 {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    /// Parse the serialization; BadArgument when it is malformed, not UTF-8 or too big. An
    /// empty input is an empty map.
    pub(crate) fn deserialize(bytes: &[u8]) -> Result<Self, Status> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let u32_at = |at: usize| -> Result<usize, Status> {
            let b = bytes.get(at..at + 4).ok_or(Status::BadArgument)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let n = u32_at(0)?;
        if n > MAX_FIELDS {
            return Err(Status::BadArgument);
        }
        let mut data = n
            .checked_mul(8)
            .and_then(|l| l.checked_add(4))
            .ok_or(Status::BadArgument)?;
        let mut fields = Fields(Vec::with_capacity(n));
        for i in 0..n {
            let klen = u32_at(4 + i * 8)?;
            let vlen = u32_at(8 + i * 8)?;
            let mut take = |len: usize| -> Result<String, Status> {
                let end = data.checked_add(len).ok_or(Status::BadArgument)?;
                let s = bytes.get(data..end).ok_or(Status::BadArgument)?;
                if bytes.get(end) != Some(&0) {
                    return Err(Status::BadArgument);
                }
                data = end + 1;
                String::from_utf8(s.to_vec()).map_err(|_| Status::BadArgument)
            };
            let k = take(klen)?;
            let v = take(vlen)?;
            if !fields.has_room(&k, &v) {
                return Err(Status::BadArgument);
            }
            fields.add(k, v);
        }
        Ok(fields)
    }
}

/// A function's shared data: values with a CAS counter, bounded in keys and bytes.
#[derive(Debug, Default)]
pub(crate) struct SharedData {
    items: HashMap<String, (Vec<u8>, u32)>,
    bytes: usize,
    next_cas: u32,
}

impl SharedData {
    pub(crate) fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.items.get(key).cloned()
    }

    /// Set `key` to `value` if `cas` is 0 or matches the current CAS (ABI semantics).
    pub(crate) fn set(&mut self, key: String, value: Vec<u8>, cas: u32) -> Status {
        if key.is_empty() {
            return Status::BadArgument;
        }
        let old = self.items.get(&key);
        if let Some((_, current)) = old
            && cas != 0
            && cas != *current
        {
            return Status::CasMismatch;
        }
        let freed = old.map_or(0, |(v, _)| key.len() + v.len());
        let bytes = self.bytes - freed + key.len() + value.len();
        if bytes > MAX_SHARED_BYTES || (old.is_none() && self.items.len() >= MAX_SHARED_KEYS) {
            return Status::InternalFailure;
        }
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        self.bytes = bytes;
        self.items.insert(key, (value, self.next_cas));
        Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut f = Fields::default();
        f.add("a".into(), "1".into());
        f.add("content-type".into(), "text/plain".into());
        f.add("a".into(), String::new());
        assert_eq!(Fields::deserialize(&f.serialize()), Ok(f));
        assert_eq!(Fields::deserialize(&[]), Ok(Fields::default()));
    }

    #[test]
    fn malformed_fields_are_bad_arguments() {
        let mut f = Fields::default();
        f.add("k".into(), "v".into());
        let good = f.serialize();
        // Truncated anywhere.
        for cut in 1..good.len() {
            assert_eq!(
                Fields::deserialize(&good[..cut]),
                Err(Status::BadArgument),
                "cut {cut}"
            );
        }
        // Lengths past the end, and a count that overflows.
        let mut long = good.clone();
        long[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Fields::deserialize(&long), Err(Status::BadArgument));
        assert_eq!(
            Fields::deserialize(&u32::MAX.to_le_bytes()),
            Err(Status::BadArgument)
        );
        // A missing NUL.
        let mut nul = good;
        let last = nul.len() - 1;
        nul[last] = b'x';
        assert_eq!(Fields::deserialize(&nul), Err(Status::BadArgument));
    }

    #[test]
    fn shared_data_compares_and_swaps() {
        let mut d = SharedData::default();
        assert_eq!(d.set("k".into(), b"1".to_vec(), 0), Status::Ok);
        let (_, cas) = d.get("k").unwrap();
        assert_eq!(
            d.set("k".into(), b"2".to_vec(), cas + 1),
            Status::CasMismatch
        );
        assert_eq!(d.set("k".into(), b"2".to_vec(), cas), Status::Ok);
        assert_eq!(d.get("k").unwrap().0, b"2");
        assert_eq!(d.set(String::new(), Vec::new(), 0), Status::BadArgument);
        assert_eq!(
            d.set("big".into(), vec![0; MAX_SHARED_BYTES], 0),
            Status::InternalFailure
        );
    }
}
