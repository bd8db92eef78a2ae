//! The byte form of a layer, for the `u8 × i8` GEMMs (`vpdpbusd`, `vpmaddubsw`), and the
//! [`ByteIsa`] trait of the instruction sets that run it.
//!
//! # Math
//! One operand is the input codes `x = q_x` themselves (`u8`, no offset subtracted), the other
//! the weights `s = q_w − c_o` as `i8`, with one centre `c_o` per output channel:
//! `c_o = Z_w[o]` if every offset `q_w − Z_w[o]` of the channel fits `i8` (always at 7 bits or
//! fewer), else the middle of the channel's codes, `⌈(min + max)/2⌉`, which brings every
//! offset within `[−128, 127]`. Since `q_w − Z_w = s + d_o` with `d_o = c_o − Z_w[o]`,
//!
//! `acc = bias + Σ_k (x − Z_in)(q_w − Z_w) = bias' + Σ_k x·s + d_o·Σ_k x`,
//! `bias' = bias − Z_in·Σ_k (q_w − Z_w)`.
//!
//! `bias'` and `d_o` are fixed when packing; `Σ_k x` (a column sum of the im2col matrix, or a
//! row sum of a linear layer's input) is computed per call, and only if some `d_o ≠ 0`.
//!
//! # Exactness
//! Every step is an `i32` addition or multiplication, wrapping: the result is exact modulo
//! `2^32`, and the true accumulator lies in `i32` (the layer's worst-case bound is checked
//! when packing), so it is exact. `vpdpbusd` adds four exact `u8 × i8` products into an `i32`
//! with no intermediate rounding or saturation: always exact. `vpmaddubsw` adds two products
//! into an `i16` **with saturation**; it is exact when `2·X·S ≤ 32767`, where `X = qmax_in`
//! bounds the codes (the kernels reject larger ones) and `S = max|s|`. Then `n` such pair sums
//! can also be added in `i16` (wrapping `vpaddw`) before widening, as long as `n·2·X·S ≤ 32767`:
//! [`ByteForm::chain`] is that `n`, computed here from the layer's actual `Z_in`, `qmax_in`,
//! zero points and codes, and 0 where even one pair could saturate (the `vpmaddubsw` kernel
//! then runs the `i16` GEMM instead).

use super::direct::{DirectForm, DirectIsa};
use super::isa::{TileBias, TileOut};
use super::lut::LutForm;
use super::pack::{self, Im2col, NR};
use super::requant::LayerRequant;
use crate::{LayerKind, QuantLayer};

/// Largest `i16`, the bound of a `vpmaddubsw` pair sum.
const I16_MAX: i64 = i16::MAX as i64;

/// Largest nibble of a code, `x = lo + 16·hi` with `lo, hi ≤ 15`.
const NIBBLE_MAX: i64 = 15;

/// A layer's weights in the byte form (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ByteForm {
    /// The weights `s`: a convolution's as byte row panels of A (`i32` groups), a linear
    /// layer's as byte column panels of B.
    pub(crate) weights: ByteWeights,
    /// `bias'` per output channel, zero-padded to a multiple of `NR`.
    pub(crate) bias: Vec<i32>,
    /// `d_o` per output channel, zero-padded to a multiple of `NR`; `None` if all are 0.
    pub(crate) centre_shift: Option<Vec<i32>>,
    /// How many `vpmaddubsw` pair sums add exactly in `i16` (0: not even one).
    pub(crate) chain: usize,
    /// The same for input codes split into nibbles ([`NibbleIsa`]): how many pair sums
    /// `2·15·max|s|` add exactly in `i16` (at least 8, since `max|s| ≤ 128`).
    pub(crate) nibble_chain: usize,
    /// Groups of four in the reduction, `⌈K/4⌉`.
    pub(crate) groups: usize,
    /// The weights as look-up tables, for a convolution on two-bit inputs ([`super::lut`]).
    pub(crate) lut: Option<LutForm>,
    /// The weights in pairs, for a convolution whose reduction fits one `i16` sum
    /// ([`super::direct`]).
    pub(crate) direct: Option<DirectForm>,
}

/// The weights `s` in a byte layout of [`pack`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ByteWeights {
    /// A convolution's, as the broadcast operand.
    Rows(Vec<i32>),
    /// A linear layer's, transposed, as the vector operand.
    Cols(Vec<u8>),
}

