//! A 2-D convolution for training on Burn's CPU backend: a custom operation of
//! `Autodiff<Flex>` whose forward pass and three gradients are each one GEMM (plus im2col or
//! col2im), computed by [`crate::conv_gemm`].
//!
//! Burn 0.22's own training convolution computes the weight gradient as a convolution with
//! the batch moved into the channels (kernels as large as the output) and the input gradient
//! as a transposed convolution, through flex kernels tuned for neither shape. Here, with
//! `X` the patch matrix of the input, `G` the output gradient with the batch in its columns:
//! `y = W·X + b`, `∂L/∂W = G·Xᵀ`, `∂L/∂b = Σ_columns G`, `∂L/∂x = col2im(Wᵀ·G)`; the input
//! gradient is skipped when the input needs none (the first layer), and `X` is kept from the
//! forward pass for the weight gradient.
//!
//! [`conv2d`] takes this path when the convolution has one group, no dilation, no `Same`
//! padding and `f32` tensors ([`plan`]; [`Unsupported`] says why not) and every tensor lives
//! on `Autodiff<Flex>` without gradient checkpointing; otherwise it calls Burn's own
//! convolution, so inference, ndarray, wgpu and unusual layers are unchanged.

use std::sync::Arc;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn_autodiff::Autodiff;
use burn_autodiff::NodeId;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind, OpsPrep};
use burn_backend::tensor::FloatTensor;
use burn_flex::{Flex, FlexTensor};

use crate::conv_gemm::{self, Geometry};

/// Burn's CPU backend with autodiff, as `Device::flex().autodiff()` builds it.
pub(crate) type Ad = Autodiff<Flex>;

/// Why [`conv2d`] (or [`crate::train_pool::max_pool2d`]) hands an operation to Burn instead
/// of computing it itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    /// A tensor is not `f32`.
    #[error("a tensor is not f32")]
    NotF32,
    /// Grouped convolution.
    #[error("{0} groups")]
    Groups(usize),
    /// Dilated kernel.
    #[error("dilation {0:?}")]
    Dilation([usize; 2]),
    /// `Same` padding (its amount depends on the input size; no network here uses it).
    #[error("`Same` padding")]
    SamePadding,
    /// The input's shape does not fit the weights (Burn reports the error).
    #[error("input {input:?} does not fit weights {weight:?}")]
    Shapes {
        input: [usize; 4],
        weight: [usize; 4],
    },
    /// Pooling with padding or in ceil mode.
    #[error("padded or ceil-mode pooling")]
    PoolPadding,
    /// The input's planes are smaller than the pooling window, a size is 0, or the window has
    /// more than 64 entries.
    #[error("input {input:?} does not fit pooling window {kernel:?}")]
    PoolShapes {
        input: [usize; 4],
        kernel: [usize; 2],
    },
}

/// `conv.forward(x)`: with the GEMM training convolution when [`plan`] accepts it, else
/// with Burn's convolution.
///
/// # Shapes
/// - input: `[n, c, h, w]`; output `[n, o, oh, ow]`
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    plan(conv, &x)
        .ok()
        .and_then(|geometry| gemm_conv(conv, &x, geometry))
        .unwrap_or_else(|| conv.forward(x))
}

/// The geometry of `conv` applied to `x` when the GEMM convolution supports it.
pub fn plan(conv: &Conv2d, x: &Tensor<4>) -> Result<Geometry, Unsupported> {
    if conv.groups != 1 {
        return Err(Unsupported::Groups(conv.groups));
    }
    if conv.dilation != [1, 1] {
        return Err(Unsupported::Dilation(conv.dilation));
    }
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [(0, 0), (0, 0)],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Same => return Err(Unsupported::SamePadding),
    };
    let weight = conv.weight.val();
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && conv
            .bias
            .as_ref()
            .is_none_or(|b| b.val().dtype() == DType::F32);
    if !f32s {
        return Err(Unsupported::NotF32);
    }
    let (input, weight) = (x.dims(), weight.dims());
    Geometry::new(input, weight, conv.stride, padding).ok_or(Unsupported::Shapes { input, weight })
}

/// The autodiff-flex primitive of `t` (`None` when it lives elsewhere).
pub(crate) fn primitive<const D: usize>(t: &Tensor<D>) -> Option<FloatTensor<Ad>> {
    t.clone().try_into_primitive::<Ad>().ok()
}

