#![no_main]
//! Fuzz target: see `compiler::fuzzing::artifact`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    compiler::fuzzing::artifact(data);
});
