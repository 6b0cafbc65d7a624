//! The Mamba2 SSD decode step on its generated kernel (`kernels::cpu::ssd`): the same values as
//! [`crate::cpu::ssd::ssd_step_heads`], bit for bit (the per-head scalars come from the same
//! Rust function, [`crate::cpu::ssd::head_scalars`]).

use std::ops::Range;

use kernels::cpu::{build_ssd_step, KernelError, SsdStepSpec};

use super::HostJit;
use crate::cpu::ssd::{head_scalars, HeadScalars, SsdParams, SsdShape};
use crate::cpu::StepRow;

/// The generated kernel's ABI; see `kernels::cpu::ssd`.
type SsdFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const HeadScalars, *mut f32, *mut f32, i64, i64);

/// An SSD step specialised to one head shape.
pub struct JitSsdStep {
    spec: SsdStepSpec,
    address: usize,
    /// Keeps the executable memory `address` points into alive.
    _jit: HostJit,
}

impl JitSsdStep {
    /// The kernel for SSD steps of shape `s` (`s.d_state` a multiple of 8).
    pub fn new(jit: &HostJit, s: SsdShape) -> Result<JitSsdStep, KernelError> {
        if s.groups == 0 || !s.heads.is_multiple_of(s.groups) {
            return Err(KernelError::Unsupported(format!("{} heads in {} groups", s.heads, s.groups)));
        }
        let spec = SsdStepSpec { head_dim: s.head_dim, d_state: s.d_state, heads_per_group: s.heads / s.groups };
        let address = jit.lock().kernel(&spec.symbol(), |cfg| build_ssd_step(&spec, cfg))?;
        Ok(JitSsdStep { spec, address, _jit: jit.clone() })
    }

    /// The step of `heads` of one sequence, as [`crate::cpu::ssd::ssd_step_heads`].
    pub(crate) fn heads(&self, rows: &StepRow, heads: Range<usize>, s: SsdShape, p: &SsdParams, state: &mut [f32], y: &mut [f32]) {
        let SsdStepSpec { head_dim, d_state, heads_per_group } = self.spec;
        // These checks are what the SAFETY argument below rests on.
        assert!(s.head_dim == head_dim && s.d_state == d_state && s.heads / s.groups == heads_per_group, "SSD shape {s:?} is not the kernel's {:?}", self.spec);
        assert!(heads.end <= s.heads && rows.x.len() >= s.heads * head_dim && rows.dt.len() >= s.heads, "SSD rows are shorter than {} heads", s.heads);
        assert!(rows.b.len() >= s.groups * d_state && rows.c.len() >= s.groups * d_state, "SSD B / C rows are shorter than {} groups", s.groups);
        assert!(state.len() == heads.len() * head_dim * d_state && y.len() == heads.len() * head_dim, "SSD state / output do not match heads {heads:?}");
        let mut scalars = vec![HeadScalars::default(); s.heads];
        for h in heads.clone() {
            scalars[h] = head_scalars(rows, h, s, p);
        }
        // SAFETY: `address` is the entry of the function `CpuJit::kernel` finalized for
        // `spec.symbol()`, built by `build_ssd_step(&spec)` with the host's default C calling
        // convention and this signature (kernels::cpu::ssd documents it); `_jit` keeps its
        // executable memory alive.
        let kernel: SsdFn = unsafe { std::mem::transmute::<usize, SsdFn>(self.address) };
        // SAFETY: for h in `heads` the kernel reads x[h·head_dim ..][..head_dim], the group
        // (h / heads_per_group < groups) rows of B and C of d_state values, and the four scalars
        // of head h (`HeadScalars` is four f32, repr(C)); it reads and writes the state block and
        // writes the outputs of local head h − heads.start. The asserts bound every index by its
        // slice. `state` and `y` are borrowed mutably; the kernel keeps no pointer after returning.
        unsafe { kernel(rows.x.as_ptr(), rows.b.as_ptr(), rows.c.as_ptr(), scalars.as_ptr(), state.as_mut_ptr(), y.as_mut_ptr(), heads.start as i64, heads.end as i64) }
    }

