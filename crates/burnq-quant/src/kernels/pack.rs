//! Packed operand layouts of the GEMM `C[r][c] = bias + Σ_k A[r][k]·B[k][c]`. Two element
//! forms share one shape of layout, `k` running in groups of `G` consecutive elements:
//!
//! - **`i16` pairs** (`G = 2`, the unit of `vpmaddwd`): both operands hold `i16` offsets
//!   `q − Z` (zero points subtracted once, when packing; every offset is within ±255);
//! - **bytes** (`G = 4`, the unit of `vpdpbusd`; see `bytes`): one operand holds `u8` codes,
//!   the other `i8` weights.
//!
//! In either form:
//! - A, the broadcast operand, is in **row panels** `[⌈rows/mr⌉][⌈K/G⌉][mr]`: one `i32` per row
//!   and group, holding the row's `G` elements (first element in the low bits);
//! - B, the vector operand, is in **column panels** `[⌈cols/NR⌉][⌈K/G⌉][NR][G]`: for each
//!   group, the `NR` columns' `G` elements side by side.
//!
//! One step of a tile then multiplies a broadcast group of A with `NR` groups of B and adds each
//! column's `G` products: `acc[r][c] += Σ_j A[r][Gg + j]·B[Gg + j][c]`. Rows, columns and the
//! last group are padded with zeros, so the padding contributes nothing.
//!
//! A convolution's B is its im2col matrix, `B[(c, ky, kx)][(y, x)] = x[c][y + ky][x + kx]`,
//! described by an [`Im2col`] plan and packed one column panel at a time by [`im2col_panel`]
//! (pairs) or [`im2col_bytes`] (bytes).

/// Rows of a row panel (the broadcast operand A): six rows keep 12 accumulators in registers.
pub(crate) const MR: usize = 6;
/// Columns of a column panel (the vector operand B): two AVX2 vectors of eight `i32` sums.
pub(crate) const NR: usize = 16;
/// Rows of a byte row panel: ten rows of one 512-bit accumulator each (conv1's 20 and conv2's
/// 50 output channels are whole panels).
pub(crate) const MRB: usize = 10;
/// Elements per group of the byte form: four bytes, the unit of `vpdpbusd`.
pub(crate) const GROUP: usize = 4;

/// Number of `k` pairs of a reduction of length `k`: `⌈k/2⌉`.
pub(crate) fn pairs(k: usize) -> usize {
    k.div_ceil(2)
}

/// Number of byte groups of a reduction of length `k`: `⌈k/4⌉`.
pub(crate) fn groups(k: usize) -> usize {
    k.div_ceil(GROUP)
}

/// Splits a packed pair of offsets `(lo, hi)` (in memory `[lo, hi]`) back into `(lo, hi)`.
pub(crate) fn unpair(p: i32) -> (i16, i16) {
    (p as i16, (p >> 16) as i16)
}

/// `q − z` as an `i16`, for a code and a zero point both in `[0, 255]`.
pub(crate) fn offset(q: u8, z: i32) -> i16 {
    (i32::from(q) - z) as i16
}

/// Packs A (`rows × k`, element `a(r, k)`) into row panels of `mr` rows and groups of
/// `32 / width` elements of `width` bits (`a` returns them in its low `width` bits), zero beyond
/// `rows` and `k`. `out` is cleared and refilled, so a reused vector allocates only when it must
/// grow.
fn pack_row_panels(
    rows: usize,
    k: usize,
    mr: usize,
    width: u32,
    a: impl Fn(usize, usize) -> u32,
    out: &mut Vec<i32>,
) {
    let per = (32 / width) as usize;
    let kg = k.div_ceil(per);
    out.clear();
    out.resize(rows.div_ceil(mr) * kg * mr, 0);
    for (panel, dst) in out.chunks_exact_mut(kg * mr).enumerate() {
        let panel_rows = (rows - panel * mr).min(mr);
        for (g, group) in dst.chunks_exact_mut(mr).enumerate() {
            for (r, slot) in group[..panel_rows].iter_mut().enumerate() {
                let row = panel * mr + r;
                let bits = (0..per).filter(|j| per * g + j < k).fold(0, |bits, j| {
                    bits | a(row, per * g + j) << (j as u32 * width)
                });
                *slot = bits as i32;
            }
        }
    }
}

