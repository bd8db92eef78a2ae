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
    if x.dtype() != DType::F32 {
        return Err(Unsupported::NotF32);
    }
    plan_shape(pool, x.dims())
}

/// The geometry of `pool` applied to an `f32` tensor of shape `[n, c, h, w]` when the fused
/// pooling supports it.
pub fn plan_shape(pool: &MaxPool2d, [n, c, h, w]: [usize; 4]) -> Result<PoolGeometry, Unsupported> {
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

vectorized! {
    /// The pooled planes `y[N·C, OH, OW]` (ReLU applied when `fuse_relu`).
    pub fn forward / forward_at(g: &PoolGeometry, x: &[f32], fuse_relu: bool) -> Vec<f32> {
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let (mut y, mut rows) = (vec![0.0f32; g.planes * oh * ow], Rows::new(g));
        for (plane, out) in x.chunks_exact(h * w).zip(y.chunks_exact_mut(oh * ow)) {
            forward_plane(g, plane, |m| m, fuse_relu, &mut rows, out);
        }
        y
    }
}

/// Buffers of [`forward_plane`], one input or output row long.
pub(crate) struct Rows {
    column: Vec<f32>,
    nan: Vec<bool>,
    max: Vec<f32>,
    any: Vec<bool>,
}

impl Rows {
    /// Buffers for planes of `g`.
    pub(crate) fn new(g: &PoolGeometry) -> Self {
        let ([_, w], [_, ow]) = (g.input, g.output);
        Self {
            column: vec![0.0; w],
            nan: vec![false; w],
            max: vec![0.0; ow],
            any: vec![false; ow],
        }
    }
}

/// Pools `plane` into `out` (`OH·OW`): each window's maximum `m`, then `bias(m)` (the
/// identity, or `m + b` for a convolution's bias `b`: `max(e) + b = max(e + b)`, rounding
/// being monotone), then ReLU when `fuse_relu`. `bias` is a closure so that each form
/// compiles to its own branch-free loop.
///
/// 2×2 windows with stride 2 (the tutorial's) are read directly, window by window. Other
/// windows, per output row: the maximum over the window's rows of every input column
/// (contiguous, so it vectorizes), then over each window's columns. Branch-free: `f32::max`,
/// NaNs tracked apart and OR-ed in, integer masks (the data would mispredict branches half
/// the time).
#[inline(always)]
pub(crate) fn forward_plane(
    g: &PoolGeometry,
    plane: &[f32],
    bias: impl Fn(f32) -> f32 + Copy,
    fuse_relu: bool,
    rows: &mut Rows,
    out: &mut [f32],
) {
    let ([_, w], [kh, kw], [sh, sw], [oh, ow]) = (g.input, g.kernel, g.stride, g.output);
    let out_rows = out.chunks_exact_mut(ow).take(oh);
    if [kh, kw, sh, sw] == [2; 4] {
        for (i, out) in out_rows.enumerate() {
            let (top, bottom) = plane[2 * i * w..][..2 * w].split_at(w);
            let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
            for (o, (t, b)) in out.iter_mut().zip(windows) {
                let m = t[0].max(t[1]).max(b[0].max(b[1]));
                let nan = t[0].is_nan() | t[1].is_nan() | b[0].is_nan() | b[1].is_nan();
                *o = pooled(bias(m), nan, fuse_relu);
            }
        }
        return;
    }
    let Rows {
        column,
        nan,
        max,
        any,
    } = rows;
    for (i, out) in out_rows.enumerate() {
        column.fill(f32::NEG_INFINITY);
        nan.fill(false);
        for row in plane[i * sh * w..][..kh * w].chunks_exact(w) {
            for ((c, n), &e) in column.iter_mut().zip(nan.iter_mut()).zip(row) {
                *c = c.max(e);
                *n |= e.is_nan();
            }
        }
        window_maxima(column, nan, [kw, sw], max, any);
        for ((o, &m), &any_nan) in out.iter_mut().zip(max.iter()).zip(any.iter()) {
            *o = pooled(bias(m), any_nan, fuse_relu);
        }
    }
}

/// A window's output from its (biased) maximum `m` (`f32::max` ignores NaNs) and whether it
/// holds a NaN: NaN if it does, else `m`, or `relu(m)` when `fuse_relu`; branch-free.
#[inline(always)]
fn pooled(m: f32, any_nan: bool, fuse_relu: bool) -> f32 {
    let any_nan = u32::from(any_nan);
    let m = m.to_bits() | (QUIET_NAN & any_nan.wrapping_neg());
    let keep = u32::from(!fuse_relu | (f32::from_bits(m) > 0.0) | (any_nan != 0));
    f32::from_bits(m & keep.wrapping_neg())
}

vectorized! {
    /// `∂L/∂x` from the input `x`, the output `y` and its gradient: each output's gradient added
    /// to its window's first entry equal to `y` (none where, fused, `y` is 0, or where the window
    /// holds a NaN).
    pub fn backward / backward_at(
        g: &PoolGeometry,
        x: &[f32],
        y: &[f32],
        grad: &[f32],
        fuse_relu: bool,
    ) -> Vec<f32> {
        let ([h, w], [oh, ow]) = (g.input, g.output);
        let mut scratch = BackwardScratch::new(g);
        let mut dx = vec![0.0f32; g.planes * h * w];
        for (p, dx) in dx.chunks_exact_mut(h * w).enumerate() {
            let at = p * oh * ow..(p + 1) * oh * ow;
            let planes = (&x[p * h * w..][..h * w], &y[at.clone()], &grad[at]);
            backward_plane(g, planes, |e| e, fuse_relu, &mut scratch, dx);
        }
        dx
    }
}

/// Planes narrower than this (one AVX-512 register of `f32`) take [`backward_plane`]'s
/// window-by-window loop for 2×2 windows (on the tutorial's 8-wide second pooling it took half
/// the time of the row loop; on the 24-wide first one, 1.2 times as long).
const NARROW: usize = 16;

/// Buffers of [`backward_plane`].
pub(crate) struct BackwardScratch {
    /// The window entries' offsets from the window's corner, in window order.
    offsets: Vec<usize>,
    /// Per window of an output row: whether an entry so far equals the output.
    taken: Vec<bool>,
    /// Per window of an output row: the gradient it passes on.
    flow: Vec<f32>,
}

impl BackwardScratch {
    /// Buffers for planes of `g`.
    pub(crate) fn new(g: &PoolGeometry) -> Self {
        let ([kh, kw], w, ow) = (g.kernel, g.input[1], g.output[1]);
        Self {
            offsets: (0..kh)
                .flat_map(|u| (0..kw).map(move |v| u * w + v))
                .collect(),
            taken: vec![false; ow],
            flow: vec![0.0; ow],
        }
    }
}

/// One plane's `∂L/∂x` into `dx` (the whole plane is written): each output's gradient goes to
/// its window's first entry `e` with `bias(e) = y`, as [`forward_plane`] computed `y`.
///
/// `planes` holds the plane's input, output and output gradient. Where windows tile the plane
/// (stride = window, the usual 2×2) every input element lies in at most one window, so `dx`
/// is written once, with the first equal entry receiving `0.0 + d` (the sum a scatter into
/// zeros forms, so `-0.0` becomes `0.0`) and the others `0.0`: window by window for 2×2
/// windows on planes narrower than [`NARROW`], row by row otherwise ([`first_maxima_row`],
/// which vectorizes along the row but costs more per row). Otherwise `dx` is zeroed and the
/// gradient added to the first entry of a mask of equal entries (its lowest bit).
#[inline(always)]
pub(crate) fn backward_plane(
    g: &PoolGeometry,
    (x, y, grad): (&[f32], &[f32], &[f32]),
    bias: impl Fn(f32) -> f32 + Copy,
    fuse_relu: bool,
    scratch: &mut BackwardScratch,
    dx: &mut [f32],
) {
    let ([_, w], [kh, kw], [sh, sw], [oh, ow]) = (g.input, g.kernel, g.stride, g.output);
    if [kh, kw] != [sh, sw] {
        dx.fill(0.0);
        let offsets = &scratch.offsets;
        for (at, corner) in
            (0..oh).flat_map(|i| (0..ow).map(move |j| (i * ow + j, i * sh * w + j * sw)))
        {
            let window = &x[corner..];
            let mut equal = 0u64;
            for (k, &o) in offsets.iter().enumerate() {
                equal |= u64::from(bias(window[o]) == y[at]) << k;
            }
            let flows = u32::from((!fuse_relu | (y[at] != 0.0)) & (equal != 0));
            let first = (equal.trailing_zeros() as usize).min(offsets.len() - 1);
            let d = f32::from_bits(grad[at].to_bits() & flows.wrapping_neg());
            dx[corner + offsets[first]] += d;
        }
        return;
    }
    if [kh, kw] == [2, 2] && w < NARROW {
        for i in 0..oh {
            let (top, bottom) = x[2 * i * w..][..2 * w].split_at(w);
            let (dtop, dbottom) = dx[2 * i * w..][..2 * w].split_at_mut(w);
            let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
            let outs = dtop.chunks_exact_mut(2).zip(dbottom.chunks_exact_mut(2));
            let pooled = y[i * ow..][..ow].iter().zip(&grad[i * ow..][..ow]);
            for (((t, b), (dt, db)), (&y, &g)) in windows.zip(outs).zip(pooled) {
                let flows = u32::from(!fuse_relu | (y != 0.0));
                let f = (0.0 + f32::from_bits(g.to_bits() & flows.wrapping_neg())).to_bits();
                let [e0, e1, e2, e3] = [t[0], t[1], b[0], b[1]].map(|e| bias(e) == y);
                let hits = [e0, e1 & !e0, e2 & !(e0 | e1), e3 & !(e0 | e1 | e2)];
                let [d0, d1, d2, d3] =
                    hits.map(|hit| f32::from_bits(f & u32::from(hit).wrapping_neg()));
                (dt[0], dt[1], db[0], db[1]) = (d0, d1, d2, d3);
            }
            dtop[2 * ow..].fill(0.0);
            dbottom[2 * ow..].fill(0.0);
        }
        dx[2 * oh * w..].fill(0.0);
        return;
    }
    let BackwardScratch { taken, flow, .. } = scratch;
    for i in 0..oh {
        let (y, grad) = (&y[i * ow..][..ow], &grad[i * ow..][..ow]);
        for ((f, &y), &g) in flow.iter_mut().zip(y).zip(grad) {
            let flows = u32::from(!fuse_relu | (y != 0.0));
            *f = 0.0 + f32::from_bits(g.to_bits() & flows.wrapping_neg());
        }
        taken.fill(false);
        let rows = x[i * kh * w..][..kh * w].chunks_exact(w);
        for (row, out) in rows.zip(dx[i * kh * w..][..kh * w].chunks_exact_mut(w)) {
            match kw {
                2 => first_maxima_row(row, y, flow, [2, ow], bias, taken, out),
                _ => first_maxima_row(row, y, flow, [kw, ow], bias, taken, out),
            }
        }
    }
    // Rows below the last window.
    dx[oh * kh * w..].fill(0.0);
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

/// One input row of a tiled [`backward_plane`]: `out[j·kw + v] = flow[j]` where
/// `bias(row[j·kw + v])` is the first entry of window `j` so far equal to `y[j]`, else
/// `0.0` (`0.0` too in the columns right of the last window). `taken[j]` records whether an
/// earlier entry was; the first equal one receives `0.0 + d` (the sum a scatter into zeros
/// forms, so `-0.0` becomes `0.0`). A window holding a NaN has no equal entry: its gradient
/// is dropped.
#[inline(always)]
fn first_maxima_row(
    row: &[f32],
    y: &[f32],
    flow: &[f32],
    [kw, ow]: [usize; 2],
    bias: impl Fn(f32) -> f32,
    taken: &mut [bool],
    out: &mut [f32],
) {
    let windows = row.chunks_exact(kw).zip(out.chunks_exact_mut(kw));
    for (((entries, out), (&y, &f)), t) in windows.zip(y.iter().zip(flow)).zip(taken) {
        for (&e, o) in entries.iter().zip(out) {
            let equal = bias(e) == y;
            let hit = equal & !*t;
            *t |= equal;
            *o = f32::from_bits(f.to_bits() & u32::from(hit).wrapping_neg());
        }
    }
    out[ow * kw..].fill(0.0);
}
