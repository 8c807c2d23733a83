//! Locks: `POST /v1.0-alpha1/lock/{store}` with `{resourceId, lockOwner, expiryInSeconds}`
//! answers `{"success": bool}`; `POST /v1.0-alpha1/unlock/{store}` with
//! `{resourceId, lockOwner}` answers `{"status": n}` with Dapr's numbering (0 success,
//! 1 lock does not exist, 2 lock belongs to others).

use axum::Json as JsonResponse;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use plinth_core::component::lock::LockStatus;
use serde::{Deserialize, Deserializer};

use super::error::ApiError;
use super::extract::{Json, Path};
use super::{DaprHttpState, require};
use crate::status::{DaprComponent, DaprHttpOp};

/// Dapr decodes these bodies with protojson, which takes the proto field names as well as
/// the JSON ones, and 64-bit-safe integers as strings.
#[derive(Debug, Deserialize)]
pub(super) struct LockRequest {
    #[serde(default, alias = "resource_id", rename = "resourceId")]
    resource_id: String,
    #[serde(default, alias = "lock_owner", rename = "lockOwner")]
    lock_owner: String,
    #[serde(
        default,
        alias = "expiry_in_seconds",
        rename = "expiryInSeconds",
        deserialize_with = "int_or_string"
    )]
    expiry_in_seconds: i64,
}

fn int_or_string<'de, D: Deserializer<'de>>(de: D) -> Result<i64, D::Error> {
    struct Int;
    impl serde::de::Visitor<'_> for Int {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an integer, or an integer in a string")
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i64, E> {
            v.trim()
                .parse()
                .map_err(|_| E::custom(format!("{v:?} is not an integer")))
        }
    }
    de.deserialize_any(Int)
}

pub(super) async fn try_lock(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    body: Result<Json<LockRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    // Dapr checks the expiry before anything else.
    if req.expiry_in_seconds <= 0 {
        return Err(ApiError::malformed(format!(
            "expiryInSeconds must be positive in lock store {store:?}, got {}",
            req.expiry_in_seconds
        )));
    }
    require(&s.rt, DaprComponent::LockStore, &store)?;
    let success =
        s.rt.lock
            .try_lock(
                &store,
                &req.resource_id,
                &req.lock_owner,
                req.expiry_in_seconds,
            )
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::TryLock, &e))?;
    Ok(JsonResponse(serde_json::json!({ "success": success })).into_response())
}

pub(super) async fn unlock(
    State(s): State<DaprHttpState>,
    Path(store): Path<String>,
    body: Result<Json<LockRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let Json(req) = body?;
    require(&s.rt, DaprComponent::LockStore, &store)?;
    let status =
        s.rt.lock
            .unlock(&store, &req.resource_id, &req.lock_owner)
            .await
            .map_err(|e| ApiError::op(DaprHttpOp::Unlock, &e))?;
    let status = match status {
        LockStatus::Success => 0,
        LockStatus::NotExist => 1,
        LockStatus::BelongsToOthers => 2,
    };
    Ok(JsonResponse(serde_json::json!({ "status": status })).into_response())
}
