//! The AVX-512 VNNI byte GEMM: `vpdpbusd` on 512-bit vectors, exact for every layer (see
//! [`super::bytes`]: four `u8 × i8` products added into an `i32` lane with no intermediate
//! saturation, and the layer's accumulator bound keeps the wrapping sums exact).
//!
//! **Tile.** Up to [`MRB`] = 10 rows, sixteen columns as one 512-bit vector of `i32` sums per
//! row: per group of four `k`, one load of B (sixteen columns' groups, 64 bytes) and per row one
//! `vpdpbusd` with the broadcast group of A (64 multiply-accumulates per instruction, four
//! times the `i16` GEMM's `vpmaddwd`). Tiles of few rows (a linear layer on one image) keep
//! `W` independent sums per row, over alternate groups, so that the chain of dependent
//! `vpdpbusd` (latency several cycles) does not bound them. Bias and correction are added in
//! 512-bit lanes; accumulators are stored as they are, codes are requantized in 512-bit lanes
//! too.
//!
//! **Requantization** of the tiles' rows and of the pooled convolution outputs
//! ([`requant16`]) runs the stages of [`super::requant`] on sixteen lanes, as the AVX2 kernel
//! does on eight.
//!
//! Every function here needs AVX2 and AVX-512 F, BW, VL and VNNI, and runs only through a
//! [`Vnni512`] token.

use std::arch::x86_64::*;

use super::avx2;
use super::bytes::{Absent, ByteForm, ByteIsa, Codes, Outer};
use super::choice::KernelChoice;
use super::isa::{TileBias, TileOut};
use super::pack::{GROUP, Im2col, MRB, NR};
use super::requant::{Lanes, LayerRequant};
use crate::QuantError;

/// Proof that this CPU supports AVX2 and AVX-512 F, BW, VL and VNNI.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vnni512(());

impl Vnni512 {
    /// The token, or an error if the CPU lacks one of the features.
    pub(crate) fn new() -> Result<Self, QuantError> {
        KernelChoice::Avx512Vnni
            .check_available()
            .map(|()| Self(()))
    }
}

// SAFETY (every `unsafe` block in this impl): the callees need the features a `Vnni512`
// value proves.
impl ByteIsa for Vnni512 {
    fn accepts(self, _: &ByteForm) -> bool {
        true
    }

    fn byte_tile(
        self,
        rows: usize,
        a: &[i32],
        b: &[u8],
        codes: Codes,
        _: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    ) {
        unsafe {
            match codes {
                Codes::A => tile_rows::<true>(rows, a, b, bias, outer, out),
                Codes::B => tile_rows::<false>(rows, a, b, bias, outer, out),
            }
        }
    }

    /// None: 512-bit look-ups (four pairs per `vpshufb`) measured slower than `vpdpbusd` for a
    /// two-bit convolution on Zen 5 (conv2 9.7 µs against 8.2 µs per image).
    type Tables = Absent;

    fn tables(self, _: &ByteForm) -> Option<Absent> {
        None
    }

    /// None: `vpdpbusd` runs every layer exactly as it is.
    type Nibbles = Absent;

    fn nibbles(self, _: &ByteForm) -> Option<Absent> {
        None
    }

    type Direct = Absent;

    /// None: the 512-bit `vpdpbusd` GEMM ran the tutorial's conv1 at two bits as fast as the
    /// 256-bit direct tile (Zen 5).
    fn direct(self, _: &ByteForm) -> Option<Absent> {
        None
    }

    fn im2col_bytes(self, input: &[u8], plan: &Im2col, cols: &[usize], out: &mut [u8]) {
        unsafe { avx2::im2col_bytes(input, plan, cols, out) }
    }

    fn col_sums(self, panel: &[u8], sums: &mut [i32; NR]) {
        unsafe { col_sums(panel, sums) }
    }

    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        unsafe { pool_pairs_requant(rows, requant, o, out) }
    }

    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
        unsafe { requant_channels(acc, requant, out) }
    }
}

/// A byte tile of `rows` rows, with `W` sums per row: 4 for one or two rows, 2 for up to five.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_rows<const A_CODES: bool>(
    rows: usize,
    a: &[i32],
    b: &[u8],
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    match rows {
        1 => tile::<1, 4, A_CODES>(a, b, bias, outer, out),
        2 => tile::<2, 4, A_CODES>(a, b, bias, outer, out),
        3 => tile::<3, 2, A_CODES>(a, b, bias, outer, out),
        4 => tile::<4, 2, A_CODES>(a, b, bias, outer, out),
        5 => tile::<5, 2, A_CODES>(a, b, bias, outer, out),
        6 => tile::<6, 1, A_CODES>(a, b, bias, outer, out),
        7 => tile::<7, 1, A_CODES>(a, b, bias, outer, out),
        8 => tile::<8, 1, A_CODES>(a, b, bias, outer, out),
        9 => tile::<9, 1, A_CODES>(a, b, bias, outer, out),
        MRB => tile::<MRB, 1, A_CODES>(a, b, bias, outer, out),
        _ => panic!("a byte tile has 1 to {MRB} rows, not {rows}"),
    }
}

