//! The generated kernels run on aarch64 and give the bits they give on x86-64.
//!
//! CI and this machine have no aarch64 CPU, and no aarch64 Rust standard library can be fetched,
//! so the runtime cannot be built for one. What can be run is the generated code itself: every
//! kernel compiles to position-independent machine code with no relocations (its constants sit
//! after the code), so a small C harness (`replay/harness.c`) can map it, call it on argument
//! buffers read from a file and write the buffers back. The harness is built twice, natively and
//! with `aarch64-linux-gnu-gcc`, and the aarch64 build runs under `qemu-aarch64` (Debian's
//! `gcc-aarch64-linux-gnu` and `qemu-user`; `.ci/run` installs them). For each kernel, at real and
//! odd shapes, the test compiles its CLIF for the host and for aarch64 (baseline NEON, and with
//! I8MM's `usdot`), runs all on the same random arguments and asserts that every output buffer
//! is bit-identical and was written. The x86-64 kernels are themselves bit-identical to the
//! runtime's Rust kernels (the runtime's tests), so this carries that check over to aarch64.
//!
//! Without the tools the test says so and passes, unless `QUAMBA_REQUIRE_AARCH64=1` (CI sets it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::{OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};

use kernels::cpu::*;

/// One argument of a kernel call.
#[derive(Clone)]
enum Arg {
    Int(i64),
    F32(f32),
    /// A buffer's initial bytes (an input, an output, or both).
    Buffer(Vec<u8>),
}

/// A kernel to replay: its CLIF for a given frontend config, and its arguments.
struct Case {
    name: String,
    build: Box<dyn Fn(TargetFrontendConfig, DotOrder) -> Function>,
    args: Vec<Arg>,
    /// Indices (among the buffers) of those the kernel writes.
    outputs: Vec<usize>,
}

/// A deterministic stream of values.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Arg {
        let v: Vec<u8> = (0..n).flat_map(|_| (lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)).to_le_bytes()).collect();
        Arg::Buffer(v)
    }
    fn bytes(&mut self, n: usize) -> Arg {
        Arg::Buffer((0..n).map(|_| (self.next() >> 32) as u8).collect())
    }
    fn i32s(&mut self, n: usize, range: i32) -> Arg {
        Arg::Buffer((0..n).flat_map(|_| ((self.next() >> 33) as i32 % range).to_le_bytes()).collect())
    }
}

fn zeros(n: usize) -> Arg {
    Arg::Buffer(vec![0; n])
}

