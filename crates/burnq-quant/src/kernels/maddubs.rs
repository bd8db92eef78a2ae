//! The AVX2 byte GEMM: `vpmaddubsw`, for the layers whose proven operand bounds make it exact
//! ([`ByteForm::chain`] `≥ 1`, see [`super::bytes`]) and whose reduction is long enough to
//! repay it ([`MIN_GROUPS`]) or short enough to be one chain; the [`super::avx2`] `i16` GEMM
//! runs the others.
//!
//! **Tile.** Up to [`MRB`] rows in passes of [`PASS`] rows, sixteen columns as two vectors.
//! Per group of four `k` and row: one broadcast group of A, `vpmaddubsw` with each vector of B
//! (sixteen `u8 × i8` products added in pairs into `i16` lanes, which cannot saturate because
//! `2·qmax_in·max|s| ≤ 32767`), then `vpaddw` into `i16` chain sums. After `chain` groups
//! (`chain·2·qmax_in·max|s| ≤ 32767`, so no chain sum wraps) each chain sum is widened with
//! `vpmaddwd` by ones (adding its two `i16` lanes of the column's group into one `i32`) and
//! added to the `i32` accumulators. At 4 bits and below `chain` is in the tens, so a group
//! costs about two instructions per vector against four for the `i16` GEMM's two `k` pairs.
//!
//! **Tables.** A convolution on two-bit inputs whose [`LutForm`] exists runs the table tile
//! instead ([`super::lut`]): per group of four `k` and row, one table load, one `vpshufb`
//! looking up sixteen columns of two pairs, and one `vpaddb`.
//!
//! **Direct.** A convolution whose whole reduction fits one `i16` sum, shorter than
//! [`MIN_GROUPS`] groups (and without tables), runs the direct tile instead ([`super::direct`],
//! in `direct_avx2`): no im2col matrix of groups, one `vpmaddubsw` per pair of taps and row,
//! one widening per tile.
//!
//! **Nibbles.** A linear layer whose pair sums could saturate (8-bit codes against 7- or 8-bit
//! weights), run on one or two rows (one image's fully connected layers), takes the nibble tile
//! ([`NibbleIsa`]): its codes split `x = lo + 16·hi`, two `vpmaddubsw` per group and vector,
//! as many products per instruction as the `i16` GEMM from half the weight bytes. One image's
//! fc1 (800 × 500, w8a8) measured 8.0 → 5.8 µs on Zen 5; on four rows or more the `i16` GEMM,
//! whose weight loads serve more rows, was as fast or faster.
//!
//! Every function here needs AVX2, and runs only through a [`Maddubs`] token.

use std::arch::x86_64::*;

use super::avx2;
use super::bytes::{ByteForm, ByteIsa, Codes, NibbleIsa, Outer, TableIsa};
use super::choice::KernelChoice;
use super::direct_avx2;
use super::isa::{TileBias, TileOut};
use super::lut::{MRL, TABLES};
use super::pack::{GROUP, Im2col, MRB, NR};
use super::requant::LayerRequant;
use crate::QuantError;

/// Fewest groups of four in a reduction that this GEMM runs in several `i16` chains: with
/// fewer, the widening after each chain and the tile's fixed cost outweigh the saving (conv1,
/// `K = 25`, ran slower than with the `i16` GEMM when its reduction took two chains). A
/// shorter reduction runs here only as one chain (`chain ≥ groups`: 4-bit weights or fewer
/// against 8-bit pixels), one widening per tile, which measured 5 % faster for the whole
/// tutorial network at w4a4 and w2a2 on one image. A convolution runs directly
/// ([`super::direct`]) only below it: on longer reductions (conv2 at w3a3, 125 groups) the byte
/// tile measured 2–3 % faster.
const MIN_GROUPS: usize = 16;

/// Rows per pass of a tile: five rows of two `i16` chain sums and two `i32` sums, with the two
/// vectors of B, stay within the sixteen vector registers (but for a few `i32` sums, touched
/// once per chain).
const PASS: usize = 5;

/// Proof that this CPU supports AVX2, for the `vpmaddubsw` byte GEMM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Maddubs(());

impl Maddubs {
    /// The token, or an error if the CPU lacks AVX2.
    pub(crate) fn new() -> Result<Self, QuantError> {
        KernelChoice::Avx2Maddubs
            .check_available()
            .map(|()| Self(()))
    }
}

// SAFETY (every `unsafe` block in this impl): the callees need AVX2, and a `Maddubs` value
// exists only if `Maddubs::new` detected it.
impl ByteIsa for Maddubs {
    fn accepts(self, form: &ByteForm) -> bool {
        form.chain >= 1 && (form.groups >= MIN_GROUPS || form.chain >= form.groups)
    }