impl ByteForm {
    /// The byte form of a layer whose shapes and accumulator bound have been checked.
    pub(crate) fn new(layer: &QuantLayer) -> Self {
        let (fan_in, out) = (layer.kind.fan_in(), layer.kind.out_channels());
        let rows = layer.weights.chunks_exact(fan_in);
        let centres: Vec<i32> = rows
            .clone()
            .zip(&layer.weight_zero_points)
            .map(|(row, &z)| centre(row, z))
            .collect();
        let s = |o: usize, k: usize| (i32::from(layer.weights[o * fan_in + k]) - centres[o]) as u8;
        let weights = match layer.kind {
            LayerKind::Conv2d { .. } => {
                let mut panels = Vec::new();
                pack::pack_byte_rows(out, fan_in, s, &mut panels);
                ByteWeights::Rows(panels)
            }
            LayerKind::Linear { .. } => {
                ByteWeights::Cols(pack::pack_byte_cols(out, fan_in, |k, o| s(o, k)))
            }
        };
        let z_in = i64::from(layer.input.zero_point());
        let padded = out.next_multiple_of(NR);
        let mut bias: Vec<i32> = rows
            .clone()
            .zip(&layer.weight_zero_points)
            .zip(&layer.bias)
            .map(|((row, &z), &b)| {
                let sum: i64 = row.iter().map(|&q| i64::from(q) - i64::from(z)).sum();
                // Wrapping: exact modulo 2^32, see the module docs.
                (i64::from(b) - z_in * sum) as i32
            })
            .collect();
        bias.resize(padded, 0);
        let mut shift: Vec<i32> = centres
            .iter()
            .zip(&layer.weight_zero_points)
            .map(|(&c, &z)| c - z)
            .collect();
        shift.resize(padded, 0);
        let max_s = layer
            .weights
            .chunks_exact(fan_in)
            .zip(&centres)
            .flat_map(|(row, &c)| {
                row.iter()
                    .map(move |&q| (i64::from(q) - i64::from(c)).abs())
            })
            .max()
            .unwrap_or(0);
        let lut = LutForm::new(layer, |o, k| i32::from(s(o, k) as i8), max_s);
        let centred = shift.iter().all(|&d| d == 0);
        let direct = DirectForm::new(layer, |o, k| s(o, k) as i8, max_s, centred);
        let pair_bound = 2 * i64::from(layer.input.qmax()) * max_s;
        let chain_of = |pair_bound: i64| match pair_bound {
            0 => usize::MAX,
            m => (I16_MAX / m) as usize,
        };
        let chain = chain_of(pair_bound);
        let nibble_chain = chain_of(2 * NIBBLE_MAX * max_s);
        Self {
            weights,
            bias,
            centre_shift: shift.iter().any(|&d| d != 0).then_some(shift),
            chain,
            nibble_chain,
            groups: pack::groups(fan_in),
            lut,
            direct,
        }
    }
}

/// The centre `c` of one channel's codes: its zero point `z` if every `q − z` fits `i8`, else
/// `⌈(min + max)/2⌉`, so that every `q − c` lies in `[−128, 127]` for codes in `[0, 255]`.
fn centre(row: &[u8], z: i32) -> i32 {
    let (min, max) = row
        .iter()
        .fold((255, 0), |(lo, hi), &q| (lo.min(q), hi.max(q)));
    let (min, max) = (i32::from(min), i32::from(max));
    if min - z >= -128 && max - z <= 127 {
        z
    } else {
        (min + max + 1) / 2
    }
}

/// Which operand of a byte tile holds the `u8` codes (the other holds `i8` weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codes {
    /// A, the broadcast operand: a linear layer's input rows.
    A,
    /// B, the vector operand: a convolution's im2col matrix.
    B,
}

/// The rank-one correction `acc[r][c] += rows[r]·cols[c]` (wrapping) of a byte tile: `d_o`
/// times the code sums, along rows or columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outer<'a> {
    /// One factor per row of the tile, at least `rows` of them.
    pub(crate) rows: &'a [i32],
    /// One factor per column.
    pub(crate) cols: &'a [i32; NR],
}