fn cases() -> Vec<Case> {
    let mut r = Noise(0x2545_F491_4F6C_DD1D);
    let mut cases = Vec::new();
    // Quantized linears, prefill (general kernel) and decode (one-row kernel), 8- and 4-bit.
    for (in_dim, group, bits, out_dim) in [(512, 128, 8, 36), (512, 128, 4, 36), (40, 20, 8, 10), (64, 32, 4, 8)] {
        let spec = QLinearSpec { in_dim, group, weight_bits: bits };
        let (rows, groups) = (3, spec.groups());
        cases.push(Case {
            name: format!("qlinear w{bits} k{in_dim} g{group}"),
            build: Box::new(move |cfg, order| build_qlinear(&spec, cfg, order).unwrap()),
            args: vec![r.bytes(rows * in_dim), r.bytes(out_dim * spec.row_bytes()), r.i32s(out_dim * groups, 1 << 16), r.f32s(out_dim * groups, 1e-3, 1e-2), r.f32s(out_dim, -1.0, 1.0), zeros(rows * out_dim * 4), Arg::Int(rows as i64), Arg::Int(0), Arg::Int(out_dim as i64), Arg::Int(out_dim as i64), Arg::F32(0.05)],
            outputs: vec![5],
        });
        if qgemv_supported(&spec) {
            let tiles = out_dim / 4;
            let corrections = if bits == 8 { r.i32s(tiles * groups * 4, 1 << 16) } else { r.i32s(groups, 1 << 12) };
            cases.push(Case {
                name: format!("qgemv w{bits} k{in_dim} g{group}"),
                build: Box::new(move |cfg, order| build_qgemv(&spec, cfg, order).unwrap()),
                args: vec![r.bytes(in_dim), r.bytes(tiles * 4 * spec.row_bytes()), corrections, r.f32s(tiles * groups * 4, 1e-3, 1e-2), r.f32s(tiles * 4, -1.0, 1.0), zeros(tiles * 4 * 4), Arg::Int(1), Arg::Int(tiles as i64), Arg::F32(0.05)],
                outputs: vec![5],
            });
        }
    }
    for (width, per_channel) in [(1024, false), (19, true)] {
        let spec = QuantizeSpec { width, per_channel };
        let rows = 3;
        cases.push(Case {
            name: format!("quantize w{width} {per_channel}"),
            build: Box::new(move |cfg, _| build_quantize(&spec, cfg).unwrap()),
            args: vec![r.f32s(rows * width, -3.0, 3.0), r.f32s(if per_channel { width } else { 1 }, 0.01, 0.03), zeros(rows * width), Arg::Int(rows as i64)],
            outputs: vec![2],
        });
    }
    let eps_bits = 1e-5f32.to_bits();
    for (width, output) in [(512, NormOutput::F32), (512, NormOutput::I8 { per_channel: false }), (37, NormOutput::I8 { per_channel: true })] {
        let spec = RmsNormSpec { width, weighted: true, eps_bits, output };
        let (rows, out_bytes) = (3, if output == NormOutput::F32 { 4 } else { 1 });
        cases.push(Case {
            name: format!("rms_norm w{width} {output:?}"),
            build: Box::new(move |cfg, _| build_rms_norm(&spec, cfg).unwrap()),
            args: vec![r.f32s(rows * width, -2.0, 2.0), r.f32s(width, 0.5, 1.5), r.f32s(width, 0.01, 0.03), zeros(rows * width * out_bytes), Arg::Int(rows as i64)],
            outputs: vec![3],
        });
    }
    for (width, groups) in [(1024, 1), (48, 2)] {
        let spec = GatedRmsNormSpec { width, groups, eps_bits };
        let rows = 2;
        cases.push(Case {
            name: format!("gated_rms_norm w{width} g{groups}"),
            build: Box::new(move |cfg, _| build_gated_rms_norm(&spec, cfg).unwrap()),
            args: vec![r.f32s(rows * width, -2.0, 2.0), r.f32s(rows * width, -4.0, 4.0), r.f32s(width, 0.5, 1.5), zeros(rows * width * 4), Arg::Int(rows as i64)],
            outputs: vec![3],
        });
    }
    for width in [1024, 1536, 24] {
        let spec = HadamardSpec { width };
        let rows = 2;
        cases.push(Case {
            name: format!("hadamard w{width}"),
            build: Box::new(move |cfg, _| build_hadamard(&spec, cfg).unwrap()),
            args: vec![r.f32s(rows * width, -2.0, 2.0), zeros(rows * width * 4), Arg::Int(rows as i64)],
            outputs: vec![1],
        });
    }
    for (channels, bias, silu) in [(1152, true, true), (36, false, false)] {
        let spec = ConvSpec { channels, kernel: 4, bias, silu };
        let (batch, seq) = (2, 9);
        cases.push(Case {
            name: format!("conv step c{channels} bias {bias} silu {silu}"),
            build: Box::new(move |cfg, _| build_conv_step(&spec, cfg).unwrap()),
            args: vec![r.f32s(batch * channels, -2.0, 2.0), r.f32s(4 * channels, -0.5, 0.5), r.f32s(channels, -0.1, 0.1), r.f32s(batch * 3 * channels, -2.0, 2.0), zeros(batch * channels * 4), Arg::Int(batch as i64)],
            outputs: vec![3, 4],
        });
        cases.push(Case {
            name: format!("conv sequence c{channels} bias {bias} silu {silu}"),
            build: Box::new(move |cfg, _| build_conv_sequence(&spec, cfg).unwrap()),
            args: vec![r.f32s(seq * channels, -2.0, 2.0), r.f32s(4 * channels, -0.5, 0.5), r.f32s(channels, -0.1, 0.1), r.f32s(3 * channels, -2.0, 2.0), zeros(seq * channels * 4), Arg::Int(0), Arg::Int(seq as i64)],
            outputs: vec![4],
        });
    }
    for (d_state, channels) in [(16, 64), (8, 12)] {
        let spec = ScanSpec { d_state };
        cases.push(Case {
            name: format!("selective scan step n{d_state}"),
            build: Box::new(move |cfg, _| build_selective_scan_step(&spec, cfg).unwrap()),
            args: vec![
                r.f32s(channels, -2.0, 2.0),
                r.f32s(channels, -4.0, 2.0),
                r.f32s(d_state, -1.0, 1.0),
                r.f32s(d_state, -1.0, 1.0),
                r.f32s(channels * d_state, -8.0, -0.5),
                r.f32s(channels, -1.0, 1.0),
                r.f32s(channels * d_state, -1.0, 1.0),
                zeros(channels * 4),
                Arg::Int((channels / SCAN_CHANNEL_BLOCK) as i64),
            ],
            outputs: vec![6, 7],
        });
    }
    for (head_dim, d_state, heads_per_group, heads) in [(64usize, 64usize, 16usize, 4usize), (8, 24, 2, 4)] {
        let spec = SsdStepSpec { head_dim, d_state, heads_per_group };
        let groups = heads.div_ceil(heads_per_group);
        let scalars: Vec<u8> = (0..heads).flat_map(|h| [0.9 - 0.1 * h as f32, 0.05, 0.3, -0.7]).flat_map(f32::to_le_bytes).collect();
        cases.push(Case {
            name: format!("ssd step p{head_dim} n{d_state} hg{heads_per_group}"),
            build: Box::new(move |cfg, _| build_ssd_step(&spec, cfg).unwrap()),
            args: vec![
                r.f32s(heads * head_dim, -2.0, 2.0),
                r.f32s(groups * d_state, -1.0, 1.0),
                r.f32s(groups * d_state, -1.0, 1.0),
                Arg::Buffer(scalars),
                r.f32s(heads * head_dim * d_state, -1.0, 1.0),
                zeros(heads * head_dim * 4),
                Arg::Int(0),
                Arg::Int(heads as i64),
            ],
            outputs: vec![4, 5],
        });
    }
    cases
}