    fn byte_tile(
        self,
        rows: usize,
        a: &[i32],
        b: &[u8],
        codes: Codes,
        chain: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    ) {
        let pass = |r0: usize, rows: usize, bias, outer, out| unsafe {
            match codes {
                Codes::A => pass::<true>(r0, rows, a, b, chain, bias, outer, out),
                Codes::B => pass::<false>(r0, rows, a, b, chain, bias, outer, out),
            }
        };
        if rows <= PASS {
            pass(0, rows, bias, outer, out);
        } else {
            let (top, bottom) = out.split_rows(PASS);
            pass(0, PASS, bias, outer, top);
            let outer = outer.map(|o| Outer {
                rows: &o.rows[PASS..],
                cols: o.cols,
            });
            pass(PASS, rows - PASS, bias.rows_from(PASS), outer, bottom);
        }
    }

    type Tables = Self;

    fn tables(self, form: &ByteForm) -> Option<Self> {
        form.lut.is_some().then_some(self)
    }

    type Nibbles = Self;

    fn nibbles(self, form: &ByteForm) -> Option<Self> {
        (!self.accepts(form) && form.nibble_chain >= 1).then_some(self)
    }

    type Direct = Self;

    fn direct(self, form: &ByteForm) -> Option<Self> {
        let short = form.groups < MIN_GROUPS;
        (form.direct.is_some() && form.lut.is_none() && short).then_some(self)
    }

    fn im2col_bytes(self, input: &[u8], plan: &Im2col, cols: &[usize], out: &mut [u8]) {
        unsafe { avx2::im2col_bytes(input, plan, cols, out) }
    }

    fn col_sums(self, panel: &[u8], sums: &mut [i32; NR]) {
        unsafe { col_sums(panel, sums) }
    }

    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        unsafe { avx2::pool_pairs_requant(rows, requant, o, out) }
    }

    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
        unsafe { avx2::requant_channels(acc, requant, out) }
    }
}

// SAFETY (the `unsafe` block): the callee needs AVX2, which a `Maddubs` value proves.
impl NibbleIsa for Maddubs {
    fn nibble_tile(
        self,
        rows: usize,
        a: &[i32],
        b: &[u8],
        chain: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    ) {
        let (lo, hi) = a.split_at(a.len() / 2);
        let (mut out, mut r0) = (out, 0);
        loop {
            let r = (rows - r0).min(NIBBLE_PASS);
            let (top, bottom) = if r0 + r < rows {
                let (top, bottom) = out.split_rows(r);
                (top, Some(bottom))
            } else {
                (out, None)
            };
            let (bias, outer) = (
                bias.rows_from(r0),
                outer.map(|o| Outer {
                    rows: &o.rows[r0..],
                    cols: o.cols,
                }),
            );
            unsafe {
                match r {
                    1 => nibble_rows::<1>(r0, lo, hi, b, chain, bias, outer, top),
                    _ => nibble_rows::<NIBBLE_PASS>(r0, lo, hi, b, chain, bias, outer, top),
                }
            }
            r0 += r;
            match bottom {
                Some(bottom) => out = bottom,
                None => break,
            }
        }
    }
}

// SAFETY (every `unsafe` block): the callees need AVX2, which a `Maddubs` value proves.
impl TableIsa for Maddubs {
    fn index_panel(self, panel: &[u8], out: &mut [u8]) {
        unsafe { index_panel(panel, out) }
    }

    fn index_runs(self, input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]) {
        unsafe { direct_avx2::index_runs(input, plan, runs, out) }
    }

    fn lut_tile(
        self,
        rows: usize,
        tables: &[u8],
        idx: &[u8],
        steps: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    ) {
        unsafe { lut_tile(rows, tables, idx, steps, bias, outer, out) }
    }
}

/// Rows `r0..r0 + rows` (`rows ≤ PASS`) of a byte tile, `A_CODES`: whether A holds the codes.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
fn pass<const A_CODES: bool>(
    r0: usize,
    rows: usize,
    a: &[i32],
    b: &[u8],
    chain: usize,
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    match rows {
        1 => tile::<1, A_CODES>(r0, a, b, chain, bias, outer, out),
        2 => tile::<2, A_CODES>(r0, a, b, chain, bias, outer, out),
        3 => tile::<3, A_CODES>(r0, a, b, chain, bias, outer, out),
        4 => tile::<4, A_CODES>(r0, a, b, chain, bias, outer, out),
        PASS => tile::<PASS, A_CODES>(r0, a, b, chain, bias, outer, out),
        _ => panic!("a pass has 1 to {PASS} rows, not {rows}"),
    }
}

