//! The generated quantized-linear kernels against the integer reference (`qlinear_i8`), which
//! they must match bit for bit: decode (1–7 rows: the one-row tile kernel, column split, with the
//! general kernel for features past the last whole tile) and prefill (row tiles), int8
//! and int4 weights, group sizes that do and do not fill the 16-lane vectors, extreme values.

use kernels::cpu::QLinearSpec;
use rand::{Rng, SeedableRng};
use runtime::cpu::quant::qlinear_i8;
use runtime::jit::{HostJit, JitQLinear};

struct Case {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    group: usize,
    weight_bits: u8,
    bias: bool,
}

fn check(jit: &HostJit, rng: &mut rand::rngs::StdRng, c: Case, extreme: bool) {
    let wmax: i8 = if c.weight_bits == 4 { 7 } else { 127 };
    let wmin: i8 = if c.weight_bits == 4 { -8 } else { -128 };
    let x: Vec<i8> = (0..c.rows * c.in_dim).map(|_| if extreme { -128 } else { rng.gen_range(-128..=127) }).collect();
    let w: Vec<i8> = (0..c.out_dim * c.in_dim).map(|_| if extreme { wmin } else { rng.gen_range(wmin..=wmax) }).collect();
    let scales: Vec<f32> = (0..c.out_dim * c.in_dim / c.group).map(|_| rng.gen_range(1e-4..1e-2)).collect();
    let bias: Option<Vec<f32>> = c.bias.then(|| (0..c.out_dim).map(|_| rng.gen_range(-1.0..1.0)).collect());
    let act_scale = 0.0137;
    let spec = QLinearSpec { in_dim: c.in_dim, group: c.group, weight_bits: c.weight_bits };
    let kernel = JitQLinear::new(jit, spec, &w, c.out_dim, &scales, bias.as_deref(), act_scale).unwrap();
    let got = kernel.forward(&x, c.rows).unwrap();
    let want = qlinear_i8(&x, c.rows, c.in_dim, &w, c.out_dim, &scales, c.group, act_scale, bias.as_deref());
    let first_diff = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(first_diff, None, "{spec:?} rows {} out {}: got {:?}, want {:?}", c.rows, c.out_dim, first_diff.map(|i| got[i]), first_diff.map(|i| want[i]));
}

#[test]
fn int8_weights_match_the_reference_bit_for_bit() {
    let jit = HostJit::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (rows, in_dim, out_dim, group, bias) in
        [(1, 16, 1, 16, false), (1, 512, 67, 512, true), (3, 37, 5, 37, true), (1, 1, 3, 1, false), (5, 100, 9, 50, false), (9, 48, 33, 48, true), (40, 256, 70, 128, true), (17, 24, 130, 8, false), (2, 1536, 40, 1536, true)]
    {
        check(&jit, &mut rng, Case { rows, in_dim, out_dim, group, weight_bits: 8, bias }, false);
    }
}

#[test]
fn int4_weights_match_the_reference_bit_for_bit() {
    let jit = HostJit::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for (rows, in_dim, out_dim, group, bias) in [(1, 32, 1, 32, false), (1, 512, 101, 128, true), (4, 96, 7, 32, false), (7, 256, 3, 64, true), (23, 384, 45, 128, true), (1, 1024, 513, 32, false)] {
        check(&jit, &mut rng, Case { rows, in_dim, out_dim, group, weight_bits: 4, bias }, false);
    }
}

#[test]
fn saturated_operands_stay_exact() {
    // −128 · −128 (or −8) over the longest groups: the u8·s8 offset and i32 sums must not overflow.
    let jit = HostJit::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    check(&jit, &mut rng, Case { rows: 9, in_dim: 4096, out_dim: 5, group: 4096, weight_bits: 8, bias: false }, true);
    check(&jit, &mut rng, Case { rows: 2, in_dim: 4096, out_dim: 5, group: 128, weight_bits: 4, bias: true }, true);
}

#[test]
fn shapes_without_a_kernel_are_refused() {
    let jit = HostJit::new().unwrap();
    let odd_int4_group = QLinearSpec { in_dim: 48, group: 48, weight_bits: 4 };
    assert!(JitQLinear::new(&jit, odd_int4_group, &[0; 48], 1, &[1.0], None, 1.0).is_err());
    let ok = QLinearSpec { in_dim: 16, group: 16, weight_bits: 8 };
    let kernel = JitQLinear::new(&jit, ok, &[1; 32], 2, &[1.0, 1.0], None, 1.0).unwrap();
    assert!(kernel.forward(&[0; 15], 1).is_err(), "a short input row is an error, not a read past the buffer");
}

/// Not a check: the decode kernel's throughput at mamba2-small's W4A8 and W8A8 shapes, on one thread
/// (`cargo test --release -p quamba-runtime --test jit_qlinear -- --ignored --nocapture`).
#[test]
#[ignore]
fn time_gemv() {
    let jit = HostJit::new().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for (in_dim, out_dim, group, weight_bits) in [(512usize, 2192usize, 128usize, 4u8), (1024, 512, 128, 4), (512, 8192, 32, 4), (512, 2192, 512, 8), (1024, 512, 1024, 8)] {
        let w: Vec<i8> = (0..out_dim * in_dim).map(|_| rng.gen_range(-8..=7)).collect();
        let scales: Vec<f32> = (0..out_dim * in_dim / group).map(|_| rng.gen_range(1e-4..1e-2)).collect();
        let k = JitQLinear::new(&jit, QLinearSpec { in_dim, group, weight_bits }, &w, out_dim, &scales, None, 0.01).unwrap();
        let x: Vec<i8> = (0..in_dim).map(|_| rng.gen_range(-128..=127)).collect();
        let mut row = runtime::jit::GemvRow::default();
        let mut out = vec![0.0; out_dim];
        let n = 2000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            k.prepare_row(&x, &mut row).unwrap();
            k.gemv_into(&row, 0..out_dim, &mut out);
        }
        let dt = t.elapsed().as_secs_f64() / n as f64;
        eprintln!("w{weight_bits} k{in_dim} o{out_dim} g{group}: {:.1} us, {:.2} GMAC/s", dt * 1e6, (in_dim * out_dim) as f64 / dt / 1e9);
    }
}
