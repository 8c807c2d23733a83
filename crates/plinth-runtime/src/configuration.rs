//! The configuration building block: get, save, delete and subscriptions over one item model.

use std::sync::Arc;

use plinth_core::component::configuration::{ConfigurationItem, ConfigurationQuery};
use plinth_core::{Error, Result};
use tokio::sync::mpsc;

use crate::components::ComponentHost;

/// How many change batches a subscriber may lag before it is cut off.
const SUBSCRIBER_BUFFER: usize = 64;

/// The configuration API every front door calls.
#[derive(Debug, Clone)]
pub struct ConfigurationApi {
    host: Arc<ComponentHost>,
    app_id: Arc<str>,
}

impl ConfigurationApi {
    /// Configuration over the host's components; `app_id` is used when a request names none.
    pub fn new(host: Arc<ComponentHost>, app_id: &str) -> Self {
        Self {
            host,
            app_id: app_id.into(),
        }
    }

    fn normalise(&self, mut query: ConfigurationQuery) -> ConfigurationQuery {
        if query.app_id.is_empty() {
            query.app_id = self.app_id.to_string();
        }
        query
    }

    /// Items matching the query (an empty key list means all).
    pub async fn get(
        &self,
        store: &str,
        query: ConfigurationQuery,
    ) -> Result<Vec<ConfigurationItem>> {
        let handle = self.host.configuration(store)?;
        let query = self.normalise(query);
        handle
            .call("get", query, |c, q| async move { c.get(&q).await })
            .await
    }

    /// Create or replace items.
    pub async fn save(
        &self,
        store: &str,
        app_id: &str,
        items: Vec<ConfigurationItem>,
    ) -> Result<()> {
        if let Some(bad) = items.iter().find(|i| i.key.is_empty()) {
            return Err(Error::invalid_argument(format!(
                "configuration item with empty key (group {:?})",
                bad.group
            )));
        }
        let handle = self.host.configuration(store)?;
        let app_id = if app_id.is_empty() {
            self.app_id.to_string()
        } else {
            app_id.to_string()
        };
        handle
            .call("set", (app_id, items), |c, (a, i)| async move {
                c.set(&a, i).await
            })
            .await
    }

    /// Delete items by key.
    pub async fn delete(&self, store: &str, query: ConfigurationQuery) -> Result<()> {
        let handle = self.host.configuration(store)?;
        let query = self.normalise(query);
        handle
            .call("delete", query, |c, q| async move { c.delete(&q).await })
            .await
    }

    /// Subscribe to changes of the items matching `query`. Each batch holds the changed items
    /// (deleted ones with empty content). The stream ends when the receiver is dropped; if
    /// the subscriber falls too far behind it is ended with an error rather than buffered
    /// without bound.
    pub async fn subscribe(
        &self,
        store: &str,
        query: ConfigurationQuery,
    ) -> Result<mpsc::Receiver<Result<Vec<ConfigurationItem>>>> {
        let handle = self.host.configuration(store)?;
        let query = self.normalise(query);
        let mut changes = handle.component.watch().await?;
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    change = changes.recv() => {
                        let Some(change) = change else {
                            let _ = tx.send(Err(Error::unavailable("configuration store stopped sending changes"))).await;
                            return;
                        };
                        let items: Vec<_> = change
                            .items
                            .into_iter()
                            .filter(|item| query.matches(&change.app_id, item))
                            .collect();
                        if items.is_empty() {
                            continue;
                        }
                        if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(Ok(items)) {
                            tracing::warn!("configuration subscriber too slow; ending its subscription");
                            let _ = tx.send(Err(Error::resource_exhausted("subscriber fell too far behind; resubscribe"))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }
}
