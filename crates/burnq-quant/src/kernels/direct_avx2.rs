//! The AVX2 direct convolution tile ([`super::direct`]): pair panels built by byte interleaves
//! of 8-byte loads from the image (and, the same way, the table GEMM's indices), and a tile of
//! up to [`MRB`] rows whose sums stay in `i16` for the whole reduction — per pair and row one
//! broadcast, one `vpmaddubsw` and one `vpaddw` for sixteen positions' two products — widened
//! once at its end.
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
        unsafe {
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
    }
}

/// `load(run, k)`: the eight codes of tap `k` of run `run` (`0` or `1`: the run starting at
/// `runs[run]`) of `plan`'s image `input`, in the low half; zeros for `k ≥ K`. The image is
/// bounds-checked once, here, against the farthest byte any load can read.
#[inline]
#[target_feature(enable = "avx2")]
fn run_codes<'a>(
    input: &'a [u8],
    plan: &'a Im2col,
    runs: [usize; 2],
) -> impl Fn(usize, usize) -> __m128i + 'a {
    let end = (runs[0].max(runs[1]))
        .checked_add(plan.max_k_offset())
        .and_then(|end| end.checked_add(8));
    assert!(
        end.is_some_and(|end| end <= input.len()),
        "a panel reads up to byte {end:?} of {}",
        input.len()
    );
    let (base, k_off) = (input.as_ptr(), plan.k_offsets());
    move |run, k| match k_off.get(k) {
        // SAFETY: `runs[run]` (indexing checked) is at most `max(runs)` and `off` at most the
        // plan's largest offset, so the eight bytes read end at or before `end ≤ input.len()`
        // (computed without overflow and asserted above); `loadl_epi64` needs only SSE2, which
        // AVX2 implies.
        Some(&off) => unsafe { _mm_loadl_epi64(base.add(runs[run] + off).cast()) },
        None => _mm_setzero_si128(),
    }
}

/// Writes `chunk(codes)` to each 32-byte piece of `out`, one per chunk of `N` of the plan's
/// taps (the last one possibly partial), `codes(run, i)` loading the eight codes of the
/// chunk's tap `i` for run `run` (zeros past the last tap).
#[inline]
#[target_feature(enable = "avx2")]
fn per_chunk<const N: usize>(
    input: &[u8],
    plan: &Im2col,
    runs: [usize; 2],
    out: &mut [u8],
    chunk: impl Fn(&dyn Fn(usize, usize) -> __m128i) -> __m256i,
) {
    let load = run_codes(input, plan, runs);
    let chunks = plan.k_offsets().len().div_ceil(N);
    let (dst, _) = out.as_chunks_mut::<32>();
    for (c, dst) in dst[..chunks].iter_mut().enumerate() {
        let v = chunk(&|run, i| load(run, N * c + i));
        // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
    }
}

/// [`DirectIsa::pair_panel`]: per pair and run, the two taps' eight codes loaded and
/// interleaved (`vpunpcklbw`), the second run's in the upper 128-bit lane.
#[target_feature(enable = "avx2")]
fn pair_panel(input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]) {
    per_chunk::<2>(input, plan, runs, out, |codes| {
        let half = |run| _mm_unpacklo_epi8(codes(run, 0), codes(run, 1));
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(half(0)), half(1))
    });
}

/// [`super::bytes::TableIsa::index_runs`]: per pair and run, `x_2p + 4·x_2p+1` of the two taps'
/// eight codes (`vpsllw` by 2 cannot carry across bytes: codes are at most 3), the runs side by
/// side (`vpunpcklqdq`), a group's two pairs in the two 128-bit lanes.
#[target_feature(enable = "avx2")]
pub(super) fn index_runs(input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]) {
    per_chunk::<4>(input, plan, runs, out, |codes| {
        let pair = |a, b| {
            let half = |run| _mm_add_epi8(codes(run, a), _mm_slli_epi16::<2>(codes(run, b)));
            _mm_unpacklo_epi64(half(0), half(1))
        };
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(pair(0, 1)), pair(2, 3))
    });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bytes::TableIsa;
    use crate::kernels::direct::half_runs;

    /// Pair panels and image-read table indices equal their definitions
    /// ([`DirectIsa::pair_panel`], [`TableIsa::index_runs`]) on random two-bit codes: odd and
    /// even reductions, one and many channels, panels whose halves are rows apart, a short last
    /// panel.
    #[test]
    fn pair_panels_and_indices_follow_their_definitions() {
        let Ok(isa) = Maddubs::new() else {
            return;
        };
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for (channels, kernel, height, width) in
            [(1, 5, 28, 28), (3, 3, 6, 10), (20, 5, 12, 12), (2, 1, 3, 8)]
        {
            let plan = Im2col::new(channels, kernel, height, width);
            let input: Vec<u8> = (0..plan.image_len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 62) as u8
                })
                .collect();
            let k_off = plan.k_offsets();
            let mut panels = 0;
            for cols in plan.panels() {
                let runs = half_runs(cols).expect("output widths here are multiples of eight");
                let x = |k: usize, c: usize| match k_off.get(k) {
                    Some(&off) => input[runs[c / 8] + c % 8 + off],
                    None => 0,
                };
                let mut pairs = vec![0xAA; k_off.len().div_ceil(2) * PAIR_BYTES];
                isa.pair_panel(&input, &plan, runs, &mut pairs);
                for (i, &got) in pairs.iter().enumerate() {
                    let (j, c, h) = (i / 32, i % 32 / 2, i % 2);
                    assert_eq!(got, x(2 * j + h, c), "pair byte {i}");
                }
                let mut indices = vec![0xAA; k_off.len().div_ceil(4) * 32];
                isa.index_runs(&input, &plan, runs, &mut indices);
                for (i, &got) in indices.iter().enumerate() {
                    let (g, h, c) = (i / 32, i % 32 / 16, i % 16);
                    let k = 4 * g + 2 * h;
                    assert_eq!(got, x(k, c) + 4 * x(k + 1, c), "index byte {i}");
                }
                panels += 1;
            }
            assert!(panels > 0);
        }
    }
}
