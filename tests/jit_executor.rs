//! Whole quantized models on the generated CPU kernels against the integer reference executor:
//! the logits must be bit-identical, for prefill (row tiles) and decode (column split), W8A8 and
//! W4A8 (int4 weights, 128-wide groups; the tied head's 32-wide groups), with the activation
//! quantizations on their generated kernel too; and Mamba1 and Mamba2 models, quantized and FP32,
//! with every op that has a generated float kernel (conv, scan / SSD steps, norms, Hadamard) on it.

mod common;

use std::path::Path;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::target::Target;
use ir::VerifiedGraph;
use runtime::tokenizer::Tokenizer;
use runtime::{Executor, KernelBackend};

fn compiled(target: &str) -> compiler::program::Program {
    compiled_from(&compiler::model::default_model_dir(), target)
}

fn compiled_from(dir: &Path, target: &str) -> compiler::program::Program {
    let ckpt = load_checkpoint(dir).unwrap();
    let tok = Tokenizer::from_file(&compiler::model::default_model_dir().join("tokenizer.json")).unwrap();
    let calib = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text/calib.txt");
    let opts = CompileOptions { calib_samples: 4, calib_len: 128, gptq: false, ..CompileOptions::new(target.parse::<Target>().unwrap(), std::fs::read_to_string(calib).unwrap(), "calib.txt") };
    compile(&ckpt, &tok, &opts).unwrap()
}

fn logits_on(program: &compiler::program::Program, backend: KernelBackend) -> Vec<f32> {
    let exec = Executor::with_kernel_backend(VerifiedGraph::new(program.graph.clone()).unwrap(), program.weights.clone(), backend).unwrap();
    let generated = |v: &ir::ValueId| {
        matches!(
            program.graph.node(*v).op,
            ir::Op::QLinear { act_scale: Some(_), .. } | ir::Op::Quantize { .. } | ir::Op::SelectiveScan { .. } | ir::Op::Ssd { .. } | ir::Op::CausalConv1d { .. } | ir::Op::RmsNorm { .. } | ir::Op::GatedRmsNorm { .. } | ir::Op::Hadamard
        )
    };
    let kernel_ops = program.graph.values().iter().filter(|v| generated(v)).count();
    let expected = if backend == KernelBackend::JitEverywhere { kernel_ops } else { 0 };
    assert!(kernel_ops > 0);
    assert_eq!(exec.generated_kernel_count(), expected, "every int8-activation linear, quantize, conv, scan, SSD, norm and Hadamard transform of the model has a generated kernel");
    run(&exec)
}

/// Logits of a 21-token prompt of two sequences, then three decode steps.
fn run(exec: &Executor) -> Vec<f32> {
    let mut state = exec.new_state(2);
    let prompt: Vec<i64> = (0..2 * 21).map(|i| (i * 131 + 7) % 8192).collect();
    let mut all = exec.forward(&mut state, &prompt).unwrap().data;
    for step in 0..3 {
        all.extend(exec.forward(&mut state, &[step * 11 + 1, step * 17 + 2]).unwrap().data);
    }
    all
}

#[test]
fn quantized_models_on_generated_kernels_match_the_integer_reference_bit_for_bit() {
    for target in ["cpu-w8a8", "cpu-w4a8"] {
        let program = compiled(target);
        let jit = logits_on(&program, KernelBackend::JitEverywhere);
        let reference = logits_on(&program, KernelBackend::Reference);
        assert_bit_identical(&jit, &reference, target);
    }
}

fn assert_bit_identical(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    let first_diff = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(first_diff, None, "{what}: logits differ at {first_diff:?}");
}

#[test]
fn mamba1_models_on_generated_kernels_match_the_reference_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    // d_inner 128 (blocks of 4 channels), d_state 16: the scan step has its generated kernel.
    common::random_checkpoint::write_random_mamba1(dir.path(), 64, 2, 8192, 16, 4, 2, 4, true, 7);
    for target in ["cpu-w8a8", "cpu-w4a8"] {
        let program = compiled_from(dir.path(), target);
        assert_bit_identical(&logits_on(&program, KernelBackend::JitEverywhere), &logits_on(&program, KernelBackend::Reference), target);
    }
    let (graph, weights) = compiler::lower::lower(&load_checkpoint(dir.path()).unwrap()).unwrap();
    let exec = |backend| Executor::with_kernel_backend(VerifiedGraph::new(graph.clone()).unwrap(), weights.clone(), backend).unwrap();
    let everywhere = exec(KernelBackend::JitEverywhere);
    let float_ops = graph.values().iter().filter(|v| matches!(graph.node(**v).op, ir::Op::CausalConv1d { .. } | ir::Op::SelectiveScan { .. } | ir::Op::RmsNorm { .. })).count();
    assert_eq!(float_ops, 2 + 2 + 3);
    assert_eq!(everywhere.generated_kernel_count(), float_ops, "every conv, scan and norm runs on a generated kernel");
    assert_bit_identical(&run(&everywhere), &run(&exec(KernelBackend::Reference)), "FP32 mamba1");
}

#[test]
fn fp32_mamba2_on_generated_kernels_matches_the_reference_bit_for_bit() {
    let (graph, weights) = compiler::lower::lower(&load_checkpoint(&compiler::model::default_model_dir()).unwrap()).unwrap();
    let exec = |backend| Executor::with_kernel_backend(VerifiedGraph::new(graph.clone()).unwrap(), weights.clone(), backend).unwrap();
    let everywhere = exec(KernelBackend::JitEverywhere);
    assert!(everywhere.generated_kernel_count() > 0);
    assert_bit_identical(&run(&everywhere), &run(&exec(KernelBackend::Reference)), "FP32 mamba2-tiny");
}
