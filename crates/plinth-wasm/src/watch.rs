//! `plinth run --functions-dir DIR`: every `NAME.wasm` in the directory is function `NAME`
//! (or the id a proxy-wasm module announces through `proxy_get_id`). A changed file is
//! reinstalled, a removed one uninstalled.
//!
//! inotify (through `notify`) says *that* something changed; the directory is then
//! rescanned and reconciled against what was installed from it, by content digest, so
//! bursts of events, editors' temporary files and partial writes (which fail to compile and
//! are retried on the next event, when the write completes) all come out right.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use plinth_core::{Error, Result};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use crate::config::FunctionSpec;
use crate::registry::{FunctionRegistry, InstallMode};

/// How long the directory must be quiet before a rescan: one copy fires several events.
const SETTLE: Duration = Duration::from_millis(100);

/// What one file installed.
#[derive(Debug, Clone)]
struct Installed {
    digest: String,
    id: String,
}

/// Reconciles a directory with the registry.
#[derive(Debug)]
pub struct DirWatcher {
    registry: Arc<FunctionRegistry>,
    dir: PathBuf,
    resources: Arc<HashMap<String, FunctionSpec>>,
    installed: HashMap<PathBuf, Installed>,
}

impl DirWatcher {
    /// A watcher of `dir`; `resources` give the config of functions by id.
    pub fn new(
        registry: Arc<FunctionRegistry>,
        dir: PathBuf,
        resources: Arc<HashMap<String, FunctionSpec>>,
    ) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::invalid_argument(format!(
                "--functions-dir {}: not a directory",
                dir.display()
            )));
        }
        Ok(Self {
            registry,
            dir,
            resources,
            installed: HashMap::new(),
        })
    }

    /// Install everything in the directory now. A file that fails is logged and skipped, so
    /// one bad file does not keep the others (or Plinth) from starting.
    pub async fn scan(&mut self) {
        let files = match wasm_files(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the functions directory");
                return;
            }
        };
        let gone: Vec<PathBuf> = self
            .installed
            .keys()
            .filter(|p| !files.contains(p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.installed.remove(&path) {
                match self.registry.uninstall(&old.id).await {
                    Ok(()) => {
                        tracing::info!(function = %old.id, file = %path.display(), "file removed: function uninstalled")
                    }
                    Err(e) => tracing::debug!(function = %old.id, error = %e, "already gone"),
                }
            }
        }
        for path in files {
            let bytes = match tokio::fs::read(&path).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read function file");
                    continue;
                }
            };
            let digest = format!("{:x}", Sha256::digest(&bytes));
            if self
                .installed
                .get(&path)
                .is_some_and(|i| i.digest == digest)
            {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
                continue;
            };
            let config = self
                .resources
                .get(&name)
                .map(FunctionSpec::config)
                .unwrap_or_default();
            match self
                .registry
                .install(&name, bytes, config, InstallMode::Upsert)
                .await
            {
                Ok(info) => {
                    if let Some(old) = self.installed.get(&path)
                        && old.id != info.id
                    {
                        let _ = self.registry.uninstall(&old.id).await;
                    }
                    tracing::info!(function = %info.id, file = %path.display(), version = info.version, "function loaded from the functions directory");
                    self.installed.insert(
                        path,
                        Installed {
                            digest,
                            id: info.id,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "function file not loaded");
                }
            }
        }
    }

    /// Watch the directory until `shutdown` turns true, rescanning after each burst of
    /// changes.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // Full means a rescan is already due.
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot watch the functions directory; changes will not be picked up");
                return;
            }
        };
        if let Err(e) = watcher.watch(&self.dir, RecursiveMode::NonRecursive) {
            tracing::error!(dir = %self.dir.display(), error = %e, "cannot watch the functions directory; changes will not be picked up");
            return;
        }
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
                got = rx.recv() => {
                    if got.is_none() {
                        return;
                    }
                }
            }
            // Let the burst settle.
            loop {
                match tokio::time::timeout(SETTLE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            self.scan().await;
        }
    }
}

/// The `.wasm` files directly in `dir`, sorted.
fn wasm_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().and_then(|e| e.to_str()) == Some("wasm"))
        .collect();
    files.sort();
    Ok(files)
}
