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
//! Every sum runs in an order fixed by the shapes and the machine (the `gemm` crate splits
//! work over output tiles, never over the summed index), so results are deterministic.

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
    fn valid(&self, axis: usize, u: usize) -> (usize, usize) {
        let (s, before, size) = (self.stride[axis], self.padding[axis].0, self.input[axis]);
        let first = before.saturating_sub(u).div_ceil(s);
        // a·s + u < before + size  ⇔  a < (before + size − u) / s (rounded up)
        let end = (before + size).saturating_sub(u).div_ceil(s);
        (first.min(self.output[axis]), end.min(self.output[axis]))
    }

    /// Calls `f(r, n, i, row, v, [j0, j1])` for every patch entry `r = (c, u, v)`, image `n`
    /// and output row `i` whose input row is inside the image (in the order of the patch
    /// matrix's elements), with `row` the offset of that input row in the NCHW input and
    /// `j0..j1` ([`Self::valid`]) the output columns `j` whose input column
    /// `j·s_w + v − left` is inside it.
    fn for_each_row(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, [usize; 2])) {
        let [kh, kw] = self.kernel;
        let [h, w] = self.input;
        for c in 0..self.channels {
            for u in 0..kh {
                let (i0, i1) = self.valid(0, u);
                for v in 0..kw {
                    let (j0, j1) = self.valid(1, v);
                    let r = (c * kh + u) * kw + v;
                    for n in 0..self.batch {
                        for i in i0..i1 {
                            let y = i * self.stride[0] + u - self.padding[0].0;
                            f(r, n, i, ((n * self.channels + c) * h + y) * w, v, [j0, j1]);
                        }
                    }
                }
            }
        }
    }
}