/// `R` rows of a byte tile with `W` sums per row; see the module docs.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile<const R: usize, const W: usize, const A_CODES: bool>(
    a: &[i32],
    b: &[u8],
    bias: TileBias<'_>,
    outer: Option<Outer<'_>>,
    out: TileOut<'_>,
) {
    let step = |acc: &mut [__m512i; R], a: &[i32; MRB], b: &[u8; GROUP * NR]| {
        // SAFETY: `b` is 64 readable bytes; `loadu` has no alignment requirement.
        let b = unsafe { _mm512_loadu_si512(b.as_ptr().cast()) };
        for (sum, &group) in acc.iter_mut().zip(a) {
            let group = _mm512_set1_epi32(group);
            *sum = if A_CODES {
                _mm512_dpbusd_epi32(*sum, group, b)
            } else {
                _mm512_dpbusd_epi32(*sum, b, group)
            };
        }
    };
    // The first way's sums start at the bias, the others at zero.
    let mut acc = [[_mm512_setzero_si512(); R]; W];
    acc[0] = match bias {
        TileBias::Rows(bias) => std::array::from_fn(|r| _mm512_set1_epi32(bias[r])),
        TileBias::Cols(bias) => [load(bias); R],
    };
    let (a, _) = a.as_chunks::<MRB>();
    let (b, _) = b.as_chunks::<{ GROUP * NR }>();
    let (a_ways, a_rest) = a.as_chunks::<W>();
    let (b_ways, b_rest) = b.as_chunks::<W>();
    for (a, b) in a_ways.iter().zip(b_ways) {
        for ((acc, a), b) in acc.iter_mut().zip(a).zip(b) {
            step(acc, a, b);
        }
    }
    for (a, b) in a_rest.iter().zip(b_rest) {
        step(&mut acc[0], a, b);
    }
    // Row by row, a fixed number of them: the sums stay in registers.
    let outer = outer.map(|o| (o.rows, load(o.cols)));
    let sums: [__m512i; R] = std::array::from_fn(|r| {
        let sum = acc[1..]
            .iter()
            .fold(acc[0][r], |sum, way| _mm512_add_epi32(sum, way[r]));
        match outer {
            Some((rows, cols)) => {
                _mm512_add_epi32(sum, _mm512_mullo_epi32(_mm512_set1_epi32(rows[r]), cols))
            }
            None => sum,
        }
    });
    let store_row = |sum: __m512i, dst: &mut [i32; NR]| {
        // SAFETY: `dst` is 64 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), sum) }
    };
    let codes = |sum, lanes: &[Lanes]| _mm512_cvtepi32_epi8(requant16(sum, &lanes[0], &lanes[1]));
    let halves_max = |sum: __m512i| {
        _mm256_max_epi32(
            _mm512_castsi512_si256(sum),
            _mm512_extracti64x4_epi64::<1>(sum),
        )
    };
    avx2::finish_rows(&sums, out, store_row, codes, halves_max);
}

/// Sixteen `i32` from memory (unaligned).
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn load(v: &[i32; NR]) -> __m512i {
    // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

/// [`ByteIsa::col_sums`]: per group, `vpdpbusd` of the codes by ones.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn col_sums(panel: &[u8], sums: &mut [i32; NR]) {
    let ones = _mm512_set1_epi8(1);
    let (steps, _) = panel.as_chunks::<{ GROUP * NR }>();
    let sum = steps.iter().fold(_mm512_setzero_si512(), |sum, step| {
        // SAFETY: `step` is 64 readable bytes; `loadu` has no alignment requirement.
        let codes = unsafe { _mm512_loadu_si512(step.as_ptr().cast()) };
        _mm512_dpbusd_epi32(sum, codes, ones)
    });
    // SAFETY: `sums` is 64 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_si512(sums.as_mut_ptr().cast(), sum) }
}

/// Sixteen lanes of requantization constants: eight of `lo`'s, then eight of `hi`'s.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn lanes16(lo: &[i32; 8], hi: &[i32; 8]) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(avx2::load(lo)), avx2::load(hi))
}

