//! The one wasmtime engine of the process, its epoch ticker, and the on-disk cache of
//! precompiled code.

use std::collections::VecDeque;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use plinth_core::{Error, Result};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Module, OptLevel, PoolingAllocationConfig,
};

/// How often the epoch advances while a guest runs: the granularity of execution-time
/// budgets, and the longest a guest runs before yielding its thread to other tasks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How the engine is built.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Instances the pooling allocator reserves room for: the most function instances alive
    /// at once, across every function.
    pub pool_size: u32,
    /// The largest linear memory any instance may have; a function's own cap is at most this.
    pub max_memory_bytes: u64,
    /// Where precompiled code is cached. Created private to this user (0700); refused if
    /// anyone else can write to it, because loading a cached file trusts its contents.
    pub cache_dir: PathBuf,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            pool_size: 128,
            max_memory_bytes: 256 << 20,
            cache_dir: default_cache_dir(),
        }
    }
}

/// `$XDG_CACHE_HOME/plinth/wasm`, else `$HOME/.cache/plinth/wasm`, else a directory under
/// the system's temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("plinth/wasm");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(home).join(".cache/plinth/wasm");
    }
    std::env::temp_dir().join("plinth-wasm-cache")
}

/// What a binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryKind {
    /// A core module (Layotto's proxy-wasm functions).
    Module,
    /// A component (WASI 0.2).
    Component,
}

/// Tell a core module from a component by the preamble: `\0asm`, then a version and a layer
/// (1/0 for modules, 0xd/1 for components). Text (`.wat`) is refused.
pub fn detect(bytes: &[u8]) -> Result<BinaryKind> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Error::invalid_argument(
            "not a WebAssembly binary: it does not start with \\0asm",
        ));
    }
    match (
        u16::from_le_bytes([bytes[4], bytes[5]]),
        u16::from_le_bytes([bytes[6], bytes[7]]),
    ) {
        (1, 0) => Ok(BinaryKind::Module),
        (_, 1) => Ok(BinaryKind::Component),
        (version, layer) => Err(Error::invalid_argument(format!(
            "unsupported WebAssembly binary: version {version}, layer {layer}"
        ))),
    }
}

/// Compiled code, ready to instantiate.
#[derive(Clone)]
pub enum Compiled {
    /// A core module.
    Module(Module),
    /// A component.
    Component(Component),
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compiled::Module(_) => "Compiled::Module",
            Compiled::Component(_) => "Compiled::Component",
        })
    }
}

/// How a binary was compiled.
#[derive(Debug, Clone, Copy)]
pub struct CompileStats {
    /// Whether the cache held it.
    pub cached: bool,
    /// Compiling (or loading from the cache).
    pub elapsed: Duration,
}

/// The process's engine.
pub struct WasmEngine {
    engine: Engine,
    pooling: bool,
    options: EngineOptions,
    /// The hex digest of the engine's compatibility hash, part of every cache key.
    compat: String,
    ticker: Arc<Ticker>,
    /// What every component function's imports are resolved against, built once: linking
    /// per function cost each install about 0.3 ms and its own copy of every host
    /// function's definition.
    component_linker: wasmtime::component::Linker<crate::component::Ctx>,
    idle: IdleInstances,
}

/// Component instances kept warm between requests (see `limits.instanceReuse`), across all
/// functions, at most a quarter of the instance pool: an idle instance holds a pool slot.
/// The oldest goes first when the bound is reached, or when a request finds the pool full.
pub(crate) struct IdleInstances {
    max: usize,
    next_key: AtomicU64,
    /// (function key, instance), least recently used first.
    list: Mutex<VecDeque<(u64, crate::component::Warm)>>,
}

impl IdleInstances {
    fn new(max: usize) -> Self {
        Self {
            max,
            next_key: AtomicU64::new(0),
            list: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, crate::component::Warm)>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key for a newly loaded function.
    pub(crate) fn new_key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The most recently used idle instance of function `key`.
    pub(crate) fn take(&self, key: u64) -> Option<crate::component::Warm> {
        let mut list = self.lock();
        let at = list.iter().rposition(|(k, _)| *k == key)?;
        list.remove(at).map(|(_, warm)| warm)
    }

    /// Keep an instance of function `key`, dropping the oldest idle one past the bound.
    pub(crate) fn put(&self, key: u64, warm: crate::component::Warm) {
        if self.max == 0 {
            return;
        }
        let evicted = {
            let mut list = self.lock();
            let evicted = if list.len() >= self.max {
                list.pop_front()
            } else {
                None
            };
            list.push_back((key, warm));
            evicted
        };
        // Stores are dropped outside the lock: releasing an instance zeroes its memory.
        drop(evicted);
    }

    /// Drop the oldest idle instance; false when there is none.
    pub(crate) fn evict_oldest(&self) -> bool {
        let evicted = self.lock().pop_front();
        evicted.is_some()
    }

    /// Drop every idle instance of function `key` (it is being unloaded).
    pub(crate) fn remove(&self, key: u64) {
        let removed: VecDeque<_> = {
            let mut list = self.lock();
            let (gone, kept) = std::mem::take(&mut *list)
                .into_iter()
                .partition(|(k, _)| *k == key);
            *list = kept;
            gone
        };
        drop(removed);
    }
}

impl std::fmt::Debug for WasmEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmEngine")
            .field("pooling", &self.pooling)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .wasm_component_model(true)
        .cranelift_opt_level(OptLevel::Speed)
        .memory_init_cow(true)
        // No native-to-wasm address maps in compiled code: smaller cache files (and so less
        // resident memory per installed function); traps still name the wasm function.
        .generate_address_map(false)
        // Guests run on fibers; 1 MiB of wasm stack is ample and bounds deep recursion.
        .max_wasm_stack(1 << 20)
        .async_stack_size(2 << 20);
    config
}

