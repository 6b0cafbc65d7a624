//! The device table of an int8 state's scales (`WeightUpload::StateScales`, read by
//! `quamba::StateRow`): per group, its scales then their f32 inverses (the state's quantization
//! multiplies by the inverse, ir::StateQuant), each in the order a kernel's threads read them.
//! In a lane-major layout thread `sub` of the `lanes` sharing a state row holds states
//! n = i · lanes + sub at positions sub · (columns / lanes) + i, so that its scales are
//! consecutive (float4 loads) like its state bytes.

/// `[groups, columns]` scales as `[group][scales, inverses][columns]`, lane-major when `lanes` > 0.
pub fn layout(scales: &[f32], groups: usize, columns: usize, lanes: usize) -> Vec<f32> {
    let per = columns.checked_div(lanes).unwrap_or(columns);
    let mut out = vec![0.0f32; groups * 2 * columns];
    for g in 0..groups {
        for n in 0..columns {
            let at = if lanes > 0 { (n % lanes) * per + n / lanes } else { n };
            let s = scales.get(g * columns + n).copied().unwrap_or(1.0);
            out[g * 2 * columns + at] = s;
            out[g * 2 * columns + columns + at] = 1.0 / s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::layout;

    #[test]
    fn lane_major_tables_hold_each_threads_scales_together_then_their_inverses() {
        // Two groups of 8 states, 2 lanes: thread 0 holds n = 0, 2, 4, 6, thread 1 n = 1, 3, 5, 7.
        let scales: Vec<f32> = (0..16).map(|i| (i + 1) as f32).collect();
        let t = layout(&scales, 2, 8, 2);
        assert_eq!(&t[..8], &[1.0, 3.0, 5.0, 7.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(t[8], 1.0);
        assert_eq!(t[9], 1.0 / 3.0);
        assert_eq!(&t[16..20], &[9.0, 11.0, 13.0, 15.0]);
        assert_eq!(t[31], 1.0 / 16.0);
        // Natural order, and a per-tensor scale.
        assert_eq!(layout(&scales[..4], 1, 4, 0), [1.0, 2.0, 3.0, 4.0, 1.0, 0.5, 1.0 / 3.0, 0.25]);
        assert_eq!(layout(&[0.5], 1, 1, 0), [0.5, 2.0]);
    }
}
