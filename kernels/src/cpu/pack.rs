//! The weight layout the generated quantized-linear kernels read, built once when a model loads.
//!
//! Rows stay in output order, `[out_dim, row_bytes]`:
//! - 8-bit: the int8 weights as they are (`row_bytes = in_dim`);
//! - 4-bit: per block of 32 inputs, 16 bytes; byte `j` holds `w[k0 + j] + 8` in its low nibble and
//!   `w[k0 + 16 + j] + 8` in its high nibble (`row_bytes = in_dim / 2`). The offset makes every
//!   nibble unsigned, so unpacking is a mask or a shift and one subtraction per 32 weights.
//!
//! The kernels take the activations offset to unsigned (`x + 128`), the operand order of the
//! u8 × s8 dot-product instructions (x86 VNNI `vpdpbusd`, aarch64 `usdot`); `correction[o, g]`
//! = 128 · Σ_{k∈g} w[o, k] removes the offset exactly: Σ (x+128)·w − 128·Σ w = Σ x·w.

use super::qlinear::QLinearSpec;
use super::KernelError;

/// Packed weights and per-group corrections of one quantized linear layer.
#[derive(Clone, Debug)]
pub struct PackedQLinear {
    /// `[out_dim, spec.row_bytes()]`.
    pub weights: Vec<u8>,
    /// `[out_dim, in_dim / group]`: 128 · Σ of each group's weights.
    pub corrections: Vec<i32>,
    /// Output features.
    pub out_dim: usize,
}

/// Packs `w` (`[out_dim, in_dim]` weight integers, within −8..=7 for 4-bit) for `spec`.
pub fn pack_qlinear_weights(spec: &QLinearSpec, w: &[i8], out_dim: usize) -> Result<PackedQLinear, KernelError> {
    spec.check()?;
    let in_dim = spec.in_dim;
    if w.len() != out_dim * in_dim {
        return Err(KernelError::Unsupported(format!("{} weights for a {out_dim}×{in_dim} matrix", w.len())));
    }
    let groups = in_dim / spec.group;
    let mut corrections = Vec::with_capacity(out_dim * groups);
    for row in w.chunks_exact(in_dim) {
        corrections.extend(row.chunks_exact(spec.group).map(|g| 128 * g.iter().map(|v| *v as i32).sum::<i32>()));
    }
    let weights = match spec.weight_bits {
        8 => w.iter().map(|v| *v as u8).collect(),
        _ => {
            if let Some(v) = w.iter().find(|v| !(-8..=7).contains(*v)) {
                return Err(KernelError::Unsupported(format!("4-bit weight value {v} outside −8..=7")));
            }
            let mut packed = Vec::with_capacity(out_dim * spec.row_bytes());
            for block in w.chunks_exact(32) {
                let nibble = |v: i8| (v + 8) as u8;
                packed.extend((0..16).map(|j| nibble(block[j]) | nibble(block[16 + j]) << 4));
            }
            packed
        }
    };
    Ok(PackedQLinear { weights, corrections, out_dim })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_blocks_put_the_second_half_in_the_high_nibbles() {
        let spec = QLinearSpec { in_dim: 32, group: 32, weight_bits: 4 };
        let w: Vec<i8> = (0..32).map(|k| (k % 16) as i8 - 8).collect();
        let p = pack_qlinear_weights(&spec, &w, 1).unwrap();
        assert_eq!(p.weights.len(), 16);
        assert_eq!(p.weights[0], 0x00);
        assert_eq!(p.weights[15], 0xFF);
        assert_eq!(p.corrections, vec![128 * w.iter().map(|v| *v as i32).sum::<i32>()]);
        assert!(pack_qlinear_weights(&spec, &[9; 32], 1).is_err());
    }
}
