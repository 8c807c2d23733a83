//! Sequencers.

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod memory;
pub mod mysql;
pub mod postgres;
pub mod redis;

use std::future::Future;

use plinth_core::{Error, Result};

/// `Sequencer::reserve` for a store that is a counter per key: `advance(by)` adds `by` to the
/// key's counter atomically and returns the new value, so the range is the `size` ids ending
/// there.
pub(crate) async fn reserve_by_advancing<Fut>(
    size: u32,
    advance: impl FnOnce(i64) -> Fut,
) -> Result<Option<(i64, i64)>>
where
    Fut: Future<Output = Result<i64>>,
{
    if size == 0 {
        return Err(Error::invalid_argument("cannot reserve 0 ids"));
    }
    let size = i64::from(size);
    let end = advance(size).await?;
    Ok(Some((end - size + 1, end)))
}
