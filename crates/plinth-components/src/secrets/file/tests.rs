use std::path::PathBuf;

use plinth_core::ErrorKind;

use super::*;

const FILE: &str = r#"{
    "plain": "p",
    "number": 42,
    "flag": true,
    "nothing": null,
    "db": { "user": "u", "password": "pw", "replica": { "host": "h" } },
    "hosts": ["a", "b"]
}"#;

/// A secrets file in the system's temp dir, removed on drop.
struct TempJson(PathBuf);

impl TempJson {
    fn new(content: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("plinth-secrets-{}.json", uuid::Uuid::new_v4()));
        assert!(std::fs::write(&path, content).is_ok());
        Self(path)
    }
}

impl Drop for TempJson {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn config(path: &std::path::Path, separator: &str, multi_valued: bool) -> FileSecretsConfig {
    FileSecretsConfig {
        secrets_file: path.to_owned(),
        nested_separator: separator.into(),
        multi_valued,
    }
}

async fn loaded(content: &str, separator: &str, multi_valued: bool) -> (FileSecretStore, TempJson) {
    let file = TempJson::new(content);
    let store = FileSecretStore::new(config(&file.0, separator, multi_valued));
    assert!(store.init().await.is_ok());
    (store, file)
}

fn secret(pairs: &[(&str, &str)]) -> Secret {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn nested_values_flatten_into_single_secrets() {
    let (store, _file) = loaded(FILE, ":", false).await;
    let md = Metadata::new();
    assert_eq!(
        store.get("plain", &md).await.ok(),
        Some(secret(&[("plain", "p")]))
    );
    assert_eq!(
        store.get("number", &md).await.ok(),
        Some(secret(&[("number", "42")]))
    );
    assert_eq!(
        store.get("flag", &md).await.ok(),
        Some(secret(&[("flag", "true")]))
    );
    assert_eq!(
        store.get("nothing", &md).await.ok(),
        Some(secret(&[("nothing", "")]))
    );
    assert_eq!(
        store.get("db:replica:host", &md).await.ok(),
        Some(secret(&[("db:replica:host", "h")]))
    );
    assert_eq!(
        store.get("hosts:1", &md).await.ok(),
        Some(secret(&[("hosts:1", "b")]))
    );
    assert_eq!(
        store.get("db", &md).await.err().map(|e| e.kind()),
        Some(ErrorKind::NotFound)
    );

    let all = store.bulk_get(&md).await.unwrap_or_default();
    let mut names: Vec<&str> = all.keys().map(String::as_str).collect();
    names.sort_unstable();
    let want = [
        "db:password",
        "db:replica:host",
        "db:user",
        "flag",
        "hosts:0",
        "hosts:1",
        "nothing",
        "number",
        "plain",
    ];
    assert_eq!(names, want);
}

#[tokio::test]
async fn the_separator_is_configurable() {
    let (store, _file) = loaded(FILE, ".", false).await;
    assert!(store.get("db.replica.host", &Metadata::new()).await.is_ok());
    assert!(
        store
            .get("db:replica:host", &Metadata::new())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn multi_valued_secrets_are_top_level_keys() {
    let (store, _file) = loaded(FILE, ":", true).await;
    let md = Metadata::new();
    let db = store.get("db", &md).await.ok();
    assert_eq!(
        db,
        Some(secret(&[
            ("user", "u"),
            ("password", "pw"),
            ("replica:host", "h")
        ]))
    );
    assert_eq!(
        store.get("plain", &md).await.ok(),
        Some(secret(&[("plain", "p")]))
    );
    assert_eq!(
        store.get("hosts", &md).await.ok(),
        Some(secret(&[("0", "a"), ("1", "b")]))
    );
    assert!(store.get("db:user", &md).await.is_err());
    assert_eq!(store.bulk_get(&md).await.map(|all| all.len()).ok(), Some(6));
}

#[tokio::test]
async fn unreadable_files_fail_init_naming_the_file() {
    let missing = std::env::temp_dir().join("plinth-no-such-secrets-file.json");
    let store = FileSecretStore::new(config(&missing, ":", false));
    let err = store.init().await.err();
    assert_eq!(
        err.as_ref().map(|e| e.kind()),
        Some(ErrorKind::InvalidArgument)
    );
    assert!(err.is_some_and(|e| e.message().contains("plinth-no-such-secrets-file.json")));
    assert_eq!(
        store
            .get("x", &Metadata::new())
            .await
            .err()
            .map(|e| e.kind()),
        Some(ErrorKind::Unavailable)
    );

    for bad in [r#"{"password": "hunter2""#, r#"["not", "an", "object"]"#] {
        let file = TempJson::new(bad);
        let err = FileSecretStore::new(config(&file.0, ":", false))
            .init()
            .await
            .err();
        assert_eq!(
            err.as_ref().map(|e| e.kind()),
            Some(ErrorKind::InvalidArgument)
        );
        assert!(
            err.is_some_and(|e| !e.message().contains("hunter2")),
            "no content in errors"
        );
    }
}

#[tokio::test]
async fn init_again_reloads() {
    let (store, file) = loaded(r#"{"a": "1"}"#, ":", false).await;
    assert!(std::fs::write(&file.0, r#"{"a": "2"}"#).is_ok());
    assert!(store.init().await.is_ok());
    assert_eq!(
        store.get("a", &Metadata::new()).await.ok(),
        Some(secret(&[("a", "2")]))
    );
}

#[test]
fn config_from_metadata() {
    let spec = ComponentSpec::new("s", TYPE_NAME);
    assert!(
        FileSecretsConfig::from_spec(&spec).is_err(),
        "secretsFile is required"
    );
    let spec = spec.with_metadata(SECRETS_FILE, "/etc/secrets.json");
    let want = config(std::path::Path::new("/etc/secrets.json"), ":", false);
    assert_eq!(FileSecretsConfig::from_spec(&spec).ok(), Some(want));
    let spec = spec
        .with_metadata(NESTED_SEPARATOR, ".")
        .with_metadata(MULTI_VALUED, "true");
    let want = config(std::path::Path::new("/etc/secrets.json"), ".", true);
    assert_eq!(FileSecretsConfig::from_spec(&spec).ok(), Some(want));
    assert!(FileSecretsConfig::from_spec(&spec.with_metadata(MULTI_VALUED, "maybe")).is_err());
}
