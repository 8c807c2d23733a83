//! The runtime part (`grpc_config`) of a Layotto `config.json`, so Layotto users can migrate:
//! its components, `secret_ref`s, sequencer `biggerThan` and the `app` section.

use std::path::Path;

use plinth_core::{ComponentSpec, Error, Result};
use serde_json::{Map, Value};

use super::secrets::SecretRef;
use super::{Declared, Loaded};

/// Layotto's section names and the kinds they hold.
const SECTIONS: &[(&str, &str)] = &[
    ("state", "state"),
    ("lock", "lock"),
    ("sequencer", "sequencer"),
    ("config_store", "configuration"),
    ("pub_subs", "pubsub"),
    ("secret_store", "secretstores"),
    ("bindings", "bindings"),
    ("file", "file"),
    ("oss", "file"),
];

/// Sections that configure Layotto features Plinth serves differently or not at all.
const IGNORED: &[&str] = &[
    "hellos",
    "custom_component",
    "extends",
    "lifecycle",
    "sms",
    "email",
    "phone",
    "delay_queue",
    "cryption",
];

fn find_grpc_config(value: &Value) -> Option<&Map<String, Value>> {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(grpc)) = map.get("grpc_config") {
                return Some(grpc);
            }
            map.values().find_map(find_grpc_config)
        }
        Value::Array(items) => items.iter().find_map(find_grpc_config),
        _ => None,
    }
}

pub(super) fn load(path: &Path, text: &str, _app_id: &str, loaded: &mut Loaded) -> Result<()> {
    let file = path.display().to_string();
    let root: Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid_argument(format!("{file}: invalid JSON: {e}")))?;
    let grpc = find_grpc_config(&root)
        .ok_or_else(|| Error::invalid_argument(format!("{file}: no grpc_config section (servers[].listeners[].filter_chains[].filters[].config.grpc_config)")))?;
    for (section, value) in grpc {
        if let Some((_, kind)) = SECTIONS.iter().find(|(s, _)| s == section) {
            let Some(components) = value.as_object() else {
                return Err(Error::invalid_argument(format!(
                    "{file}: grpc_config.{section} must be an object"
                )));
            };
            for (name, body) in components {
                loaded
                    .components
                    .push(component(&file, section, kind, name, body)?);
            }
        } else if section == "app" {
            app(&file, value, loaded)?;
        } else if IGNORED.contains(&section.as_str()) {
            tracing::info!(file = %file, section = %section, "Layotto config section not used by Plinth");
        } else {
            tracing::warn!(file = %file, section = %section, "unknown Layotto config section ignored");
        }
    }
    Ok(())
}

fn app(file: &str, value: &Value, loaded: &mut Loaded) -> Result<()> {
    if let Some(id) = value
        .get("app_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        loaded.settings.app_id = Some(id.to_string());
    }
    if let Some(port) = value.get("grpc_callback_port") {
        let port = port
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "{file}: grpc_config.app.grpc_callback_port: {port} is not a port"
                ))
            })?;
        loaded.settings.app_port = Some(port);
        loaded.settings.app_protocol = Some("grpc".into());
    }
    Ok(())
}

/// Layotto names types without the kind (`redis`, `in-memory`, `local.file`); a component
/// written `{"redis": {...}}` is named after its type.
fn component(file: &str, section: &str, kind: &str, name: &str, body: &Value) -> Result<Declared> {
    let type_short = body.get("type").and_then(Value::as_str).unwrap_or(name);
    let type_name = match (kind, type_short) {
        ("file", "local") => "file.local".to_string(),
        (_, t) if t.starts_with(&format!("{kind}.")) => t.to_string(),
        (_, t) => format!("{kind}.{t}"),
    };
    let mut spec = ComponentSpec::new(name, type_name);
    spec.source = format!("{file} (grpc_config.{section}.{name})");
    if let Some(md) = body.get("metadata") {
        let Some(md) = md.as_object() else {
            return Err(spec.invalid("metadata", "must be an object of strings"));
        };
        for (k, v) in md {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            spec.metadata.insert(k.clone(), value);
        }
    }
    // Layotto's default key prefix is none; keep it so a migrated app sees its keys.
    spec.metadata
        .entry("keyPrefix".into())
        .or_insert_with(|| "none".into());
    if let Some(bigger) = body.get("biggerThan") {
        if !bigger.is_object() {
            return Err(spec.invalid("biggerThan", "must be an object of key → integer"));
        }
        spec.structured.insert("biggerThan".into(), bigger.clone());
    }
    let mut secret_refs = Vec::new();
    if let Some(refs) = body.get("secret_ref") {
        let Some(refs) = refs.as_array() else {
            return Err(spec.invalid("secret_ref", "must be a list"));
        };
        for (i, r) in refs.iter().enumerate() {
            let field = |f: &str| {
                r.get(f)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (store, key, sub_key, inject_as) = (
                field("store_name"),
                field("key"),
                field("sub_key"),
                field("inject_as"),
            );
            if store.is_empty() || key.is_empty() || inject_as.is_empty() {
                return Err(spec.invalid(
                    &format!("secret_ref[{i}]"),
                    "store_name, key and inject_as are required",
                ));
            }
            secret_refs.push(SecretRef {
                field: inject_as,
                store,
                name: key,
                key: sub_key,
            });
        }
    }
    Ok(Declared {
        spec,
        secret_refs,
        scopes: Vec::new(),
    })
}