/// The byte GEMM of an instruction set. Computes exactly the portable definition stated on
/// each method (wrapping `i32`), for the layers it accepts.
pub(crate) trait ByteIsa: Copy {
    /// Whether this implementation runs `form`: it must be exact for it (`vpmaddubsw` needs
    /// `chain ≥ 1`), and may also decline a layer the `i16` GEMM runs faster.
    fn accepts(self, form: &ByteForm) -> bool;

    /// One byte tile: `acc[r][c] = bias + Σ_g Σ_j A[r][4g+j]·B[4g+j][c] (+ outer)` for
    /// `r < rows` (`1..=MRB`), `c < NR`, the `u8` operand being `codes` and the other `i8`,
    /// then written to `out`. `a` is one byte row panel (`⌈K/4⌉·MRB` groups), `b` one byte
    /// column panel (`⌈K/4⌉·4·NR` bytes); `chain` is [`ByteForm::chain`].
    #[allow(clippy::too_many_arguments)]
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
    );

    /// This implementation's table GEMM ([`Absent`] if it has none).
    type Tables: TableIsa;

    /// This implementation's nibble GEMM ([`Absent`] if it has none).
    type Nibbles: NibbleIsa;

    /// The nibble GEMM to run `form`'s linear layer with when it runs few rows, if this
    /// implementation has one and does not [accept](ByteIsa::accepts) the layer as it is.
    fn nibbles(self, form: &ByteForm) -> Option<Self::Nibbles>;

    /// The table GEMM to run `form`'s convolution with, if this implementation has one and the
    /// layer has a [`LutForm`]; `None`: the byte tile.
    fn tables(self, form: &ByteForm) -> Option<Self::Tables>;

    /// This implementation's direct convolution tile ([`Absent`] if it has none).
    type Direct: DirectIsa;

    /// The direct tile to run `form`'s convolution with, if this implementation has one for it:
    /// the layer has a [`DirectForm`] and no table form (which looks products up faster), and
    /// the implementation may decline reductions its byte tile runs faster.
    fn direct(self, form: &ByteForm) -> Option<Self::Direct>;

    /// [`pack::im2col_bytes`] of the plan's offsets.
    fn im2col_bytes(self, input: &[u8], plan: &Im2col, cols: &[usize], out: &mut [u8]);

    /// `sums[c] = Σ_k B[k][c]` over one byte column panel of codes.
    fn col_sums(self, panel: &[u8], sums: &mut [i32; NR]);

    /// [`super::isa::Isa::pool_pairs_requant`], with this instruction set's widest vectors
    /// (the convolutions' epilogue, which runs whichever GEMM a layer takes).
    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]);

    /// [`super::isa::Isa::requant_channels`], with this instruction set's widest vectors.
    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]);
}

/// No byte GEMM: the type of an instruction set without one. It has no values, so none of its
/// methods can run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NoBytes {}

impl ByteIsa for NoBytes {
    fn accepts(self, _: &ByteForm) -> bool {
        match self {}
    }

    fn byte_tile(
        self,
        _: usize,
        _: &[i32],
        _: &[u8],
        _: Codes,
        _: usize,
        _: TileBias<'_>,
        _: Option<Outer<'_>>,
        _: TileOut<'_>,
    ) {
        match self {}
    }

    type Tables = Absent;

    fn tables(self, _: &ByteForm) -> Option<Absent> {
        match self {}
    }

    type Nibbles = Absent;

    fn nibbles(self, _: &ByteForm) -> Option<Absent> {
        match self {}
    }

    type Direct = Absent;

    fn direct(self, _: &ByteForm) -> Option<Absent> {
        match self {}
    }

    fn im2col_bytes(self, _: &[u8], _: &Im2col, _: &[usize], _: &mut [u8]) {
        match self {}
    }

    fn col_sums(self, _: &[u8], _: &mut [i32; NR]) {
        match self {}
    }

    fn pool_pairs_requant(self, _: &[i32], _: &LayerRequant, _: usize, _: &mut [u8]) {
        match self {}
    }

    fn requant_channels(self, _: &[i32], _: &LayerRequant, _: &mut [u8]) {
        match self {}
    }
}

/// The table GEMM of an instruction set ([`super::lut`]). Computes exactly the portable
/// definition stated on each method (wrapping `i32`).
pub(crate) trait TableIsa: Copy {
    /// The look-up indices of one byte column panel of codes, as
    /// [`super::lut::index_panel`] (`⌈K/4⌉·32` bytes from `⌈K/4⌉·64`).
    fn index_panel(self, panel: &[u8], out: &mut [u8]);

