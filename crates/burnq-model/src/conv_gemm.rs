//! The arithmetic of the training convolution ([`crate::train_conv`]) on plain `f32` slices:
//! im2col, one GEMM per product, col2im.
//!
//! For an input `x[n, c, h, w]`, weights `w[o, c, kh, kw]`, bias `b[o]`, stride `s` and zero
//! padding `(top, bottom), (left, right)`, output position `p = (i, j)` of image `n` reads the
//! patch `x[n, c, i·s_h + u − top, j·s_w + v − left]` (0 outside the image). With the patch
//! index `r = (c, u, v)` (`K = C·KH·KW` of them) and the column index `q = (n, i, j)`
//! (`Q = N·OH·OW`), the patches form the matrix `X[K, Q]` (im2col) and
//!
//! - forward: `Y[o, q] = Σ_r W[o, r] X[r, q] + b[o]`, one GEMM `W · X`;
//! - weight gradient: `∂L/∂W[o, r] = Σ_q G[o, q] X[r, q]`, one GEMM `G · Xᵀ` over the whole
//!   batch, where `G[o, q] = ∂L/∂y[n, o, i, j]`;
//! - bias gradient: `∂L/∂b[o] = Σ_q G[o, q]`;
//! - input gradient: `∂L/∂X = Wᵀ · G`, then col2im adds each `∂L/∂X[r, q]` back to the input
//!   pixel that patch entry was read from (entries read from the padding are dropped).
//!
//! The loops around the GEMMs are [`vectorized!`]: compiled again with AVX-512F and picked at
//! run time, with the same results.
//!
//! Every sum runs in an order fixed by the shapes and the machine (the `gemm` crate splits
//! work over output tiles, never over the summed index), so results are deterministic.

use std::mem::MaybeUninit;

use crate::simd::vectorized;

/// The shapes of one convolution, checked by [`Geometry::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Images `N`.
    pub batch: usize,
    /// Input channels `C`.
    pub channels: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Output channels `O`.
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Zero padding `(before, after)` of the height and of the width.
    pub padding: [(usize, usize); 2],
    /// Output height and width.
    pub output: [usize; 2],
}

impl Geometry {
    /// The geometry of `x: [N, C, H, W]` convolved with `w: [O, C, KH, KW]`; `None` when the
    /// weights' channels differ from the input's, a size is 0, or the padded input is smaller
    /// than the kernel.
    pub fn new(
        x: [usize; 4],
        w: [usize; 4],
        stride: [usize; 2],
        padding: [(usize, usize); 2],
    ) -> Option<Self> {
        let [batch, channels, h, wd] = x;
        let [out_channels, w_channels, kh, kw] = w;
        if w_channels != channels || x.contains(&0) || w.contains(&0) || stride.contains(&0) {
            return None;
        }
        let out = |size: usize, (before, after): (usize, usize), k: usize, s: usize| {
            (size + before + after)
                .checked_sub(k)
                .map(|span| span / s + 1)
        };
        Some(Self {
            batch,
            channels,
            input: [h, wd],
            out_channels,
            kernel: [kh, kw],
            stride,
            padding,
            output: [
                out(h, padding[0], kh, stride[0])?,
                out(wd, padding[1], kw, stride[1])?,
            ],
        })
    }