impl WasmEngine {
    /// Build the engine. The pooling allocator reserves address space for `pool_size`
    /// instances up front; where the machine refuses that reservation, fall back to
    /// on-demand allocation with a warning.
    pub fn new(options: EngineOptions) -> Result<Arc<Self>> {
        let mut pool = PoolingAllocationConfig::default();
        let n = options.pool_size.max(1);
        // A component holds several core instances and memories (its own, WASI adapters'):
        // reserve room for a few per instance.
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .total_stacks(n)
            .max_memory_size(options.max_memory_bytes as usize)
            // When a request's instance is released, the first bytes of its memory, tables
            // and stack are zeroed in place rather than handed back to the kernel: handing
            // pages back (madvise) costs a TLB shootdown on every other core, which made the
            // function host scale badly past one core (bench-functions: 2.5 shootdowns per
            // call). Zeroing a few MiB costs microseconds; the pages stay resident only for
            // warm slots.
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .async_stack_keep_resident(256 << 10)
            // Where the kernel has PAGEMAP_SCAN (Linux 6.7+), zero only the pages the
            // instance dirtied, instead of faulting in the whole kept region of a fresh slot.
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let (engine, pooling) = match Engine::new(&config) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the pooling allocator could not reserve its address space; functions use on-demand allocation"
                );
                let mut config = base_config();
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                let engine = Engine::new(&config)
                    .map_err(|e| Error::internal(format!("wasm engine: {e}")))?;
                (engine, false)
            }
        };
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hex(&hasher.0.finalize()[..16]);
        prepare_cache_dir(&options.cache_dir)?;
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| Error::internal(format!("starting the epoch thread: {e}")))?;
        let component_linker = crate::component::linker(&engine)?;
        let idle = IdleInstances::new((n as usize / if pooling { 4 } else { 1 }).max(1));
        Ok(Arc::new(Self {
            engine,
            pooling,
            options,
            compat,
            ticker,
            component_linker,
            idle,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker component functions are instantiated with.
    pub(crate) fn component_linker(&self) -> &wasmtime::component::Linker<crate::component::Ctx> {
        &self.component_linker
    }

    /// The component instances kept warm between requests.
    pub(crate) fn idle(&self) -> &IdleInstances {
        &self.idle
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The options the engine was built with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// Mark a guest as running while the guard lives: the epoch ticks only while some
    /// guest runs, so an idle host does not wake every millisecond.
    pub fn running(&self) -> RunningGuard {
        self.ticker.enter()
    }

    /// Compile `bytes`, or load them from the cache when this engine compiled the same bytes
    /// before. The key is the content's SHA-256 and the engine's compatibility hash.
    pub fn compile(&self, bytes: &[u8]) -> Result<(Compiled, CompileStats)> {
        let kind = detect(bytes)?;
        let started = Instant::now();
        let digest = hex(&Sha256::digest(bytes));
        let path = self
            .options
            .cache_dir
            .join(format!("{digest}-{}.cwasm", self.compat));
        if path.is_file() {
            match self.load_cached(kind, &path) {
                Ok(compiled) => {
                    return Ok((
                        compiled,
                        CompileStats {
                            cached: true,
                            elapsed: started.elapsed(),
                        },
                    ));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "dropping an unreadable cache entry");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        let artifact = match kind {
            BinaryKind::Module => self.engine.precompile_module(bytes),
            BinaryKind::Component => self.engine.precompile_component(bytes),
        }
        .map_err(|e| {
            Error::invalid_argument(format!("the WebAssembly binary does not compile: {e:#}"))
        })?;
        // Load through the cache file when it was written: its code is then mapped from the
        // file, so pages a function never runs are never resident (density), and they are
        // shared between the processes of one machine.
        let compiled = match write_atomically(&path, &artifact) {
            Ok(()) => match self.load_cached(kind, &path) {
                Ok(c) => c,
                Err(_) => self.deserialize(kind, &artifact)?,
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not cache compiled code");
                self.deserialize(kind, &artifact)?
            }
        };
        Ok((
            compiled,
            CompileStats {
                cached: false,
                elapsed: started.elapsed(),
            },
        ))
    }

    fn load_cached(&self, kind: BinaryKind, path: &Path) -> Result<Compiled> {
        // SAFETY: wasmtime trusts a precompiled file to be its own output. The cache
        // directory is private to this user (checked at startup, created 0700), entries are
        // written by `compile` through a private temporary file and a rename, and the name
        // carries the engine's compatibility hash, so only this engine's output is loaded.
        #[allow(unsafe_code)]
        let compiled = unsafe {
            match kind {
                BinaryKind::Module => {
                    Module::deserialize_file(&self.engine, path).map(Compiled::Module)
                }
                BinaryKind::Component => {
                    Component::deserialize_file(&self.engine, path).map(Compiled::Component)
                }
            }
        };
        let compiled = compiled.map_err(|e| Error::internal(format!("{e:#}")))?;
        release_resident(&compiled);
        Ok(compiled)
    }

    fn deserialize(&self, kind: BinaryKind, artifact: &[u8]) -> Result<Compiled> {
        // SAFETY: `artifact` was produced by this engine's precompile a moment ago.
        #[allow(unsafe_code)]
        let compiled = unsafe {
            match kind {
                BinaryKind::Module => {
                    Module::deserialize(&self.engine, artifact).map(Compiled::Module)
                }
                BinaryKind::Component => {
                    Component::deserialize(&self.engine, artifact).map(Compiled::Component)
                }
            }
        };
        compiled.map_err(|e| Error::internal(format!("{e:#}")))
    }
}

/// Unmap the pages of a function's compiled code that loading it made resident, keeping them
/// in the page cache.
///
/// Loading reads a few small parts of the cache file (the headers, the engine and metadata
/// sections, the unwind tables), but every read fault maps the 64 KiB of file around it
/// that is in the page cache (the kernel's fault-around), which for a typical function is
/// the whole file, code included: about 175 KiB of RSS per installed function that it may
/// never run. Dropping those mappings costs nothing to keep: the code is mapped privately
/// from a file that is never written in place, and wasmtime writes nothing into it (it
/// refuses relocations in loaded code), so a later access maps the same page again from the
/// page cache (a minor fault, no disk read). A function's first call then faults in only
/// what it runs.
fn release_resident(compiled: &Compiled) {
    let range = match compiled {
        Compiled::Module(m) => m.image_range(),
        Compiled::Component(c) => c.image_range(),
    };
    let start = range.start as usize;
    let page = rustix::param::page_size();
    if !start.is_multiple_of(page) || range.end as usize <= start {
        return;
    }
    let len = range.end as usize - start;
    // SAFETY: the range is the image of code loaded with `deserialize_file`: a private
    // mapping of the cache file that nothing has written to (see above), so MADV_DONTNEED
    // only drops page-table entries and every page reads back the same bytes. It is not
    // used for code deserialized from memory, whose pages would come back zeroed.
    #[allow(unsafe_code)]
    let result = unsafe {
        rustix::mm::madvise(
            range.start.cast_mut().cast(),
            len,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "could not release the pages of loaded code");
    }
}

/// Create the cache directory private to this user, or check an existing one is.
fn prepare_cache_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let fail =
        |what: String| Error::invalid_argument(format!("function cache {}: {what}", dir.display()));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(e.to_string()))?;
    }
    let meta = fs::metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.is_dir() {
        return Err(fail("not a directory".into()));
    }
    // The process's own uid, read off its /proc entry (no libc call, no unsafe).
    let me = fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if let Some(uid) = me
        && meta.uid() != uid
    {
        return Err(fail(format!(
            "owned by uid {}, not by this process's uid {uid}; loading cached code trusts it",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(fail(
            "writable by group or others; loading cached code trusts it (chmod 700)".into(),
        ));
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Unique per process and per write: two installs of the same bytes may race here.
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `Hasher` over SHA-256, to digest wasmtime's `impl Hash` compatibility value.
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let d = self.0.clone().finalize();
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while any guest runs; parked otherwise.
struct Ticker {
    active: AtomicUsize,
    thread: std::sync::OnceLock<thread::Thread>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Arc<Self>> {
        let ticker = Arc::new(Ticker {
            active: AtomicUsize::new(0),
            thread: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&ticker);
        let handle = thread::Builder::new()
            .name("plinth-wasm-epoch".into())
            .spawn(move || {
                loop {
                    let Some(t) = weak.upgrade() else { return };
                    let active = t.active.load(Ordering::Acquire);
                    drop(t);
                    if active == 0 {
                        // Woken by `enter`; the timeout only lets the thread notice the
                        // engine is gone.
                        thread::park_timeout(Duration::from_secs(1));
                    } else {
                        thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    fn enter(self: &Arc<Self>) -> RunningGuard {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        RunningGuard(self.clone())
    }
}

/// Holds the epoch ticking while a guest runs.
pub struct RunningGuard(Arc<Ticker>);

impl std::fmt::Debug for RunningGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningGuard")
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