    /// The same indices read straight from the plan's image `input`, for a column panel whose
    /// halves are the runs `runs` ([`super::direct::half_runs`]): `out[32g + 16h + c] =
    /// x(4g + 2h, c) + 4·x(4g + 2h + 1, c)` with `x(k, c) = input[runs[c / 8] + c % 8 + k_off[k]]`
    /// (`0` for `k ≥ K`), `k_off` the plan's offsets.
    fn index_runs(self, input: &[u8], plan: &Im2col, runs: [usize; 2], out: &mut [u8]);

    /// One table tile: `acc[r][c] = bias + Σ_g Σ_h T_r,2g+h[idx[g][16h + c]] (+ outer)` for
    /// `r < rows` (`1..=MRL`), `c < NR`, written to `out`. `tables` is one row panel of
    /// [`LutForm::tables`], `idx` one index panel, `steps` is [`LutForm::steps`].
    #[allow(clippy::too_many_arguments)]
    fn lut_tile(
        self,
        rows: usize,
        tables: &[u8],
        idx: &[u8],
        steps: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    );
}

/// No such GEMM: the table or nibble GEMM type of an instruction set without one. It has no
/// values, so none of its methods can run.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Absent {}

impl TableIsa for Absent {
    fn index_panel(self, _: &[u8], _: &mut [u8]) {
        match self {}
    }

    fn index_runs(self, _: &[u8], _: &Im2col, _: [usize; 2], _: &mut [u8]) {
        match self {}
    }

    fn lut_tile(
        self,
        _: usize,
        _: &[u8],
        _: &[u8],
        _: usize,
        _: TileBias<'_>,
        _: Option<Outer<'_>>,
        _: TileOut<'_>,
    ) {
        match self {}
    }
}

/// The nibble GEMM of an instruction set: a linear layer's byte tile with the input codes split
/// `x = lo + 16·hi` into two planes of nibbles (`lo, hi ≤ 15`), for layers whose `u8 × i8`
/// pair sums could saturate `vpmaddubsw` (`chain = 0`: 8-bit codes against weights beyond
/// ±64) but whose nibble pair sums cannot (`2·15·max|s| ≤ 3840`):
/// `Σ x·s = Σ lo·s + 16·Σ hi·s`, each sum exact by [`ByteForm::nibble_chain`]. As many products
/// per instruction as the `i16` GEMM, from half the weight bytes: it pays where a few rows
/// stream the weights from memory (one image's fully connected layers).
pub(crate) trait NibbleIsa: Copy {
    /// One nibble tile: `acc[r][c] = bias + Σ_g Σ_j (lo[r][4g+j] + 16·hi[r][4g+j])·B[4g+j][c]
    /// (+ outer)` for `r < rows` (`1..=MRB`), `c < NR`, written to `out`. `a` is one byte row
    /// panel of the low nibbles followed by one of the high nibbles ([`super::pack::split_nibbles`]),
    /// `b` one byte column panel of `i8` weights; `chain` is [`ByteForm::nibble_chain`].
    #[allow(clippy::too_many_arguments)]
    fn nibble_tile(
        self,
        rows: usize,
        a: &[i32],
        b: &[u8],
        chain: usize,
        bias: TileBias<'_>,
        outer: Option<Outer<'_>>,
        out: TileOut<'_>,
    );
}

impl NibbleIsa for Absent {
    fn nibble_tile(
        self,
        _: usize,
        _: &[i32],
        _: &[u8],
        _: usize,
        _: TileBias<'_>,
        _: Option<Outer<'_>>,
        _: TileOut<'_>,
    ) {
        match self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres() {
        assert_eq!(centre(&[0, 255], 128), 128);
        assert_eq!(centre(&[0, 255], 127), 128);
        assert_eq!(centre(&[0, 254], 127), 127);
        assert_eq!(centre(&[3, 9], 0), 0);
        assert_eq!(centre(&[200, 255], 0), 228);
        for (row, z) in [(&[0u8, 255][..], 0), (&[0, 255], 255), (&[1, 254], 200)] {
            let c = centre(row, z);
            assert!(
                row.iter()
                    .all(|&q| (-128..=127).contains(&(i32::from(q) - c)))
            );
        }
    }
}
