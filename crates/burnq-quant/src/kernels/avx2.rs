//! The AVX2 kernel (x86-64).
//!
//! **GEMM.** A 6×16 register tile: 12 accumulators of eight `i32`, two vectors of B (16
//! columns × one `k` pair of `i16`) and one broadcast pair of A. Each step is `vpmaddwd`
//! (`_mm256_madd_epi16`: `a0·b0 + a1·b1` per `i32` lane) and `vpaddd`. Operands are `i16`
//! offsets within ±255, so a lane's two products sum to at most `2·255² = 130050`: `vpmaddwd`
//! cannot saturate (it does only for `(−32768)²·2`). `vpmaddubsw` (u8 × i8, saturating `i16`
//! sums) is not used: `q_w − Z_w` does not fit `i8` and its pair sums would saturate.
//! Accumulation wraps like any `i32` addition; the layer's worst-case bound, checked when
//! packing, keeps every result in range, where wrapping sums are exact.
//!
//! **Requantization** ([`requant8`]) follows the stages of [`super::requant`] on eight lanes:
//! `vpsllvd`/`vpsravd` with a blend for the saturating left shift, `vpmuldq` on even and odd
//! lanes for the 64-bit products of SRDHM, then RDBP and the clamp in 32-bit lanes.
//!
//! **Byte GEMMs.** An [`Avx2`] token may carry a byte GEMM `B` ([`super::maddubs`],
//! [`super::vnni`]), which then runs every layer it [accepts](ByteIsa::accepts); the `i16`
//! GEMM here runs the others. The byte tiles end with this module's epilogue ([`finish`]).
//!
//! Every `#[target_feature(enable = "avx2")]` function here is only called through an
//! [`Avx2`] token, which exists only once AVX2 has been detected. Functions that are the same
//! algorithm as the portable kernel are thin wrappers that compile it again with AVX2.

use std::arch::x86_64::*;

use super::bytes::{ByteForm, ByteIsa, NoBytes, Outer};
use super::choice::KernelChoice;
use super::direct::half_runs;
use super::generic;
use super::isa::{Isa, TileBias, TileOut};
use super::pack::{self, GROUP, Im2col, MR, MRB, NR};
use super::requant::{Lanes, LayerRequant, Steps};
use crate::{QuantError, Requant};

/// Proof that this CPU supports AVX2: the only way to reach the AVX2 code. Carries the byte
/// GEMM `B`, if any (a token of its own CPU features).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2<B = NoBytes> {
    bytes: Option<B>,
}

impl Avx2 {
    /// The token, or an error if the CPU lacks AVX2.
    pub(crate) fn new() -> Result<Self, QuantError> {
        KernelChoice::Avx2
            .check_available()
            .map(|()| Self { bytes: None })
    }

    /// This token, running the layers `bytes` accepts with it.
    pub(crate) fn with_bytes<B: ByteIsa>(self, bytes: B) -> Avx2<B> {
        Avx2 { bytes: Some(bytes) }
    }
}

// SAFETY (every `unsafe` block in this impl): the callees need AVX2, and an `Avx2` value
// exists only if `Avx2::new` detected it.
impl<B: ByteIsa> Isa for Avx2<B> {
    type Bytes = B;

    fn bytes(self, form: &ByteForm) -> Option<B> {
        self.bytes.filter(|b| b.accepts(form))
    }

    fn nibbles(self, form: &ByteForm) -> Option<B::Nibbles> {
        self.bytes.and_then(|b| b.nibbles(form))
    }

    fn tile(self, rows: usize, a: &[i32], b: &[i16], bias: TileBias<'_>, out: TileOut<'_>) {
        unsafe {
            match rows {
                1 => tile::<1>(a, b, bias, out),
                2 => tile::<2>(a, b, bias, out),
                3 => tile::<3>(a, b, bias, out),
                4 => tile::<4>(a, b, bias, out),
                5 => tile::<5>(a, b, bias, out),
                MR => tile::<MR>(a, b, bias, out),
                _ => panic!("a tile has 1 to {MR} rows, not {rows}"),
            }
        }
    }