/// `R` rows from row `r0` of a byte tile; see the module docs.
#[target_feature(enable = "avx2")]
fn tile<const R: usize, const A_CODES: bool>(
    r0: usize,
    a: &[i32],
    b: &[u8],
    chain: usize,
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    let mut acc = avx2::init::<R>(bias);
    let ones = _mm256_set1_epi16(1);
    let (a, _) = a.as_chunks::<MRB>();
    let (b, _) = b.as_chunks::<{ GROUP * NR }>();
    for (a, b) in a.chunks(chain).zip(b.chunks(chain)) {
        let mut sums = [[_mm256_setzero_si256(); 2]; R];
        for (a, b) in a.iter().zip(b) {
            let (halves, _) = b.as_chunks::<32>();
            let b = [load_u8x32(&halves[0]), load_u8x32(&halves[1])];
            for (row, &group) in sums.iter_mut().zip(&a[r0..]) {
                let group = _mm256_set1_epi32(group);
                for (sum, &b) in row.iter_mut().zip(&b) {
                    let products = if A_CODES {
                        _mm256_maddubs_epi16(group, b)
                    } else {
                        _mm256_maddubs_epi16(b, group)
                    };
                    *sum = _mm256_add_epi16(*sum, products);
                }
            }
        }
        for (row, sums) in acc.iter_mut().zip(&sums) {
            for (v, &s) in row.iter_mut().zip(sums) {
                *v = _mm256_add_epi32(*v, _mm256_madd_epi16(s, ones));
            }
        }
    }
    if let Some(outer) = outer {
        avx2::add_outer(&mut acc, outer);
    }
    avx2::finish(&acc, out);
}

/// Rows per pass of a nibble tile: each row keeps low and high `i16` chain sums and `i32` sums
/// of two vectors, six registers, so two rows with the two vectors of B and the broadcasts fit
/// the sixteen vector registers.
const NIBBLE_PASS: usize = 2;

/// `R` rows from row `r0` of a nibble tile ([`NibbleIsa::nibble_tile`]): per group and row,
/// `vpmaddubsw` of the low and of the high nibbles with both vectors of B into separate `i16`
/// chain sums; after `chain` groups, the low sums widened by `vpmaddwd` with ones and the high
/// ones with sixteens, `Σ lo·s + 16·Σ hi·s` in `i32`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
fn nibble_rows<const R: usize>(
    r0: usize,
    lo: &[i32],
    hi: &[i32],
    b: &[u8],
    chain: usize,
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    let mut acc = avx2::init::<R>(bias);
    let weights = [_mm256_set1_epi16(1), _mm256_set1_epi16(16)];
    let (lo, _) = lo.as_chunks::<MRB>();
    let (hi, _) = hi.as_chunks::<MRB>();
    let (b, _) = b.as_chunks::<{ GROUP * NR }>();
    let chains = lo.chunks(chain).zip(hi.chunks(chain)).zip(b.chunks(chain));
    for ((lo, hi), b) in chains {
        // sums[r][plane][vector], plane 0 the low nibbles, 1 the high ones.
        let mut sums = [[[_mm256_setzero_si256(); 2]; 2]; R];
        for ((lo, hi), b) in lo.iter().zip(hi).zip(b) {
            let (halves, _) = b.as_chunks::<32>();
            let b = [load_u8x32(&halves[0]), load_u8x32(&halves[1])];
            for (r, row) in sums.iter_mut().enumerate() {
                let planes = [lo[r0 + r], hi[r0 + r]];
                for (plane, &group) in row.iter_mut().zip(&planes) {
                    let group = _mm256_set1_epi32(group);
                    for (sum, &b) in plane.iter_mut().zip(&b) {
                        *sum = _mm256_add_epi16(*sum, _mm256_maddubs_epi16(group, b));
                    }
                }
            }
        }
        for (row, sums) in acc.iter_mut().zip(&sums) {
            for (plane, &w) in sums.iter().zip(&weights) {
                for (v, &s) in row.iter_mut().zip(plane) {
                    *v = _mm256_add_epi32(*v, _mm256_madd_epi16(s, w));
                }
            }
        }
    }
    if let Some(outer) = outer {
        avx2::add_outer(&mut acc, outer);
    }
    avx2::finish(&acc, out);
}

