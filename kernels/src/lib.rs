//! Kernel generators for quamba's compiled plans: cranelift CPU kernels ([`cpu`], compiled when a
//! model loads) and CUDA source with launch plans ([`cuda`]).

pub mod cpu;
pub mod cuda;
