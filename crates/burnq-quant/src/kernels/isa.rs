//! The [`Isa`] trait: the few primitives whose code differs per instruction set. The layer
//! algorithms (`ops`) are written once over it and monomorphized per implementation, so the
//! loops, the packing and the shape logic are shared by every kernel.

use super::bytes::{ByteForm, ByteIsa};
use super::pack::NR;
use super::requant::LayerRequant;

/// The initial value of a tile's accumulators: the bias, along rows or along columns.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TileBias<'a> {
    /// One bias per row (a convolution's output channels), one value per row of the tile.
    Rows(&'a [i32]),
    /// One bias per column (a linear layer's output features).
    Cols(&'a [i32; NR]),
}

impl<'a> TileBias<'a> {
    /// The bias of the rows from `r` on.
    pub(crate) fn rows_from(self, r: usize) -> Self {
        match self {
            Self::Rows(bias) => Self::Rows(&bias[r..]),
            cols => cols,
        }
    }
}

/// Where a tile's results go: a slice starting at the tile's first element, rows `ld` apart,
/// of which the first `cols ≤ NR` columns are written.
#[derive(Debug)]
pub(crate) enum TileOut<'a> {
    /// The `i32` accumulators: `c[r·ld + j] = acc[r][j]`.
    Acc {
        /// Destination.
        c: &'a mut [i32],
        /// Row stride.
        ld: usize,
        /// Columns written.
        cols: usize,
    },
    /// Requantized per column: `out[r·ld + j] = requant_{col0 + j}(acc[r][j])`.
    Requant {
        /// Destination.
        out: &'a mut [u8],
        /// Row stride.
        ld: usize,
        /// Columns written.
        cols: usize,
        /// The layer's requantization, one channel per column.
        requant: &'a LayerRequant,
        /// The channel of the tile's first column, a multiple of `NR`.
        col0: usize,
    },
    /// The maxima of the tile's two halves of eight columns:
    /// `rows[r·ld + j] = max(acc[r][j], acc[r][8 + j])` for `j < 8`. When a panel's halves are
    /// the same eight positions of two adjacent output rows, this is the vertical half of a
    /// 2×2 max pool, done before the accumulators ever reach memory.
    VerticalMax {
        /// Destination.
        rows: &'a mut [i32],
        /// Row stride.
        ld: usize,
    },
}

impl<'a> TileOut<'a> {
    /// Splits the destination into rows `..r` and rows `r..` (the tile has more than `r` rows).
    pub(crate) fn split_rows(self, r: usize) -> (Self, Self) {
        match self {
            Self::Acc { c, ld, cols } => {
                let (top, bottom) = c.split_at_mut(r * ld);
                (
                    Self::Acc { c: top, ld, cols },
                    Self::Acc {
                        c: bottom,
                        ld,
                        cols,
                    },
                )
            }
            Self::Requant {
                out,
                ld,
                cols,
                requant,
                col0,
            } => {
                let (top, bottom) = out.split_at_mut(r * ld);
                let half = |out| Self::Requant {
                    out,
                    ld,
                    cols,
                    requant,
                    col0,
                };
                (half(top), half(bottom))
            }
            Self::VerticalMax { rows, ld } => {
                let (top, bottom) = rows.split_at_mut(r * ld);
                (
                    Self::VerticalMax { rows: top, ld },
                    Self::VerticalMax { rows: bottom, ld },
                )
            }
        }
    }
}

/// The primitives of one instruction set. Every method computes exactly what the portable
/// implementation ([`super::generic::Generic`]) computes; slices must have the lengths stated.
pub(crate) trait Isa: Copy {
    /// This instruction set's byte GEMM ([`super::bytes::NoBytes`] if it has none).
    type Bytes: ByteIsa;

    /// The byte GEMM to run a layer of byte form `form` with, if this implementation has one
    /// that is exact for it; `None`: run the `i16` GEMM.
    fn bytes(self, form: &ByteForm) -> Option<Self::Bytes>;

    /// The nibble GEMM ([`super::bytes::NibbleIsa`]) to run a linear layer of byte form `form`
    /// on few rows with, if this implementation has one for it.
    fn nibbles(self, form: &ByteForm) -> Option<<Self::Bytes as ByteIsa>::Nibbles>;

    /// One GEMM tile: `acc[r][c] = bias + Σ_p (A[r][2p]·B[2p][c] + A[r][2p+1]·B[2p+1][c])` for
    /// `r < rows` (`1..=MR`) and `c < NR`, in wrapping `i32`, then written to `out`. `a` is one
    /// row panel (`⌈K/2⌉·MR` pairs), `b` one column panel (`⌈K/2⌉·2·NR` offsets).
    fn tile(self, rows: usize, a: &[i32], b: &[i16], bias: TileBias<'_>, out: TileOut<'_>);

    /// [`super::pack::im2col_panel`].
    fn im2col_panel(self, input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]);

    /// `out[j] = requant_o(acc[j])`: values of the one channel `o`.
    fn requant_channel(self, acc: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]);

    /// `out[c] = requant_c(acc[c])` over the channels `0..acc.len()` of `requant`.
    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]);

    /// Vertical maxima of row pairs of a plane of rows `width` apart: with `w = out.len() / rows`,
    /// `out[y·w + x] = max(plane[2y·width + x], plane[(2y + 1)·width + x])` for `x < w ≤ width`.
    fn max_rows(self, plane: &[i32], width: usize, rows: usize, out: &mut [i32]);

    /// `out[j] = requant_o(max(rows[2j], rows[2j + 1]))` for the one channel `o`,
    /// `rows.len() = 2·out.len()`: the horizontal half of a 2×2 max-pool, then requantization
    /// (exact because requantization is non-decreasing).
    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]);

    /// `out[j] = max(top[2j], top[2j + 1], bottom[2j], bottom[2j + 1])`, `top` and `bottom`
    /// at least `2·out.len()` long.
    fn max_pool_row(self, top: &[u8], bottom: &[u8], out: &mut [u8]);

    /// A depthwise convolution's sums at one position, for every channel `o < acc.len()`:
    /// `acc[o] = bias[o] + Σ_t x[taps[t] + o]·w[t·acc.len() + o]` in wrapping `i32`.
    fn depthwise_sums(self, x: &[i16], taps: &[usize], w: &[i16], bias: &[i32], acc: &mut [i32]);
}
