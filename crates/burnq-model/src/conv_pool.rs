//! A convolution, the ReLU after it and the max pooling after that, as one custom operation
//! of `Autodiff<Flex>` ([`conv_relu_pool`]): the tutorial's `max_pool(relu(conv(x)))` blocks.
//!
//! With `Y[O, Q] = W·X` the convolution's products without bias ([`conv_gemm`]'s notation:
//! `X` the patch matrix, image `n`'s channel `o` the plane `Y[o, n·P ..][.. P]`), the
//! convolution's output is `y[n, o, p] = Y[o, n·P + p] + b[o]`, and each window `w` of a plane
//! pools to `z = relu(max_{e∈w} Y[e] + b[o])` — equal to `relu(max_{e∈w} (Y[e] + b[o]))`
//! because rounding is monotone, so the bias is added once per window, not per element. The
//! backward pass forms the convolution's output gradient `G[o, q] = ∂L/∂y`: `∂L/∂z` at the
//! window's first entry with `Y[e] + b[o] = z` where `z > 0` or NaN, 0 elsewhere (ReLU's
//! gradient, first maximum as Burn takes it, see [`crate::train_pool`]); then
//! `∂L/∂W = G·Xᵀ`, `∂L/∂b[o] = Σ_q G[o, q]`, `∂L/∂x = col2im(Wᵀ·G)`.
//!
//! The numbers are those of [`conv2d`] followed by [`max_pool2d`] with the ReLU fused, bit for
//! bit (the same sums in the same order; only the sign of a pooled zero may differ). What
//! changes is what is stored: the convolution's output and its gradient are never laid out
//! as NCHW tensors (2.9 MB each per batch for the tutorial's first layer). The pooling reads
//! `Y` where the GEMM left it, and its backward pass writes `G` straight into the layouts the
//! gradient GEMMs read — `Gᵀ[Q, O]` for the weight gradient, `G[O, Q]` for the input
//! gradient — summing the bias gradient on the way.
//!
//! [`conv_relu_pool`] takes this path where both [`train_conv::plan`] and
//! [`train_pool::plan_shape`] accept the layers and the tensors live on `Autodiff<Flex>`;
//! otherwise it calls [`conv2d`] and [`max_pool2d`], which fall back to Burn in turn.

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::nn::conv::Conv2d;
use burn::nn::pool::MaxPool2d;
use burn::prelude::*;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops};
use burn_flex::{Flex, FlexTensor};

use crate::conv_gemm::{self, Geometry, lane_sum};
use crate::simd::vectorized;
use crate::train_conv::{
    self, Ad, ConvGrads, Unsupported, conv2d, finish, parent_ids, primitive, values,
};
use crate::train_pool::{
    self, BackwardScratch, PoolGeometry, Rows, backward_plane, forward_plane, max_pool2d,
};

/// `pool.forward(relu(conv.forward(x)))`, as one operation when [`plan`] accepts it and the
/// tensors live on `Autodiff<Flex>`, else as [`conv2d`] and [`max_pool2d`].
///
/// # Shapes
/// - input: `[n, c, h, w]`; output `[n, o, ph, pw]`
pub fn conv_relu_pool(conv: &Conv2d, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    plan(conv, pool, &x)
        .ok()
        .and_then(|(g, pg)| fused(conv, &x, g, pg))
        .unwrap_or_else(|| max_pool2d(pool, conv2d(conv, x), true))
}

/// The geometries of the convolution and of the pooling of its output, when both are
/// supported.
pub fn plan(
    conv: &Conv2d,
    pool: &MaxPool2d,
    x: &Tensor<4>,
) -> Result<(Geometry, PoolGeometry), Unsupported> {
    let g = train_conv::plan(conv, x)?;
    let [oh, ow] = g.output;
    let pg = train_pool::plan_shape(pool, [g.batch, g.out_channels, oh, ow])?;
    Ok((g, pg))
}