    fn im2col_panel(self, input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]) {
        unsafe { im2col_panel(input, k_off, cols, z, out) }
    }

    fn requant_channel(self, acc: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        unsafe { requant_channel(acc, &requant.scalar[o], &requant.splat[o], out) }
    }

    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
        match self.bytes {
            Some(bytes) => bytes.requant_channels(acc, requant, out),
            None => unsafe { requant_channels(acc, requant, out) },
        }
    }

    fn max_rows(self, plane: &[i32], width: usize, rows: usize, out: &mut [i32]) {
        unsafe { max_rows(plane, width, rows, out) }
    }

    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        match self.bytes {
            Some(bytes) => bytes.pool_pairs_requant(rows, requant, o, out),
            None => unsafe { pool_pairs_requant(rows, requant, o, out) },
        }
    }

    fn max_pool_row(self, top: &[u8], bottom: &[u8], out: &mut [u8]) {
        unsafe { max_pool_row(top, bottom, out) }
    }

    fn depthwise_sums(self, x: &[i16], taps: &[usize], w: &[i16], bias: &[i32], acc: &mut [i32]) {
        unsafe { depthwise_sums(x, taps, w, bias, acc) }
    }
}

/// Eight `i32` from memory (unaligned).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn load(v: &[i32; 8]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// Sixteen `i16` from memory (unaligned).
#[target_feature(enable = "avx2")]
fn load_i16(v: &[i16; 16]) -> __m256i {
    // SAFETY: as in `load`.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// Eight bytes from memory, in the low half.
#[target_feature(enable = "avx2")]
fn load_u8x8(v: &[u8; 8]) -> __m128i {
    // SAFETY: `v` is 8 readable bytes, what `loadl_epi64` reads, unaligned.
    unsafe { _mm_loadl_epi64(v.as_ptr().cast()) }
}

/// Stores sixteen `i16` (unaligned).
#[target_feature(enable = "avx2")]
fn store_i16(dst: &mut [i16; 16], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// Stores eight `i32` (unaligned).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store(dst: &mut [i32; 8], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}

/// Stores the low eight bytes of `v`.
#[target_feature(enable = "avx2")]
fn store_u8x8(dst: &mut [u8; 8], v: __m128i) {
    // SAFETY: `dst` is 8 writable bytes, what `storel_epi64` writes, unaligned.
    unsafe { _mm_storel_epi64(dst.as_mut_ptr().cast(), v) }
}

/// Stores sixteen bytes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn store_u8x16(dst: &mut [u8; 16], v: __m128i) {
    // SAFETY: `dst` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), v) }
}

/// One GEMM tile of `R` rows, as [`Isa::tile`].
#[target_feature(enable = "avx2")]
fn tile<const R: usize>(a: &[i32], b: &[i16], bias: TileBias<'_>, out: TileOut<'_>) {
    let mut acc = init::<R>(bias);
    let (a, _) = a.as_chunks::<MR>();
    let (b, _) = b.as_chunks::<{ 2 * NR }>();
    for (a, b) in a.iter().zip(b) {
        let (halves, _) = b.as_chunks::<NR>();
        let (b0, b1) = (load_i16(&halves[0]), load_i16(&halves[1]));
        for (row, &pair) in acc.iter_mut().zip(a) {
            let pair = _mm256_set1_epi32(pair);
            row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(pair, b0));
            row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(pair, b1));
        }
    }
    finish(&acc, out);
}

/// The accumulators of a tile of `R ≤ MRB` rows, set to the bias: two vectors of eight
/// columns per row.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn init<const R: usize>(bias: TileBias<'_>) -> [[__m256i; 2]; R] {
    const { assert!(R >= 1 && R <= MRB) };
    match bias {
        TileBias::Rows(bias) => std::array::from_fn(|r| [_mm256_set1_epi32(bias[r]); 2]),
        TileBias::Cols(bias) => {
            let (halves, _) = bias.as_chunks::<8>();
            [[load(&halves[0]), load(&halves[1])]; R]
        }
    }
}

