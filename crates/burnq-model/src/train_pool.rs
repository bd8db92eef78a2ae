//! Max pooling for training on Burn's CPU backend, optionally fused with the ReLU before it:
//! a custom operation of `Autodiff<Flex>` like [`crate::train_conv`].
//!
//! For each window `w` of a plane, with `m = max_{e∈w} x[e]` (NaN if the window holds one):
//! the output is `y = m`, or `y = relu(m) = m if m > 0 or NaN, else 0` when fused — equal to
//! `max_pool(relu(x))` because ReLU is monotone. The backward pass adds `∂L/∂y[w]` to
//! `∂L/∂x[e*]` at the window's first element equal to `y`, and, fused, only where `y` is
//! positive or NaN (ReLU's gradient is 0 elsewhere). That is what Burn's ReLU and max pooling
//! compute, ties included (both take the first maximum), except that the gradient of a window
//! holding a NaN is dropped where Burn sends it to the last NaN (the loss is then NaN and
//! training stops). No index tensor is kept: the backward pass finds `e*` again from the
//! saved input and output. Both passes are branch-free (`f32::max`, integer masks), since
//! the data would mispredict branches half the time: flex's pooling (generic loops, a
//! branch per entry, an `i64` index per output) was a fifth of the training time at 1 thread.
//!
//! [`max_pool2d`] takes this path for unpadded, undilated, floor-mode pooling of `f32`
//! tensors of `Autodiff<Flex>` ([`plan`]); otherwise it calls Burn's pooling (and ReLU).

use burn::nn::PaddingConfig2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::relu;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

use crate::simd::vectorized;
use crate::train_conv::{Ad, Unsupported, primitive, values};

/// The shapes of one pooling, checked by [`plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// `N·C` planes.
    pub planes: usize,
    /// Input height and width.
    pub input: [usize; 2],
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical and horizontal stride.
    pub stride: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
}

/// `pool.forward(relu(x))` when `fuse_relu`, else `pool.forward(x)`: with the fused pooling
/// when [`plan`] accepts it and `x` lives on `Autodiff<Flex>`, else with Burn's operations.
///
/// # Shapes
/// - input: `[n, c, h, w]`; output `[n, c, oh, ow]`
pub fn max_pool2d(pool: &MaxPool2d, x: Tensor<4>, fuse_relu: bool) -> Tensor<4> {
    let burn = |x| pool.forward(if fuse_relu { relu(x) } else { x });
    let [n, c, _, _] = x.dims();
    let Some((geometry, x)) = plan(pool, &x).ok().zip(primitive(&x)) else {
        return burn(x);
    };
    let y = forward(&geometry, &values(x.primitive()), fuse_relu);
    let [oh, ow] = geometry.output;
    let y = FlexTensor::from_data(TensorData::new(y, [n, c, oh, ow]));
    let saved = Saved {
        geometry,
        input: x.primitive().clone(),
        output: y.clone(),
        fuse_relu,
        images: [n, c],
    };
    let out = match PoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(saved, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Ad>(out)
}

/// The geometry of `pool` applied to `x` when the fused pooling supports it.
pub fn plan(pool: &MaxPool2d, x: &Tensor<4>) -> Result<PoolGeometry, Unsupported> {
    if pool.dilation != [1, 1] {
        return Err(Unsupported::Dilation(pool.dilation));
    }
    let unpadded = match pool.padding {
        PaddingConfig2d::Valid => true,
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r] == [0; 4],
        PaddingConfig2d::Same => return Err(Unsupported::SamePadding),
    };
    if !unpadded || pool.ceil_mode {
        return Err(Unsupported::PoolPadding);
    }
    if x.dtype() != DType::F32 {
        return Err(Unsupported::NotF32);
    }
    let [n, c, h, w] = x.dims();
    let ([kh, kw], stride) = (pool.kernel_size, pool.stride);
    if h < kh || w < kw || kh * kw > 64 || [kh, kw].contains(&0) || stride.contains(&0) {
        return Err(Unsupported::PoolShapes {
            input: [n, c, h, w],
            kernel: [kh, kw],
        });
    }
    Ok(PoolGeometry {
        planes: n * c,
        input: [h, w],
        kernel: [kh, kw],
        stride,
        output: [(h - kh) / stride[0] + 1, (w - kw) / stride[1] + 1],
    })
}

/// A quiet NaN's bits: OR-ing them into any `f32` makes it a NaN.
const QUIET_NAN: u32 = 0x7fc0_0000;

