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
//! 512-bit lanes; accumulators are stored as they are, requantized codes go through the AVX2
//! epilogue, one 256-bit half at a time.
//!
//! Every function here needs AVX2 and AVX-512 F, BW, VL and VNNI, and runs only through a
//! [`Vnni512`] token.

use std::arch::x86_64::*;

use super::avx2;
use super::bytes::{ByteForm, ByteIsa, Codes, Outer};
use super::choice::KernelChoice;
use super::isa::{TileBias, TileOut};
use super::pack::{GROUP, Im2col, MRB, NR};
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

    fn im2col_bytes(self, input: &[u8], plan: &Im2col, cols: &[usize], out: &mut [u8]) {
        unsafe { avx2::im2col_bytes(input, plan, cols, out) }
    }

    fn col_sums(self, panel: &[u8], sums: &mut [i32; NR]) {
        unsafe { col_sums(panel, sums) }
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
    let mut acc = [[_mm512_setzero_si512(); R]; W];
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
    let mut sums: [__m512i; R] = std::array::from_fn(|r| {
        acc[1..]
            .iter()
            .fold(acc[0][r], |sum, way| _mm512_add_epi32(sum, way[r]))
    });
    match bias {
        TileBias::Rows(bias) => {
            for (sum, &b) in sums.iter_mut().zip(bias) {
                *sum = _mm512_add_epi32(*sum, _mm512_set1_epi32(b));
            }
        }
        TileBias::Cols(bias) => {
            let bias = load(bias);
            sums.iter_mut()
                .for_each(|sum| *sum = _mm512_add_epi32(*sum, bias));
        }
    }
    if let Some(outer) = outer {
        let cols = load(outer.cols);
        for (sum, &f) in sums.iter_mut().zip(outer.rows) {
            *sum = _mm512_add_epi32(*sum, _mm512_mullo_epi32(_mm512_set1_epi32(f), cols));
        }
    }
    match out {
        TileOut::Acc { c, ld, cols: NR } => {
            for (r, sum) in sums.iter().enumerate() {
                let dst: &mut [i32; NR] = (&mut c[r * ld..][..NR]).try_into().unwrap();
                // SAFETY: `dst` is 64 writable bytes; `storeu` has no alignment requirement.
                unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *sum) }
            }
        }
        out => {
            let halves = sums.map(|sum| {
                [
                    _mm512_castsi512_si256(sum),
                    _mm512_extracti64x4_epi64::<1>(sum),
                ]
            });
            avx2::finish(&halves, out);
        }
    }
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
