//! Per-call limits inside a store: the linear-memory cap and the execution-time budget.
//!
//! Every store (one per request, or per reused instance) carries a [`CallLimits`]. Memory
//! growth past the cap is refused (the guest sees `memory.grow` fail, and usually traps);
//! the budget is counted in epoch ticks ([`crate::engine::EPOCH_TICK`]): at every tick the
//! guest yields its thread to the async runtime, so a spinning guest never starves the APIs,
//! and once the budget is spent the call traps.

use std::time::Duration;

use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

use crate::engine::EPOCH_TICK;

/// Why a call was stopped by a limit, carried as the trap's error so the caller's message
/// names the limit.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitExceeded {
    /// The execution-time budget is spent.
    #[error("exceeded its execution-time budget of {0:?} (time in the guest, host calls excluded)")]
    Cpu(Duration),
    /// Memory growth past the cap was refused.
    #[error("exceeded its memory limit of {0} bytes")]
    Memory(u64),
}

/// The limits of one store.
#[derive(Debug)]
pub struct CallLimits {
    memory_cap: u64,
    /// Bytes of linear memory the store's instances hold now.
    memory_used: u64,
    /// Set when a growth was refused: a trap that follows is reported as the memory limit.
    memory_refused: bool,
    cpu: Duration,
    ticks_left: u64,
}

impl CallLimits {
    /// Limits of `memory_cap` bytes and a `cpu` budget.
    pub fn new(memory_cap: u64, cpu: Duration) -> Self {
        Self {
            memory_cap,
            memory_used: 0,
            memory_refused: false,
            cpu,
            ticks_left: ticks(cpu),
        }
    }

    /// Give a reused store a fresh budget for its next call.
    pub fn reset_budget(&mut self) {
        self.ticks_left = ticks(self.cpu);
        self.memory_refused = false;
    }

    /// The limit a failed call hit, if any: the budget, then memory.
    pub fn exceeded(&self) -> Option<LimitExceeded> {
        if self.ticks_left == 0 {
            Some(LimitExceeded::Cpu(self.cpu))
        } else if self.memory_refused {
            Some(LimitExceeded::Memory(self.memory_cap))
        } else {
            None
        }
    }

    /// One tick of guest time: yield and go on while budget remains, else trap.
    fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        self.ticks_left = self.ticks_left.saturating_sub(1);
        if self.ticks_left == 0 {
            return Err(LimitExceeded::Cpu(self.cpu).into());
        }
        Ok(UpdateDeadline::Yield(1))
    }
}

fn ticks(cpu: Duration) -> u64 {
    (cpu.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired - current) as u64;
        if self.memory_used + grow > self.memory_cap {
            self.memory_refused = true;
            return Ok(false);
        }
        self.memory_used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables are bounded by the pool's slot size; cap them at a million entries on
        // demand too.
        Ok(desired <= 1 << 20)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}

/// A store's data that carries [`CallLimits`].
pub trait HasLimits: Send + 'static {
    /// The limits.
    fn limits(&mut self) -> &mut CallLimits;
}

/// Install the memory limiter and the epoch budget on `store`.
pub fn install<T: HasLimits>(store: &mut Store<T>) {
    store.limiter(|data| data.limits());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| ctx.data_mut().limits().tick());
}

/// Name the limit behind a trap, if a limit caused it: a [`LimitExceeded`] in the error chain,
/// or a trap that followed a refused memory growth.
pub fn explain(error: &wasmtime::Error, limits: &CallLimits) -> Option<LimitExceeded> {
    if let Some(l) = error.downcast_ref::<LimitExceeded>() {
        return Some(l.clone());
    }
    limits.exceeded()
}
