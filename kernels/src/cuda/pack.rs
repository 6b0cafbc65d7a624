//! Weight layouts for the tensor-core kernels (`mma.sync`), mirrored by `quamba.cuh`.
//!
//! A weight `[n, k]` is cut into tiles of 8 rows (an mma's n) and chunks of `chunk(kind)` columns.
//! Chunk (tile, c) is 32 lanes × 16 bytes; lane `4g + t` holds exactly the B fragments that lane
//! needs for the chunk's k-steps, so a warp fetches a chunk with one coalesced 16-byte load per
//! lane and never reshuffles. k is zero-padded to whole chunks and n to whole tiles, so padding
//! contributes exact zeros to every product.
//!
//! | kind | weights | mma | chunk | a lane's 4 words |
//! |---|---|---|---|---|
//! | 0 | f16 | m16n8k16 f16 | 32 | b0, b1 of k-step 0; b0, b1 of k-step 1 |
//! | 1 | int4 | m16n8k16 f16 (unpacked in registers) | 128 | word j: k-steps 2j, 2j+1 as nibbles |
//! | 2 | int8 | m16n8k32 s8 | 64 | b0, b1 of k-step 0; b0, b1 of k-step 1 |
//! | 3 | int4 | m16n8k32 s8 (unpacked in registers) | 128 | word j: k-step j, low nibbles b0, high b1 |

use half::f16;

/// Columns per chunk of a layout kind.
pub fn chunk(kind: u8) -> usize {
    match kind {
        0 => 32,
        2 => 64,
        _ => 128,
    }
}

/// The k columns of one mma step of a `kind` product (m16n8k16 for f16 operands, m16n8k32 for
/// int8).
pub fn k_step(kind: u8) -> usize {
    if kind >= 2 {
        32
    } else {
        16
    }
}

/// Bytes of a packed `[n, k]` weight.
pub fn packed_bytes(kind: u8, n: usize, k: usize) -> usize {
    n.div_ceil(8) * k.div_ceil(chunk(kind)) * 32 * 16
}

/// The byte offset of element (row, col) and, for int4, which nibble (0 low, 1 high); for kind 0
/// the offset counts 16-bit halves. Mirrors `quamba::packed_offset`.
pub fn packed_offset(kind: u8, k: usize, row: usize, col: usize) -> (usize, u8) {
    let kc = k.div_ceil(chunk(kind));
    let (nt, g) = (row / 8, row % 8);
    let (c, kk) = (col / chunk(kind), col % chunk(kind));
    let base = (nt * kc + c) * 32;
    match kind {
        0 => {
            let (ks, r) = (kk / 16, kk % 16);
            let (half, t, e) = (r / 8, (r % 8) / 2, r % 2);
            ((base + g * 4 + t) * 8 + (ks * 2 + half) * 2 + e, 0)
        }
        1 => {
            let (ks, r) = (kk / 16, kk % 16);
            let (j, odd) = (ks / 2, ks % 2);
            let (half, t, e) = (r / 8, (r % 8) / 2, r % 2);
            let nib = odd * 2 + half + e * 4;
            ((base + g * 4 + t) * 16 + j * 4 + nib / 2, (nib % 2) as u8)
        }
        2 => {
            let (ks, r) = (kk / 32, kk % 32);
            let (half, t, b) = (r / 16, (r % 16) / 4, r % 4);
            ((base + g * 4 + t) * 16 + (ks * 2 + half) * 4 + b, 0)
        }
        _ => {
            let (j, r) = (kk / 32, kk % 32);
            let (half, t, b) = (r / 16, (r % 16) / 4, r % 4);
            ((base + g * 4 + t) * 16 + j * 4 + b, half as u8)
        }
    }
}

/// Packs row-major `values` (`[n, k]`; integers for kinds 1–3) into layout `kind`.
pub fn pack(kind: u8, values: &[f32], n: usize, k: usize) -> Vec<u8> {
    let mut out = vec![0u8; packed_bytes(kind, n, k)];
    for row in 0..n {
        for col in 0..k {
            let v = values[row * k + col];
            let (off, nibble) = packed_offset(kind, k, row, col);
            match kind {
                0 => out[off * 2..off * 2 + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes()),
                2 => out[off] = v as i8 as u8,
                _ => {
                    let q = (v as i8 as u8) & 0x0F;
                    out[off] |= if nibble == 0 { q } else { q << 4 };
                }
            }
        }
    }
    out
}

/// Reads element (row, col) back from a packed weight. Mirrors `quamba::packed_at`.
pub fn packed_at(kind: u8, packed: &[u8], k: usize, row: usize, col: usize) -> f32 {
    let (off, nibble) = packed_offset(kind, k, row, col);
    match kind {
        0 => f16::from_bits(u16::from_le_bytes([packed[off * 2], packed[off * 2 + 1]])).to_f32(),
        2 => packed[off] as i8 as f32,
        _ => {
            let v = if nibble == 0 { packed[off] & 15 } else { packed[off] >> 4 } as i32;
            (if v >= 8 { v - 16 } else { v }) as f32
        }
    }
}