/// Runs the GEMM convolution; `None` when a tensor is not on `Autodiff<Flex>`.
fn gemm_conv(conv: &Conv2d, x: &Tensor<4>, g: Geometry) -> Option<Tensor<4>> {
    let x = primitive(x)?;
    let w = primitive(&conv.weight.val())?;
    let b = match &conv.bias {
        Some(b) => Some(primitive(&b.val())?),
        None => None,
    };
    let cols = conv_gemm::im2col(&g, &values(x.primitive()));
    let bias = b.as_ref().map(|b| values(b.primitive()));
    let y = conv_gemm::forward(&g, &cols, &values(w.primitive()), bias.as_deref());
    let [oh, ow] = g.output;
    let y = FlexTensor::from_data(TensorData::new(y, [g.batch, g.out_channels, oh, ow]));
    let saved = Saved {
        geometry: g,
        cols: Arc::new(cols),
        weight: x.is_tracked().then(|| w.primitive().clone()),
    };
    let out = match b {
        Some(b) => finish(
            ConvBackward.prepare([x.node(), w.node(), b.node()]),
            saved,
            y,
        ),
        None => finish(ConvBackward.prepare([x.node(), w.node()]), saved, y),
    };
    Some(Tensor::from_primitive::<Ad>(out))
}

/// Registers an operation with output `y` (with its backward state when a parent needs a
/// gradient).
pub(crate) fn finish<Op, S, const N: usize>(
    prep: OpsPrep<Op, Flex, S, NoCheckpointing, N>,
    saved: S,
    y: FlexTensor,
) -> FloatTensor<Ad>
where
    Op: Backward<Flex, N, State = S>,
    S: Clone + Send + std::fmt::Debug + 'static,
{
    match prep.compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// The `f32` values of a flex tensor in row-major order, borrowed (copied first only when
/// the tensor is a strided view).
pub(crate) fn values(t: &FlexTensor) -> F32s {
    F32s(t.to_contiguous())
}

/// A contiguous `f32` flex tensor, read as a slice.
pub(crate) struct F32s(FlexTensor);

impl std::ops::Deref for F32s {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.0.as_slice::<f32>().expect(
            "the operations' tensors are f32: checked by `plan`, and gradients of f32 outputs are f32",
        )
    }
}

/// What the backward pass needs from the forward pass.
#[derive(Debug, Clone)]
struct Saved {
    geometry: Geometry,
    /// The patch matrix `X[K, Q]` of the input.
    cols: Arc<Vec<f32>>,
    /// The weights, kept only when the input needs a gradient.
    weight: Option<FlexTensor>,
}

/// The backward step; parents are `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct ConvBackward;

impl<const N: usize> Backward<Flex, N> for ConvBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            geometry: g,
            cols,
            weight,
        } = ops.state;
        let grad = values(&grads.consume::<Flex>(&ops.node));
        let ids = parent_ids!(ops);
        let [x, w, b] = ids.map(|id| id.is_some());
        let computed = ConvGrads {
            dx: weight
                .filter(|_| x)
                .map(|weight| conv_gemm::input_grad(&g, &grad, &values(&weight))),
            dw: w.then(|| conv_gemm::weight_grad(&g, &grad, &cols)),
            db: b.then(|| conv_gemm::bias_grad(&g, &grad)),
        };
        computed.register(&g, ids, grads);
    }
}

/// The node ids of a convolution's parents `[x, weight, bias]` in `ops` (`None` for one that
/// needs no gradient or is absent): a macro, as burn-autodiff does not export the nodes' type.
macro_rules! parent_ids {
    ($ops:expr) => {
        [0, 1, 2].map(|i| $ops.parents.get(i).and_then(Option::as_ref).map(|n| n.id))
    };
}
pub(crate) use parent_ids;

/// A convolution's gradients, each computed only where its parent needs it.
#[derive(Debug)]
pub(crate) struct ConvGrads {
    /// `∂L/∂x`, NCHW.
    pub dx: Option<Vec<f32>>,
    /// `∂L/∂W[O, C, KH, KW]`.
    pub dw: Option<Vec<f32>>,
    /// `∂L/∂b[O]`.
    pub db: Option<Vec<f32>>,
}

impl ConvGrads {
    /// Registers each gradient for its parent among `[x, weight, bias]` ([`parent_ids`]).
    pub(crate) fn register(
        self,
        g: &Geometry,
        parents: [Option<NodeId>; 3],
        grads: &mut Gradients,
    ) {
        let [kh, kw] = g.kernel;
        let [h, w] = g.input;
        let shapes = [
            vec![g.batch, g.channels, h, w],
            vec![g.out_channels, g.channels, kh, kw],
            vec![g.out_channels],
        ];
        for ((grad, node), shape) in [self.dx, self.dw, self.db]
            .into_iter()
            .zip(parents)
            .zip(shapes)
        {
            if let (Some(grad), Some(node)) = (grad, node) {
                let grad = FlexTensor::from_data(TensorData::new(grad, shape));
                grads.register::<Flex>(node, grad);
            }
        }
    }
}
