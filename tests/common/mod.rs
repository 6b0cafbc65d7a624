//! Helpers shared by the integration tests: a plain sequential reference implementation of the
//! Mamba1 / Mamba2 forward pass, and a writer of random-weight checkpoints in the transformers
//! layout. Each test crate uses only part of this, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod cuda_plans;
pub mod random_checkpoint;
pub mod reference_mamba;