/// The offset of each window entry `(u, v)` from the window's corner, in window order.
fn window_offsets(g: &PoolGeometry) -> Vec<usize> {
    let ([kh, kw], w) = (g.kernel, g.input[1]);
    (0..kh)
        .flat_map(|u| (0..kw).map(move |v| u * w + v))
        .collect()
}

vectorized! {
    /// The pooled planes `y[N·C, OH, OW]` (ReLU applied when `fuse_relu`).
    ///
    /// Per output row: the maximum over the window's rows of every input column (contiguous, so
    /// it vectorizes), then over each window's columns. Branch-free: `f32::max`, NaNs tracked
    /// apart and OR-ed in, integer masks (the data would mispredict branches half the time).
    pub fn forward / forward_at(g: &PoolGeometry, x: &[f32], fuse_relu: bool) -> Vec<f32> {
        let ([h, w], [kh, kw], [sh, sw], [oh, ow]) = (g.input, g.kernel, g.stride, g.output);
        let mut y = Vec::with_capacity(g.planes * oh * ow);
        let (mut column, mut nan) = (vec![0.0f32; w], vec![false; w]);
        let (mut max, mut any) = (vec![0.0f32; ow], vec![false; ow]);
        for plane in x.chunks_exact(h * w).take(g.planes) {
            for i in 0..oh {
                column.fill(f32::NEG_INFINITY);
                nan.fill(false);
                for row in plane[i * sh * w..][..kh * w].chunks_exact(w) {
                    for ((c, n), &e) in column.iter_mut().zip(&mut nan).zip(row) {
                        *c = c.max(e);
                        *n |= e.is_nan();
                    }
                }
                // Each window's columns in order, for all windows of the row at once; with the
                // common width 2 a constant, so that the compiler vectorizes it.
                match (kw, sw) {
                    (2, 2) => window_maxima(&column, &nan, [2, 2], &mut max, &mut any),
                    _ => window_maxima(&column, &nan, [kw, sw], &mut max, &mut any),
                }
                y.extend(max.iter().zip(&any).map(|(&m, &any_nan)| {
                    let any_nan = u32::from(any_nan);
                    let m = m.to_bits() | (QUIET_NAN & any_nan.wrapping_neg());
                    let keep = u32::from(!fuse_relu | (f32::from_bits(m) > 0.0) | (any_nan != 0));
                    f32::from_bits(m & keep.wrapping_neg())
                }));
            }
        }
        y
    }
}

vectorized! {
    /// `∂L/∂x` from the input `x`, the output `y` and its gradient: each output's gradient added
    /// to its window's first entry equal to `y` (none where, fused, `y` is 0, or where the window
    /// holds a NaN). The first entry is the lowest bit of a mask of equal entries.
    pub fn backward / backward_at(
        g: &PoolGeometry,
        x: &[f32],
        y: &[f32],
        grad: &[f32],
        fuse_relu: bool,
    ) -> Vec<f32> {
        let ([h, w], [kh, kw], [sh, sw]) = (g.input, g.kernel, g.stride);
        let hw = h * w;
        if [kh, kw] == [sh, sw] {
            return tiled_backward(g, x, y, grad, fuse_relu);
        }
        let offsets = window_offsets(g);
        let mut dx = vec![0.0f32; g.planes * hw];
        for_each_window(g, |at, p, corner| {
            let window = &x[p * hw + corner..];
            let mut equal = 0u64;
            for (k, &o) in offsets.iter().enumerate() {
                equal |= u64::from(window[o] == y[at]) << k;
            }
            let flows = u32::from((!fuse_relu | (y[at] != 0.0)) & (equal != 0));
            let first = (equal.trailing_zeros() as usize).min(offsets.len() - 1);
            let d = f32::from_bits(grad[at].to_bits() & flows.wrapping_neg());
            dx[p * hw + corner + offsets[first]] += d;
        });
        dx
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct Saved {
    geometry: PoolGeometry,
    /// The input and output (shared with the graph, not copied).
    input: FlexTensor,
    output: FlexTensor,
    fuse_relu: bool,
    /// Images and channels of the input.
    images: [usize; 2],
}

/// The backward step of [`max_pool2d`].
#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = values(&grads.consume::<Flex>(&ops.node));
        if let Some(node) = &ops.parents[0] {
            let Saved {
                geometry: g,
                input,
                output,
                fuse_relu,
                images: [n, c],
            } = ops.state;
            let dx = backward(&g, &values(&input), &values(&output), &grad, fuse_relu);
            let [h, w] = g.input;
            let dx = FlexTensor::from_data(TensorData::new(dx, [n, c, h, w]));
            grads.register::<Flex>(node.id, dx);
        }
    }
}

