//! The Mamba1 selective-scan step on its generated kernel (`kernels::cpu::scan`), for decode
//! steps and, token by token, for prefill: the same values as
//! [`crate::cpu::scan::selective_scan_channels`], bit for bit.

use std::ops::Range;

use kernels::cpu::{build_selective_scan_step, KernelError, ScanSpec, SCAN_CHANNEL_BLOCK};

use super::HostJit;
use crate::cpu::StepRow;

/// The generated kernel's ABI; see `kernels::cpu::scan`.
type ScanFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *const f32, *const f32, *const f32, *mut f32, *mut f32, i64);

/// A selective-scan step specialised to one state size.
pub struct JitSelectiveScan {
    spec: ScanSpec,
    address: usize,
    /// Keeps the executable memory `address` points into alive.
    _jit: HostJit,
}

impl JitSelectiveScan {
    /// The kernel for a scan of `d_inner` channels of `d_state` states: channel blocks of 4 must
    /// tile `d_inner`, and `d_state` must be a multiple of 8.
    pub fn new(jit: &HostJit, d_inner: usize, d_state: usize) -> Result<JitSelectiveScan, KernelError> {
        if !d_inner.is_multiple_of(SCAN_CHANNEL_BLOCK) {
            return Err(KernelError::Unsupported(format!("selective scan of {d_inner} channels (a multiple of {SCAN_CHANNEL_BLOCK} is)")));
        }
        let spec = ScanSpec { d_state };
        let address = jit.lock().kernel(&spec.symbol(), |cfg| build_selective_scan_step(&spec, cfg))?;
        Ok(JitSelectiveScan { spec, address, _jit: jit.clone() })
    }

    /// The step of `channels` of one sequence (its rows `r`): `a` is −exp(a_log) `[d_inner,
    /// d_state]`, `d` `[d_inner]`; `state` holds these channels' `[channels, d_state]` rows and
    /// `y` their outputs. `channels` must start and end on multiples of 4.
    pub(crate) fn channels(&self, r: &StepRow, channels: Range<usize>, a: &[f32], d: &[f32], state: &mut [f32], y: &mut [f32]) {
        let n = self.spec.d_state;
        let count = channels.len();
        // These checks are what the SAFETY argument below rests on.
        assert!(channels.start.is_multiple_of(SCAN_CHANNEL_BLOCK) && count.is_multiple_of(SCAN_CHANNEL_BLOCK), "channels {channels:?} are not blocks of {SCAN_CHANNEL_BLOCK}");
        assert!(r.b.len() == n && r.c.len() == n, "B and C rows are not {n} wide");
        assert!(r.x.len() >= channels.end && r.dt.len() >= channels.end && d.len() >= channels.end && a.len() >= channels.end * n, "scan operands are shorter than channels {channels:?}");
        assert!(state.len() == count * n && y.len() == count, "scan state / output do not match {count} channels");
        // SAFETY: `address` is the entry of the function `CpuJit::kernel` finalized for
        // `spec.symbol()`, built by `build_selective_scan_step(&spec)` with the host's default C
        // calling convention and this signature (kernels::cpu::scan documents it); `_jit` keeps
        // its executable memory alive.
        let kernel: ScanFn = unsafe { std::mem::transmute::<usize, ScanFn>(self.address) };
        let s = channels.start;
        // SAFETY: the kernel reads x, dt, d at channels s..s+count, a at rows s..s+count of n
        // values, b and c at n values, and reads and writes state at count rows of n values and y
        // at count values: the asserts bound each by its slice. `state` and `y` are borrowed
        // mutably (no aliasing); the kernel keeps no pointer after returning. Its constants sit in
        // its own code (no other memory is read).
        unsafe {
            kernel(
                r.x[s..].as_ptr(),
                r.dt[s..].as_ptr(),
                r.b.as_ptr(),
                r.c.as_ptr(),
                a[s * n..].as_ptr(),
                d[s..].as_ptr(),
                state.as_mut_ptr(),
                y.as_mut_ptr(),
                (count / SCAN_CHANNEL_BLOCK) as i64,
            )
        }
    }
}

