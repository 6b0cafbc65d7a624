//! Kernel generators. Empty until the CPU (cranelift) and CUDA backends land; see issues 4 and 5.
pub mod cpu;