/// Packs A (`rows × k`, element `a(r, k)`) into row panels of `i16` pairs.
pub(crate) fn pack_rows(
    rows: usize,
    k: usize,
    a: impl Fn(usize, usize) -> i16,
    out: &mut Vec<i32>,
) {
    pack_row_panels(rows, k, MR, 16, |r, k| u32::from(a(r, k) as u16), out);
}

/// Packs A (`rows × k`, element `a(r, k)`, a byte) into byte row panels of [`MRB`] rows.
pub(crate) fn pack_byte_rows(
    rows: usize,
    k: usize,
    a: impl Fn(usize, usize) -> u8,
    out: &mut Vec<i32>,
) {
    pack_row_panels(rows, k, MRB, 8, |r, k| u32::from(a(r, k)), out);
}

/// [`pack_byte_rows`] of the first `rows` rows of the row-major matrix `input` (`k` codes per
/// row): each group is four consecutive bytes of a row, copied as one little-endian `i32`.
/// When `k` is a multiple of four, the slots of a last panel's missing rows keep whatever `out`
/// held (no tile reads past its rows): one image's row is 800 bytes, not a zeroed panel of ten.
pub(crate) fn pack_code_rows(input: &[u8], rows: usize, k: usize, out: &mut Vec<i32>) {
    if !k.is_multiple_of(GROUP) {
        return pack_byte_rows(rows, k, |r, i| input[r * k + i], out);
    }
    let kg = k / GROUP;
    let len = rows.div_ceil(MRB) * kg * MRB;
    if out.len() < len {
        out.resize(len, 0);
    }
    let (groups, _) = input[..rows * k].as_chunks::<GROUP>();
    for (panel, dst) in out[..len].chunks_exact_mut(kg * MRB).enumerate() {
        let panel_rows = (rows - panel * MRB).min(MRB);
        for r in 0..panel_rows {
            let row = &groups[(panel * MRB + r) * kg..][..kg];
            for (slot, &group) in dst.iter_mut().skip(r).step_by(MRB).zip(row) {
                *slot = i32::from_le_bytes(group);
            }
        }
    }
}

/// The first `rows` rows of byte row panels of codes ([`pack_code_rows`], panels of `groups`
/// groups of [`MRB`] rows) split into nibbles, `x = lo + 16·hi`: each panel becomes the panel
/// of its low nibbles followed by the panel of its high nibbles, for
/// [`super::bytes::NibbleIsa`] (missing rows' slots, never read, keep what `out` held).
pub(crate) fn split_nibbles(packed: &[i32], rows: usize, groups: usize, out: &mut Vec<i32>) {
    const LOW: u32 = 0x0F0F_0F0F;
    let (panel_len, panels) = (groups * MRB, rows.div_ceil(MRB));
    if out.len() < 2 * panels * panel_len {
        out.resize(2 * panels * panel_len, 0);
    }
    let pairs = packed
        .chunks_exact(panel_len)
        .zip(out.chunks_exact_mut(2 * panel_len));
    for (p, (src, dst)) in pairs.take(panels).enumerate() {
        let valid = (rows - p * MRB).min(MRB);
        let (lo, hi) = dst.split_at_mut(panel_len);
        let groups = src
            .chunks_exact(MRB)
            .zip(lo.chunks_exact_mut(MRB))
            .zip(hi.chunks_exact_mut(MRB));
        for ((src, lo), hi) in groups {
            for ((&g, lo), hi) in src.iter().zip(lo).zip(hi).take(valid) {
                (*lo, *hi) = ((g as u32 & LOW) as i32, ((g as u32 >> 4) & LOW) as i32);
            }
        }
    }
}

/// Packs B (`k × cols`, element `b(k, c)`) into column panels with groups of `G`, zero beyond
/// `cols` and `k`.
fn pack_col_panels<T: Copy + Default, const G: usize>(
    cols: usize,
    k: usize,
    b: impl Fn(usize, usize) -> T,
) -> Vec<T> {
    let kg = k.div_ceil(G);
    let mut out = vec![T::default(); cols.div_ceil(NR) * kg * G * NR];
    for (panel, dst) in out.chunks_exact_mut(kg * G * NR).enumerate() {
        let panel_cols = (cols - panel * NR).min(NR);
        for (g, step) in dst.chunks_exact_mut(G * NR).enumerate() {
            for (c, slot) in step.chunks_exact_mut(G).take(panel_cols).enumerate() {
                for (j, v) in slot.iter_mut().enumerate().filter(|(j, _)| G * g + j < k) {
                    *v = b(G * g + j, panel * NR + c);
                }
            }
        }
    }
    out
}

