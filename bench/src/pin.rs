//! CPU pinning with `taskset`, so that the load generator and the system
//! under test never compete for a core.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

use crate::procfs::Proc;

/// Set in the environment of the re-executed, pinned generator so it does
/// not re-exec again.
const PINNED_ENV: &str = "PLINTH_BENCH_PINNED";

/// Which cores the generator and the systems under test run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// Generator and systems under test each on their own core.
    Pinned {
        /// Core of the load generator.
        generator: usize,
        /// Core of every system under test.
        sut: usize,
    },
    /// No pinning (disabled, `taskset` missing, or too few cores).
    Unpinned,
}

impl Pinning {
    /// The core for systems under test, if pinned.
    pub fn sut_core(self) -> Option<usize> {
        match self {
            Pinning::Pinned { sut, .. } => Some(sut),
            Pinning::Unpinned => None,
        }
    }
}

/// Whether a working `taskset` is on the `PATH`.
pub fn taskset_available() -> bool {
    Command::new("taskset")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins the current process to `generator` by re-executing it under
/// `taskset -c <generator>`, and returns the pinning to use for the systems
/// under test.
///
/// Call first thing in `main`, before any thread or runtime exists. On
/// success this does not return in the original process. When pinning is
/// impossible (no `taskset`, fewer than two cores, the exec fails) it warns
/// on stderr and returns [`Pinning::Unpinned`].
pub fn pin_generator(enabled: bool, generator: usize, sut: usize) -> Pinning {
    if !enabled {
        return Pinning::Unpinned;
    }
    let pinned = Pinning::Pinned { generator, sut };
    if std::env::var_os(PINNED_ENV).is_some() {
        return pinned;
    }
    if generator == sut {
        eprintln!("warning: generator and SUT core are both {generator}; running unpinned");
        return Pinning::Unpinned;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if generator.max(sut) >= cores {
        eprintln!(
            "warning: {cores} core(s) available (allowed: {}), cannot pin to cores {generator} and {sut}; running unpinned",
            Proc::Current.cpus_allowed().unwrap_or_default()
        );
        return Pinning::Unpinned;
    }
    if !taskset_available() {
        eprintln!("warning: `taskset` not found; running unpinned (install util-linux)");
        return Pinning::Unpinned;
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("warning: cannot find own executable ({e}); running unpinned");
            return Pinning::Unpinned;
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = Command::new("taskset")
        .arg("-c")
        .arg(generator.to_string())
        .arg(exe)
        .args(args)
        .env(PINNED_ENV, "1")
        .exec();
    eprintln!("warning: re-exec under taskset failed ({err}); running unpinned");
    Pinning::Unpinned
}

/// Returns `command` prefixed with `taskset -c <core>` when `core` is set.
pub fn pinned_command(core: Option<usize>, program: &std::path::Path) -> Command {
    match core {
        Some(core) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(core.to_string()).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}