/// The B fragment registers `(b0, b1)` that lane `lane` feeds to k-step `step` of chunk `c` of
/// tile `tile`, decoded as the kernel decodes them: the k indices and values each register holds.
/// Used by tests to check the layout against the mma operand definition of the PTX ISA.
pub fn fragment_elements(kind: u8, packed: &[u8], k: usize, tile: usize, c: usize, step: usize, lane: usize) -> Vec<(usize, usize, f32)> {
    let (g, t) = (lane / 4, lane % 4);
    let kstep = if kind <= 1 { 16 } else { 32 };
    let kb = c * chunk(kind) + step * kstep;
    let row = tile * 8 + g;
    // PTX ISA fragment definitions: (k index within the step) for each element of b0 then b1.
    let ks: Vec<usize> = if kind <= 1 {
        vec![t * 2, t * 2 + 1, t * 2 + 8, t * 2 + 9]
    } else {
        (0..4).map(|i| t * 4 + i).chain((0..4).map(|i| t * 4 + 16 + i)).collect()
    };
    ks.into_iter().map(|kk| (row, kb + kk, packed_at(kind, packed, k, row, kb + kk))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: u8, n: usize, k: usize) -> Vec<f32> {
        (0..n * k)
            .map(|i| {
                let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                match kind {
                    0 => (h % 2001) as f32 / 1000.0 - 1.0,
                    2 => (h % 256) as f32 - 128.0,
                    _ => (h % 16) as f32 - 8.0,
                }
            })
            .collect()
    }

    #[test]
    fn every_element_round_trips_at_odd_shapes() {
        for kind in 0..4u8 {
            for (n, k) in [(8, 32), (13, 200), (3, 129), (17, 5)] {
                let v = sample(kind, n, k);
                let p = pack(kind, &v, n, k);
                assert_eq!(p.len(), packed_bytes(kind, n, k));
                for row in 0..n {
                    for col in 0..k {
                        let want = if kind == 0 { f16::from_f32(v[row * k + col]).to_f32() } else { v[row * k + col] };
                        assert_eq!(packed_at(kind, &p, k, row, col), want, "kind {kind} [{n},{k}] ({row},{col})");
                    }
                }
            }
        }
    }

    #[test]
    fn offsets_are_a_bijection_onto_the_packed_bytes() {
        for kind in 0..4u8 {
            let (n, k) = (16, 256);
            let mut seen = std::collections::HashSet::new();
            for row in 0..n {
                for col in 0..k {
                    assert!(seen.insert(packed_offset(kind, k, row, col)), "kind {kind}: ({row},{col}) collides");
                }
            }
            let slots_per_byte = match kind {
                0 => 1, // offsets count halves: two bytes each
                2 => 1,
                _ => 2,
            };
            let units = if kind == 0 { packed_bytes(kind, n, k) / 2 } else { packed_bytes(kind, n, k) * slots_per_byte };
            assert_eq!(seen.len(), units, "kind {kind} leaves holes");
        }
    }

    #[test]
    fn lanes_hold_the_ptx_fragment_elements_in_register_order() {
        // Each lane's 16 bytes, decoded the way the kernel does (b_frag), must be exactly the
        // elements the PTX ISA assigns to (b0, b1) of that lane for that k-step.
        for kind in 0..4u8 {
            let (n, k) = (16, 256);
            let v = sample(kind, n, k);
            let p = pack(kind, &v, n, k);
            let steps = chunk(kind) / if kind <= 1 { 16 } else { 32 };
            for tile in 0..2 {
                for c in 0..k / chunk(kind) {
                    for step in 0..steps {
                        for lane in 0..32 {
                            let lane_bytes = &p[((tile * (k / chunk(kind)) + c) * 32 + lane) * 16..][..16];
                            let decoded = decode_lane(kind, lane_bytes, step);
                            let want: Vec<f32> = fragment_elements(kind, &p, k, tile, c, step, lane).iter().map(|e| e.2).collect();
                            let want_src: Vec<f32> = fragment_elements(kind, &p, k, tile, c, step, lane)
                                .iter()
                                .map(|(r, col, _)| if kind == 0 { f16::from_f32(v[r * k + col]).to_f32() } else { v[r * k + col] })
                                .collect();
                            assert_eq!(decoded, want, "kind {kind} tile {tile} chunk {c} step {step} lane {lane}");
                            assert_eq!(decoded, want_src);
                        }
                    }
                }
            }
        }
    }

    /// What `quamba::b_frag` computes from a lane's 16 bytes: the values of (b0, b1) in order.
    fn decode_lane(kind: u8, bytes: &[u8], step: usize) -> Vec<f32> {
        let w: Vec<u32> = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let bytes_of = |x: u32| x.to_le_bytes().map(|b| b as i8 as f32).to_vec();
        let halves_of = |x: u32| vec![f16::from_bits(x as u16).to_f32(), f16::from_bits((x >> 16) as u16).to_f32()];
        let sext = |x: u32| {
            let lo = x & 0x0F0F_0F0F;
            lo | ((lo & 0x0808_0808).wrapping_mul(0x1E))
        };
        let nib_pair = |x: u32, s: u32| {
            let y = (x >> (4 * s)) & 0x000F_000F;
            let f = |v: u32| (((v ^ 8) as i32) - 8) as f32;
            vec![f(y & 0xF), f(y >> 16)]
        };
        match kind {
            0 => [halves_of(w[2 * step]), halves_of(w[2 * step + 1])].concat(),
            2 => [bytes_of(w[2 * step]), bytes_of(w[2 * step + 1])].concat(),
            3 => [bytes_of(sext(w[step])), bytes_of(sext(w[step] >> 4))].concat(),
            _ => {
                let word = w[step / 2];
                let o = (step % 2) as u32 * 2;
                [nib_pair(word, o), nib_pair(word, o + 1)].concat()
            }
        }
    }
}
