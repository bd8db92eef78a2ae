//! The AVX2 direct convolution tile ([`super::direct`]): pair panels built by byte interleaves
//! of 8-byte loads, and a tile of up to [`MRB`] rows whose sums stay in `i16` for the whole
//! reduction — per pair and row one broadcast, one `vpmaddubsw` and one `vpaddw` for sixteen
//! positions' two products — widened once at its end.
//!
//! Every function here needs AVX2, and runs only through a [`Maddubs`] token.

use std::arch::x86_64::*;

use super::avx2;
use super::direct::{DirectIsa, PAIR_BYTES};
use super::isa::{TileBias, TileOut};
use super::maddubs::Maddubs;
use super::pack::{Im2col, MRB};

// SAFETY (both `unsafe` blocks): the callees need AVX2, which a `Maddubs` value proves.
impl DirectIsa for Maddubs {
    fn pair_panel(self, input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]) {
        unsafe { pair_panel(input, plan, runs, out) }
    }

    fn pair_tile(
        self,
        rows: usize,
        weights: &[i32],
        panel: &[u8],
        pairs: usize,
        bias: TileBias<'_>,
        out: TileOut<'_>,
    ) {
        unsafe { pair_tile(rows, weights, panel, pairs, bias, out) }
    }
}

/// [`DirectIsa::pair_panel`]: per pair and run, the two taps' eight codes loaded and
/// interleaved (`vpunpcklbw`), the second run's in the upper 128-bit lane. The loads are
/// bounds-checked once per panel, against the farthest byte any of them reads.
#[target_feature(enable = "avx2")]
fn pair_panel(input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]) {
    let k_off = plan.k_offsets();
    let end = runs[0].max(runs[1]) + plan.max_k_offset() + 8;
    assert!(
        end <= input.len(),
        "a pair panel reads up to byte {end} of {}",
        input.len()
    );
    let base = input.as_ptr();
    // SAFETY: `start` is one of `runs` and `off` one of `k_off`, so the eight bytes read end
    // at or before `end`, within `input` (asserted above).
    let codes = |start: usize, off: usize| unsafe { _mm_loadl_epi64(base.add(start + off).cast()) };
    let pair = |(a, b): (usize, Option<usize>)| {
        let half = |start| {
            let second = b.map_or(_mm_setzero_si128(), |b| codes(start, b));
            _mm_unpacklo_epi8(codes(start, a), second)
        };
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(half(runs[0])), half(runs[1]))
    };
    let (taps, odd) = k_off.as_chunks::<2>();
    let pairs = taps.iter().map(|&[a, b]| (a, Some(b)));
    let pairs = pairs.chain(odd.first().map(|&a| (a, None)));
    let (dst, _) = out.as_chunks_mut::<PAIR_BYTES>();
    for (taps, dst) in pairs.zip(dst) {
        // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), pair(taps)) }
    }
}

/// [`DirectIsa::pair_tile`] for `rows` rows.
#[target_feature(enable = "avx2")]
fn pair_tile(
    rows: usize,
    weights: &[i32],
    panel: &[u8],
    pairs: usize,
    bias: TileBias<'_>,
    out: TileOut<'_>,
) {
    match rows {
        1 => pair_rows::<1>(weights, panel, pairs, bias, out),
        2 => pair_rows::<2>(weights, panel, pairs, bias, out),
        3 => pair_rows::<3>(weights, panel, pairs, bias, out),
        4 => pair_rows::<4>(weights, panel, pairs, bias, out),
        5 => pair_rows::<5>(weights, panel, pairs, bias, out),
        6 => pair_rows::<6>(weights, panel, pairs, bias, out),
        7 => pair_rows::<7>(weights, panel, pairs, bias, out),
        8 => pair_rows::<8>(weights, panel, pairs, bias, out),
        9 => pair_rows::<9>(weights, panel, pairs, bias, out),
        MRB => pair_rows::<MRB>(weights, panel, pairs, bias, out),
        _ => panic!("a direct tile has 1 to {MRB} rows, not {rows}"),
    }
}

/// `R` rows of a direct tile: `i16` sums of sixteen positions per row, one `vpmaddubsw` of the
/// pair panel's pair with the row's broadcast weights per pair. A fused pool's vertical maxima
/// are taken in `i16` (exact), then widened and added to the bias, one row at a time; other
/// destinations widen both halves into the bias and take the common epilogue.
#[target_feature(enable = "avx2")]
fn pair_rows<const R: usize>(
    weights: &[i32],
    panel: &[u8],
    pairs: usize,
    bias: TileBias<'_>,
    out: TileOut<'_>,
) {
    let (weights, _) = weights.as_chunks::<MRB>();
    let (panel, _) = panel.as_chunks::<PAIR_BYTES>();
    let mut sums = [_mm256_setzero_si256(); R];
    for (w, codes) in weights[..pairs].iter().zip(&panel[..pairs]) {
        // SAFETY: `codes` is 32 readable bytes; `loadu` has no alignment requirement.
        let codes = unsafe { _mm256_loadu_si256(codes.as_ptr().cast()) };
        for (sum, &w) in sums.iter_mut().zip(w) {
            *sum = _mm256_add_epi16(*sum, _mm256_maddubs_epi16(codes, _mm256_set1_epi32(w)));
        }
    }
    match (bias, out) {
        (TileBias::Rows(bias), TileOut::VerticalMax { rows, ld }) => {
            for (r, (&sum, &b)) in sums.iter().zip(bias).enumerate() {
                let top = _mm256_castsi256_si128(sum);
                let highest = _mm_max_epi16(top, _mm256_extracti128_si256::<1>(sum));
                let v = _mm256_add_epi32(_mm256_cvtepi16_epi32(highest), _mm256_set1_epi32(b));
                avx2::store((&mut rows[r * ld..][..8]).try_into().unwrap(), v);
            }
        }
        (bias, out) => {
            let mut acc = avx2::init::<R>(bias);
            avx2::add_i16_sums(&mut acc, &sums);
            avx2::finish(&acc, out);
        }
    }
}
