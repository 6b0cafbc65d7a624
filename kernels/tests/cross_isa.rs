//! Every generated CPU kernel lowers for both target architectures, whatever the host: x86-64
//! (baseline SSE, and AVX-512 VNNI) and aarch64 (baseline NEON, and I8MM, the Orin's and the
//! Raspberry Pi 5's cores have DotProd; I8MM is Armv8.6). The int8 dot products must become
//! `vpdpbusd` / `usdot` where the ISA has them. Nothing runs here: `aarch64_replay.rs` runs the
//! aarch64 code (under qemu-aarch64) and checks its bits against x86-64's.

mod common;

use common::isa_for;
use cranelift_codegen::isa::OwnedTargetIsa;

use kernels::cpu::{build_qgemv, build_qlinear, build_quantize, DotOrder, QLinearSpec, QuantizeSpec};


/// The lowered code of every kernel kind at a typical decode/prefill shape, as VCode text.
fn lower_all(isa: &OwnedTargetIsa) -> Vec<(String, String)> {
    let cfg = isa.frontend_config();
    let order = DotOrder::for_isa(&**isa);
    let mut funcs = Vec::new();
    for bits in [4, 8] {
        let spec = QLinearSpec { in_dim: 512, group: 128, weight_bits: bits };
        funcs.push((format!("qlinear w{bits}"), build_qlinear(&spec, cfg, order).unwrap()));
        funcs.push((format!("qgemv w{bits}"), build_qgemv(&spec, cfg, order).unwrap()));
    }
    funcs.push(("qlinear w8 odd".into(), build_qlinear(&QLinearSpec { in_dim: 40, group: 20, weight_bits: 8 }, cfg, order).unwrap()));
    for per_channel in [false, true] {
        funcs.push((format!("quantize {per_channel}"), build_quantize(&QuantizeSpec { width: 19, per_channel }, cfg).unwrap()));
    }
    common::lower_each(isa, funcs)
}

fn dot_products(lowered: &[(String, String)], mnemonic: &str) -> Vec<(String, usize)> {
    lowered.iter().filter(|(n, _)| !n.starts_with("quantize")).map(|(n, code)| (n.clone(), code.matches(mnemonic).count())).collect()
}

#[test]
fn aarch64_kernels_lower_and_use_usdot_with_i8mm() {
    let plain = lower_all(&isa_for("aarch64-unknown-linux-gnu", &[]));
    assert!(dot_products(&plain, "usdot").iter().all(|(_, n)| *n == 0), "no usdot without I8MM");
    let i8mm = lower_all(&isa_for("aarch64-unknown-linux-gnu", &["has_i8mm"]));
    for (name, n) in dot_products(&i8mm, "usdot") {
        assert!(n > 0, "{name}: the int8 dot product does not become usdot with I8MM");
    }
}

#[test]
fn x86_64_kernels_lower_and_use_vpdpbusd_with_vnni() {
    let plain = lower_all(&isa_for("x86_64-unknown-linux-gnu", &[]));
    assert!(dot_products(&plain, "vpdpbusd").iter().all(|(_, n)| *n == 0), "no vpdpbusd on baseline x86-64");
    let vnni = lower_all(&isa_for("x86_64-unknown-linux-gnu", &["has_avx", "has_avx2", "has_avx512f", "has_avx512vl", "has_avx512vnni"]));
    for (name, n) in dot_products(&vnni, "vpdpbusd") {
        assert!(n > 0, "{name}: the int8 dot product does not become vpdpbusd with AVX-512 VNNI");
    }
}

