//! Kernel generators for quamba's compiled plans: CUDA source and launch plans ([`cuda`]).

pub mod cuda;