/// Adds each row's sixteen `i16` sums, sign-extended, to its two vectors of eight `i32`
/// accumulators (columns 0–7 from the low 128-bit lane, 8–15 from the high one).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn add_i16_sums(acc: &mut [[__m256i; 2]], sums: &[__m256i]) {
    for (row, &sum) in acc.iter_mut().zip(sums) {
        let halves = [
            _mm256_cvtepi16_epi32(_mm256_castsi256_si128(sum)),
            _mm256_cvtepi16_epi32(_mm256_extracti128_si256::<1>(sum)),
        ];
        for (v, h) in row.iter_mut().zip(halves) {
            *v = _mm256_add_epi32(*v, h);
        }
    }
}

/// A tile's epilogue: writes the accumulators of its rows to `out` (requantized, for
/// [`TileOut::Requant`]).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn finish(acc: &[[__m256i; 2]], out: TileOut<'_>) {
    let store_row = |row: [__m256i; 2], dst: &mut [i32; NR]| {
        let (dst, _) = dst.as_chunks_mut::<8>();
        store(&mut dst[0], row[0]);
        store(&mut dst[1], row[1]);
    };
    let codes = |row: [__m256i; 2], lanes: &[Lanes]| {
        pack_u8x16(requant8(row[0], &lanes[0]), requant8(row[1], &lanes[1]))
    };
    let halves_max = |row: [__m256i; 2]| _mm256_max_epi32(row[0], row[1]);
    finish_rows(acc, out, store_row, codes, halves_max);
}

/// A tile's epilogue for rows of sixteen sums of any representation `R`: `store_row` writes
/// one row's sums, `codes` requantizes them with the constants of its two groups of eight
/// columns into sixteen codes, `halves_max` is the lane-wise maximum of its two halves of
/// eight columns (for [`TileOut::VerticalMax`]).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn finish_rows<R: Copy>(
    acc: &[R],
    out: TileOut<'_>,
    store_row: impl Fn(R, &mut [i32; NR]),
    codes: impl Fn(R, &[Lanes]) -> __m128i,
    halves_max: impl Fn(R) -> __m256i,
) {
    match out {
        TileOut::Acc { c, ld, cols: NR } => {
            for (r, &row) in acc.iter().enumerate() {
                store_row(row, (&mut c[r * ld..][..NR]).try_into().unwrap());
            }
        }
        TileOut::VerticalMax { rows, ld } => {
            for (r, &row) in acc.iter().enumerate() {
                store(
                    (&mut rows[r * ld..][..NR / 2]).try_into().unwrap(),
                    halves_max(row),
                );
            }
        }
        TileOut::Requant {
            out,
            ld,
            cols,
            requant,
            col0,
        } => {
            let lanes = &requant.groups[col0 / 8..][..2];
            for (r, &row) in acc.iter().enumerate() {
                store_codes(&mut out[r * ld..][..cols], codes(row, lanes));
            }
        }
        partial => {
            let mut rows = [[0; NR]; MRB];
            for (dst, &row) in rows.iter_mut().zip(acc) {
                store_row(row, dst);
            }
            generic::store_tile(&rows[..acc.len()], partial);
        }
    }
}

/// Stores the first `dst.len() ≤ 16` codes of `q`: one 16-byte store for a whole row.
#[inline]
#[target_feature(enable = "avx2")]
fn store_codes(dst: &mut [u8], q: __m128i) {
    match <&mut [u8; NR]>::try_from(&mut *dst) {
        Ok(whole) => store_u8x16(whole, q),
        Err(_) => {
            let mut bytes = [0; NR];
            store_u8x16(&mut bytes, q);
            dst.copy_from_slice(&bytes[..dst.len()]);
        }
    }
}