impl JitSelectiveScan {
    /// Whether this kernel runs a step of `d_inner` channels clearly faster than the Rust loop on
    /// this CPU ([`super::generated_is_faster`], on synthetic values; both give the same bits, so
    /// only speed is at stake). On x86-64 with AVX2 the Rust loop, compiled for 8 lanes, beat
    /// the generated 4-lane kernel 26.8 to 46.3 µs per 1024 × 16 step; where the host's vectors
    /// are 4 lanes for both (aarch64's NEON, x86-64 without AVX2) the generated one can win.
    pub fn faster_than_rust(&self, d_inner: usize) -> bool {
        let n = self.spec.d_state;
        let (x, dt, b, c, d) = (vec![0.5f32; d_inner], vec![-1.0f32; d_inner], vec![0.25f32; n], vec![0.125f32; n], vec![1.0f32; d_inner]);
        let a = vec![-0.5f32; d_inner * n];
        let row = StepRow { x: &x, dt: &dt, b: &b, c: &c };
        let (mut state, mut y) = (vec![0.0f32; d_inner * n], vec![0.0f32; d_inner]);
        let (mut state2, mut y2) = (state.clone(), y.clone());
        super::generated_is_faster(
            &mut || crate::cpu::scan::selective_scan_channels(&row, 0..d_inner, &a, &d, &mut state, &mut y),
            &mut || self.channels(&row, 0..d_inner, &a, &d, &mut state2, &mut y2),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::scan::selective_scan_channels;

    /// Deterministic values in [lo, hi).
    fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    #[test]
    fn matches_the_rust_step_bit_for_bit() {
        let jit = HostJit::new().unwrap();
        for (d_inner, d_state, channels) in [(4, 8, 0..4), (12, 16, 4..12), (64, 16, 0..64), (1024, 16, 32..96), (20, 32, 8..20)] {
            let kernel = JitSelectiveScan::new(&jit, d_inner, d_state).unwrap();
            // dt spans softplus's linear branch (> 20) and the w == 1 branch (very negative).
            let mut dt = values(d_inner, 1, -6.0, 3.0);
            dt[channels.start] = 25.0;
            if channels.len() > 1 {
                dt[channels.start + 1] = -100.0;
            }
            let (x, b, c) = (values(d_inner, 2, -2.0, 2.0), values(d_state, 3, -1.5, 1.5), values(d_state, 4, -1.5, 1.5));
            let a: Vec<f32> = values(d_inner * d_state, 5, -3.0, 2.0).iter().map(|v| -v.exp()).collect();
            let d = values(d_inner, 6, -1.0, 1.0);
            let row = StepRow { x: &x, dt: &dt, b: &b, c: &c };
            let mut state_rust = values(channels.len() * d_state, 7, -1.0, 1.0);
            let mut state_jit = state_rust.clone();
            let (mut y_rust, mut y_jit) = (vec![0.0; channels.len()], vec![0.0; channels.len()]);
            for _ in 0..3 {
                selective_scan_channels(&row, channels.clone(), &a, &d, &mut state_rust, &mut y_rust);
                kernel.channels(&row, channels.clone(), &a, &d, &mut state_jit, &mut y_jit);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&state_jit), bits(&state_rust), "state, d_inner {d_inner} d_state {d_state}");
                assert_eq!(bits(&y_jit), bits(&y_rust), "y, d_inner {d_inner} d_state {d_state}");
            }
        }
    }

    #[test]
    fn unsupported_shapes_are_refused() {
        let jit = HostJit::new().unwrap();
        assert!(JitSelectiveScan::new(&jit, 6, 16).is_err());
        assert!(JitSelectiveScan::new(&jit, 8, 12).is_err());
    }
}
