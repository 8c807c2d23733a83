//! `configuration.postgresql` metadata: Dapr's keys (`connectionString`, `table`,
//! `timeout`, `maxConns`) plus the names of the notification channel and trigger.

use plinth_core::{ComponentSpec, Result};

use crate::postgres_client::{PgSettings, bare_name, table_name, validate_identifier};

/// Component metadata (Dapr's): the configuration table, optionally `schema.table`
/// (default `plinth_configuration`; Dapr requires it).
pub(crate) const TABLE: &str = "table";
/// Component metadata: the channel changes are announced on (default `{table}_changes`).
/// Dapr takes it per subscription; Plinth's stores watch one channel, so it is set here.
pub(crate) const PG_NOTIFY_CHANNEL: &str = "pgNotifyChannel";
/// Component metadata: the name of the trigger and of its function (default
/// `{table}_notify`).
pub(crate) const TRIGGER_NAME: &str = "triggerName";
/// Component metadata: whether Plinth creates the notify trigger (default `true`); `false`
/// when the table already has a Dapr-style trigger of its own.
pub(crate) const CREATE_TRIGGER: &str = "createTrigger";
const DEFAULT_TABLE: &str = "plinth_configuration";

/// The parsed metadata of a `configuration.postgresql` component.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Where and how to connect.
    pub(crate) pg: PgSettings,
    /// The configuration table, validated.
    pub(crate) table: String,
    /// The notification channel, validated.
    pub(crate) channel: String,
    /// The trigger's (and its function's) name, validated.
    pub(crate) trigger: String,
    /// Whether to create the trigger.
    pub(crate) create_trigger: bool,
}

impl Config {
    pub(crate) fn from_spec(spec: &ComponentSpec) -> Result<Self> {
        let pg = PgSettings::from_spec(spec)?;
        let table = table_name(spec, TABLE, DEFAULT_TABLE)?;
        let name = |key: &str, suffix: &str| -> Result<String> {
            let value = spec
                .get(key)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}{suffix}", bare_name(&table)));
            validate_identifier(&value).map_err(|e| {
                let hint = if spec.get(key).is_none() {
                    format!(" (derived from {TABLE}; set {key})")
                } else {
                    String::new()
                };
                spec.invalid(&format!("metadata.{key}"), format!("{e}{hint}"))
            })?;
            Ok(value)
        };
        let channel = name(PG_NOTIFY_CHANNEL, "_changes")?;
        let trigger = name(TRIGGER_NAME, "_notify")?;
        let create_trigger = spec.bool_or(CREATE_TRIGGER, true)?;
        Ok(Self {
            pg,
            table,
            channel,
            trigger,
            create_trigger,
        })
    }
}