    /// Whether this kernel runs a step of every head clearly faster than the Rust loop on this
    /// CPU ([`super::generated_is_faster`], on synthetic values; both give the same bits).
    pub fn faster_than_rust(&self, s: SsdShape) -> bool {
        let (width, gn) = (s.heads * s.head_dim, s.groups * s.d_state);
        let (x, dt, b, c) = (vec![0.5f32; width], vec![-1.0f32; s.heads], vec![0.25f32; gn], vec![0.125f32; gn]);
        let (a_log, d, dt_bias) = (vec![0.0f32; s.heads], vec![1.0f32; s.heads], vec![0.0f32; s.heads]);
        let p = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
        let rows = StepRow { x: &x, dt: &dt, b: &b, c: &c };
        let (mut state, mut y) = (vec![0.0f32; width * s.d_state], vec![0.0f32; width]);
        let rust = |st: &mut [f32], y: &mut [f32]| crate::cpu::ssd::ssd_step_heads(&rows, 0..s.heads, s, &p, st, y);
        let (mut state2, mut y2) = (state.clone(), y.clone());
        super::generated_is_faster(&mut || rust(&mut state, &mut y), &mut || self.heads(&rows, 0..s.heads, s, &p, &mut state2, &mut y2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::ssd::ssd_step_heads;
    use rand::{Rng, SeedableRng};

    #[test]
    fn matches_the_rust_step_bit_for_bit() {
        let jit = HostJit::new().unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (heads, head_dim, groups, d_state, range) in [(4, 8, 2, 16, 0..4), (3, 5, 1, 8, 1..3), (24, 64, 1, 128, 5..17), (8, 3, 4, 24, 2..8)] {
            let s = SsdShape { seq: 1, heads, head_dim, groups, d_state, chunk: 256 };
            let kernel = JitSsdStep::new(&jit, s).unwrap();
            let mut r = |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.gen_range(lo..hi)).collect() };
            let (x, dt, b, c) = (r(heads * head_dim, -1.0, 1.0), r(heads, -3.0, 2.0), r(groups * d_state, -1.0, 1.0), r(groups * d_state, -1.0, 1.0));
            let (a_log, d, dt_bias) = (r(heads, -1.0, 1.0), r(heads, -1.0, 1.0), r(heads, -0.5, 0.5));
            let p = SsdParams { a_log: &a_log, d: &d, dt_bias: &dt_bias, dt_limit: (0.0, f32::INFINITY) };
            let rows = StepRow { x: &x, dt: &dt, b: &b, c: &c };
            let mut state_rust = r(range.len() * head_dim * d_state, -1.0, 1.0);
            let mut state_jit = state_rust.clone();
            let (mut y_rust, mut y_jit) = (vec![0.0; range.len() * head_dim], vec![0.0; range.len() * head_dim]);
            for _ in 0..3 {
                ssd_step_heads(&rows, range.clone(), s, &p, &mut state_rust, &mut y_rust);
                kernel.heads(&rows, range.clone(), s, &p, &mut state_jit, &mut y_jit);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&state_jit), bits(&state_rust), "state, {s:?}");
                assert_eq!(bits(&y_jit), bits(&y_rust), "y, {s:?}");
            }
        }
    }

    #[test]
    fn unsupported_shapes_are_refused() {
        let jit = HostJit::new().unwrap();
        assert!(JitSsdStep::new(&jit, SsdShape { seq: 1, heads: 4, head_dim: 8, groups: 1, d_state: 7, chunk: 8 }).is_err());
        assert!(JitSsdStep::new(&jit, SsdShape { seq: 1, heads: 5, head_dim: 8, groups: 2, d_state: 16, chunk: 8 }).is_err());
    }
}
