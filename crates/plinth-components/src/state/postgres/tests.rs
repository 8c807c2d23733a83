//! Config validation; the tests against a real PostgreSQL come with the next change.

use std::time::Duration;

use plinth_core::ErrorKind;

use super::config::{
    CLEANUP_INTERVAL, CONNECTION_STRING, METADATA_TABLE_NAME, TABLE_NAME, TABLE_PREFIX,
};
use super::*;

const DEFAULT_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

#[test]
fn postgres_bad_table_name_is_a_config_error() {
    for (field, bad) in [
        (TABLE_NAME, "state; DROP TABLE x"),
        (TABLE_NAME, "1state"),
        (TABLE_NAME, "a.b.c"),
        (TABLE_NAME, "\"quoted\""),
        (TABLE_PREFIX, "bad-prefix"),
        (METADATA_TABLE_NAME, "meta data"),
    ] {
        let spec = ComponentSpec::new("statestore", TYPE_NAME)
            .with_metadata(CONNECTION_STRING, DEFAULT_URL)
            .with_metadata(field, bad);
        let err = factory(&spec).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(
            err.to_string().contains(&format!("metadata.{field}")),
            "{err}"
        );
    }
    let long = "t".repeat(64);
    let spec = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, DEFAULT_URL)
        .with_metadata(TABLE_NAME, long);
    assert!(factory(&spec).is_err());
    for good in ["state", "my_schema.state", "_s1"] {
        let spec = ComponentSpec::new("statestore", TYPE_NAME)
            .with_metadata(CONNECTION_STRING, DEFAULT_URL)
            .with_metadata(TABLE_NAME, good);
        assert!(factory(&spec).is_ok(), "{good}");
    }
}

#[test]
fn postgres_config_defaults_and_errors() {
    let spec = ComponentSpec::new("statestore", TYPE_NAME).with_metadata(
        CONNECTION_STRING,
        "host=localhost user=postgres password=secret port=5432 database=my_db",
    );
    let config = PostgresConfig::from_spec(&spec).unwrap();
    assert_eq!(config.table, "state");
    assert_eq!(config.metadata_table, "dapr_metadata");
    assert_eq!(config.timeout, Duration::from_secs(20));
    assert_eq!(config.cleanup_interval, Some(Duration::from_secs(3600)));
    assert_eq!(config.connection.get_dbname(), Some("my_db"));
    assert!(!format!("{config:?}").contains("secret"));
    for off in ["0", "-1", "-5s"] {
        let config =
            PostgresConfig::from_spec(&spec.clone().with_metadata(CLEANUP_INTERVAL, off)).unwrap();
        assert_eq!(config.cleanup_interval, None, "{off}");
    }
    let missing = ComponentSpec::new("statestore", TYPE_NAME);
    let err = factory(&missing).unwrap_err();
    assert!(
        err.to_string().contains("metadata.connectionString"),
        "{err}"
    );
    let bad = ComponentSpec::new("statestore", TYPE_NAME)
        .with_metadata(CONNECTION_STRING, "host=localhost nonsense=1");
    let err = factory(&bad).unwrap_err();
    assert!(
        err.to_string().contains("metadata.connectionString"),
        "{err}"
    );
}
