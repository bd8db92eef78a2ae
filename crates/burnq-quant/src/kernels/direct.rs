//! The direct form of a convolution whose whole reduction fits one `i16` sum: the products of
//! each output position are added pairwise by `vpmaddubsw` and then in `i16`, never widened
//! until the tile's end, and its operand is built from the image one panel at a time (pairs of
//! taps side by side) instead of an im2col matrix of groups of four. The `vpmaddubsw`
//! implementation runs it for short reductions (the first layer), where the byte tile's fixed
//! costs weigh most.
//!
//! # Math
//! The byte form's reduction ([`super::bytes`]: `Σ_k x_k·s_o,k`, `x` the input codes,
//! `s = q_w − c_o` the `i8` weights) is taken pair by pair: with `p = ⌈K/2⌉` pairs and
//! `s_o,K = 0` for an odd `K`,
//!
//! `Σ_k x_k·s_o,k = Σ_{j<p} (x_2j·s_o,2j + x_2j+1·s_o,2j+1)`.
//!
//! A **pair panel** holds, for sixteen output positions, each pair `j`'s two codes side by side
//! (32 bytes); one `vpmaddubsw` with the channel's pair `(s_o,2j, s_o,2j+1)` broadcast gives the
//! sixteen positions' pair sums. The sixteen positions are two runs of eight consecutive output
//! columns (a panel's halves: for a fused max pool, the same eight columns of two adjacent output
//! rows), so each tap's eight codes are eight consecutive input bytes and a pair's half vector
//! is one byte interleave of two 8-byte loads.
//!
//! # Exactness
//! Every code is at most `qmax_in` (the kernels reject larger ones) and every `|s| ≤ max|s|`,
//! so every pair sum (two of the `K` products, or one) and every partial sum of them is at most
//! `K·qmax_in·max|s|` in magnitude. The form exists only when that is `≤ 32767`: then no `vpmaddubsw` pair
//! saturates and no `vpaddw` wraps, and the `i16` sums are the exact reduction, widened once
//! into the `i32` accumulators that start at the byte form's `bias'`. It also requires every
//! centre to be the channel's zero point (always so at seven weight bits or fewer), so that no
//! code-sum correction is needed. With 8-bit input codes on a 5×5 single-channel convolution
//! (the tutorial's conv1) this admits 2-bit weights (`|s| ≤ 3`: `25·255·3 = 19,125`) and 3-bit
//! weights whose zero points lie mid-range (`|s| ≤ 4`: `25,500`).

use super::bytes::Absent;
use super::isa::{TileBias, TileOut};
use super::pack::{Im2col, MRB, NR, pairs};
use crate::{LayerKind, QuantLayer};

/// Largest `i16`, the bound of every partial sum.
const I16_MAX: i64 = i16::MAX as i64;

/// Bytes of one pair of a pair panel: sixteen positions' two codes.
pub(crate) const PAIR_BYTES: usize = 2 * NR;

/// A convolution's weights in the direct form (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DirectForm {
    /// `[⌈rows/MRB⌉][⌈K/2⌉][MRB]`: per row panel, pair and row, the row's pair of weights as
    /// the bytes `[s_2j, s_2j+1, s_2j, s_2j+1]` (so that broadcasting the `i32` puts the pair
    /// in every `i16` lane); zero beyond the rows and `K`.
    weights: Vec<i32>,
    /// Pairs of the reduction, `⌈K/2⌉`.
    pub(crate) pairs: usize,
}

