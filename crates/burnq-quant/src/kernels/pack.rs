//! Packed operand layouts of the GEMM `C[r][c] = bias + Σ_k A[r][k]·B[k][c]`, where both
//! operands hold `i16` offsets `q − Z` (zero points subtracted once, when packing; every offset
//! is within ±255) and `k` runs in pairs, the unit of `vpmaddwd`:
//!
//! - A, the broadcast operand, in **row panels** `[⌈rows/MR⌉][⌈K/2⌉][MR]`: one `i32` per row
//!   and pair, holding `(A[r][2p], A[r][2p+1])` as two `i16` (low half first);
//! - B, the vector operand, in **column panels** `[⌈cols/NR⌉][⌈K/2⌉][NR][2]`: for each pair,
//!   the `NR` columns' `(B[2p][c], B[2p+1][c])` side by side.
//!
//! One step of a tile then multiplies a broadcast pair of A with `NR` pairs of B and adds each
//! column's two products: `acc[r][c] += A[r][2p]·B[2p][c] + A[r][2p+1]·B[2p+1][c]`. Rows,
//! columns and an odd `K` are padded with zeros, so the padding contributes nothing.
//!
//! A convolution's B is its im2col matrix, `B[(c, ky, kx)][(y, x)] = x[c][y + ky][x + kx]`,
//! described by an [`Im2col`] plan and packed one column panel at a time by [`im2col_panel`].

/// Rows of a row panel (the broadcast operand A): six rows keep 12 accumulators in registers.
pub(crate) const MR: usize = 6;
/// Columns of a column panel (the vector operand B): two AVX2 vectors of eight `i32` sums.
pub(crate) const NR: usize = 16;

/// Number of `k` pairs of a reduction of length `k`: `⌈k/2⌉`.
pub(crate) fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// The offsets `(lo, hi)` as one `i32`, `lo` in the low half: in memory, `[lo, hi]`.
pub(crate) fn pair(lo: i16, hi: i16) -> i32 {
    (u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32
}

/// Splits a pair built by [`pair`] back into `(lo, hi)`.
pub(crate) fn unpair(p: i32) -> (i16, i16) {
    (p as i16, (p >> 16) as i16)
}

/// `q − z` as an `i16`, for a code and a zero point both in `[0, 255]`.
pub(crate) fn offset(q: u8, z: i32) -> i16 {
    (i32::from(q) - z) as i16
}

/// Packs A (`rows × k`, element `a(r, k)`) into row panels, zero beyond `rows` and `k`.
/// `out` is cleared and refilled, so a reused vector allocates only when it must grow.
pub(crate) fn pack_rows(
    rows: usize,
    k: usize,
    a: impl Fn(usize, usize) -> i16,
    out: &mut Vec<i32>,
) {
    let kp = pairs(k);
    out.clear();
    out.resize(rows.div_ceil(MR) * kp * MR, 0);
    for (panel, dst) in out.chunks_exact_mut(kp * MR).enumerate() {
        let panel_rows = (rows - panel * MR).min(MR);
        for (p, group) in dst.chunks_exact_mut(MR).enumerate() {
            for (r, slot) in group[..panel_rows].iter_mut().enumerate() {
                let row = panel * MR + r;
                let hi = if 2 * p + 1 < k { a(row, 2 * p + 1) } else { 0 };
                *slot = pair(a(row, 2 * p), hi);
            }
        }
    }
}

/// Packs B (`k × cols`, element `b(k, c)`) into column panels, zero beyond `cols` and `k`.
pub(crate) fn pack_cols(cols: usize, k: usize, b: impl Fn(usize, usize) -> i16) -> Vec<i16> {
    let kp = pairs(k);
    let mut out = vec![0; cols.div_ceil(NR) * kp * 2 * NR];
    for (panel, dst) in out.chunks_exact_mut(kp * 2 * NR).enumerate() {
        let panel_cols = (cols - panel * NR).min(NR);
        for (p, step) in dst.chunks_exact_mut(2 * NR).enumerate() {
            for (c, slot) in step.chunks_exact_mut(2).take(panel_cols).enumerate() {
                let col = panel * NR + c;
                slot[0] = b(2 * p, col);
                if 2 * p + 1 < k {
                    slot[1] = b(2 * p + 1, col);
                }
            }
        }
    }
    out
}

/// The im2col matrix of a valid, stride-1 convolution of one CHW image, as offsets into it:
/// `B[k][col] = x[k_off[k] + col_off[col]]` with `k_off[(c, ky, kx)] = (c·H + ky)·W + kx` and
/// `col_off[(y, x)] = y·W + x`, columns in row-major output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Im2col {
    k_off: Vec<usize>,
    col_off: Vec<usize>,
    /// Output rows, `H − k + 1`.
    pub(crate) out_h: usize,
    /// Output columns, `W − k + 1`.
    pub(crate) out_w: usize,
    /// Codes per input image, `in_channels·H·W`.
    pub(crate) image_len: usize,
}

impl Im2col {
    /// The plan for `in_channels × height × width` images and a `kernel × kernel` window
    /// (`1 ≤ kernel ≤ min(height, width)`, checked by the caller).
    pub(crate) fn new(in_channels: usize, kernel: usize, height: usize, width: usize) -> Self {
        let (out_h, out_w) = (height - kernel + 1, width - kernel + 1);
        let k_off = (0..in_channels)
            .flat_map(|c| {
                (0..kernel)
                    .flat_map(move |ky| (0..kernel).map(move |kx| (c * height + ky) * width + kx))
            })
            .collect();
        let col_off = (0..out_h)
            .flat_map(|y| (0..out_w).map(move |x| y * width + x))
            .collect();
        Self {
            k_off,
            col_off,
            out_h,
            out_w,
            image_len: in_channels * height * width,
        }
    }

