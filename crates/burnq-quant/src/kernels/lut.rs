//! The table form of a convolution whose input codes have two bits: products looked up, not
//! multiplied (as 2-bit GEMMs do, e.g. DeepGEMM, CVPR workshops 2023).
//!
//! # Math
//! With input codes `x ≤ qmax_in ≤ 3`, two consecutive terms of a byte-form reduction
//! ([`super::bytes`]: `Σ_k x_k·s_k`, `s = q_w − c_o` the `i8` weights) take at most sixteen
//! values, indexed by `i = x_{2p} + 4·x_{2p+1}`:
//!
//! `T_o,p[i] = (i mod 4)·s_o,2p + ⌊i/4⌋·s_o,2p+1`, so `Σ_k x_k·s_o,k = Σ_p T_o,p[i_p]`.
//!
//! The tables are built once per layer (weights are the broadcast operand of a convolution);
//! the indices once per column panel of the im2col matrix. `vpshufb` then looks up sixteen
//! columns' terms of two pairs at once (32 look-ups, 64 products, one instruction), against
//! two `vpmaddubsw` for the same products. Bias, zero-point and centre corrections are the
//! byte form's, unchanged.
//!
//! # Exactness
//! Every entry is bounded by `e = 2·qmax_in·max|s|`; the form exists only when `e ≤ 127`
//! (entries are `i8`) and `⌈K/2⌉·e ≤ 32767`. Look-ups are added in `i8` lanes
//! [`LutForm::steps`] `= ⌊127/e⌋` at a time (no sum can wrap), then widened into `i16` sums
//! that cannot wrap either (a column's sum of all `⌈K/2⌉` entries is at most `⌈K/2⌉·e`), then
//! into the `i32` accumulators: the result equals the byte form's exactly.

use super::pack::{GROUP, groups};
use crate::{LayerKind, QuantLayer};

/// Rows (output channels) of a table panel: five rows of two sums each, with the indices and a
/// table, stay within sixteen vector registers.
pub(crate) const MRL: usize = 5;

/// Bytes of one row's tables for one group of four `k`: the tables of its two pairs.
pub(crate) const TABLES: usize = 32;

/// Largest `i16`, the bound of the widened sums.
const I16_MAX: i64 = i16::MAX as i64;

/// A convolution's weights as look-up tables (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LutForm {
    /// `[⌈rows/MRL⌉][⌈K/4⌉][MRL][TABLES]`: per row panel, group and row, the tables of the
    /// group's two pairs (`T_o,2g` then `T_o,2g+1`, sixteen `i8` each); zero beyond the rows.
    pub(crate) tables: Vec<u8>,
    /// How many look-ups add exactly in an `i8` lane, `⌊127/e⌋`.
    pub(crate) steps: usize,
}

impl LutForm {
    /// The table form of a convolution with weights `s(o, k)` (`|s| ≤ max_s`) on inputs of
    /// `qmax_in ≤ 3`, if its bounds allow one (see the module docs); `None` for linear layers.
    pub(crate) fn new(
        layer: &QuantLayer,
        s: impl Fn(usize, usize) -> i32,
        max_s: i64,
    ) -> Option<Self> {
        let LayerKind::Conv2d { .. } = layer.kind else {
            return None;
        };
        let qmax_in = i64::from(layer.input.qmax());
        let (fan_in, out) = (layer.kind.fan_in(), layer.kind.out_channels());
        let entry_bound = 2 * qmax_in * max_s;
        let pairs = fan_in.div_ceil(2) as i64;
        if qmax_in > 3 || entry_bound > 127 || pairs * entry_bound > I16_MAX {
            return None;
        }
        let steps = match entry_bound {
            0 => usize::MAX,
            e => (127 / e) as usize,
        };
        let s = |o: usize, k: usize| if k < fan_in { s(o, k) } else { 0 };
        let groups = groups(fan_in);
        let mut tables = vec![0; out.div_ceil(MRL) * groups * MRL * TABLES];
        for (panel, dst) in tables.chunks_exact_mut(groups * MRL * TABLES).enumerate() {
            for (g, group) in dst.chunks_exact_mut(MRL * TABLES).enumerate() {
                let rows = (0..MRL).take_while(|r| panel * MRL + r < out);
                for (r, row) in rows.zip(group.chunks_exact_mut(TABLES)) {
                    let o = panel * MRL + r;
                    for (half, table) in row.chunks_exact_mut(TABLES / 2).enumerate() {
                        let k = GROUP * g + 2 * half;
                        for (i, entry) in table.iter_mut().enumerate() {
                            let (lo, hi) = ((i % 4) as i32, (i / 4) as i32);
                            *entry = (lo * s(o, k) + hi * s(o, k + 1)) as i8 as u8;
                        }
                    }
                }
            }
        }
        Some(Self { tables, steps })
    }

    /// Row panel `i`'s tables, `⌈K/4⌉` groups of [`MRL`] rows.
    pub(crate) fn panel(&self, i: usize, groups: usize) -> &[u8] {
        let len = groups * MRL * TABLES;
        &self.tables[i * len..][..len]
    }
}

/// The indices of one byte column panel of codes (`[⌈K/4⌉][NR][4]`, see [`super::pack`]):
/// `out[g][h·16 + c] = x[4g + 2h][c] + 4·x[4g + 2h + 1][c]`, each group's sixteen columns of its
/// first pair, then of its second. The definition the SIMD kernels implement.
#[cfg(test)]
pub(crate) fn index_panel(panel: &[u8], out: &mut [u8]) {
    use super::pack::NR;
    for (group, dst) in panel
        .chunks_exact(GROUP * NR)
        .zip(out.chunks_exact_mut(TABLES))
    {
        for (c, codes) in group.chunks_exact(GROUP).enumerate() {
            dst[c] = codes[0] + 4 * codes[1];
            dst[NR + c] = codes[2] + 4 * codes[3];
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::bytes::TableIsa;
    use super::super::maddubs::Maddubs;
    use super::super::pack::NR;
    use super::*;

    /// The AVX2 index panels equal the definition, for codes 0..=3 in every position.
    #[test]
    fn simd_index_panels_match_the_definition() {
        let Ok(isa) = Maddubs::new() else {
            return;
        };
        for groups in [1, 2, 7, 125] {
            let panel: Vec<u8> = (0..groups * GROUP * NR)
                .map(|i| ((i * 7 + i / 5) % 4) as u8)
                .collect();
            let (mut fast, mut slow) = (vec![0; groups * TABLES], vec![0; groups * TABLES]);
            isa.index_panel(&panel, &mut fast);
            index_panel(&panel, &mut slow);
            assert_eq!(fast, slow, "{groups} groups");
        }
    }
}
