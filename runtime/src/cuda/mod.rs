//! The CUDA backend: runs a [`kernels::cuda::CudaPlan`] through cudarc.
//!
//! cudarc loads the driver and NVRTC at run time, so building this crate needs no CUDA; on a
//! machine without a GPU, [`CudaExecutor::new`] returns an error instead of failing to link.
//! Weights are uploaded once in the plan's layouts; every activation buffer and state is
//! allocated when the executor is made, for the largest call it accepts, so no call allocates.
//! A decode step of a given batch size is captured once as a CUDA graph and replayed per token,
//! with greedy decoding done on the device (the argmax feeds the next step's embedding).

mod carveout;
mod compile;
mod device;
mod trace;

pub use compile::{compile_cubin, compile_ptx, nvrtc_available, ptx_cache_path, source_hash, Cubin};
pub use device::{CudaExecutor, LaunchTime, MemoryReport};
pub use trace::{traced_source, LaunchSpan};

/// Errors of the CUDA backend.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// No usable GPU or driver.
    #[error("CUDA device: {0}")]
    Device(String),
    /// NVRTC's library (libnvrtc) was not found.
    #[error("NVRTC (libnvrtc.so) was not found: install the CUDA toolkit or put its lib64 on LD_LIBRARY_PATH")]
    NvrtcMissing,
    /// NVRTC could not compile the generated source.
    #[error("compiling the generated CUDA source ({arch}): {log}")]
    Compile {
        /// The target architecture.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// The graph has no CUDA plan.
    #[error(transparent)]
    Plan(#[from] kernels::cuda::PlanError),
    /// A call's inputs do not fit this executor.
    #[error("input: {0}")]
    Input(String),
}

impl From<cudarc::driver::DriverError> for CudaError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        CudaError::Device(format!("{e:?}"))
    }
}