/// Requantizes eight accumulators, lane `i` with the constants of lane `i` of `p` (see
/// [`super::requant`] for the stages); the results are codes in `[0, 255]`.
#[target_feature(enable = "avx2")]
fn requant8(acc: __m256i, p: &Lanes) -> __m256i {
    // 1. a = sat(acc · 2^left): shifting back must give acc, else saturate by sign (skipped
    //    where no lane shifts left, the usual case M < 1).
    let a = if p.any_left {
        let left = load(&p.left);
        let shifted = _mm256_sllv_epi32(acc, left);
        let exact = _mm256_cmpeq_epi32(_mm256_srav_epi32(shifted, left), acc);
        let saturated = _mm256_xor_si256(_mm256_srai_epi32::<31>(acc), _mm256_set1_epi32(i32::MAX));
        _mm256_blendv_epi8(saturated, shifted, exact)
    } else {
        acc
    };
    // 2. x = ⌊(a·m0 + 2^30) / 2^31⌋: bits 31..62 of the 64-bit sums, even and odd lanes apart.
    let m0 = load(&p.m0);
    let nudge = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_add_epi64(_mm256_mul_epi32(a, m0), nudge);
    let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m0));
    let odd = _mm256_add_epi64(odd, nudge);
    let x = _mm256_blend_epi32::<0b1010_1010>(
        _mm256_srli_epi64::<31>(even),
        _mm256_slli_epi64::<1>(odd),
    );
    // 3. y = (x >> right) + (rem > thr), rem = x & mask, thr = half + (x < 0).
    let rem = _mm256_and_si256(x, load(&p.mask));
    let thr = _mm256_sub_epi32(load(&p.half), _mm256_srai_epi32::<31>(x));
    let y = _mm256_sub_epi32(
        _mm256_srav_epi32(x, load(&p.right)),
        _mm256_cmpgt_epi32(rem, thr),
    );
    // 4. clamp(y, act_min − Z, act_max − Z) + Z.
    let y = _mm256_min_epi32(_mm256_max_epi32(y, load(&p.lo)), load(&p.hi));
    _mm256_add_epi32(y, load(&p.zero_point))
}

/// Sixteen codes in `[0, 255]` (eight `i32` lanes each of `lo` and `hi`) as bytes, in order.
#[target_feature(enable = "avx2")]
fn pack_u8x16(lo: __m256i, hi: __m256i) -> __m128i {
    // [lo0..3, hi0..3 | lo4..7, hi4..7] as i16, reordered to [lo0..7 | hi0..7].
    let words = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(lo, hi));
    _mm_packus_epi16(
        _mm256_castsi256_si128(words),
        _mm256_extracti128_si256::<1>(words),
    )
}

/// Eight codes in `[0, 255]` as the low eight bytes, in order.
#[target_feature(enable = "avx2")]
fn pack_u8x8(v: __m256i) -> __m128i {
    let words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    _mm_packus_epi16(words, words)
}

/// [`Isa::requant_channel`]: eight values per step, the rest scalar.
#[target_feature(enable = "avx2")]
fn requant_channel(acc: &[i32], requant: &Requant, lanes: &Lanes, out: &mut [u8]) {
    let (acc8, acc_tail) = acc.as_chunks::<8>();
    let (out8, out_tail) = out.as_chunks_mut::<8>();
    for (a, q) in acc8.iter().zip(out8) {
        store_u8x8(q, pack_u8x8(requant8(load(a), lanes)));
    }
    generic::requant_channel(acc_tail, requant, out_tail);
}