/// Runs the fused operation; `None` when a tensor is not on `Autodiff<Flex>`.
fn fused(conv: &Conv2d, x: &Tensor<4>, g: Geometry, pg: PoolGeometry) -> Option<Tensor<4>> {
    let x = primitive(x)?;
    let w = primitive(&conv.weight.val())?;
    let b = match &conv.bias {
        Some(b) => Some(primitive(&b.val())?),
        None => None,
    };
    let cols = conv_gemm::im2col(&g, &values(x.primitive()));
    let yq = conv_gemm::forward_columns(&g, &cols, &values(w.primitive()));
    let bias = b.as_ref().map(|b| values(b.primitive()).to_vec());
    let z = forward(&g, &pg, &yq, bias.as_deref());
    let [ph, pw] = pg.output;
    let z = FlexTensor::from_data(TensorData::new(z, [g.batch, g.out_channels, ph, pw]));
    let saved = Saved {
        geometry: g,
        pool: pg,
        cols: Arc::new(cols),
        yq: Arc::new(yq),
        bias,
        output: z.clone(),
        weight: x.is_tracked().then(|| w.primitive().clone()),
    };
    let out = match b {
        Some(b) => finish(
            ConvPoolBackward.prepare::<NoCheckpointing>([x.node(), w.node(), b.node()]),
            saved,
            z,
        ),
        None => finish(
            ConvPoolBackward.prepare::<NoCheckpointing>([x.node(), w.node()]),
            saved,
            z,
        ),
    };
    Some(Tensor::from_primitive::<Ad>(out))
}

vectorized! {
    /// The pooled output `z[N, O, PH, PW]` (NCHW) from `Y[O, Q]` and the bias.
    pub fn forward / forward_at(
        g: &Geometry,
        pg: &PoolGeometry,
        yq: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (channels, p, q) = (g.out_channels, g.positions(), g.columns());
        let area = pg.output[0] * pg.output[1];
        let mut z = vec![0.0f32; pg.planes * area];
        let mut rows = Rows::new(pg);
        // Channel by channel, so that `Y` is read in order.
        for o in 0..channels {
            for (n, plane) in yq[o * q..][..q].chunks_exact(p).enumerate() {
                let out = &mut z[(n * channels + o) * area..][..area];
                match bias {
                    Some(b) => {
                        let b = b[o];
                        forward_plane(pg, plane, |m| m + b, true, &mut rows, out)
                    }
                    None => forward_plane(pg, plane, |m| m, true, &mut rows, out),
                }
            }
        }
        z
    }
}

/// Which layouts of the convolution's output gradient [`backward`] forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// `Gᵀ[Q, O]`, for the weight gradient.
    pub rows: bool,
    /// `G[O, Q]`, for the input gradient.
    pub columns: bool,
    /// `Σ_q G[o, q]`, the bias gradient.
    pub bias: bool,
}

/// The convolution's output gradient `G` in the layouts asked for ([`Wanted`]).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputGrad {
    /// `Gᵀ[Q, O]`.
    pub rows: Option<Vec<f32>>,
    /// `G[O, Q]`.
    pub columns: Option<Vec<f32>>,
    /// `∂L/∂b[o] = Σ_q G[o, q]`, summed in the order of [`conv_gemm::bias_grad`] (each
    /// image's plane in running lanes, then the images in order).
    pub bias: Option<Vec<f32>>,
}