/// Packs B (`k × cols`, element `b(k, c)`) into column panels of `i16` pairs.
pub(crate) fn pack_cols(cols: usize, k: usize, b: impl Fn(usize, usize) -> i16) -> Vec<i16> {
    pack_col_panels::<i16, 2>(cols, k, b)
}

/// Packs B (`k × cols`, element `b(k, c)`, a byte) into byte column panels.
pub(crate) fn pack_byte_cols(cols: usize, k: usize, b: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    pack_col_panels::<u8, GROUP>(cols, k, b)
}

/// The im2col matrix of a valid, stride-1 convolution of one CHW image, as offsets into it:
/// `B[k][col] = x[k_off[k] + col_off[col]]` with `k_off[(c, ky, kx)] = (c·H + ky)·W + kx` and
/// `col_off[(y, x)] = y·W + x`, columns in row-major output order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Im2col {
    k_off: Vec<usize>,
    /// The largest of `k_off`.
    max_k_off: usize,
    col_off: Vec<usize>,
    /// [`Im2col::pool_panels`], if the output width is a multiple of eight.
    pool: Option<Vec<([usize; NR], usize)>>,
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
        let k_off: Vec<usize> = (0..in_channels)
            .flat_map(|c| {
                (0..kernel)
                    .flat_map(move |ky| (0..kernel).map(move |kx| (c * height + ky) * width + kx))
            })
            .collect();
        let col_off: Vec<usize> = (0..out_h)
            .flat_map(|y| (0..out_w).map(move |x| y * width + x))
            .collect();
        Self {
            max_k_off: k_off.iter().copied().max().unwrap_or(0),
            k_off,
            pool: pool_panels(&col_off, out_h, out_w),
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

    /// The column panels of [`Im2col::panels`] ordered for a fused 2×2 max pool, if the output
    /// width is a multiple of eight (else `None`): panel `(py, xb)` holds output row `2·py`'s
    /// positions `8·xb .. 8·xb + 8` in its first half and row `2·py + 1`'s in its second, so the
    /// maximum of its halves is the pool's vertical maximum (an odd last row, which pooling
    /// drops, is not computed). Each item is the panel's `NR` source offsets and where its
    /// eight maxima go in the `[out_h / 2][out_w]` plane of vertical maxima. Listed once, when
    /// the plan is made.
    pub(crate) fn pool_panels(&self) -> Option<impl Iterator<Item = (&[usize; NR], usize)> + '_> {
        let panels = self.pool.as_ref()?;
        Some(panels.iter().map(|(cols, at)| (cols, *at)))
    }

    /// The offsets of every row of B.
    pub(crate) fn k_offsets(&self) -> &[usize] {
        &self.k_off
    }

    /// The largest offset of a row of B.
    pub(crate) fn max_k_offset(&self) -> usize {
        self.max_k_off
    }
}

/// The panels of [`Im2col::pool_panels`] for the source offsets `col_off` of an
/// `out_h × out_w` output.
fn pool_panels(col_off: &[usize], out_h: usize, out_w: usize) -> Option<Vec<([usize; NR], usize)>> {
    let half = NR / 2;
    if !out_w.is_multiple_of(half) {
        return None;
    }
    let blocks = out_w / half;
    let panel = |p: usize| {
        let (py, x) = (p / blocks, half * (p % blocks));
        let top = col_off[2 * py * out_w + x];
        let bottom = col_off[(2 * py + 1) * out_w + x];
        let cols = std::array::from_fn(|i| match i < half {
            true => top + i,
            false => bottom + i - half,
        });
        (cols, py * out_w + x)
    };
    Some((0..out_h / 2 * blocks).map(panel).collect())
}

