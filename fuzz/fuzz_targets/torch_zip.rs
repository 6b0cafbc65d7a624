#![no_main]
//! Fuzz target: see `compiler::fuzzing::torch_zip`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    compiler::fuzzing::torch_zip(data);
});
