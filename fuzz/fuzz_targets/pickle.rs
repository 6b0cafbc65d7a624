#![no_main]
//! Fuzz target: see `compiler::fuzzing::pickle`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    compiler::fuzzing::pickle(data);
});