impl DirectForm {
    /// The direct form of a convolution with weights `s(o, k)` (`|s| ≤ max_s`), if its bound
    /// allows one and no channel's centre differs from its zero point (`centred`); `None` for
    /// linear layers.
    pub(crate) fn new(
        layer: &QuantLayer,
        s: impl Fn(usize, usize) -> i8,
        max_s: i64,
        centred: bool,
    ) -> Option<Self> {
        let LayerKind::Conv2d { .. } = layer.kind else {
            return None;
        };
        let (fan_in, out) = (layer.kind.fan_in(), layer.kind.out_channels());
        let bound = fan_in as i64 * i64::from(layer.input.qmax()) * max_s;
        if !centred || bound > I16_MAX {
            return None;
        }
        let pairs = pairs(fan_in);
        let s = |o: usize, k: usize| if k < fan_in { s(o, k) as u8 } else { 0 };
        let mut weights = vec![0; out.div_ceil(MRB) * pairs * MRB];
        for (panel, dst) in weights.chunks_exact_mut(pairs * MRB).enumerate() {
            for (j, rows) in dst.chunks_exact_mut(MRB).enumerate() {
                let present = (0..MRB).take_while(|r| panel * MRB + r < out);
                for (r, w) in present.zip(rows) {
                    let o = panel * MRB + r;
                    let (a, b) = (s(o, 2 * j), s(o, 2 * j + 1));
                    *w = i32::from_le_bytes([a, b, a, b]);
                }
            }
        }
        Some(Self { weights, pairs })
    }

    /// Row panel `i` of the weights (`⌈K/2⌉·MRB` pairs).
    pub(crate) fn panel(&self, i: usize) -> &[i32] {
        let len = self.pairs * MRB;
        &self.weights[i * len..][..len]
    }
}

/// The two runs of eight output positions that a column panel's halves read, as the input
/// offsets of their first positions, if its halves are runs: `cols` (the panel's source offsets)
/// is sixteen offsets whose halves are each consecutive, or eight consecutive ones (a last
/// short panel, whose second half then repeats the first and is discarded).
#[inline]
pub(crate) fn half_runs(cols: &[usize]) -> Option<[usize; 2]> {
    let half = NR / 2;
    let run = |h: &[usize]| h.iter().enumerate().all(|(i, &c)| c == h[0] + i);
    match cols.len() {
        n if n == NR && run(&cols[..half]) && run(&cols[half..]) => Some([cols[0], cols[half]]),
        n if n == half && run(cols) => Some([cols[0], cols[0]]),
        _ => None,
    }
}

/// The direct convolution tile of an instruction set. Computes exactly the portable
/// definition stated on each method (wrapping `i32`).
pub(crate) trait DirectIsa: Copy {
    /// One pair panel of the plan's image `input`: `out[32j + 2c + h] =
    /// input[runs[c / 8] + c % 8 + k_off[2j + h]]` for every pair `j < ⌈K/2⌉`, position
    /// `c < 16` and `h < 2`, `0` where `2j + h ≥ K` (`k_off` the plan's offsets, `K` of them;
    /// `runs` from [`half_runs`] of one of its panels).
    fn pair_panel(self, input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]);

    /// One direct tile: `acc[r][c] = bias[r] + Σ_j Σ_h P[32j + 2c + h]·W[j][r][h]` for
    /// `r < rows` (`1..=MRB`), `c < NR`, written to `out`. `weights` is one row panel of
    /// [`DirectForm`], `panel` one pair panel of `pairs` pairs.
    fn pair_tile(
        self,
        rows: usize,
        weights: &[i32],
        panel: &[u8],
        pairs: usize,
        bias: TileBias<'_>,
        out: TileOut<'_>,
    );
}

impl DirectIsa for Absent {
    fn pair_panel(self, _: &[u8], _: &Im2col, _: [usize; 2], _: &mut [u8]) {
        match self {}
    }

    fn pair_tile(self, _: usize, _: &[i32], _: &[u8], _: usize, _: TileBias<'_>, _: TileOut<'_>) {
        match self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_runs_are_whole_runs_of_eight() {
        let panel: Vec<usize> = (0..8).chain(28..36).collect();
        assert_eq!(half_runs(&panel), Some([0, 28]));
        assert_eq!(half_runs(&panel[..8]), Some([0, 0]));
        assert_eq!(half_runs(&panel[..12]), None);
        let mut broken = panel.clone();
        broken[5] = 40;
        assert_eq!(half_runs(&broken), None);
        let wrapped: Vec<usize> = (0..4).chain(10..14).chain(20..28).collect();
        assert_eq!(half_runs(&wrapped), None);
    }
}
