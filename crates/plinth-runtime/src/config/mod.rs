//! Configuration loading: YAML resources in Dapr's envelope (`--resources-path`, repeatable,
//! multi-document files), a Configuration (`--config`), and the runtime part of a Layotto
//! `config.json` (`--layotto-config`). Everything is validated here, once; errors name the
//! file, the resource and the field.

mod layotto;
mod resource;
mod secrets;
mod tags;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plinth_core::{ComponentSpec, Error, Result};

pub use resource::SubscriptionResource;
pub use secrets::{SecretRef, resolve_secret_refs};
pub use tags::Tags;

use crate::resilience::PolicyConfig;

/// A component as declared, before secret references are resolved.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The spec, with plain metadata values filled in.
    pub spec: ComponentSpec,
    /// Metadata values to fetch from a secret store before the component is built.
    pub secret_refs: Vec<SecretRef>,
    /// App ids allowed to use the component (`scopes`); empty means all.
    pub scopes: Vec<String>,
}

/// Settings from a Configuration resource or a Layotto config.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The app id, if the config names one.
    pub app_id: Option<String>,
    /// The app's callback port (Layotto's `grpc_callback_port`).
    pub app_port: Option<u16>,
    /// The app's protocol, when the config implies one.
    pub app_protocol: Option<String>,
}

/// Everything loaded from config files.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Declared components.
    pub components: Vec<Declared>,
    /// Declarative subscriptions.
    pub subscriptions: Vec<SubscriptionResource>,
    /// Resilience policies by component name.
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Settings.
    pub settings: Settings,
    /// Whether the embedded default components were used.
    pub embedded: bool,
    /// Function resources (`kind: Function`), for the function host to read.
    pub functions: Vec<FunctionResource>,
    /// What the mesh reads: name resolution, access control, its own settings, traffic
    /// policies, HTTP endpoints and Resiliency's app targets.
    pub mesh: MeshSources,
}

/// The config the mesh reads, kept as written (the mesh validates it when it starts), each
/// with the file it came from for error messages.
#[derive(Debug, Clone, Default)]
pub struct MeshSources {
    /// A Configuration's `spec.nameResolution`.
    pub name_resolution: Option<Section>,
    /// A Configuration's `spec.accessControl`.
    pub access_control: Option<Section>,
    /// A Plinth Configuration's `spec.mesh`.
    pub settings: Option<Section>,
    /// `TrafficPolicy` resources (`apiVersion: plinth.dev/v1alpha1`).
    pub traffic_policies: Vec<RawResource>,
    /// Dapr `HTTPEndpoint` resources.
    pub http_endpoints: Vec<RawResource>,
    /// Resiliency policies by target app id (`spec.targets.apps`).
    pub app_policies: BTreeMap<String, PolicyConfig>,
}

/// One section of a Configuration, as written.
#[derive(Debug, Clone)]
pub struct Section {
    /// The file (and document) it came from.
    pub source: String,
    /// The section.
    pub value: serde_json::Value,
}

/// A resource kept as written, for the layer that reads it.
#[derive(Debug, Clone)]
pub struct RawResource {
    /// `metadata.name`.
    pub name: String,
    /// The file (and document) it came from.
    pub source: String,
    /// Its `spec`.
    pub spec: serde_json::Value,
    /// Its `scopes`: the app ids it applies to (all when empty).
    pub scopes: Vec<String>,
}

/// A `Function` resource (`apiVersion: plinth.dev/v1alpha1`), kept as written: the function
/// host reads its `spec`.
#[derive(Debug, Clone)]
pub struct FunctionResource {
    /// `metadata.name`: the function's id.
    pub name: String,
    /// The file (and document) it came from, for error messages.
    pub source: String,
    /// The directory of that file: a relative `spec.module` path is relative to it.
    pub dir: PathBuf,
    /// Its `spec`.
    pub spec: serde_json::Value,
    /// Its `scopes`: the app ids it applies to (all when empty).
    pub scopes: Vec<String>,
}