/// The patch matrix `X[K, Q]` of the NCHW input `x` (row-major; 0 where a patch reads the
/// padding).
pub fn im2col(g: &Geometry, x: &[f32]) -> Vec<f32> {
    let (q, p, ow) = (g.columns(), g.positions(), g.output[1]);
    let (sw, left) = (g.stride[1], g.padding[1].0);
    let padded = g.padding.iter().any(|&(a, b)| a + b > 0);
    // Without padding every element is written below: skip the zero fill.
    let mut cols = if padded {
        vec![0.0f32; g.patch() * q]
    } else {
        Vec::with_capacity(g.patch() * q)
    };
    g.for_each_row(|r, n, i, row, v, [j0, j1]| {
        let at = |j: usize| row + j * sw + v - left;
        if !padded {
            if sw == 1 {
                cols.extend_from_slice(&x[at(0)..][..ow]);
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

/// The NCHW input gradient from the patch-matrix gradient `dcols[K, Q]`: the adjoint of
/// [`im2col`], each entry added to the pixel it was read from.
pub fn col2im(g: &Geometry, dcols: &[f32]) -> Vec<f32> {
    let (q, p, ow) = (g.columns(), g.positions(), g.output[1]);
    let (sw, left) = (g.stride[1], g.padding[1].0);
    let mut dx = vec![0.0f32; g.batch * g.channels * g.input[0] * g.input[1]];
    g.for_each_row(|r, n, i, row, v, [j0, j1]| {
        if j0 >= j1 {
            return;
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

/// The convolution's output `y[N, O, OH, OW]` from the patch matrix: `W · X`, bias added.
pub fn forward(g: &Geometry, cols: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    let mut yq = vec![0.0f32; o * q];
    gemm([o, q, k], (&mut yq, [q, 1]), (w, [k, 1]), (cols, [q, 1]));
    from_columns(g, &yq, bias)
}

/// `G[O, Q]`, the output gradient `grad[N, O, OH, OW]` with the batch moved into the columns.
fn to_columns(g: &Geometry, grad: &[f32]) -> Vec<f32> {
    let (o, p, q) = (g.out_channels, g.positions(), g.columns());
    let mut gq = vec![0.0f32; o * q];
    for (n, image) in grad.chunks_exact(o * p).enumerate() {
        for (oc, plane) in image.chunks_exact(p).enumerate() {
            gq[oc * q + n * p..][..p].copy_from_slice(plane);
        }
    }
    gq
}

/// `Gᵀ[Q, O]`: the output gradient with the channels innermost (each image's `[O, P]` block
/// transposed).
fn to_rows(g: &Geometry, grad: &[f32]) -> Vec<f32> {
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

/// The NCHW output from `Y[O, Q]`, with `bias[o]` added to channel `o`.
fn from_columns(g: &Geometry, yq: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (o, p, q) = (g.out_channels, g.positions(), g.columns());
    let mut y = vec![0.0f32; g.batch * o * p];
    for (n, image) in y.chunks_exact_mut(o * p).enumerate() {
        for (oc, plane) in image.chunks_exact_mut(p).enumerate() {
            let b = bias.map_or(0.0, |b| b[oc]);
            for (d, s) in plane.iter_mut().zip(&yq[oc * q + n * p..][..p]) {
                *d = s + b;
            }
        }
    }
    y
}

/// `∂L/∂W[O, K] = G · Xᵀ` for the NCHW output gradient `grad`.
///
/// The product is formed as `∂L/∂Wᵀ[K, O]` with `Gᵀ` as its left factor: the `gemm` crate
/// packs a left factor whose summed index is innermost element by element (a fifth of the
/// training time with `G` itself), and `Gᵀ` is the cheap one to lay out.
pub fn weight_grad(g: &Geometry, grad: &[f32], cols: &[f32]) -> Vec<f32> {
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    let gt = to_rows(g, grad);
    let mut dwt = vec![0.0f32; k * o];
    // dwt[r, o] (column-major as O×K: element (o, r) at r·O + o) = Σ_q Gᵀ[q, o] X[r, q]
    gemm([o, k, q], (&mut dwt, [1, o]), (&gt, [1, o]), (cols, [1, q]));
    let mut dw = vec![0.0f32; o * k];
    for (r, row) in dwt.chunks_exact(o).enumerate() {
        for (oc, v) in row.iter().enumerate() {
            dw[oc * k + r] = *v;
        }
    }
    dw
}

/// `∂L/∂b[o] = Σ_{n, p} grad[n, o, p]` (each image's plane summed, then the images in order).
pub fn bias_grad(g: &Geometry, grad: &[f32]) -> Vec<f32> {
    let (o, p) = (g.out_channels, g.positions());
    let mut db = vec![0.0f32; o];
    for image in grad.chunks_exact(o * p) {
        for (d, plane) in db.iter_mut().zip(image.chunks_exact(p)) {
            *d += lane_sum(plane);
        }
    }
    db
}

/// `Σ values`, in [`LANES`] running sums (so that it vectorizes) added up at the end; the
/// order depends only on the length.
fn lane_sum(values: &[f32]) -> f32 {
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
    let (o, k, q) = (g.out_channels, g.patch(), g.columns());
    let gq = to_columns(g, grad);
    let mut dcols = vec![0.0f32; k * q];
    gemm([k, q, o], (&mut dcols, [q, 1]), (w, [1, k]), (&gq, [q, 1]));
    col2im(g, &dcols)
}

/// Work (multiply-adds) above which a product runs on rayon's threads (as burn-flex does),
/// unless it is called from one of them.
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// `dst[m×n] = lhs[m×k] · rhs[k×n]`, each matrix a slice with its `[row, column]` strides.
///
/// # Panics
/// If a matrix does not fit its slice (a bug in the callers above, never bad user input:
/// every size comes from one checked [`Geometry`]).
fn gemm(
    [m, n, k]: [usize; 3],
    (dst, ds): (&mut [f32], [usize; 2]),
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
    // slice; `dst` is borrowed mutably and so aliases neither operand; strides are
    // non-negative and fit `isize` since they index allocated slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
