//! `state.redis` metadata: the shared Redis connection keys plus a default TTL.

use plinth_core::metadata::{TTL_IN_SECONDS, Ttl, parse_ttl};
use plinth_core::{ComponentSpec, Metadata, Result};

use crate::redis_client::RedisSettings;

/// The parsed metadata of a `state.redis` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) redis: RedisSettings,
    /// `ttlInSeconds`: the TTL of writes that do not ask for one.
    pub(crate) default_ttl: Option<Ttl>,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let redis = RedisSettings::from_spec(spec)?;
        let default_ttl = match spec.get(TTL_IN_SECONDS) {
            None => None,
            Some(raw) => {
                let md = Metadata::from([(TTL_IN_SECONDS.to_owned(), raw.to_owned())]);
                parse_ttl(&md).map_err(|e| spec.invalid("metadata.ttlInSeconds", e))?
            }
        };
        Ok(Self { redis, default_ttl })
    }
}
