//! The portable kernel: plain Rust over the same packed layouts, for any target. Its functions
//! are also the scalar tails of the SIMD kernels, and those that vectorize well by themselves
//! (`max_rows`, `max_pool_row`) are the whole algorithm, which the AVX2 kernel compiles again
//! with AVX2 enabled.
//!
//! Requantization here is [`Requant::apply`](crate::Requant::apply) itself, the definition.

use super::bytes::{Absent, ByteForm, NoBytes};
use super::isa::{Isa, TileBias, TileOut};
use super::pack::{self, MR, NR, unpair};
use super::requant::LayerRequant;
use crate::Requant;

/// The portable implementation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generic;

impl Isa for Generic {
    type Bytes = NoBytes;

    fn bytes(self, _: &ByteForm) -> Option<NoBytes> {
        None
    }

    fn nibbles(self, _: &ByteForm) -> Option<Absent> {
        None
    }

    fn tile(self, rows: usize, a: &[i32], b: &[i16], bias: TileBias<'_>, out: TileOut<'_>) {
        let mut acc = [[0i32; NR]; MR];
        match bias {
            TileBias::Rows(bias) => {
                for (row, &b) in acc.iter_mut().zip(bias) {
                    *row = [b; NR];
                }
            }
            TileBias::Cols(bias) => acc.fill(*bias),
        }
        let (a, _) = a.as_chunks::<MR>();
        let (b, _) = b.as_chunks::<{ 2 * NR }>();
        for (a, b) in a.iter().zip(b) {
            let (b, _) = b.as_chunks::<2>();
            for (row, &pair) in acc[..rows].iter_mut().zip(a) {
                let (lo, hi) = unpair(pair);
                for (sum, &[b0, b1]) in row.iter_mut().zip(b) {
                    let two = i32::from(lo) * i32::from(b0) + i32::from(hi) * i32::from(b1);
                    *sum = sum.wrapping_add(two);
                }
            }
        }
        store_tile(&acc[..rows], out);
    }

    fn im2col_panel(self, input: &[u8], k_off: &[usize], cols: &[usize], z: i32, out: &mut [i16]) {
        pack::im2col_panel(input, k_off, cols, z, out);
    }

    fn requant_channel(self, acc: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        requant_channel(acc, &requant.scalar[o], out);
    }

    fn requant_channels(self, acc: &[i32], requant: &LayerRequant, out: &mut [u8]) {
        requant_channels(acc, &requant.scalar, out);
    }

    fn max_rows(self, plane: &[i32], width: usize, rows: usize, out: &mut [i32]) {
        max_rows(plane, width, rows, out);
    }

    fn pool_pairs_requant(self, rows: &[i32], requant: &LayerRequant, o: usize, out: &mut [u8]) {
        pool_pairs_requant(rows, &requant.scalar[o], out);
    }

    fn max_pool_row(self, top: &[u8], bottom: &[u8], out: &mut [u8]) {
        max_pool_row(top, bottom, out);
    }

    fn depthwise_sums(self, x: &[i16], taps: &[usize], w: &[i16], bias: &[i32], acc: &mut [i32]) {
        depthwise_sums(x, taps, w, bias, acc);
    }
}

/// Channels per register block of [`depthwise_sums`].
const LANES: usize = 16;