/// [`Isa::requant_channels`]: eight channels per step, the rest scalar.
#[target_feature(enable = "avx2")]
pub(super) fn requant_channels(acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
    let (acc8, acc_tail) = acc.as_chunks::<8>();
    let (out8, out_tail) = out.as_chunks_mut::<8>();
    for ((a, q), lanes) in acc8.iter().zip(out8).zip(&requant.groups) {
        store_u8x8(q, pack_u8x8(requant8(load(a), lanes)));
    }
    let done = acc8.len() * 8;
    generic::requant_channels(acc_tail, &requant.scalar[done..], out_tail);
}

/// [`Isa::pool_pairs_requant`] of channel `o`: by its thresholds where the layer has them
/// ([`Steps`]: two-bit outputs, two operations per threshold), else by the fixed-point stages.
#[target_feature(enable = "avx2")]
pub(super) fn pool_pairs_requant(rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
    match &requant.steps {
        Some(steps) => pool_pairs_steps(rows, &requant.scalar[o], &steps[o], out),
        None => pool_pairs_lanes(rows, &requant.scalar[o], &requant.splat[o], out),
    }
}

/// [`pool_pairs_requant`] by the fixed-point stages ([`requant8`]).
#[target_feature(enable = "avx2")]
fn pool_pairs_lanes(rows: &[i32], requant: &Requant, lanes: &Lanes, out: &mut [u8]) {
    pool_pairs(rows, requant, out, |max| requant8(max, lanes))
}

/// [`pool_pairs_requant`] by thresholds: `base + #{t : max > after[t]}`, one `vpcmpgtd` and one
/// `vpsubd` per threshold.
#[target_feature(enable = "avx2")]
fn pool_pairs_steps(rows: &[i32], requant: &Requant, steps: &Steps, out: &mut [u8]) {
    let base = _mm256_set1_epi32(steps.base);
    let after = steps.after.map(|t| _mm256_set1_epi32(t));
    pool_pairs(rows, requant, out, |max| {
        after.iter().fold(base, |codes, &t| {
            _mm256_sub_epi32(codes, _mm256_cmpgt_epi32(max, t))
        })
    })
}

/// The horizontal half of a 2×2 max pool and its requantization: eight outputs from sixteen
/// values per step, `codes` turning the eight maxima into codes, the rest scalar by `requant`.
#[target_feature(enable = "avx2")]
fn pool_pairs(rows: &[i32], requant: &Requant, out: &mut [u8], codes: impl Fn(__m256i) -> __m256i) {
    let (rows16, rows_tail) = rows.as_chunks::<16>();
    let (out8, out_tail) = out.as_chunks_mut::<8>();
    for (v, q) in rows16.iter().zip(out8) {
        let (halves, _) = v.as_chunks::<8>();
        let a = _mm256_castsi256_ps(load(&halves[0]));
        let b = _mm256_castsi256_ps(load(&halves[1]));
        // Per 128-bit lane: [a0, a2, b0, b2] and [a1, a3, b1, b3]; the max of the two is
        // pairs [0, 1, 4, 5 | 2, 3, 6, 7], put in order by a 64-bit permutation.
        let even = _mm256_castps_si256(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
        let odd = _mm256_castps_si256(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
        let max = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_max_epi32(even, odd));
        store_u8x8(q, pack_u8x8(codes(max)));
    }
    generic::pool_pairs_requant(rows_tail, requant, out_tail);
}

/// [`pack::im2col_panel`]. A full panel whose two halves are runs of eight consecutive bytes
/// (every panel when the output width is a multiple of 8) takes four 8-byte loads per `k`
/// pair, widened to `i16`, offset and interleaved in registers; other panels run the portable
/// algorithm, compiled with AVX2.
#[target_feature(enable = "avx2")]
fn im2col_panel(input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]) {
    let Some([first, second]) = half_runs(cols).filter(|_| cols.len() == NR) else {
        return pack::im2col_panel(input, k_off, cols, z, out);
    };
    let zero_point = _mm256_set1_epi16(z as i16);
    // Row k of the panel: 16 offsets q − z as i16.
    let row = |k: usize| {
        let base = k_off[k];
        let lo = load_u8x8(input[base + first..][..8].try_into().unwrap());
        let hi = load_u8x8(input[base + second..][..8].try_into().unwrap());
        _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi64(lo, hi)), zero_point)
    };
    let (steps, _) = out.as_chunks_mut::<{ 2 * NR }>();
    for (p, step) in steps.iter_mut().enumerate() {
        let even = row(2 * p);
        let odd = if 2 * p + 1 < k_off.len() {
            row(2 * p + 1)
        } else {
            _mm256_setzero_si256()
        };
        // Pairs of columns [0..4, 8..12] and [4..8, 12..16], put back in column order.
        let (lo, hi) = (
            _mm256_unpacklo_epi16(even, odd),
            _mm256_unpackhi_epi16(even, odd),
        );
        let (dst, _) = step.as_chunks_mut::<NR>();
        store_i16(&mut dst[0], _mm256_permute2x128_si256::<0x20>(lo, hi));
        store_i16(&mut dst[1], _mm256_permute2x128_si256::<0x31>(lo, hi));
    }
}

