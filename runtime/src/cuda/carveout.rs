//! One shared-memory carveout for every kernel of a plan.
//!
//! An SM splits its on-chip memory between L1 and shared memory, and the driver picks the split
//! per kernel from what the kernel needs. Blocks of kernels with different splits cannot share
//! an SM: the SM drains before it reconfigures. With programmatic dependent launch a kernel's
//! blocks are meant to start on SMs still running its predecessor, so a decode step whose
//! kernels alternate between splits loses that overlap at every change (measured on an H200:
//! giving the decode products a shared-memory buffer cost more than it saved until every kernel
//! asked for the same split). So every kernel is given the split the most demanding one needs
//! at full occupancy, as a percentage of the SM's shared memory.
//!
//! `QUAMBA_CUDA_CARVEOUT=default` leaves the driver's per-kernel choice (to measure this side
//! by side); `QUAMBA_CUDA_CARVEOUT=N` asks for N % everywhere.

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction};

use super::CudaError;

/// A kernel as launched: its function, threads per block and dynamic shared memory.
pub struct Launched<'a> {
    pub function: &'a CudaFunction,
    pub block: u32,
    pub dynamic_shared: u32,
}

/// Sets one preferred carveout on every kernel; returns the percentage (None: left to the driver).
pub fn apply_uniform(ctx: &CudaContext, kernels: &[Launched]) -> Result<Option<i32>, CudaError> {
    let percent = match std::env::var("QUAMBA_CUDA_CARVEOUT").ok().as_deref() {
        Some("default") => return Ok(None),
        Some(v) => Some(v.trim().parse::<i32>().map_err(|_| CudaError::Input(format!("QUAMBA_CUDA_CARVEOUT={v}: expected `default` or a percentage 0-100")))?.clamp(0, 100)),
        None => None,
    };
    let percent = match percent {
        Some(p) => p,
        None => {
            let per_sm = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR)?.max(1) as i64;
            let reserved = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK).unwrap_or(0) as i64;
            let mut need = 0i64;
            for k in kernels {
                let blocks = k.function.occupancy_max_active_blocks_per_multiprocessor(k.block, k.dynamic_shared as usize, None)? as i64;
                let fixed = k.function.get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)? as i64;
                need = need.max(blocks * (fixed + k.dynamic_shared as i64 + reserved));
            }
            ((need * 100 + per_sm - 1) / per_sm).clamp(0, 100) as i32
        }
    };
    for k in kernels {
        k.function.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent)?;
    }
    Ok(Some(percent))
}