    /// Output positions per image, `out_h · out_w`: the GEMM's column count.
    pub(crate) fn positions(&self) -> usize {
        self.col_off.len()
    }

    /// Each column panel's source offsets, `NR` of them except in the last panel.
    pub(crate) fn panels(&self) -> std::slice::Chunks<'_, usize> {
        self.col_off.chunks(NR)
    }

    /// The offsets of every row of B.
    pub(crate) fn k_offsets(&self) -> &[usize] {
        &self.k_off
    }
}

/// Packs one column panel of an im2col matrix: `out[p][c] = (x[k_off[2p] + cols[c]] − z,
/// x[k_off[2p + 1] + cols[c]] − z)` for `c < cols.len() ≤ NR`, `out` holding
/// `⌈K/2⌉·2·NR` offsets. Columns past `cols.len()` repeat the last column (their results are
/// discarded); an odd `K`'s last pair is completed with 0.
///
/// Each half panel of eight columns that reads eight consecutive bytes (always the case when
/// the output width is a multiple of 8) is copied as one run; other halves are gathered. The
/// AVX2 kernel does whole-run panels in registers and the others with this function.
#[inline(always)]
pub(crate) fn im2col_panel(input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]) {
    let last = cols.len() - 1;
    let src: [usize; NR] = std::array::from_fn(|c| cols[c.min(last)]);
    let run = |h: usize| (1..NR / 2).all(|i| src[h * 8 + i] == src[h * 8] + i);
    let runs = [run(0), run(1)];
    let row = |k: usize| -> [i16; NR] {
        let mut row = [0; NR];
        for (h, half) in row.chunks_exact_mut(NR / 2).enumerate() {
            let base = k_off[k] + src[h * 8];
            if runs[h] {
                for (v, &q) in half.iter_mut().zip(&input[base..base + NR / 2]) {
                    *v = offset(q, z);
                }
            } else {
                for (v, &s) in half.iter_mut().zip(&src[h * 8..]) {
                    *v = offset(input[k_off[k] + s], z);
                }
            }
        }
        row
    };
    for (p, step) in out.chunks_exact_mut(2 * NR).enumerate() {
        let even = row(2 * p);
        let odd = if 2 * p + 1 < k_off.len() {
            row(2 * p + 1)
        } else {
            [0; NR]
        };
        for ((slot, e), o) in step.chunks_exact_mut(2).zip(even).zip(odd) {
            slot[0] = e;
            slot[1] = o;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        for (lo, hi) in [
            (0, 0),
            (-255, 255),
            (255, -1),
            (-1, -1),
            (i16::MIN, i16::MAX),
        ] {
            assert_eq!(unpair(pair(lo, hi)), (lo, hi));
        }
        assert_eq!(pair(1, 2), 0x0002_0001);
    }

    #[test]
    fn row_panels_layout() {
        // A = [[1, 2, 3], [4, 5, 6]]: one panel, two pairs, rows 2..6 zero, odd k padded.
        let mut out = vec![7; 3];
        pack_rows(2, 3, |r, k| (3 * r + k + 1) as i16, &mut out);
        assert_eq!(out.len(), 2 * MR);
        assert_eq!(&out[..2], &[pair(1, 2), pair(4, 5)]);
        assert!(out[2..MR].iter().all(|&p| p == 0));
        assert_eq!(&out[MR..MR + 2], &[pair(3, 0), pair(6, 0)]);
    }

    #[test]
    fn column_panels_layout() {
        // B[k][c] = 10k + c, 3 × 17: two panels, the second with one column.
        let out = pack_cols(17, 3, |k, c| (10 * k + c) as i16);
        assert_eq!(out.len(), 2 * 2 * 2 * NR);
        assert_eq!(&out[..4], &[0, 10, 1, 11]);
        assert_eq!(&out[2 * NR..2 * NR + 4], &[20, 0, 21, 0]);
        let second = &out[4 * NR..];
        assert_eq!(&second[..4], &[16, 26, 0, 0]);
        assert_eq!(&second[2 * NR..2 * NR + 2], &[36, 0]);
    }

    #[test]
    fn im2col_panel_matches_definition() {
        // 2 channels of 5×5, kernel 2: K = 8, 16 positions (4×4), halves are not runs.
        let plan = Im2col::new(2, 2, 5, 5);
        assert_eq!((plan.out_h, plan.out_w, plan.positions()), (4, 4, 16));
        assert_eq!((plan.k_offsets().len(), plan.image_len), (8, 50));
        let image: Vec<u8> = (0..50).map(|i| (i * 7 % 256) as u8).collect();
        let mut out = vec![0; 4 * 2 * NR];
        let cols = plan.panels().next().unwrap();
        im2col_panel(&image, plan.k_offsets(), cols, 3, &mut out);
        for k in 0..8 {
            let (c, ky, kx) = (k / 4, k / 2 % 2, k % 2);
            for (col, &o) in cols.iter().enumerate() {
                let (y, x) = (col / 4, col % 4);
                assert_eq!(o, y * 5 + x);
                let expected = i16::from(image[(c * 5 + y + ky) * 5 + x + kx]) - 3;
                assert_eq!(out[(k / 2) * 2 * NR + 2 * col + k % 2], expected);
            }
        }
    }
}