/// [`pack::im2col_bytes`]. A full panel whose two halves are runs of eight consecutive bytes
/// takes, per group of four `k`, one 16-byte load per row (two 8-byte loads where the halves
/// are apart), transposed in registers (bytes, then 16-bit units interleaved) into the sixteen
/// columns' groups; other panels run the portable algorithm, compiled with AVX2.
#[target_feature(enable = "avx2")]
pub(super) fn im2col_bytes(input: &[u8], plan: &Im2col, cols: &[usize], out: &mut [u8]) {
    let k_off = plan.k_offsets();
    let runs = half_runs(cols).filter(|_| cols.len() == NR);
    // The farthest byte a run reads, computed without overflow.
    let fits = |[first, second]: [usize; 2]| {
        (plan.max_k_offset())
            .checked_add(first.max(second))
            .and_then(|end| end.checked_add(8))
            .is_some_and(|end| end <= input.len())
    };
    let Some([first, second]) = runs.filter(|&runs| fits(runs)) else {
        return pack::im2col_bytes(input, k_off, cols, out);
    };
    // SAFETY: every row reads 8 bytes from `k_off[k] + first` and from `k_off[k] + second`
    // (16 from `k_off[k] + first` when `second = first + 8`), within `input` by the check
    // above.
    unsafe {
        if second == first + 8 {
            im2col_runs::<true>(input.as_ptr(), k_off, first, second, out);
        } else {
            im2col_runs::<false>(input.as_ptr(), k_off, first, second, out);
        }
    }
}

/// Row `k` of an im2col panel of two runs: 16 codes from `input + k_off[k]` (`first` and
/// `second` the runs' offsets, `ADJACENT`: `second = first + 8`).
///
/// # Safety
/// The 8 bytes at `input + k_off[k] + first` and at `input + k_off[k] + second` are readable.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn run_row<const ADJACENT: bool>(
    input: *const u8,
    k_off: usize,
    first: usize,
    second: usize,
) -> __m128i {
    // SAFETY: the caller's guarantee; unaligned loads.
    unsafe {
        let base = input.add(k_off);
        if ADJACENT {
            _mm_loadu_si128(base.add(first).cast())
        } else {
            _mm_unpacklo_epi64(
                _mm_loadl_epi64(base.add(first).cast()),
                _mm_loadl_epi64(base.add(second).cast()),
            )
        }
    }
}

