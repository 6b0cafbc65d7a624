//! The plan's tuning knobs (`QUAMBA_CUDA_*` environment variables that change the generated
//! kernels, for measuring variants side by side), checked before a plan is built: a malformed
//! value is an error naming the knob and what it takes, never a silent fall back to the default.

use super::PlanError;

/// A knob's name, a check of its value, and what it takes (for the error).
type Knob = (&'static str, fn(&str) -> bool, &'static str);

/// Every knob.
const KNOBS: &[Knob] = &[
    ("QUAMBA_CUDA_DECODE", |v| numbers(v, &[','], 2), "WARPS,DEPTH (two positive integers)"),
    ("QUAMBA_CUDA_DECODE_NT", |v| matches!(v, "1" | "2" | "4"), "1, 2 or 4"),
    ("QUAMBA_CUDA_ROW_SPLIT", switch, "0 or 1"),
    ("QUAMBA_CUDA_CLUSTER", switch, "0 or 1"),
    ("QUAMBA_CUDA_GEMV", |v| v == "0" || numbers(v, &['x', ','], 3), "0, or WARPSxDEPTHxCHUNKS (three positive integers)"),
    ("QUAMBA_CUDA_GEMV_STREAM", |v| matches!(v, "0" | "1" | "all"), "0 (never), 1 (the default rule) or all"),
    ("QUAMBA_CUDA_GEMV_STREAM_SHAPE", |v| numbers(v, &['x'], 3), "PER_SMxTILES_PER_STAGExWARPS (three positive integers)"),
    ("QUAMBA_CUDA_GEMV_BULK", switch, "0 or 1"),
    ("QUAMBA_CUDA_GEMV_BULK_BLOCKS", |v| numbers(v, &[], 1), "a positive integer"),
    ("QUAMBA_CUDA_GEMV_BULK_KB", |v| numbers(v, &[], 1), "a positive integer (KiB)"),
    ("QUAMBA_CUDA_GEMV_TW", |v| matches!(v, "1" | "2"), "1 or 2 (tiles per warp of a bulk one-row product)"),
    ("QUAMBA_CUDA_GEMV_AT", |v| v.split(';').all(|e| e.split_once(':').is_some_and(|(at, layout)| numbers(at, &['x'], 2) && (numbers(layout, &['x'], 2) || (numbers(layout, &['x'], 3) && matches!(layout.rsplit('x').next().map(str::trim), Some("1" | "2")))))), "KxN:ROWSxSLICES or KxN:ROWSxSLICESxTW (TW 1 or 2), `;`-separated"),
    ("QUAMBA_CUDA_CONV_GEMV_MIN_BLOCKS", |v| v.parse::<usize>().is_ok(), "a number of blocks per SM (0: none asked)"),
    ("QUAMBA_CUDA_DT_IN_SCAN", switch, "0 or 1"),
    ("QUAMBA_CUDA_DT_STEP_SHAPE", |v| numbers(v, &['x'], 2), "CHANNELSxLANES (two positive integers)"),
    ("QUAMBA_CUDA_SSD_SHAPE", |v| numbers(v, &['x'], 2), "LANESxROWS (two positive integers)"),
    ("QUAMBA_CUDA_SSD_PREFILL_SHAPE", |v| numbers(v, &['x'], 2), "LANESxROWS (two positive integers)"),
    ("QUAMBA_CUDA_SSD_PREFILL_ROWS", |v| v == "0" || numbers(v, &['x'], 2), "0 (ssd_scan's prefill kernel), or ROWSxWARPS (two positive integers)"),
    ("QUAMBA_CUDA_SCAN_PREFILL_SHAPE", |v| numbers(v, &['x'], 2), "CHANNELSxLANES (two positive integers)"),
    ("QUAMBA_CUDA_TILED", |v| v == "0" || v == "1" || numbers(v, &['x'], 4), "0 (the untiled prefill kernel), 1, or MTxNTxWNxSTAGES (four positive integers)"),
    ("QUAMBA_CUDA_STAGE_A", |v| matches!(v, "0" | "1"), "0 (stage no activations) or 1 (stage every kind)"),
    ("QUAMBA_CUDA_GATE_IN_SSD", switch, "0 or 1"),
    ("QUAMBA_CUDA_L2_AHEAD", |v| v.parse::<u16>().is_ok_and(|n| n <= 1000), "thousandths of a weight, 0 to 1000"),
    ("QUAMBA_CUDA_ROW_TRIGGER", |v| matches!(v, "wait" | "exit"), "wait (the next launch may start once the row kernel's wait returns: the default) or exit (once it exits)"),
];

fn switch(v: &str) -> bool {
    matches!(v, "0" | "1")
}

/// Whether `v` is `count` positive integers separated by any of `separators`.
fn numbers(v: &str, separators: &[char], count: usize) -> bool {
    let parts: Vec<&str> = if separators.is_empty() { vec![v] } else { v.split(separators).collect() };
    parts.len() == count && parts.iter().all(|p| p.trim().parse::<usize>().is_ok_and(|n| n > 0))
}

/// Whether switch knob `name` (`0` or `1`) is on: it is unless set to `0` (surrounding blanks
/// ignored, as `check` ignores them).
pub(super) fn on(name: &str) -> bool {
    switch_on(std::env::var(name).ok().as_deref())
}