/// Calls `f(at, p, corner)` for every output of every input plane `p`, with `at` the
/// output's index and `corner` the index in the plane of its window's first entry.
#[inline(always)]
fn for_each_window(g: &PoolGeometry, mut f: impl FnMut(usize, usize, usize)) {
    let ([_, w], [sh, sw], [oh, ow]) = (g.input, g.stride, g.output);
    for p in 0..g.planes {
        for i in 0..oh {
            for j in 0..ow {
                f((p * oh + i) * ow + j, p, i * sh * w + j * sw);
            }
        }
    }
}

/// `max[j]`, the maximum of `column` over window `j`'s columns `j·sw .. j·sw + kw` (in
/// order, from `-∞`), and `any[j]`, whether `nan` is set in one of them.
#[inline(always)]
fn window_maxima(
    column: &[f32],
    nan: &[bool],
    [kw, sw]: [usize; 2],
    max: &mut [f32],
    any: &mut [bool],
) {
    let window = |m: &mut f32, a: &mut bool, c: &[f32], n: &[bool]| {
        *m = c.iter().fold(f32::NEG_INFINITY, |m, &c| m.max(c));
        *a = n.iter().fold(false, |a, &n| a | n);
    };
    if kw == sw {
        // Windows side by side: chunks, which the compiler vectorizes without bounds checks.
        let windows = column.chunks_exact(kw).zip(nan.chunks_exact(kw));
        for ((m, a), (c, n)) in max.iter_mut().zip(any).zip(windows) {
            window(m, a, c, n);
        }
    } else {
        for (j, (m, a)) in max.iter_mut().zip(any).enumerate() {
            let columns = j * sw..j * sw + kw;
            window(m, a, &column[columns.clone()], &nan[columns]);
        }
    }
}

/// [`backward`] for windows that tile the plane (stride = window, the usual 2×2): every
/// input element lies in at most one window, so `dx` is written once, row by row and in
/// order, instead of zero-filled and scattered into.
///
/// Per window, `taken` records whether an entry before the current one (in window order)
/// equals the output; the first equal entry receives `0.0 + d` (the sum the scatter forms,
/// so `-0.0` becomes `0.0`), with `d` the output gradient or `0.0` where ReLU's is 0. A
/// window holding a NaN has no equal entry: its gradient is dropped, as in [`backward`].
#[inline(always)]
fn tiled_backward(
    g: &PoolGeometry,
    x: &[f32],
    y: &[f32],
    grad: &[f32],
    fuse_relu: bool,
) -> Vec<f32> {
    let ([h, w], [kh, kw], [oh, ow]) = (g.input, g.kernel, g.output);
    let mut dx = Vec::with_capacity(g.planes * h * w);
    let (mut taken, mut flow) = (vec![false; ow], vec![0.0f32; ow]);
    for (p, plane) in x.chunks_exact(h * w).take(g.planes).enumerate() {
        for i in 0..oh {
            let at = (p * oh + i) * ow;
            let (y, grad) = (&y[at..][..ow], &grad[at..][..ow]);
            for ((f, &y), &g) in flow.iter_mut().zip(y).zip(grad) {
                let flows = u32::from(!fuse_relu | (y != 0.0));
                *f = 0.0 + f32::from_bits(g.to_bits() & flows.wrapping_neg());
            }
            taken.fill(false);
            for row in plane[i * kh * w..][..kh * w].chunks_exact(w) {
                let start = dx.len();
                dx.resize(start + w, 0.0);
                let out = &mut dx[start..];
                match kw {
                    2 => first_maxima_row(row, y, &flow, 2, &mut taken, out),
                    _ => first_maxima_row(row, y, &flow, kw, &mut taken, out),
                }
            }
        }
        // Rows below the last window.
        dx.resize((p + 1) * h * w, 0.0);
    }
    dx
}

/// One input row of [`tiled_backward`]: `out[j·kw + v] = flow[j]` where `row[j·kw + v]` is
/// the first entry of window `j` so far equal to `y[j]`, else `0.0`.
#[inline(always)]
fn first_maxima_row(
    row: &[f32],
    y: &[f32],
    flow: &[f32],
    kw: usize,
    taken: &mut [bool],
    out: &mut [f32],
) {
    let windows = row.chunks_exact(kw).zip(out.chunks_exact_mut(kw));
    for (((entries, out), (&y, &f)), t) in windows.zip(y.iter().zip(flow)).zip(taken) {
        for (&e, o) in entries.iter().zip(out) {
            let equal = e == y;
            let hit = equal & !*t;
            *t |= equal;
            *o = f32::from_bits(f.to_bits() & u32::from(hit).wrapping_neg());
        }
    }
}
