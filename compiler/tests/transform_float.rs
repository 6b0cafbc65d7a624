//! `compile::transform_float` (what `inspect --plot` compares against) runs exactly the recipe's
//! float rewrites: the program computes the checkpoint's function, rotated, and nothing is
//! quantized yet.

use compiler::compile::{transform_float, CompileOptions};
use compiler::program::Program;
use compiler::target::Target;
use ir::Op;

#[test]
fn float_rewrites_keep_the_function_and_quantize_nothing() {
    let dir = compiler::model::default_model_dir();
    let ckpt = compiler::checkpoint::load_checkpoint(&dir).unwrap();
    let tokenizer = runtime::tokenizer::Tokenizer::from_file(&ckpt.tokenizer_path().unwrap()).unwrap();
    let calib_text = std::fs::read_to_string(dir.join("../text/calib.txt")).unwrap();
    let opts = CompileOptions { calib_samples: 2, calib_len: 64, ..CompileOptions::new("cpu-w4a8".parse::<Target>().unwrap(), calib_text[..20_000].to_string(), "calib.txt") };
    let rewritten = transform_float(&ckpt, &tokenizer, &opts).unwrap();
    let float = Program::from_checkpoint(&ckpt).unwrap();

    let ops: Vec<&Op> = rewritten.graph.values().into_iter().map(|v| &rewritten.graph.node(v).op).collect();
    assert!(ops.iter().any(|op| matches!(op, Op::Hadamard)), "the rotation did not run");
    assert!(!ops.iter().any(|op| matches!(op, Op::Quantize { .. } | Op::QLinear { .. } | Op::QEmbedding { .. })), "something was quantized");
    assert!(rewritten.graph.weights().iter().all(|w| w.dtype == ir::DType::F32), "an integer weight appeared");

    let tokens = tokenizer.encode("ROMEO: What light through yonder window breaks?").unwrap();
    let logits = |p: &Program| {
        let exec = p.executor().unwrap();
        exec.forward(&mut exec.new_state(1), &tokens).unwrap().data
    };
    let (a, b) = (logits(&float), logits(&rewritten));
    let err = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / a.iter().map(|x| x * x).sum::<f32>();
    assert!(err < 1e-8, "relative squared error {err}");
}
