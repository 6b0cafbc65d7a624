#![no_main]
//! Fuzz target: see `compiler::fuzzing::checkpoint`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    compiler::fuzzing::checkpoint(data);
});
