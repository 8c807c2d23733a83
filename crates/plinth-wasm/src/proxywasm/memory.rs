//! The guest's linear memory as the host functions see it. Every pointer and length a guest
//! passes is checked against the memory's current size before use (in 32 bits, as wasm32's
//! `size_t`, without overflow); a bad one is answered with InvalidMemoryAccess, never a
//! panic. Memory for results is allocated by the guest's own allocator.

use std::ops::Range;

use wasmtime::{Extern, Memory};

use super::abi::Status;
use super::context::HostState;

pub(crate) type Caller<'a> = wasmtime::Caller<'a, HostState>;

/// Why a host function stopped: a status for the guest, or a trap to propagate (the guest's
/// allocator trapped, or a limit hit while it ran).
#[derive(Debug)]
pub(crate) enum Fault {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for Fault {
    fn from(s: Status) -> Self {
        Fault::Status(s)
    }
}

/// What a host function returns to wasmtime: the status, or the trap.
pub(crate) fn finish(result: Result<(), Fault>) -> wasmtime::Result<i32> {
    match result {
        Ok(()) => Ok(Status::Ok as i32),
        Err(Fault::Status(s)) => Ok(s as i32),
        Err(Fault::Trap(e)) => Err(e),
    }
}

fn memory(caller: &mut Caller<'_>) -> Result<Memory, Status> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(Status::InvalidMemoryAccess),
    }
}

/// The range `[ptr, ptr + len)` if it lies inside a memory of `size` bytes.
pub(crate) fn range(ptr: i32, len: i32, size: usize) -> Result<Range<usize>, Status> {
    let start = ptr as u32 as usize;
    let end = start
        .checked_add(len as u32 as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    if end > size {
        return Err(Status::InvalidMemoryAccess);
    }
    Ok(start..end)
}

/// A copy of `len` bytes at `ptr`.
pub(crate) fn read(caller: &mut Caller<'_>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = memory(caller)?;
    let data = mem.data(&*caller);
    Ok(data[range(ptr, len, data.len())?].to_vec())
}

/// `len` bytes at `ptr` as UTF-8; BadArgument if they are not.
pub(crate) fn read_string(caller: &mut Caller<'_>, ptr: i32, len: i32) -> Result<String, Status> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Status::BadArgument)
}

/// Write `bytes` at `ptr`.
pub(crate) fn write(caller: &mut Caller<'_>, ptr: i32, bytes: &[u8]) -> Result<(), Status> {
    let len = i32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let mem = memory(caller)?;
    let data = mem.data_mut(&mut *caller);
    let r = range(ptr, len, data.len())?;
    data[r].copy_from_slice(bytes);
    Ok(())
}

/// Write a little-endian `u32` at `ptr`.
pub(crate) fn write_u32(caller: &mut Caller<'_>, ptr: i32, value: u32) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Write a little-endian `u64` at `ptr`.
pub(crate) fn write_u64(caller: &mut Caller<'_>, ptr: i32, value: u64) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Check that `len` bytes at `ptr` could be written, before doing anything irreversible.
pub(crate) fn check(caller: &mut Caller<'_>, ptr: i32, len: i32) -> Result<(), Status> {
    let mem = memory(caller)?;
    range(ptr, len, mem.data_size(&*caller)).map(drop)
}

/// Hand `bytes` to the guest: allocate them in its memory with its allocator, copy them
/// there, and store the address and length at `ptr_out` and `len_out`. Empty bytes are
/// handed over as a null address and a zero length, without allocating.
pub(crate) async fn copy_out(
    caller: &mut Caller<'_>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> Result<(), Fault> {
    check(caller, ptr_out, 4)?;
    check(caller, len_out, 4)?;
    let len = u32::try_from(bytes.len()).map_err(|_| Status::InvalidMemoryAccess)?;
    let addr = if bytes.is_empty() {
        0
    } else {
        let addr = allocate(caller, len).await?;
        write(caller, addr as i32, bytes)?;
        addr
    };
    write_u32(caller, ptr_out, addr)?;
    write_u32(caller, len_out, len)?;
    Ok(())
}

/// `len` bytes from the guest's allocator (`proxy_on_memory_allocate`, else `malloc`).
async fn allocate(caller: &mut Caller<'_>, len: u32) -> Result<u32, Fault> {
    let size = i32::try_from(len).map_err(|_| Status::InvalidMemoryAccess)?;
    let name = caller.data().shared.allocator;
    let Some(Extern::Func(f)) = caller.get_export(name) else {
        return Err(Status::InternalFailure.into());
    };
    let f = f
        .typed::<i32, i32>(&*caller)
        .map_err(|_| Status::InternalFailure)?;
    let addr = f
        .call_async(&mut *caller, size)
        .await
        .map_err(Fault::Trap)?;
    if addr == 0 {
        // The allocator failed without trapping.
        return Err(Status::InvalidMemoryAccess.into());
    }
    Ok(addr as u32)
}