    /// Patch entries per output position, `K = C·KH·KW`.
    pub fn patch(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// Output positions per image, `OH·OW`.
    pub fn positions(&self) -> usize {
        self.output[0] * self.output[1]
    }

    /// Columns of the patch matrix, `Q = N·OH·OW`.
    pub fn columns(&self) -> usize {
        self.batch * self.positions()
    }

    /// For kernel offset `u` along axis `axis`, the output indices `a` whose input index
    /// `a·s + u − before` lies inside the input, as a half-open range.
    #[inline(always)]
    fn valid(&self, axis: usize, u: usize) -> (usize, usize) {
        let (s, before, size) = (self.stride[axis], self.padding[axis].0, self.input[axis]);
        let first = before.saturating_sub(u).div_ceil(s);
        // a·s + u < before + size  ⇔  a < (before + size − u) / s (rounded up)
        let end = (before + size).saturating_sub(u).div_ceil(s);
        (first.min(self.output[axis]), end.min(self.output[axis]))
    }
}

/// Runs `$body` for every patch entry `r = (c, u, v)`, image `n` and output row `i` whose
/// input row is inside the image (in the order of the patch matrix's elements), with `row`
/// the offset of that input row in the NCHW input and `j0..j1` ([`Geometry::valid`]) the
/// output columns `j` whose input column `j·s_w + v − left` is inside it.
///
/// A macro, not a method taking a closure: the body is then compiled into each
/// [`vectorized!`] variant instead of being called from it at the baseline instruction set.
macro_rules! for_each_row {
    ($g:expr, |$r:ident, $n:ident, $i:ident, $row:ident, $v:ident, [$j0:ident, $j1:ident]| $body:block) => {{
        let g: &Geometry = $g;
        let [kh, kw] = g.kernel;
        let [h, w] = g.input;
        for c in 0..g.channels {
            for u in 0..kh {
                let (i0, i1) = g.valid(0, u);
                for $v in 0..kw {
                    let ($j0, $j1) = g.valid(1, $v);
                    let $r = (c * kh + u) * kw + $v;
                    for $n in 0..g.batch {
                        for $i in i0..i1 {
                            let y = $i * g.stride[0] + u - g.padding[0].0;
                            let $row = (($n * g.channels + c) * h + y) * w;
                            $body
                        }
                    }
                }
            }
        }
    }};
}

vectorized! {
    /// The patch matrix `X[K, Q]` of the NCHW input `x` (row-major; 0 where a patch reads the
    /// padding).
    pub fn im2col / im2col_at(g: &Geometry, x: &[f32]) -> Vec<f32> {
        let (q, p, ow) = (g.columns(), g.positions(), g.output[1]);
        let (sw, left) = (g.stride[1], g.padding[1].0);
        let padded = g.padding.iter().any(|&(a, b)| a + b > 0);
        // Without padding every element is written below: skip the zero fill.
        let mut cols = if padded {
            vec![0.0f32; g.patch() * q]
        } else {
            Vec::with_capacity(g.patch() * q)
        };
        for_each_row!(g, |r, n, i, row, v, [j0, j1]| {
            let at = |j: usize| row + j * sw + v - left;
            if !padded {
                if sw == 1 {
                    append_row(&mut cols, &x[at(0)..][..ow]);
                } else {
                    cols.extend((0..ow).map(|j| x[at(j)]));
                }
            } else if j0 < j1 {
                let dst = &mut cols[r * q + n * p + i * ow..][..ow];
                for j in j0..j1 {
                    dst[j] = x[at(j)];
                }
            }
        });
        cols
    }
}

/// `out.extend_from_slice(src)`, for the short rows of im2col (the tutorial's are 24 and 8
/// elements): a row shorter than [`SHORT`] is copied as its binary decomposition into
/// fixed-size pieces (16, 8, 4, 2, 1 elements), each an inline vector move, with no loop the
/// compiler could turn back into a `memcpy` call; `extend_from_slice` called `memcpy` for
/// every row, and the calls were a twentieth of a training profile. Longer rows (and an `out`
/// without room) take `extend_from_slice`.
#[inline(always)]
fn append_row(out: &mut Vec<f32>, src: &[f32]) {
    let (start, n) = (out.len(), src.len());
    if n >= SHORT || out.capacity() - start < n {
        out.extend_from_slice(src);
        return;
    }
    let dst = &mut out.spare_capacity_mut()[..n];
    let mut at = 0;
    piece::<16>(dst, src, &mut at);
    piece::<8>(dst, src, &mut at);
    piece::<4>(dst, src, &mut at);
    piece::<2>(dst, src, &mut at);
    piece::<1>(dst, src, &mut at);
    // SAFETY: the pieces wrote `dst[0..n]` (n < 32 is the sum of the pieces taken), the `n`
    // elements after `start`.
    unsafe { out.set_len(start + n) };
}

/// Rows of at least this many elements are appended by `extend_from_slice` ([`append_row`]).
const SHORT: usize = 32;

/// Copies `src[*at..][..B]` to `dst[*at..]` and advances `at`, when `B` elements remain.
#[inline(always)]
fn piece<const B: usize>(dst: &mut [MaybeUninit<f32>], src: &[f32], at: &mut usize) {
    if src.len() - *at >= B {
        let s: &[f32; B] = src[*at..][..B].try_into().expect("B elements");
        let d: &mut [MaybeUninit<f32>; B] = (&mut dst[*at..][..B]).try_into().expect("B elements");
        *d = s.map(MaybeUninit::new);
        *at += B;
    }
}

vectorized! {
    /// The NCHW input gradient from the patch-matrix gradient `dcols[K, Q]`: the adjoint of
    /// [`im2col`], each entry added to the pixel it was read from.
    pub fn col2im / col2im_at(g: &Geometry, dcols: &[f32]) -> Vec<f32> {
        let (q, p, ow) = (g.columns(), g.positions(), g.output[1]);
        let (sw, left) = (g.stride[1], g.padding[1].0);
        let mut dx = vec![0.0f32; g.batch * g.channels * g.input[0] * g.input[1]];
        for_each_row!(g, |r, n, i, row, v, [j0, j1]| {
            if j0 >= j1 {
                continue;
            }
            let src = &dcols[r * q + n * p + i * ow..][..ow];
            let at = |j: usize| row + j * sw + v - left;
            if sw == 1 {
                for (d, s) in dx[at(j0)..][..j1 - j0].iter_mut().zip(&src[j0..j1]) {
                    *d += s;
                }
            } else {
                for j in j0..j1 {
                    dx[at(j)] += src[j];
                }
            }
        });
        dx
    }
}

/// The convolution's output `y[N, O, OH, OW]` from the patch matrix: `W · X`, bias added.
pub fn forward(g: &Geometry, cols: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    from_columns(g, &forward_columns(g, cols, w), bias)
}

/// `Y[O, Q] = W · X`, the output without bias with the batch in its columns: image `n`'s
/// channel `o` is the plane `Y[o, n·OH·OW ..][.. OH·OW]`.
pub fn forward_columns(g: &Geometry, cols: &[f32], w: &[f32]) -> Vec<f32> {
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    product([o, q, k], [q, 1], (w, [k, 1]), (cols, [q, 1]))
}

vectorized! {
    /// `G[O, Q]`, the output gradient `grad[N, O, OH, OW]` with the batch moved into the columns.
    fn to_columns / to_columns_at(g: &Geometry, grad: &[f32]) -> Vec<f32> {
        let (o, p, q) = (g.out_channels, g.positions(), g.columns());
        let mut gq = Vec::with_capacity(o * q);
        for oc in 0..o {
            for image in grad.chunks_exact(o * p) {
                gq.extend_from_slice(&image[oc * p..][..p]);
            }
        }
        gq
    }
}

vectorized! {
    /// `Gᵀ[Q, O]`: the output gradient with the channels innermost (each image's `[O, P]` block
    /// transposed).
    fn to_rows / to_rows_at(g: &Geometry, grad: &[f32]) -> Vec<f32> {
        let (o, p) = (g.out_channels, g.positions());
        let mut gt = vec![0.0f32; g.columns() * o];
        for (image, rows) in grad.chunks_exact(o * p).zip(gt.chunks_exact_mut(p * o)) {
            for (oc, plane) in image.chunks_exact(p).enumerate() {
                for (pos, v) in plane.iter().enumerate() {
                    rows[pos * o + oc] = *v;
                }
            }
        }
        gt
    }
}

vectorized! {
    /// The NCHW output from `Y[O, Q]`, with `bias[o]` added to channel `o`.
    fn from_columns / from_columns_at(g: &Geometry, yq: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
        let (o, p, q) = (g.out_channels, g.positions(), g.columns());
        let mut y = Vec::with_capacity(g.batch * o * p);
        for n in 0..g.batch {
            for oc in 0..o {
                let b = bias.map_or(0.0, |b| b[oc]);
                y.extend(yq[oc * q + n * p..][..p].iter().map(|s| s + b));
            }
        }
        y
    }
}

/// `∂L/∂W[O, K] = G · Xᵀ` for the NCHW output gradient `grad`.
///
/// The product is formed as `∂L/∂Wᵀ[K, O]` with `Gᵀ` as its left factor: the `gemm` crate
/// packs a left factor whose summed index is innermost element by element (a fifth of the
/// training time with `G` itself), and `Gᵀ` is the cheap one to lay out.
pub fn weight_grad(g: &Geometry, grad: &[f32], cols: &[f32]) -> Vec<f32> {
    weight_grad_rows(g, &to_rows(g, grad), cols)
}

/// `∂L/∂W[O, K] = G · Xᵀ` from `Gᵀ[Q, O]`, the output gradient with the channels innermost
/// (see [`weight_grad`]).
pub fn weight_grad_rows(g: &Geometry, gt: &[f32], cols: &[f32]) -> Vec<f32> {
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    // dwt[r, o] (column-major as O×K: element (o, r) at r·O + o) = Σ_q Gᵀ[q, o] X[r, q]
    let dwt = product([o, k, q], [1, o], (gt, [1, o]), (cols, [1, q]));
    from_transposed(g, &dwt)
}

vectorized! {
    /// `∂L/∂W[O, K]` from its transpose `dwt[K, O]`.
    fn from_transposed / from_transposed_at(g: &Geometry, dwt: &[f32]) -> Vec<f32> {
        let (o, k) = (g.out_channels, g.patch());
        let mut dw = vec![0.0f32; o * k];
        for (r, row) in dwt.chunks_exact(o).enumerate() {
            for (oc, v) in row.iter().enumerate() {
                dw[oc * k + r] = *v;
            }
        }
        dw
    }
}

vectorized! {
    /// `∂L/∂b[o] = Σ_{n, p} grad[n, o, p]` (each image's plane summed, then the images in order).
    pub fn bias_grad / bias_grad_at(g: &Geometry, grad: &[f32]) -> Vec<f32> {
        let (o, p) = (g.out_channels, g.positions());
        let mut db = vec![0.0f32; o];
        for image in grad.chunks_exact(o * p) {
            for (d, plane) in db.iter_mut().zip(image.chunks_exact(p)) {
                *d += lane_sum(plane);
            }
        }
        db
    }
}

/// `Σ values`, in [`LANES`] running sums (so that it vectorizes) added up at the end; the
/// order depends only on the length.
#[inline(always)]
pub(crate) fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (l, v) in lanes.iter_mut().zip(chunk) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Running sums of [`lane_sum`].
const LANES: usize = 16;

/// `∂L/∂x` (NCHW) for the NCHW output gradient `grad`: `Wᵀ · G`, then [`col2im`].
pub fn input_grad(g: &Geometry, grad: &[f32], w: &[f32]) -> Vec<f32> {
    input_grad_columns(g, &to_columns(g, grad), w)
}

/// `∂L/∂x` (NCHW) from `G[O, Q]`, the output gradient with the batch in its columns (see
/// [`input_grad`]).
pub fn input_grad_columns(g: &Geometry, gq: &[f32], w: &[f32]) -> Vec<f32> {
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    let dcols = product([k, q, o], [q, 1], (w, [1, k]), (gq, [q, 1]));
    col2im(g, &dcols)
}

/// Work (multiply-adds) above which a product runs on rayon's threads (as burn-flex does),
/// unless it is called from one of them.
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `lhs[m×k] · rhs[k×n]` as a new `m×n` matrix laid out with `[row, column]` strides
/// `strides`, row-major (`[n, 1]`) or column-major (`[1, m]`): written by the product
/// without being zero-filled first.
fn product(
    [m, n, k]: [usize; 3],
    strides: [usize; 2],
    lhs: (&[f32], [usize; 2]),
    rhs: (&[f32], [usize; 2]),
) -> Vec<f32> {
    assert!(
        strides == [n, 1] || strides == [1, m],
        "a product's matrix fills its vector"
    );
    let mut dst = Vec::with_capacity(m * n);
    gemm([m, n, k], (dst.spare_capacity_mut(), strides), lhs, rhs);
    // SAFETY: `gemm` (which does not read `dst`) wrote every element of the `m×n` matrix,
    // and with these strides its elements are exactly the indices `0..m·n`.
    unsafe { dst.set_len(m * n) };
    dst
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, each matrix a slice with its `[row, column]` strides;
/// `dst` is only written.
///
/// # Panics
/// If a matrix does not fit its slice (a bug in the callers above, never bad user input:
/// every size comes from one checked [`Geometry`]).
fn gemm(
    [m, n, k]: [usize; 3],
    (dst, ds): (&mut [MaybeUninit<f32>], [usize; 2]),
    (lhs, ls): (&[f32], [usize; 2]),
    (rhs, rs): (&[f32], [usize; 2]),
) {
    let fits = |len: usize, rows: usize, cols: usize, [r, c]: [usize; 2]| {
        rows == 0 || cols == 0 || (rows - 1) * r + (cols - 1) * c < len
    };
    assert!(
        fits(dst.len(), m, n, ds) && fits(lhs.len(), m, k, ls) && fits(rhs.len(), k, n, rs),
        "gemm operands do not fit their slices"
    );
    // Inside a data-parallel shard (already on one of rayon's threads) the shards fill the
    // cores; a product splitting itself further only adds scheduling.
    let sharded = rayon::current_thread_index().is_some();
    let parallelism = if m * n * k >= PARALLEL_WORK && !sharded && rayon::current_num_threads() > 1
    {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let s = |x: usize| x as isize;
    // SAFETY: the assert above proves every element the product touches lies inside its
    // slice (`dst` may be uninitialized: with `read_dst` false the product only writes it);
    // `dst` is borrowed mutably and so aliases neither operand; strides are
    // non-negative and fit `isize` since they index allocated slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            s(ds[1]),
            s(ds[0]),
            false,
            lhs.as_ptr(),
            s(ls[1]),
            s(ls[0]),
            rhs.as_ptr(),
            s(rs[1]),
            s(rs[0]),
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::Level;

    /// The private layout loops give the portable loop's bits at every level (the public
    /// ones are checked in `tests/simd.rs`).
    #[test]
    fn layout_loops_are_bit_identical_at_every_level() {
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (x, w) in [
            ([64, 1, 28, 28], [20, 1, 5, 5]),
            ([5, 3, 9, 7], [7, 3, 2, 3]),
        ] {
            let g = Geometry::new(x, w, [1, 1], [(0, 0), (0, 0)]).unwrap();
            let n = g.out_channels * g.columns();
            let grad: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.37 - 2.0).collect();
            let bias: Vec<f32> = (0..g.out_channels).map(|o| o as f32 * -0.5).collect();
            let dwt = &grad[..g.out_channels * g.patch()];
            for level in [Level::Portable, Level::Avx512] {
                let portable = Level::Portable;
                assert_eq!(
                    bits(to_columns_at(level, &g, &grad)),
                    bits(to_columns_at(portable, &g, &grad))
                );
                assert_eq!(
                    bits(to_rows_at(level, &g, &grad)),
                    bits(to_rows_at(portable, &g, &grad))
                );
                assert_eq!(
                    bits(from_columns_at(level, &g, &grad, Some(&bias))),
                    bits(from_columns_at(portable, &g, &grad, Some(&bias)))
                );
                assert_eq!(
                    bits(from_transposed_at(level, &g, dwt)),
                    bits(from_transposed_at(portable, &g, dwt))
                );
            }
        }
    }
}
