//! Whole quantized models on the generated CPU kernels against the integer reference executor:
//! the logits must be bit-identical, for prefill (row tiles) and decode (column split), W8A8 and
//! W4A8 (int4 weights, 128-wide groups; the tied head's 32-wide groups), with the activation
//! quantizations, the norms and the Hadamard transforms on their generated kernels too.

use std::path::Path;

use compiler::checkpoint::load_checkpoint;
use compiler::compile::{compile, CompileOptions};
use compiler::target::Target;
use ir::VerifiedGraph;
use runtime::tokenizer::Tokenizer;
use runtime::{Executor, KernelBackend};

fn compiled(target: &str) -> compiler::program::Program {
    let dir = compiler::model::default_model_dir();
    let ckpt = load_checkpoint(&dir).unwrap();
    let tok = Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let calib = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/text/calib.txt");
    let opts = CompileOptions { calib_samples: 4, calib_len: 128, gptq: false, ..CompileOptions::new(target.parse::<Target>().unwrap(), std::fs::read_to_string(calib).unwrap(), "calib.txt") };
    compile(&ckpt, &tok, &opts).unwrap()
}

fn logits_on(program: &compiler::program::Program, backend: KernelBackend) -> Vec<f32> {
    let exec = Executor::with_kernel_backend(VerifiedGraph::new(program.graph.clone()).unwrap(), program.weights.clone(), backend).unwrap();
    let generated = |v: &ir::ValueId| {
        matches!(program.graph.node(*v).op, ir::Op::QLinear { act_scale: Some(_), .. } | ir::Op::Quantize { .. } | ir::Op::RmsNorm { .. } | ir::Op::GatedRmsNorm { .. } | ir::Op::Hadamard)
    };
    let kernel_ops = program.graph.values().iter().filter(|v| generated(v)).count();
    let expected = if backend == KernelBackend::Jit { kernel_ops } else { 0 };
    assert!(kernel_ops > 0);
    assert_eq!(exec.generated_kernel_count(), expected, "every int8-activation linear, quantize, norm and Hadamard transform of the model has a generated kernel");
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
        let jit = logits_on(&program, KernelBackend::Jit);
        let reference = logits_on(&program, KernelBackend::Reference);
        assert_eq!(jit.len(), reference.len());
        let first_diff = jit.iter().zip(&reference).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_diff, None, "{target}: logits differ at {first_diff:?}");
    }
}
