//! One shared-memory carveout for every kernel of a plan.
//!
//! An SM splits its on-chip memory between L1 and shared memory, and the driver picks the split
//! per kernel from what the kernel needs. Blocks of kernels with different splits cannot share
//! an SM: the SM drains before it reconfigures. With programmatic dependent launch a kernel's
//! blocks are meant to start on SMs still running its predecessor, so a decode step whose
//! kernels alternate between splits loses that overlap at every change (measured on an H200:
//! giving the decode products a shared-memory buffer cost more than it saved until every kernel
//! asked for the same split). So every kernel is given the split the most demanding one needs
//! at full occupancy, as a percentage of the SM's shared memory. A kernel whose every launch has
//! the same number of blocks (a one-row product) needs only room for its share of them per SM;
//! the split is capped at [`MAX_PERCENT`].
//!
//! `QUAMBA_CUDA_CARVEOUT=default` leaves the driver's per-kernel choice (to measure this side
//! by side); `QUAMBA_CUDA_CARVEOUT=N` asks for N % everywhere.

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction};

use super::CudaError;

/// A kernel as launched: its function, threads per block and static and dynamic shared memory.
pub struct Launched<'a> {
    pub function: &'a CudaFunction,
    pub block: u32,
    pub static_shared: u32,
    pub dynamic_shared: u32,
    /// The blocks of its every launch, where that is fixed (a one-row product).
    pub blocks: Option<u32>,
}

/// The largest share of an SM's on-chip memory given to shared memory, in percent: the rest is
/// L1, which the batched products and the scans read through. Measured on an H200, 16-layer
/// W4A8 mamba2-2.7b / mamba-2.8b, TPOT batch 1 / batch 16 with one-row products fetching their
/// tiles in bulk (45 KB per in_proj block, 3 blocks per SM): 40 % 0.473 / 1.236 ms and
/// 0.584 / 1.316; 50 % 0.453 / 1.234 and 0.562 / 1.317; 65 % 0.411 / 1.239 and 0.539 / 1.330;
/// 80 % 0.426 / 1.270 and 0.539 / 1.365; 95 % 0.424 / 1.413 and 0.542 / 1.428.
pub const MAX_PERCENT: i64 = 65;

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
            let sms = ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?.max(1) as i64;
            let mut needs = Vec::with_capacity(kernels.len());
            for k in kernels {
                let resident = k.function.occupancy_max_active_blocks_per_multiprocessor(k.block, k.dynamic_shared as usize, None)? as i64;
                needs.push(KernelNeed { resident, blocks: k.blocks, bytes_per_block: k.static_shared as i64 + k.dynamic_shared as i64 + reserved });
            }
            needed_percent(&needs, sms, per_sm)
        }
    };
    for k in kernels {
        k.function.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent)?;
    }
    Ok(Some(percent))
}

/// What one kernel asks of an SM's shared memory: the blocks of it that fit on one SM at full
/// occupancy, the blocks of its every launch where that is fixed, and the bytes per block.
#[derive(Clone, Copy, Debug)]
pub struct KernelNeed {
    pub resident: i64,
    pub blocks: Option<u32>,
    pub bytes_per_block: i64,
}

/// The carveout, in percent of `per_sm` bytes, that holds every kernel's blocks per SM: all it
/// can keep resident, or for a kernel of fixed launches its share of them on `sms` SMs, capped at
/// [`MAX_PERCENT`].
pub fn needed_percent(kernels: &[KernelNeed], sms: i64, per_sm: i64) -> i32 {
    let sms = sms.max(1);
    let need = kernels
        .iter()
        .map(|k| k.blocks.map_or(k.resident, |b| k.resident.min((b as i64 + sms - 1) / sms)) * k.bytes_per_block)
        .max()
        .unwrap_or(0);
    ((need * 100 + per_sm - 1) / per_sm.max(1)).clamp(0, MAX_PERCENT) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    const H100_SMS: i64 = 132;
    const H100_SHARED: i64 = 228 * 1024;

    #[test]
    fn a_one_row_product_needs_room_for_its_share_of_blocks_only() {
        // mamba2-2.7b's bulk in_proj: 331 blocks of 44.5 KB dynamic + 3.1 KB static + 1 KB
        // reserved, 4 resident by registers: three per SM on 132 SMs.
        let in_proj = KernelNeed { resident: 4, blocks: Some(331), bytes_per_block: 49_728 };
        assert_eq!(needed_percent(&[in_proj], H100_SMS, H100_SHARED), 64);
        // Without a fixed grid it would ask for all four, past the cap.
        let unbounded = KernelNeed { blocks: None, ..in_proj };
        assert_eq!(needed_percent(&[unbounded], H100_SMS, H100_SHARED), MAX_PERCENT as i32);
    }

    #[test]
    fn the_most_demanding_kernel_sets_the_split() {
        let rows = KernelNeed { resident: 16, blocks: None, bytes_per_block: 2304 };
        let product = KernelNeed { resident: 8, blocks: Some(24), bytes_per_block: 28_000 };
        // 16 resident row blocks of 2.25 KB (36 KB) beat one product block of 27 KB (24 blocks on
        // 132 SMs), which would otherwise need 8 x 27 KB.
        assert_eq!(needed_percent(&[rows, product], H100_SMS, H100_SHARED), 16);
        assert_eq!(needed_percent(&[product], H100_SMS, H100_SHARED), 12);
        assert_eq!(needed_percent(&[], H100_SMS, H100_SHARED), 0);
    }
}