fn switch_on(value: Option<&str>) -> bool {
    value.is_none_or(|v| v.trim() != "0")
}

/// The two numbers knob `name` is set to, `A{separator}B` (such as `QUAMBA_CUDA_SSD_SHAPE=8x16`),
/// if it is set to that.
pub(super) fn pair(name: &str, separator: char) -> Option<(usize, usize)> {
    match set_numbers(name, &[separator])?.as_slice() {
        [a, b] => Some((*a, *b)),
        _ => None,
    }
}

/// The three numbers knob `name` is set to, separated by any of `separators` (such as
/// `QUAMBA_CUDA_GEMV_STREAM_SHAPE=3x1x8`), if it is set to that.
pub(super) fn triple(name: &str, separators: &[char]) -> Option<(usize, usize, usize)> {
    match set_numbers(name, separators)?.as_slice() {
        [a, b, c] => Some((*a, *b, *c)),
        _ => None,
    }
}

/// The one number knob `name` is set to (zero included), if it is set to one.
pub(super) fn single(name: &str) -> Option<usize> {
    match set_numbers(name, &[])?.as_slice() {
        [a] => Some(*a),
        _ => None,
    }
}

/// The numbers knob `name` is set to, if it is set and every part is one.
pub(super) fn set_numbers(name: &str, separators: &[char]) -> Option<Vec<usize>> {
    std::env::var(name).ok()?.split(separators).map(|p| p.trim().parse().ok()).collect()
}

/// Fails on the first knob set to a value it does not take.
pub fn check() -> Result<(), PlanError> {
    check_with(|name| std::env::var(name).ok())
}

fn check_with(get: impl Fn(&str) -> Option<String>) -> Result<(), PlanError> {
    for (name, valid, takes) in KNOBS {
        if let Some(value) = get(name) {
            if !valid(value.trim()) {
                return Err(PlanError::Knob(format!("{name}={value}: expected {takes}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> Result<(), PlanError> {
        check_with(|n| (n == name).then(|| value.to_string()))
    }

    #[test]
    fn well_formed_values_pass() {
        for (name, value) in [("QUAMBA_CUDA_GEMV", "8x4x16"), ("QUAMBA_CUDA_GEMV", "0"), ("QUAMBA_CUDA_DECODE", "8,4"), ("QUAMBA_CUDA_GEMV_STREAM", "all"), ("QUAMBA_CUDA_GEMV_STREAM_SHAPE", "2x1x8"), ("QUAMBA_CUDA_GEMV_BULK_BLOCKS", " 528 "), ("QUAMBA_CUDA_ROW_TRIGGER", "exit"), ("QUAMBA_CUDA_GEMV_TW", "2"), ("QUAMBA_CUDA_GEMV_AT", "2560x10576:2x4x2;5120x2560:1x7"), ("QUAMBA_CUDA_GEMV_BULK_KB", "64"), ("QUAMBA_CUDA_TILED", "2x4x4x4"), ("QUAMBA_CUDA_TILED", "0"), ("QUAMBA_CUDA_SCAN_PREFILL_SHAPE", "32x4"), ("QUAMBA_CUDA_SSD_PREFILL_SHAPE", "8x32")] {
            assert!(with(name, value).is_ok(), "{name}={value}");
        }
        assert!(check_with(|_| None).is_ok());
    }

    #[test]
    fn a_switch_is_off_only_at_zero_as_checked() {
        assert!(switch_on(None) && switch_on(Some("1")) && switch_on(Some(" 1 ")));
        assert!(!switch_on(Some("0")) && !switch_on(Some(" 0 ")));
        assert!(with("QUAMBA_CUDA_CLUSTER", " 0 ").is_ok(), "the check takes what the reader honours");
    }

    #[test]
    fn malformed_values_name_the_knob_and_what_it_takes() {
        for (name, value) in [("QUAMBA_CUDA_GEMV", "8x4"), ("QUAMBA_CUDA_GEMV_STREAM", "yes"), ("QUAMBA_CUDA_GEMV_STREAM_SHAPE", "2x0x8"), ("QUAMBA_CUDA_DECODE_NT", "3"), ("QUAMBA_CUDA_GEMV_BULK_BLOCKS", "-1"), ("QUAMBA_CUDA_ROW_TRIGGER", "end"), ("QUAMBA_CUDA_GEMV_TW", "3"), ("QUAMBA_CUDA_GEMV_AT", "2560x10576"), ("QUAMBA_CUDA_GEMV_AT", "2560x10576:2"), ("QUAMBA_CUDA_GEMV_AT", "2560x10576:2x4x3"), ("QUAMBA_CUDA_GEMV_BULK_KB", "0"), ("QUAMBA_CUDA_TILED", "2x4"), ("QUAMBA_CUDA_SSD_PREFILL_SHAPE", "8"), ("QUAMBA_CUDA_SCAN_PREFILL_SHAPE", "32x0")] {
            let e = with(name, value).unwrap_err().to_string();
            assert!(e.contains(&format!("{name}={value}")) && e.contains("expected"), "{e}");
        }
    }
}
