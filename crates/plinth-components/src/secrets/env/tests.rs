use std::collections::BTreeSet;

use plinth_core::ErrorKind;

use super::*;

fn vars() -> HashMap<String, String> {
    [
        ("DB_PASSWORD", "hunter2"),
        ("HOME_DIR", "/home/app"),
        ("MYAPP_DB", "postgres://db"),
        ("MYAPP_CACHE", "redis://cache"),
        ("DAPR_API_TOKEN", "dapr-token"),
        ("APP_API_TOKEN", "app-token"),
        ("PLINTH_API_TOKEN", "plinth-token"),
        ("PLINTH_ANYTHING", "internal"),
        ("DAPR_HTTP_PORT", "3500"),
        ("APP_API_TOKEN_FILE", "/run/token"),
        ("MYAPP_DAPR_API_TOKEN", "prefixed-but-not-blocked"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn store(prefix: Option<&str>, allowlist: Option<&[&str]>) -> EnvSecretStore {
    let config = EnvSecretsConfig {
        prefix: prefix.map(str::to_owned),
        allowlist: allowlist.map(|l| l.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>()),
    };
    EnvSecretStore::with_vars(config, vars())
}

async fn get(store: &EnvSecretStore, name: &str) -> Result<Secret> {
    store.get(name, &Metadata::new()).await
}

async fn bulk_names(store: &EnvSecretStore) -> Vec<String> {
    let all = store.bulk_get(&Metadata::new()).await.unwrap_or_default();
    let mut names: Vec<String> = all.into_keys().collect();
    names.sort();
    names
}

#[tokio::test]
async fn get_returns_the_variable_under_its_name() {
    let store = store(None, None);
    let secret = get(&store, "DB_PASSWORD").await.ok();
    assert_eq!(
        secret,
        Some(Secret::from([(
            "DB_PASSWORD".to_owned(),
            "hunter2".to_owned()
        )]))
    );
    assert!(get(&store, "db_password").await.is_err(), "case-sensitive");
}

#[tokio::test]
async fn tokens_are_never_returned_and_read_as_missing() {
    let missing = get(&store(None, None), "NO_SUCH_VARIABLE").await.err();
    assert_eq!(
        missing.as_ref().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );
    let wording = |name: &str| {
        missing
            .as_ref()
            .map(|e| e.message().replace("NO_SUCH_VARIABLE", name))
    };
    let everything: &[&str] = &[
        "DAPR_API_TOKEN",
        "APP_API_TOKEN",
        "PLINTH_API_TOKEN",
        "PLINTH_ANYTHING",
        "DAPR_HTTP_PORT",
        "APP_API_TOKEN_FILE",
    ];
    for store in [store(None, None), store(None, Some(everything))] {
        for &name in everything {
            let err = get(&store, name).await.err();
            assert_eq!(
                err.as_ref().map(|e| e.kind()),
                Some(ErrorKind::NotFound),
                "{name}"
            );
            assert_eq!(
                err.map(|e| e.message().to_owned()),
                wording(name),
                "same answer as missing"
            );
        }
        for name in bulk_names(&store).await {
            assert!(!is_blocked(&name), "{name} in bulk");
        }
    }
    // A prefix that makes a token name out of a harmless one is caught on the full name.
    let prefixed = store(Some("DAPR_"), None);
    assert!(get(&prefixed, "API_TOKEN").await.is_err());
    assert!(get(&prefixed, "HTTP_PORT").await.is_err());
    assert!(bulk_names(&prefixed).await.is_empty());
}

#[tokio::test]
async fn bulk_is_empty_unless_limited() {
    assert!(bulk_names(&store(None, None)).await.is_empty());
    assert_eq!(
        bulk_names(&store(None, Some(&["HOME_DIR", "DAPR_API_TOKEN", "NOPE"]))).await,
        ["HOME_DIR"]
    );
}

#[tokio::test]
async fn a_prefix_limits_and_is_left_out_of_names() {
    let store = store(Some("MYAPP_"), None);
    assert_eq!(bulk_names(&store).await, ["CACHE", "DAPR_API_TOKEN", "DB"]);
    let secret = get(&store, "DB").await.ok();
    assert_eq!(
        secret,
        Some(Secret::from([(
            "DB".to_owned(),
            "postgres://db".to_owned()
        )]))
    );
    assert!(get(&store, "MYAPP_DB").await.is_err());
    assert!(
        get(&store, "DB_PASSWORD").await.is_err(),
        "outside the prefix"
    );
    let all = store.bulk_get(&Metadata::new()).await.unwrap_or_default();
    assert_eq!(
        all.get("CACHE")
            .and_then(|s| s.get("CACHE"))
            .map(String::as_str),
        Some("redis://cache")
    );
}

#[tokio::test]
async fn an_allowlist_limits_names() {
    let store = store(Some("MYAPP_"), Some(&["DB"]));
    assert_eq!(bulk_names(&store).await, ["DB"]);
    assert!(get(&store, "DB").await.is_ok());
    assert!(get(&store, "CACHE").await.is_err());
}

#[tokio::test]
async fn odd_names_are_missing_not_panics() {
    let store = EnvSecretStore::new(EnvSecretsConfig::default());
    for name in ["", "A=B", "A\0B"] {
        assert_eq!(
            get(&store, name).await.err().map(|e| e.kind()),
            Some(ErrorKind::NotFound)
        );
    }
}

#[tokio::test]
async fn the_process_environment_is_read() {
    // PATH is set in any environment the tests run in; the allowlist makes bulk reads work.
    let Some(path) = std::env::var_os("PATH").and_then(|p| p.into_string().ok()) else {
        return;
    };
    let config = EnvSecretsConfig {
        allowlist: Some(BTreeSet::from(["PATH".to_owned()])),
        prefix: None,
    };
    let store = EnvSecretStore::new(config);
    let got = get(&store, "PATH").await.ok();
    assert_eq!(got.as_ref().and_then(|s| s.get("PATH")), Some(&path));
    assert_eq!(bulk_names(&store).await, ["PATH"]);
}

#[test]
fn config_from_metadata() {
    let spec = ComponentSpec::new("secrets", TYPE_NAME)
        .with_metadata(PREFIX, "MYAPP_")
        .with_metadata(ALLOWLIST, " A, B ,,C ");
    let config = EnvSecretsConfig::from_spec(&spec).unwrap_or_default();
    assert_eq!(config.prefix.as_deref(), Some("MYAPP_"));
    let names: Vec<_> = config.allowlist.unwrap_or_default().into_iter().collect();
    assert_eq!(names, ["A", "B", "C"]);
    assert_eq!(
        EnvSecretsConfig::from_spec(&ComponentSpec::new("s", TYPE_NAME)).ok(),
        Some(EnvSecretsConfig::default())
    );
    assert!(
        EnvSecretsConfig::from_spec(
            &ComponentSpec::new("s", TYPE_NAME).with_metadata(PREFIX, "A=")
        )
        .is_err()
    );
}
