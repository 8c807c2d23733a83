//! `wasi:keyvalue@0.2.0-draft` over the state building block: a bucket is a state store,
//! opened by name, and every key goes through the function's [`StateApi`] (so under its app
//! id's prefix, the same key `plinth:runtime/state` reads and writes).
//!
//! [`StateApi`]: plinth_runtime::state::StateApi

use plinth_core::component::state::{
    Concurrency, Consistency, DeleteRequest, SetRequest, StateOptions,
};
use plinth_core::{ErrorKind, Metadata};
use plinth_runtime::state::StateApi;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::store::Ctx;

wasmtime::component::bindgen!({
    path: "../../wit/deps/keyvalue",
    world: "wasi:keyvalue/imports",
    imports: { default: async },
    with: { "wasi:keyvalue/store.bucket": Bucket },
});

use wasi::keyvalue::store::{Error as KvError, KeyResponse};
use wasi::keyvalue::{atomics, batch, store};

/// How often `increment` reads and writes again after another writer got in between.
const INCREMENT_ATTEMPTS: usize = 16;

/// An open bucket: the state store it names.
// `pub`: the bindings re-export it with `pub use` (in this private module).
#[allow(unreachable_pub)]
#[derive(Debug)]
pub struct Bucket {
    store: String,
}

type KvResult<T> = Result<T, KvError>;

/// Link `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft`.
pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    Imports::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)
}

/// A building block's error as wasi:keyvalue's.
fn kv_error(e: plinth_core::Error) -> KvError {
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => KvError::AccessDenied,
        _ => KvError::Other(e.to_string()),
    }
}

impl Ctx {
    /// The state store of an open bucket.
    fn bucket(&mut self, bucket: &Resource<Bucket>) -> KvResult<String> {
        self.table()
            .get(bucket)
            .map(|b| b.store.clone())
            .map_err(|e| KvError::Other(format!("wasi:keyvalue bucket: {e}")))
    }
}

/// The value and ETag of `key`.
async fn read(
    state: &StateApi,
    store: &str,
    key: &str,
) -> KvResult<Option<(Vec<u8>, Option<String>)>> {
    let found = state
        .get(store, key, Metadata::new(), Consistency::Unspecified)
        .await
        .map_err(kv_error)?;
    Ok(found.map(|r| (r.data.to_vec(), r.etag)))
}

impl store::Host for Ctx {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<Bucket>> {
        let stores = self.env.runtime().host.names_of("state store");
        if !stores.contains(&identifier) {
            return Err(KvError::NoSuchStore);
        }
        self.table()
            .push(Bucket { store: identifier })
            .map_err(|e| KvError::Other(format!("wasi:keyvalue open: {e}")))
    }
}

impl store::HostBucket for Ctx {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<Option<Vec<u8>>> {
        let store = self.bucket(&bucket)?;
        Ok(read(&self.env.state, &store, &key)
            .await?
            .map(|(value, _)| value))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        let item = SetRequest {
            key,
            value: value.into(),
            ..Default::default()
        };
        self.env
            .state
            .save(&store, vec![item])
            .await
            .map_err(kv_error)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        let req = DeleteRequest {
            key,
            ..Default::default()
        };
        self.env.state.delete(&store, req).await.map_err(kv_error)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> KvResult<bool> {
        let store = self.bucket(&bucket)?;
        Ok(read(&self.env.state, &store, &key).await?.is_some())
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        _cursor: Option<u64>,
    ) -> KvResult<KeyResponse> {
        let store = self.bucket(&bucket)?;
        // The state query language would list only JSON values, and only in stores with the
        // query capability: no listing is better than a partial one.
        Err(KvError::Other(format!(
            "wasi:keyvalue list-keys is not supported by the state API: state stores ({store:?}) have no key listing"
        )))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for Ctx {
    /// Read with the ETag, add, and write back only if the ETag still holds (a key that
    /// does not exist is written first-write, so two creators cannot both win); another
    /// writer in between means reading again, up to [`INCREMENT_ATTEMPTS`] times.
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let store = self.bucket(&bucket)?;
        for _ in 0..INCREMENT_ATTEMPTS {
            let (current, etag) = match read(&self.env.state, &store, &key).await? {
                None => (0, None),
                Some((value, Some(etag))) => (number(&key, &value)?, Some(etag)),
                Some((_, None)) => {
                    return Err(KvError::Other(format!(
                        "wasi:keyvalue increment needs ETags, and state store {store:?} gave none for {key:?}"
                    )));
                }
            };
            let next = current.checked_add(delta).ok_or_else(|| {
                KvError::Other(format!(
                    "wasi:keyvalue increment: {current} + {delta} overflows a u64 (key {key:?})"
                ))
            })?;
            let item = SetRequest {
                key: key.clone(),
                value: next.to_string().into(),
                etag,
                options: StateOptions {
                    concurrency: Concurrency::FirstWrite,
                    ..Default::default()
                },
                ..Default::default()
            };
            match self.env.state.save(&store, vec![item]).await {
                Ok(()) => return Ok(next),
                Err(e) if e.kind() == ErrorKind::EtagMismatch => continue,
                Err(e) => return Err(kv_error(e)),
            }
        }
        Err(KvError::Other(format!(
            "wasi:keyvalue increment of {key:?}: other writers changed it {INCREMENT_ATTEMPTS} times in a row; try again"
        )))
    }
}

/// A stored counter: decimal digits.
fn number(key: &str, value: &[u8]) -> KvResult<u64> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            KvError::Other(format!(
                "wasi:keyvalue increment: the value of {key:?} is not a non-negative decimal integer"
            ))
        })
}

impl batch::Host for Ctx {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let store = self.bucket(&bucket)?;
        let items = self
            .env
            .state
            .bulk_get(&store, keys, Metadata::new())
            .await
            .map_err(kv_error)?;
        items
            .into_iter()
            .map(|item| match (item.error, item.value) {
                (Some(e), _) => Err(KvError::Other(format!("key {:?}: {e}", item.key))),
                (None, Some(v)) => Ok(Some((item.key, v.data.to_vec()))),
                (None, None) => Ok(None),
            })
            .collect()
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        let items = key_values
            .into_iter()
            .map(|(key, value)| SetRequest {
                key,
                value: value.into(),
                ..Default::default()
            })
            .collect();
        self.env.state.save(&store, items).await.map_err(kv_error)
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> KvResult<()> {
        let store = self.bucket(&bucket)?;
        let reqs = keys
            .into_iter()
            .map(|key| DeleteRequest {
                key,
                ..Default::default()
            })
            .collect();
        self.env
            .state
            .bulk_delete(&store, reqs)
            .await
            .map_err(kv_error)
    }
}
