//! The generated quantize kernel against the reference `quantize`: bit-identical on random rows
//! of widths that do and do not fill its 16-value steps, per-tensor and per-channel scales, ties
//! (x/scale = k + ½ rounds to even), saturation, ±∞ and NaN (→ 0, as Rust's `as i8`).

use rand::{Rng, SeedableRng};
use runtime::cpu::quant::{channel_scales, quantize};
use runtime::jit::{HostJit, JitQuantize};

fn check(jit: &HostJit, x: &[f32], width: usize, scales: &[f32]) {
    let kernel = JitQuantize::new(jit, width, scales).unwrap();
    let got = kernel.forward(x).unwrap();
    let want = quantize(x, &channel_scales(scales, width));
    assert_eq!(got, want, "width {width}, {} scales", scales.len());
}

#[test]
fn random_rows_match_the_reference() {
    let jit = HostJit::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for (rows, width) in [(1, 16), (3, 7), (2, 33), (70, 512), (129, 100), (1, 1)] {
        let x: Vec<f32> = (0..rows * width).map(|_| rng.gen_range(-6.0..6.0)).collect();
        check(&jit, &x, width, &[rng.gen_range(0.01..0.1)]);
        let per_channel: Vec<f32> = (0..width).map(|_| rng.gen_range(0.01..0.1)).collect();
        check(&jit, &x, width, &per_channel);
    }
}

#[test]
fn ties_saturation_and_non_finite_values_match_the_reference() {
    let jit = HostJit::new().unwrap();
    let mut x: Vec<f32> = vec![0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, -128.5, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 126.5, 3.0];
    x.extend(x.clone().iter().take(5));
    for width in [16, 21, 3] {
        let rows = x.len() / width;
        check(&jit, &x[..rows * width], width, &[1.0]);
    }
}

#[test]
fn scale_counts_that_fit_neither_form_are_refused() {
    let jit = HostJit::new().unwrap();
    assert!(JitQuantize::new(&jit, 8, &[1.0; 3]).is_err());
    let k = JitQuantize::new(&jit, 8, &[1.0]).unwrap();
    assert!(k.forward(&[0.0; 7]).is_err());
}