/// Packs one column panel of an im2col matrix in groups of `G`: `out[g][c][j] =
/// value(x[k_off[Gg + j] + cols[c]])` for `c < cols.len() ≤ NR`, `out` holding
/// `⌈K/G⌉·G·NR` elements. Columns past `cols.len()` repeat the last column (their results are
/// discarded); the last group is completed with zeros.
///
/// Each half panel of eight columns that reads eight consecutive bytes (always the case when
/// the output width is a multiple of 8) is copied as one run; other halves are gathered. The
/// SIMD kernels do whole-run panels in registers and the others with this function.
#[inline(always)]
fn im2col_groups<T: Copy + Default, const G: usize>(
    input: &[u8],
    k_off: &[usize],
    cols: &[usize],
    value: impl Fn(u8) -> T,
    out: &mut [T],
) {
    let last = cols.len() - 1;
    let src: [usize; NR] = std::array::from_fn(|c| cols[c.min(last)]);
    let run = |h: usize| (1..NR / 2).all(|i| src[h * 8 + i] == src[h * 8] + i);
    let runs = [run(0), run(1)];
    let row = |k: usize| -> [T; NR] {
        let mut row = [T::default(); NR];
        for (h, half) in row.chunks_exact_mut(NR / 2).enumerate() {
            let base = k_off[k] + src[h * 8];
            if runs[h] {
                for (v, &q) in half.iter_mut().zip(&input[base..base + NR / 2]) {
                    *v = value(q);
                }
            } else {
                for (v, &s) in half.iter_mut().zip(&src[h * 8..]) {
                    *v = value(input[k_off[k] + s]);
                }
            }
        }
        row
    };
    for (g, step) in out.chunks_exact_mut(G * NR).enumerate() {
        let rows: [[T; NR]; G] = std::array::from_fn(|j| match k_off.get(G * g + j) {
            Some(_) => row(G * g + j),
            None => [T::default(); NR],
        });
        for (c, slot) in step.chunks_exact_mut(G).enumerate() {
            for (v, row) in slot.iter_mut().zip(&rows) {
                *v = row[c];
            }
        }
    }
}

/// One column panel of an im2col matrix as `i16` pairs of offsets `x − z`
/// ([`im2col_groups`] with `G = 2`).
#[inline(always)]
pub(crate) fn im2col_panel(input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]) {
    im2col_groups::<i16, 2>(input, k_off, cols, |q| offset(q, z), out);
}

/// One column panel of an im2col matrix as byte groups of the codes themselves
/// ([`im2col_groups`] with `G = 4`).
#[inline(always)]
pub(crate) fn im2col_bytes(input: &[u8], k_off: &[usize], cols: &[usize], out: &mut [u8]) {
    im2col_groups::<u8, GROUP>(input, k_off, cols, |q| q, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets `(lo, hi)` as one `i32`, `lo` in the low half: in memory, `[lo, hi]`.
    fn pair(lo: i16, hi: i16) -> i32 {
        (u32::from(lo as u16) | (u32::from(hi as u16) << 16)) as i32
    }

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
    fn byte_layouts() {
        // A = [[1..=5], [6..=10]]: one panel, two groups, the second padded.
        let mut out = Vec::new();
        pack_byte_rows(2, 5, |r, k| (5 * r + k + 1) as u8, &mut out);
        assert_eq!(out.len(), 2 * MRB);
        assert_eq!(&out[..2], &[0x0403_0201, 0x0908_0706]);
        assert_eq!(&out[MRB..MRB + 2], &[5, 10]);
        let codes: Vec<u8> = (0..24).collect();
        for k in [4, 8, 3] {
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            pack_code_rows(&codes, 24 / k - 1, k, &mut fast);
            pack_byte_rows(24 / k - 1, k, |r, i| codes[r * k + i], &mut slow);
            assert_eq!(fast, slow, "k = {k}");
        }
        // B[k][c] = 10k + c, 5 × 2: one panel, two groups.
        let out = pack_byte_cols(2, 5, |k, c| (10 * k + c) as u8);
        assert_eq!(out.len(), 2 * GROUP * NR);
        assert_eq!(&out[..8], &[0, 10, 20, 30, 1, 11, 21, 31]);
        assert_eq!(
            &out[GROUP * NR..GROUP * NR + 8],
            &[40, 0, 0, 0, 41, 0, 0, 0]
        );
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
        let mut bytes = vec![0; 2 * GROUP * NR];
        im2col_bytes(&image, plan.k_offsets(), cols, &mut bytes);
        for k in 0..8 {
            for (col, &o) in cols.iter().enumerate() {
                let expected = image[plan.k_offsets()[k] + o];
                assert_eq!(bytes[(k / 4) * GROUP * NR + GROUP * col + k % 4], expected);
            }
        }
    }
}