vectorized! {
    /// `G` from `conv = (Y[O, Q], bias)` and `pooled = (z, dz)`, the pooled output and its
    /// gradient (both NCHW): plane by plane into a buffer (the pooling's backward pass, as
    /// [`train_pool::backward`] computes it), then copied where `wanted` says.
    pub fn backward / backward_at(
        g: &Geometry,
        pg: &PoolGeometry,
        conv: (&[f32], Option<&[f32]>),
        pooled: (&[f32], &[f32]),
        wanted: Wanted,
    ) -> OutputGrad {
        let ((yq, bias), (z, dz)) = (conv, pooled);
        let (o, p, q) = (g.out_channels, g.positions(), g.columns());
        let area = pg.output[0] * pg.output[1];
        let mut rows = Vec::with_capacity(if wanted.rows { q * o } else { 0 });
        let mut columns = Vec::with_capacity(if wanted.columns { o * q } else { 0 });
        let mut db = wanted.bias.then(|| vec![0.0f32; o]);
        let (mut scratch, mut plane) = (BackwardScratch::new(pg), vec![0.0f32; p]);
        {
            let mut rows_out = wanted.rows.then(|| &mut rows.spare_capacity_mut()[..q * o]);
            let mut columns_out =
                wanted.columns.then(|| &mut columns.spare_capacity_mut()[..o * q]);
            for n in 0..g.batch {
                for oc in 0..o {
                    let at = (n * o + oc) * area..(n * o + oc + 1) * area;
                    let planes = (&yq[oc * q + n * p..][..p], &z[at.clone()], &dz[at]);
                    let (scratch, out) = (&mut scratch, plane.as_mut_slice());
                    match bias.map(|b| b[oc]) {
                        Some(b) => backward_plane(pg, planes, |e| e + b, true, scratch, out),
                        None => backward_plane(pg, planes, |e| e, true, scratch, out),
                    }
                    if let Some(out) = rows_out.as_deref_mut() {
                        // Image n's block of Gᵀ: P rows of O.
                        let block = out[n * p * o..][..p * o].chunks_exact_mut(o);
                        for (row, &v) in block.zip(&plane) {
                            row[oc].write(v);
                        }
                    }
                    if let Some(out) = columns_out.as_deref_mut() {
                        write(&mut out[oc * q + n * p..][..p], &plane);
                    }
                    if let Some(db) = db.as_mut() {
                        db[oc] += lane_sum(&plane);
                    }
                }
            }
        }
        // SAFETY: a wanted layout was written at every (image, channel, position): its first
        // `o·q` elements, its whole length.
        unsafe {
            rows.set_len(if wanted.rows { q * o } else { 0 });
            columns.set_len(if wanted.columns { o * q } else { 0 });
        }
        OutputGrad {
            rows: wanted.rows.then_some(rows),
            columns: wanted.columns.then_some(columns),
            bias: db,
        }
    }
}

/// `out = src`, element by element, into possibly uninitialized memory.
#[inline(always)]
fn write(out: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, &s) in out.iter_mut().zip(src) {
        d.write(s);
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct Saved {
    geometry: Geometry,
    pool: PoolGeometry,
    /// The patch matrix `X[K, Q]` of the input.
    cols: Arc<Vec<f32>>,
    /// `Y[O, Q] = W·X`.
    yq: Arc<Vec<f32>>,
    bias: Option<Vec<f32>>,
    /// The pooled output (shared with the graph, not copied).
    output: FlexTensor,
    /// The weights, kept only when the input needs a gradient.
    weight: Option<FlexTensor>,
}

/// The backward step; parents are `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct ConvPoolBackward;

impl<const N: usize> Backward<Flex, N> for ConvPoolBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            geometry: g,
            pool: pg,
            cols,
            yq,
            bias,
            output,
            weight,
        } = ops.state;
        let dz = values(&grads.consume::<Flex>(&ops.node));
        let ids = parent_ids!(ops);
        let [x, w, b] = ids.map(|id| id.is_some());
        let weight = weight.filter(|_| x);
        let wanted = Wanted {
            rows: w,
            columns: weight.is_some(),
            bias: b,
        };
        let conv = (yq.as_slice(), bias.as_deref());
        let grad = backward(&g, &pg, conv, (&values(&output), &dz), wanted);
        let computed = ConvGrads {
            dx: weight
                .zip(grad.columns)
                .map(|(weight, gq)| conv_gemm::input_grad_columns(&g, &gq, &values(&weight))),
            dw: grad
                .rows
                .map(|gt| conv_gemm::weight_grad_rows(&g, &gt, &cols)),
            db: grad.bias,
        };
        computed.register(&g, ids, grads);
    }
}