/// Requantizes sixteen accumulators, lanes 0..8 with the constants of `lo` and 8..16 with
/// those of `hi` (both the same channel's for a run of one channel's values, or two groups of
/// eight channels for a row of a linear layer's outputs): the stages of `avx2::requant8`, with
/// mask registers for the comparisons.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn requant16(acc: __m512i, lo: &Lanes, hi: &Lanes) -> __m512i {
    macro_rules! splat16 {
        ($field:ident) => {
            lanes16(&lo.$field, &hi.$field)
        };
    }
    // 1. a = sat(acc · 2^left), skipped where no lane shifts left.
    let a = if lo.any_left || hi.any_left {
        let left = splat16!(left);
        let shifted = _mm512_sllv_epi32(acc, left);
        let exact = _mm512_cmpeq_epi32_mask(_mm512_srav_epi32(shifted, left), acc);
        let saturated = _mm512_xor_si512(_mm512_srai_epi32::<31>(acc), _mm512_set1_epi32(i32::MAX));
        _mm512_mask_blend_epi32(exact, saturated, shifted)
    } else {
        acc
    };
    // 2. x = ⌊(a·m0 + 2^30) / 2^31⌋, even and odd lanes apart.
    let m0 = splat16!(m0);
    let nudge = _mm512_set1_epi64(1 << 30);
    let even = _mm512_add_epi64(_mm512_mul_epi32(a, m0), nudge);
    let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(m0));
    let odd = _mm512_add_epi64(odd, nudge);
    let x = _mm512_mask_blend_epi32(
        0b1010_1010_1010_1010,
        _mm512_srli_epi64::<31>(even),
        _mm512_slli_epi64::<1>(odd),
    );
    // 3. y = (x >> right) + (rem > thr).
    let rem = _mm512_and_si512(x, splat16!(mask));
    let thr = _mm512_sub_epi32(splat16!(half), _mm512_srai_epi32::<31>(x));
    let shifted = _mm512_srav_epi32(x, splat16!(right));
    let round = _mm512_cmpgt_epi32_mask(rem, thr);
    let y = _mm512_mask_add_epi32(shifted, round, shifted, _mm512_set1_epi32(1));
    // 4. clamp(y, act_min − Z, act_max − Z) + Z.
    let y = _mm512_min_epi32(_mm512_max_epi32(y, splat16!(lo)), splat16!(hi));
    _mm512_add_epi32(y, splat16!(zero_point))
}

/// [`ByteIsa::requant_channels`]: sixteen channels per step (two of the layer's groups of
/// eight lanes, whose count is even), the last step masked to the channels left.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn requant_channels(acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
    let n = acc.len().min(out.len());
    for (i, lanes) in requant.groups.chunks_exact(2).enumerate() {
        let c0 = 16 * i;
        if c0 >= n {
            break;
        }
        let mask: u16 = match n - c0 {
            16.. => u16::MAX,
            left => (1 << left) - 1,
        };
        // SAFETY: lanes `j < left` read `acc[c0 + j]` and write `out[c0 + j]`, in bounds as
        // `c0 + left ≤ n`; masked-off lanes touch no memory.
        unsafe {
            let a = _mm512_maskz_loadu_epi32(mask, acc.as_ptr().add(c0).cast());
            let q = _mm512_cvtepi32_epi8(requant16(a, &lanes[0], &lanes[1]));
            _mm_mask_storeu_epi8(out.as_mut_ptr().add(c0).cast(), mask, q);
        }
    }
}

/// [`ByteIsa::pool_pairs_requant`]: sixteen outputs from thirty-two values per step (pairs
/// gathered with `vpermt2d`), requantized by the channel's thresholds where the layer has them
/// ([`super::requant::Steps`]: one compare into a mask and one masked increment per threshold),
/// else by the stages; the rest with the AVX2 kernel.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl,avx512vnni")]
fn pool_pairs_requant(rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
    let lanes = &requant.splat[o];
    let steps = requant.steps.as_ref().map(|steps| {
        let s = &steps[o];
        (
            _mm512_set1_epi32(s.base),
            s.after.map(|t| _mm512_set1_epi32(t)),
        )
    });
    let one = _mm512_set1_epi32(1);
    let codes = |max| match steps {
        Some((base, after)) => after.iter().fold(base, |codes, &t| {
            _mm512_mask_add_epi32(codes, _mm512_cmpgt_epi32_mask(max, t), codes, one)
        }),
        None => requant16(max, lanes, lanes),
    };
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    let (rows32, rows_tail) = rows.as_chunks::<32>();
    let (out16, _) = out.as_chunks_mut::<16>();
    for (v, q) in rows32.iter().zip(out16.iter_mut()) {
        let (halves, _) = v.as_chunks::<NR>();
        let (a, b) = (load(&halves[0]), load(&halves[1]));
        let max = _mm512_max_epi32(
            _mm512_permutex2var_epi32(a, even, b),
            _mm512_permutex2var_epi32(a, odd, b),
        );
        // Codes in [0, 255]: truncating each lane to its low byte keeps them.
        avx2::store_u8x16(q, _mm512_cvtepi32_epi8(codes(max)));
    }
    let done = rows32.len() * 16;
    avx2::pool_pairs_requant(rows_tail, requant, o, &mut out[done..]);
}