/// Thirty-two bytes from memory (unaligned).
#[target_feature(enable = "avx2")]
fn load_u8x32(v: &[u8; 32]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// [`ByteIsa::col_sums`]: per group, `vpmaddubsw` by ones (two codes per `i16`, at most 510)
/// and `vpmaddwd` by ones (the column's four codes in one `i32`).
#[target_feature(enable = "avx2")]
fn col_sums(panel: &[u8], sums: &mut [i32; NR]) {
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    let mut acc = [_mm256_setzero_si256(); 2];
    let (steps, _) = panel.as_chunks::<32>();
    for (i, step) in steps.iter().enumerate() {
        let v = _mm256_maddubs_epi16(load_u8x32(step), ones8);
        acc[i % 2] = _mm256_add_epi32(acc[i % 2], _mm256_madd_epi16(v, ones16));
    }
    let (dst, _) = sums.as_chunks_mut::<8>();
    avx2::store(&mut dst[0], acc[0]);
    avx2::store(&mut dst[1], acc[1]);
}

/// [`ByteIsa::index_panel`]: per group, `vpmaddubsw` by `[1, 4]` makes each column's two
/// indices (`i16` lanes, at most 15), `vpackuswb` narrows them to bytes, and a byte shuffle
/// within lanes and a dword permutation put the first pairs' sixteen indices before the
/// second pairs'.
#[target_feature(enable = "avx2")]
fn index_panel(panel: &[u8], out: &mut [u8]) {
    let weights = _mm256_set1_epi16(0x0401);
    // Per 128-bit lane: columns' first indices (even bytes), then their second ones.
    let split = _mm256_setr_epi8(
        0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5,
        7, 9, 11, 13, 15,
    );
    // Dwords [c0–3 a, c8–11 a, c0–3 b, c8–11 b | c4–7 a, c12–15 a, c4–7 b, c12–15 b] in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let (groups, _) = panel.as_chunks::<{ GROUP * NR }>();
    let (dst, _) = out.as_chunks_mut::<TABLES>();
    for (group, dst) in groups.iter().zip(dst) {
        let (halves, _) = group.as_chunks::<32>();
        let lo = _mm256_maddubs_epi16(load_u8x32(&halves[0]), weights);
        let hi = _mm256_maddubs_epi16(load_u8x32(&halves[1]), weights);
        let bytes = _mm256_shuffle_epi8(_mm256_packus_epi16(lo, hi), split);
        let v = _mm256_permutevar8x32_epi32(bytes, order);
        // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
    }
}

/// [`ByteIsa::lut_tile`], dispatched on the row count.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
fn lut_tile(
    rows: usize,
    tables: &[u8],
    idx: &[u8],
    steps: usize,
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    match rows {
        1 => lut_rows::<1>(tables, idx, steps, bias, outer, out),
        2 => lut_rows::<2>(tables, idx, steps, bias, outer, out),
        3 => lut_rows::<3>(tables, idx, steps, bias, outer, out),
        4 => lut_rows::<4>(tables, idx, steps, bias, outer, out),
        MRL => lut_rows::<MRL>(tables, idx, steps, bias, outer, out),
        _ => panic!("a table tile has 1 to {MRL} rows, not {rows}"),
    }
}

/// `R` rows of a table tile: per group, one `vpshufb` per row looks up sixteen columns of two
/// pairs, added in `i8` for `steps` groups, then (both pairs' halves sign-extended) in `i16`,
/// then widened into the `i32` accumulators; see [`super::lut`] for the bounds.
#[target_feature(enable = "avx2")]
fn lut_rows<const R: usize>(
    tables: &[u8],
    idx: &[u8],
    steps: usize,
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    let (tables, _) = tables.as_chunks::<{ MRL * TABLES }>();
    let (idx, _) = idx.as_chunks::<TABLES>();
    let mut wide = [_mm256_setzero_si256(); R];
    for (tables, idx) in tables.chunks(steps).zip(idx.chunks(steps)) {
        let mut narrow = [_mm256_setzero_si256(); R];
        for (group, idx) in tables.iter().zip(idx) {
            let idx = load_u8x32(idx);
            let (rows, _) = group.as_chunks::<TABLES>();
            for (sum, table) in narrow.iter_mut().zip(rows) {
                *sum = _mm256_add_epi8(*sum, _mm256_shuffle_epi8(load_u8x32(table), idx));
            }
        }
        for (wide, &narrow) in wide.iter_mut().zip(&narrow) {
            let first = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(narrow));
            let second = _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(narrow));
            *wide = _mm256_add_epi16(*wide, _mm256_add_epi16(first, second));
        }
    }
    let mut acc = avx2::init::<R>(bias);
    avx2::add_i16_sums(&mut acc, &wide);
    if let Some(outer) = outer {
        avx2::add_outer(&mut acc, outer);
    }
    avx2::finish(&acc, out);
}