/// Where to load from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--resources-path`, repeatable.
    pub resources: Vec<PathBuf>,
    /// `--layotto-config`.
    pub layotto: Option<PathBuf>,
}

/// Load and validate every source, with template tags from the process environment (see
/// [`load_with`]).
pub fn load(sources: &Sources, app_id: &str) -> Result<Loaded> {
    load_with(sources, app_id, Tags::from_env)
}

/// Load and validate every source. Components and subscriptions scoped to other apps
/// (`scopes`) are left out and template tags in metadata values are expanded, both for the
/// final app id (a Configuration or a Layotto config may set it); `tags` gives the tags'
/// values for it. With no component declared anywhere (not even one scoped to another app),
/// the embedded default components are used.
pub fn load_with(
    sources: &Sources,
    app_id: &str,
    tags: impl FnOnce(&str) -> Tags,
) -> Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut pending = resource::Pending::default();
    if let Some(path) = &sources.config {
        let text = read(path)?;
        resource::load_file(path, &text, &mut loaded, &mut pending)?;
    }
    for dir in &sources.resources {
        for path in resource_files(dir)? {
            let text = read(&path)?;
            resource::load_file(&path, &text, &mut loaded, &mut pending)?;
        }
    }
    if let Some(path) = &sources.layotto {
        let text = read(path)?;
        layotto::load(path, &text, app_id, &mut loaded)?;
    }
    let app_id = loaded
        .settings
        .app_id
        .clone()
        .unwrap_or_else(|| app_id.to_string());
    let declared_any = pending.declares_components() || !loaded.components.is_empty();
    resource::finish(pending, &tags(&app_id), &mut loaded)?;
    loaded
        .functions
        .retain(|f| f.scopes.is_empty() || f.scopes.contains(&app_id));
    for list in [
        &mut loaded.mesh.traffic_policies,
        &mut loaded.mesh.http_endpoints,
    ] {
        list.retain(|r| r.scopes.is_empty() || r.scopes.contains(&app_id));
    }
    for declared in &mut loaded.components {
        declared.spec.app_id = app_id.clone();
    }
    if !declared_any {
        loaded.components = embedded(&app_id);
        loaded.embedded = true;
    }
    let mut seen = BTreeMap::new();
    for d in &loaded.components {
        if let Some(first) = seen.insert(d.spec.name.clone(), d.spec.source.clone()) {
            return Err(d.spec.invalid(
                "metadata.name",
                format!("duplicate component name; first defined in {first}"),
            ));
        }
    }
    Ok(loaded)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::invalid_argument(format!("{}: cannot read: {e}", path.display())))
}

/// The YAML files of a resources directory (or the file itself), sorted for a stable order.
fn resource_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::invalid_argument(format!(
            "{}: cannot read resources directory: {e}",
            dir.display()
        ))
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The embedded default: every building block in memory, files in `./.plinth/files`,
/// secrets from the environment.
pub fn embedded(app_id: &str) -> Vec<Declared> {
    let spec = |name: &str, type_name: &str| {
        let mut s = ComponentSpec::new(name, type_name);
        s.app_id = app_id.to_string();
        Declared {
            spec: s,
            secret_refs: Vec::new(),
            scopes: Vec::new(),
        }
    };
    let mut file = spec("filestore", "file.local");
    file.spec
        .metadata
        .insert("rootPath".into(), ".plinth/files".into());
    vec![
        spec("statestore", "state.in-memory"),
        spec("pubsub", "pubsub.in-memory"),
        spec("lockstore", "lock.in-memory"),
        spec("sequencer", "sequencer.in-memory"),
        spec("configstore", "configuration.in-memory"),
        file,
        spec("secretstore", "secretstores.local.env"),
    ]
}

#[cfg(test)]
mod tests;