/// `func` compiled for `isa` as position-independent bytes: the test fails if the code needs
/// any relocation (it would not run from wherever the harness maps it).
fn machine_code(isa: &OwnedTargetIsa, name: &str, func: Function) -> Vec<u8> {
    let mut ctx = cranelift_codegen::Context::for_function(func);
    let compiled = ctx.compile(&**isa, &mut ControlPlane::default()).unwrap_or_else(|e| panic!("{} {name}: {e:?}", isa.triple()));
    assert!(compiled.buffer.relocs().is_empty(), "{name} for {}: the code has relocations {:?}", isa.triple(), compiled.buffer.relocs());
    compiled.code_buffer().to_vec()
}

/// The host ISA the runtime's JIT generates for (every SIMD extension the CPU reports).
fn host_isa() -> OwnedTargetIsa {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").unwrap();
    flags.set("is_pic", "false").unwrap();
    cranelift_native::builder().unwrap().finish(settings::Flags::new(flags)).unwrap()
}

fn write_input(path: &Path, code: &[u8], args: &[Arg]) {
    let mut bytes = Vec::new();
    bytes.extend((code.len() as u64).to_le_bytes());
    bytes.extend(code);
    bytes.extend((args.len() as u64).to_le_bytes());
    for arg in args {
        match arg {
            Arg::Int(v) => {
                bytes.push(0);
                bytes.extend(v.to_le_bytes());
            }
            Arg::F32(v) => {
                bytes.push(1);
                bytes.extend(v.to_le_bytes());
            }
            Arg::Buffer(b) => {
                bytes.push(2);
                bytes.extend((b.len() as u64).to_le_bytes());
                bytes.extend(b);
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Splits the harness's output into the buffers, as sized in `args`.
fn read_buffers(path: &Path, args: &[Arg]) -> Vec<Vec<u8>> {
    let out = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut buffers = Vec::new();
    for arg in args {
        if let Arg::Buffer(b) = arg {
            buffers.push(out[at..at + b.len()].to_vec());
            at += b.len();
        }
    }
    assert_eq!(at, out.len(), "harness output size");
    buffers
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn build_harness(compiler: &str, extra: &[&str], out: &Path) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay/harness.c");
    let status = Command::new(compiler).args(["-O1", "-Wall", "-Werror", "-o"]).arg(out).arg(&source).args(extra).status().unwrap();
    assert!(status.success(), "{compiler} failed on {}", source.display());
}

/// Runs `harness` (through `runner` if given) on `code` and `args`; returns the buffers after.
fn replay(dir: &Path, tag: &str, runner: &[&str], harness: &Path, code: &[u8], args: &[Arg]) -> Vec<Vec<u8>> {
    let (input, output) = (dir.join(format!("{tag}.in")), dir.join(format!("{tag}.out")));
    write_input(&input, code, args);
    let mut command = match runner.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(harness);
            c
        }
        None => Command::new(harness),
    };
    let result = command.arg(&input).arg(&output).output().unwrap();
    assert!(result.status.success(), "{tag}: the harness failed ({}): {}", result.status, String::from_utf8_lossy(&result.stderr));
    read_buffers(&output, args)
}

#[test]
fn generated_kernels_give_the_same_bits_on_aarch64_as_on_x86_64() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the reference side of this test runs on an x86-64 host");
        return;
    }
    let required = std::env::var("QUAMBA_REQUIRE_AARCH64").is_ok_and(|v| v == "1");
    let missing: Vec<&str> = ["gcc", "aarch64-linux-gnu-gcc", "qemu-aarch64"].into_iter().filter(|t| !tool_exists(t)).collect();
    if !missing.is_empty() {
        assert!(!required, "QUAMBA_REQUIRE_AARCH64=1 but {missing:?} are not installed (apt-get install gcc-aarch64-linux-gnu qemu-user)");
        eprintln!("skipped: {missing:?} not installed (apt-get install gcc-aarch64-linux-gnu qemu-user)");
        return;
    }
    let dir: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("aarch64_replay");
    std::fs::create_dir_all(&dir).unwrap();
    let (native, cross) = (dir.join("harness-x86_64"), dir.join("harness-aarch64"));
    build_harness("gcc", &[], &native);
    build_harness("aarch64-linux-gnu-gcc", &["-static"], &cross);

    let host = host_isa();
    let targets = [("aarch64 neon", common::isa_for("aarch64-unknown-linux-gnu", &[])), ("aarch64 i8mm", common::isa_for("aarch64-unknown-linux-gnu", &["has_i8mm"]))];
    let cases = cases();
    assert!(cases.len() >= 25, "every kernel kind at two shapes or more");
    for case in &cases {
        let code = machine_code(&host, &case.name, (case.build)(host.frontend_config(), DotOrder::for_isa(&*host)));
        let want = replay(&dir, "x86_64", &[], &native, &code, &case.args);
        let before: Vec<&Vec<u8>> = case.args.iter().filter_map(|a| if let Arg::Buffer(b) = a { Some(b) } else { None }).collect();
        for &o in &case.outputs {
            assert_ne!(&want[o], before[o], "{}: output {o} was not written on x86-64", case.name);
        }
        for (label, isa) in &targets {
            let code = machine_code(isa, &case.name, (case.build)(isa.frontend_config(), DotOrder::for_isa(&**isa)));
            let got = replay(&dir, "aarch64", &["qemu-aarch64", "-cpu", "max"], &cross, &code, &case.args);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let first = g.iter().zip(w).position(|(a, b)| a != b);
                assert_eq!(first, None, "{} on {label}: buffer {i} differs from x86-64 from byte {first:?}", case.name);
            }
        }
    }
    eprintln!("{} kernels: bit-identical on x86-64 and aarch64 (NEON and I8MM, qemu-aarch64)", cases.len());
}
