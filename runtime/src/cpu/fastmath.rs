//! exp, SiLU and softplus for the decode step and the prefill's element-wise loops, written so
//! that loops over them vectorise.
//!
//! `f32::exp` is a libm call per element, which made exp a fifth of a mamba1 decode step (16
//! exponentials per channel and layer in the selective scan). These are branch-free
//! (Cephes' `expf`: 2ⁿ·e^r with |r| ≤ ln2/2 and a degree-7 polynomial), so LLVM turns a loop over
//! them into SIMD code. Accuracy: within 2 ulp of `f32::exp` over the range where the result
//! is a normal f32 (tested below); below e^−87.3 they return that smallest normal value instead of a
//! subnormal or zero, and above e^88 they saturate at e^88 (1.65·10³⁸). Prefill uses them too
//! (activations, the gated norm's gate, the selective scan, the SSD's within-chunk decays); the
//! few exponentials per chunk or token that stay scalar keep libm.
//! softplus adds Cephes' `logf` with Goldberg's log1p correction (within 4 ulp of libm's form).

/// Largest argument whose 2ⁿ scale stays a finite f32.
const MAX_ARG: f32 = 88.0;
/// Smallest argument whose 2ⁿ scale stays a normal f32.
const MIN_ARG: f32 = -87.336_54;

/// e^x.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(MIN_ARG, MAX_ARG);
    // n = round(x / ln2), by the add-and-subtract rounding (|n| ≤ 127 ≪ 2²²); the shifted sum's
    // bits are ROUND's plus n, which gives 2ⁿ with integer operations only (they vectorise,
    // where a saturating `as i32` does not).
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let e_r = p * r * r + r + 1.0;
    let scale = f32::from_bits((shifted.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127)) << 23);
    e_r * scale
}

/// x·σ(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// ln(1 + eˣ), linear above 20 like [`super::softplus`].
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let u = exp(x);
    // ln(1 + u) = ln(w) · u / (w − 1) with w = 1 + u rounded (Goldberg): exact where w − 1 is,
    // which keeps the relative accuracy of log1p for small u.
    let w = 1.0 + u;
    let log1p = if w == 1.0 { u } else { ln(w) * (u / (w - 1.0)) };
    if x > 20.0 {
        x
    } else {
        log1p
    }
}

/// ln(y) for a normal positive `y` (Cephes' `logf`: y = m·2ᵉ with m ∈ [√½, √2), a degree-9
/// polynomial in m − 1).
#[inline(always)]
pub fn ln(y: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = y.to_bits();
    let e = ((bits >> 23) & 0xFF) as i32 - 126;
    let m = f32::from_bits((bits & 0x807F_FFFF) | 0x3F00_0000);
    let small = m < SQRT_HALF;
    let e = (e - small as i32) as f32;
    let m = if small { m + m - 1.0 } else { m - 1.0 };
    let z = m * m;
    let mut p = 7.037_683_6e-2f32;
    p = p * m - 1.151_461_1e-1;
    p = p * m + 1.167_699_9e-1;
    p = p * m - 1.242_014_1e-1;
    p = p * m + 1.424_932_3e-1;
    p = p * m - 1.666_805_8e-1;
    p = p * m + 2.000_071_4e-1;
    p = p * m - 2.499_999_4e-1;
    p = p * m + 3.333_333e-1;
    let mut r = m * z * p;
    r += -2.121_944_4e-4 * e;
    r += -0.5 * z;
    (m + r) + 0.693_359_4 * e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_where_the_result_is_normal() {
        let mut worst = 0;
        let mut x = MIN_ARG;
        while x <= MAX_ARG {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(ulps(got, want));
            assert!(ulps(got, want) <= 2, "exp({x}) = {got}, libm {want}");
            x += 1.0e-3 * (1.0 + x.abs());
        }
        for x in [0.0f32, -0.0, 1.0, -1.0, 1e-8, -1e-8, 0.5, 10.0, -10.0] {
            assert!(ulps(exp(x), x.exp()) <= 2, "exp({x})");
        }
        assert!(exp(-200.0) > 0.0 && exp(-200.0) < 1.2e-38);
        assert!(exp(200.0).is_finite() && exp(f32::INFINITY) > 1e38);
        assert!(exp(f32::NAN).is_nan());
        eprintln!("worst exp error: {worst} ulp");
    }

    #[test]
    fn ln_is_within_two_ulp() {
        let mut y = 1.0e-30f32;
        while y < 1.0e30 {
            assert!(ulps(ln(y), y.ln()) <= 2 || (ln(y) - y.ln()).abs() < 1e-7, "ln({y}) = {}, libm {}", ln(y), y.ln());
            y *= 1.0 + 1.0e-3;
        }
    }

    #[test]
    fn silu_and_softplus_follow_the_libm_forms() {
        for i in -4000..4000 {
            let x = i as f32 * 0.01;
            let (s, s_ref) = (silu(x), x / (1.0 + (-x).exp()));
            assert!((s - s_ref).abs() <= 4.0 * f32::EPSILON * s_ref.abs().max(1e-30), "silu({x}) = {s}, libm form {s_ref}");
            let (p, p_ref) = (softplus(x), super::super::softplus(x));
            assert!((p - p_ref).abs() <= 4.0 * f32::EPSILON * p_ref.abs(), "softplus({x}) = {p}, libm form {p_ref}");
        }
    }
}