/// [`Isa::depthwise_sums`]: blocks of [`LANES`] channels summed over every tap in registers,
/// then the remaining channels.
#[inline(always)]
pub(crate) fn depthwise_sums(x: &[i16], taps: &[usize], w: &[i16], bias: &[i32], acc: &mut [i32]) {
    let oc = acc.len();
    let (blocks, _) = acc.as_chunks_mut::<LANES>();
    let (biases, _) = bias.as_chunks::<LANES>();
    for (b, (acc, bias)) in blocks.iter_mut().zip(biases).enumerate() {
        let mut a = *bias;
        for (t, &at) in taps.iter().enumerate() {
            let xs: &[i16; LANES] = x[at + b * LANES..][..LANES].try_into().unwrap();
            let ws: &[i16; LANES] = w[t * oc + b * LANES..][..LANES].try_into().unwrap();
            for l in 0..LANES {
                a[l] = a[l].wrapping_add(i32::from(xs[l]) * i32::from(ws[l]));
            }
        }
        *acc = a;
    }
    let tail = oc - oc % LANES;
    if tail == oc {
        return;
    }
    for (a, &b) in acc[tail..].iter_mut().zip(&bias[tail..]) {
        *a = b;
    }
    for (t, &at) in taps.iter().enumerate() {
        let xs = &x[at + tail..][..oc - tail];
        let ws = &w[t * oc + tail..][..oc - tail];
        for ((a, &x), &w) in acc[tail..].iter_mut().zip(xs).zip(ws) {
            *a = a.wrapping_add(i32::from(x) * i32::from(w));
        }
    }
}

/// Writes finished accumulator rows (`rows.len()` of them) to a tile destination.
pub(crate) fn store_tile(rows: &[[i32; NR]], out: TileOut<'_>) {
    match out {
        TileOut::Acc { c, ld, cols } => {
            for (r, row) in rows.iter().enumerate() {
                c[r * ld..][..cols].copy_from_slice(&row[..cols]);
            }
        }
        TileOut::Requant {
            out,
            ld,
            cols,
            requant,
            col0,
        } => {
            let scalar = &requant.scalar[col0..];
            for (r, row) in rows.iter().enumerate() {
                requant_channels(&row[..cols], scalar, &mut out[r * ld..][..cols]);
            }
        }
        TileOut::VerticalMax { rows: dst, ld } => {
            for (r, row) in rows.iter().enumerate() {
                let (top, bottom) = row.split_at(NR / 2);
                let dst = &mut dst[r * ld..][..NR / 2];
                for ((d, &t), &b) in dst.iter_mut().zip(top).zip(bottom) {
                    *d = t.max(b);
                }
            }
        }
    }
}

/// `out[j] = requant.apply(acc[j])`.
pub(crate) fn requant_channel(acc: &[i32], requant: &Requant, out: &mut [u8]) {
    for (q, &a) in out.iter_mut().zip(acc) {
        *q = requant.apply(a);
    }
}

/// `out[c] = requants[c].apply(acc[c])`.
pub(crate) fn requant_channels(acc: &[i32], requants: &[Requant], out: &mut [u8]) {
    for ((q, &a), r) in out.iter_mut().zip(acc).zip(requants) {
        *q = r.apply(a);
    }
}

/// `out[j] = requant.apply(max(rows[2j], rows[2j + 1]))`.
pub(crate) fn pool_pairs_requant(rows: &[i32], requant: &Requant, out: &mut [u8]) {
    let (pairs, _) = rows.as_chunks::<2>();
    for (q, &[a, b]) in out.iter_mut().zip(pairs) {
        *q = requant.apply(a.max(b));
    }
}

/// [`Isa::max_rows`].
#[inline(always)]
pub(crate) fn max_rows(plane: &[i32], width: usize, rows: usize, out: &mut [i32]) {
    let w = out.len() / rows;
    for (y, out) in out.chunks_exact_mut(w).enumerate() {
        let top = &plane[2 * y * width..][..w];
        let bottom = &plane[(2 * y + 1) * width..][..w];
        for ((m, &t), &b) in out.iter_mut().zip(top).zip(bottom) {
            *m = t.max(b);
        }
    }
}

/// `out[j] = max(top[2j], top[2j + 1], bottom[2j], bottom[2j + 1])`.
#[inline(always)]
pub(crate) fn max_pool_row(top: &[u8], bottom: &[u8], out: &mut [u8]) {
    let (top, _) = top.as_chunks::<2>();
    let (bottom, _) = bottom.as_chunks::<2>();
    for ((m, t), b) in out.iter_mut().zip(top).zip(bottom) {
        *m = t[0].max(t[1]).max(b[0].max(b[1]));
    }
}