/// The byte im2col panel of two runs, as [`im2col_bytes`].
///
/// # Safety
/// [`run_row`]'s condition holds for every offset of `k_off`.
#[target_feature(enable = "avx2")]
unsafe fn im2col_runs<const ADJACENT: bool>(
    input: *const u8,
    k_off: &[usize],
    first: usize,
    second: usize,
    out: &mut [u8],
) {
    let (steps, _) = out.as_chunks_mut::<{ GROUP * NR }>();
    let (groups, tail) = k_off.as_chunks::<GROUP>();
    // SAFETY (both blocks): the caller's guarantee.
    for (step, group) in steps.iter_mut().zip(groups) {
        // Not `group.map(…)`: a closure would not inherit the target features.
        let rows = unsafe {
            [
                run_row::<ADJACENT>(input, group[0], first, second),
                run_row::<ADJACENT>(input, group[1], first, second),
                run_row::<ADJACENT>(input, group[2], first, second),
                run_row::<ADJACENT>(input, group[3], first, second),
            ]
        };
        transpose_store(rows, step);
    }
    if let Some(step) = steps.get_mut(groups.len()) {
        let mut rows = [_mm_setzero_si128(); GROUP];
        for (row, &k) in rows.iter_mut().zip(tail) {
            *row = unsafe { run_row::<ADJACENT>(input, k, first, second) };
        }
        transpose_store(rows, step);
    }
}

/// Stores four rows of sixteen codes as the sixteen columns' groups of four: bytes, then
/// 16-bit units interleaved.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose_store([r0, r1, r2, r3]: [__m128i; GROUP], step: &mut [u8; GROUP * NR]) {
    let (t0, t1) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
    let (t2, t3) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
    let (dst, _) = step.as_chunks_mut::<16>();
    store_u8x16(&mut dst[0], _mm_unpacklo_epi16(t0, t2));
    store_u8x16(&mut dst[1], _mm_unpackhi_epi16(t0, t2));
    store_u8x16(&mut dst[2], _mm_unpacklo_epi16(t1, t3));
    store_u8x16(&mut dst[3], _mm_unpackhi_epi16(t1, t3));
}

/// Adds the rank-one correction of a byte tile: `acc[r][c] += outer.rows[r]·outer.cols[c]`
/// (`vpmulld`, wrapping like every accumulation).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn add_outer(acc: &mut [[__m256i; 2]], outer: Outer<'_>) {
    let (cols, _) = outer.cols.as_chunks::<8>();
    let cols = [load(&cols[0]), load(&cols[1])];
    for (row, &f) in acc.iter_mut().zip(outer.rows) {
        let f = _mm256_set1_epi32(f);
        for (v, c) in row.iter_mut().zip(cols) {
            *v = _mm256_add_epi32(*v, _mm256_mullo_epi32(f, c));
        }
    }
}

/// [`Isa::max_rows`]: eight values per step, the rest scalar.
#[target_feature(enable = "avx2")]
fn max_rows(plane: &[i32], width: usize, rows: usize, out: &mut [i32]) {
    let w = out.len() / rows;
    for (y, out) in out.chunks_exact_mut(w).enumerate() {
        let (top, bottom) = (
            &plane[2 * y * width..][..w],
            &plane[(2 * y + 1) * width..][..w],
        );
        let (top8, _) = top.as_chunks::<8>();
        let (bottom8, _) = bottom.as_chunks::<8>();
        let (out8, _) = out.as_chunks_mut::<8>();
        for ((m, t), b) in out8.iter_mut().zip(top8).zip(bottom8) {
            store(m, _mm256_max_epi32(load(t), load(b)));
        }
        let done = w / 8 * 8;
        if done < w {
            generic::max_rows(&plane[2 * y * width + done..], width, 1, &mut out[done..]);
        }
    }
}

/// [`generic::max_pool_row`] compiled with AVX2.
#[target_feature(enable = "avx2")]
fn max_pool_row(top: &[u8], bottom: &[u8], out: &mut [u8]) {
    generic::max_pool_row(top, bottom, out);
}

/// [`Isa::depthwise_sums`]: the portable algorithm compiled with AVX2.
#[target_feature(enable = "avx2")]
fn depthwise_sums(x: &[i16], taps: &[usize], w: &[i16], bias: &[i32], acc: &mut [i32]) {
    generic::depthwise_sums(x, taps, w, bias, acc);
}
