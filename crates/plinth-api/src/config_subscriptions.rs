//! The open configuration subscriptions of Dapr's APIs, by id, so that an unsubscribe ends
//! them whichever API made them (a gRPC stream, or an HTTP subscription pushing to the app).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::AbortHandle;

/// Subscription ids to the tasks that serve them.
#[derive(Debug, Clone, Default)]
pub struct ConfigSubscriptions(Arc<Mutex<HashMap<String, AbortHandle>>>);

impl ConfigSubscriptions {
    /// Register the task serving subscription `id`.
    pub(crate) fn insert(&self, id: String, task: AbortHandle) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, task);
    }

    /// Forget subscription `id` (its task ended by itself).
    pub(crate) fn remove(&self, id: &str) -> Option<AbortHandle> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// End subscription `id`; false if there is none.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        match self.remove(id) {
            Some(task) => {
                task.abort();
                true
            }
            None => false,
        }
    }
}
