//! Compiling a [`QuantGraph`](crate::QuantGraph)'s ops into the engine's nodes: every layer
//! packed once, in the form its loop reads.

use burnq_arch::arch::{ConvGeometry, Op, PoolGeometry, Step};

use crate::graph::reference::pool_multiplier;
use crate::graph::{QuantAdd, QuantOp};
use crate::kernels::{Im2col, LayerRequant, PackedLayer};
use crate::{LayerKind, QuantError, QuantLayer, QuantParams, Requant};

/// One step, ready to run on a chunk of NHWC (or `[n, features]`) activations.
#[derive(Debug, Clone)]
pub(super) enum Node {
    /// A convolution as im2col rows times a packed GEMM-view layer, one per group.
    Gemm(GemmConv),
    /// A convolution with one input channel per group (depthwise), as a direct loop.
    Depthwise(Depthwise),
    /// A one-group, stride-1, square-kernel convolution and the 2×2, stride-2 max pool that
    /// follows it, run per image on the tutorial [`Engine`](crate::Engine)'s kernels.
    ChwConvPool(Box<ChwConvPool>),
    /// A one-group convolution and the max pool that follows it, of a kind
    /// [`Node::ChwConvPool`] does not take (strided, a kernel or pool of another shape),
    /// fused per image: the GEMM's accumulators are max-pooled, then requantized (exact:
    /// requantization is non-decreasing, `m0 ≥ 0`), fewer requantizations and no codes in
    /// between.
    ConvMaxPool {
        /// The convolution.
        conv: GemmConv,
        /// The pool.
        pool: PoolGeometry,
        /// The layer's requantization, padded to a multiple of eight channels with stages
        /// of `m0 = 0` (so a position's channels never take the scalar tail).
        requant: LayerRequant,
    },
    /// Max pooling on codes.
    MaxPool(PoolGeometry),
    /// Average (or global average) pooling: window sums of `q − Z`, requantized by
    /// [`pool_multiplier`] (one copy per channel).
    AvgPool {
        /// Window geometry.
        g: PoolGeometry,
        /// The input's zero point.
        zero_point: i32,
        /// [`pool_multiplier`] for every channel.
        requant: LayerRequant,
    },
    /// NHWC → the reference's `[c·h·w]` (C, H, W) order.
    Flatten {
        /// Channels.
        channels: usize,
        /// `h·w`.
        positions: usize,
    },
    /// A hidden linear layer, requantized in the GEMM epilogue.
    Linear(PackedLayer),
    /// The last linear layer: accumulators, logits and predictions.
    Logits(PackedLayer),
    /// A residual block: its body, then the add as a table of
    /// [`QuantAdd::apply`]`(skip, body)` at index `skip·256 + body`.
    Residual(Vec<Compiled>, Box<[u8]>),
    /// Dropout.
    Identity,
}

/// A compiled step: its node and its output length per image.
pub(super) type Compiled = (Node, usize);

/// A convolution run as GEMMs; see [`super`].
#[derive(Debug, Clone)]
pub(super) struct GemmConv {
    pub(super) g: ConvGeometry,
    pub(super) pad: u8,
    /// 1×1, stride 1, no padding, one group: the NHWC input is its own im2col matrix.
    pub(super) pointwise: bool,
    /// The GEMM's reduction length: `fan_in`, or for im2col'd convolutions `fan_in` rounded
    /// up to a multiple of 4 (the byte GEMM's group), the extra weights the zero point (offset
    /// 0) and the extra im2col columns code 0, which adds nothing.
    pub(super) k: usize,
    /// One GEMM-view layer per group, its weights in (ky, kx, c) order.
    pub(super) groups: Vec<PackedLayer>,
}

/// A convolution run as the tutorial engine runs its layers; see [`super`].
#[derive(Debug, Clone)]
pub(super) struct ChwConvPool {
    pub(super) g: ConvGeometry,
    pub(super) pad: u8,
    /// The layer as a valid convolution of the padded input (weights in OIHW order, as the
    /// GEMM-view layer holds them).
    pub(super) layer: PackedLayer,
    /// Its im2col plan on the padded input, `h + 2·pad_h` rows of `w' ≥ w + 2·pad_w` codes:
    /// padded on the right too, so that an output row is `out_w` rounded up to a multiple of
    /// 8 positions. Every half panel of eight columns then lies in one row, a run of
    /// consecutive codes, which the SIMD kernels pack in registers; the extra columns are
    /// computed and dropped.
    pub(super) plan: Im2col,
    /// Whether the input is in CHW order (the output of another such node), not NHWC.
    pub(super) chw_in: bool,
    /// Whether the output stays in CHW order (for another such node, or for a flatten, whose
    /// order it is), not NHWC.
    pub(super) chw_out: bool,
}

/// A depthwise convolution; see [`super`].
#[derive(Debug, Clone)]
pub(super) struct Depthwise {
    pub(super) g: ConvGeometry,
    /// `pad − Z_in`.
    pub(super) pad: i16,
    pub(super) zero_point: i32,
    /// `q_w − Z_w[o]` at `[ky·kw + kx][o]`.
    pub(super) weights: Vec<i16>,
    pub(super) bias: Vec<i32>,
    pub(super) requant: LayerRequant,
}

/// Compiles `ops` (aligned with `steps`, starting on grid `grid`); `logits` is the index of
/// the last linear layer among them, if it is at this level.
pub(super) fn compile(
    steps: &[Step],
    ops: &[QuantOp],
    mut grid: QuantParams,
    logits: Option<usize>,
) -> Result<Vec<Compiled>, QuantError> {
    let mut nodes = Vec::with_capacity(ops.len());
    let mut fused = false;
    for (i, (step, op)) in steps.iter().zip(ops).enumerate() {
        if std::mem::take(&mut fused) {
            continue;
        }
        let node = match (op, &step.op) {
            (QuantOp::Conv2d { layer, pad }, Op::Conv2d(g)) => {
                grid = layer.output;
                if g.in_channels / g.groups == 1 && g.groups > 1 {
                    Node::Depthwise(depthwise(layer, g, *pad)?)
                } else {
                    let pool = match (ops.get(i + 1), steps.get(i + 1).map(|s| &s.op)) {
                        (Some(QuantOp::MaxPool), Some(Op::MaxPool(pool))) => Some(pool),
                        _ => None,
                    };
                    if let Some(conv) = pool.and_then(|pool| chw_conv_pool(layer, g, *pad, pool)) {
                        fused = true;
                        nodes.push((
                            Node::ChwConvPool(Box::new(conv?)),
                            steps[i + 1].output.len(),
                        ));
                        continue;
                    }
                    let conv = gemm_conv(layer, g, *pad)?;
                    match pool {
                        Some(pool) if g.groups == 1 => {
                            fused = true;
                            let mut requants: Vec<Requant> = layer.requants().collect();
                            let zero = Requant {
                                m0: 0,
                                shift: 0,
                                output_zero_point: 0,
                                act_min: 0,
                                act_max: 0,
                            };
                            requants.resize(g.out_channels.next_multiple_of(8), zero);
                            let node = Node::ConvMaxPool {
                                conv,
                                pool: *pool,
                                requant: LayerRequant::new(&layer.name, requants)?,
                            };
                            nodes.push((node, steps[i + 1].output.len()));
                            continue;
                        }
                        _ => Node::Gemm(conv),
                    }
                }
            }
            (QuantOp::Linear(layer), Op::Linear { .. }) => {
                grid = layer.output;
                let packed = PackedLayer::new(layer)?;
                if Some(i) == logits {
                    Node::Logits(packed)
                } else {
                    Node::Linear(packed)
                }
            }
            (QuantOp::MaxPool, Op::MaxPool(g)) => Node::MaxPool(*g),
            (QuantOp::AvgPool, Op::AvgPool(g)) | (QuantOp::GlobalAvgPool, Op::GlobalAvgPool(g)) => {
                let r = pool_multiplier(g, grid)?;
                Node::AvgPool {
                    g: *g,
                    zero_point: grid.zero_point(),
                    requant: LayerRequant::new(&step.name, vec![r; g.channels])?,
                }
            }
            (QuantOp::Flatten, Op::Flatten) => match step.input {
                burnq_arch::arch::Shape::Image {
                    channels,
                    height,
                    width,
                } if height * width > 1 => Node::Flatten {
                    channels,
                    positions: height * width,
                },
                _ => Node::Identity,
            },
            (QuantOp::Dropout, _) => Node::Identity,
            (QuantOp::Residual { body, add }, Op::Residual(inner)) => {
                let body = compile(inner, body, grid, None)?;
                grid = add.output;
                Node::Residual(body, add_table(add))
            }
            _ => {
                return Err(QuantError::InvalidValue {
                    what: step.name.clone(),
                    reason: "op does not fit its step".into(),
                });
            }
        };
        nodes.push((node, step.output.len()));
    }
    chain_chw(&mut nodes);
    Ok(nodes)
}

/// Keeps the activations in CHW order from a [`Node::ChwConvPool`] to the next node where
/// that is another one (which then reads CHW) or a flatten (which then has nothing to do): no
/// transposition to NHWC and back in between.
fn chain_chw(nodes: &mut [Compiled]) {
    for i in 1..nodes.len() {
        let (before, after) = nodes.split_at_mut(i);
        let (Node::ChwConvPool(conv), next) = (&mut before[i - 1].0, &mut after[0].0) else {
            continue;
        };
        match next {
            Node::ChwConvPool(next) => next.chw_in = true,
            Node::Flatten { .. } => *next = Node::Identity,
            _ => continue,
        }
        conv.chw_out = true;
    }
}

/// [`QuantAdd::apply`] of every pair of codes.
fn add_table(add: &QuantAdd) -> Box<[u8]> {
    (0..=255u8)
        .flat_map(|a| (0..=255u8).map(move |b| add.apply(a, b)))
        .collect()
}

/// Splits `layer` per group, permuting each row's weights from (c, ky, kx) to (ky, kx, c)
/// order (the im2col rows of NHWC inputs); sums are unchanged, so the results are too.
fn gemm_conv(layer: &QuantLayer, g: &ConvGeometry, pad: u8) -> Result<GemmConv, QuantError> {
    layer.check_shapes()?;
    let (cg, og) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let (kh, kw) = (g.kernel.h, g.kernel.w);
    let fan_in = g.fan_in();
    let one = |s: burnq_arch::arch::Size2| s.h == 1 && s.w == 1;
    let pointwise =
        g.groups == 1 && one(g.kernel) && one(g.stride) && g.padding.h == 0 && g.padding.w == 0;
    let k = if pointwise {
        fan_in
    } else {
        fan_in.next_multiple_of(4)
    };
    let groups = (0..g.groups)
        .map(|gi| {
            let o = gi * og..(gi + 1) * og;
            let mut weights = vec![0; og * k];
            for ((row, src), &z) in weights
                .chunks_exact_mut(k)
                .zip(layer.weights[o.start * fan_in..].chunks_exact(fan_in))
                .zip(&layer.weight_zero_points[o.clone()])
            {
                for c in 0..cg {
                    for t in 0..kh * kw {
                        row[t * cg + c] = src[c * kh * kw + t];
                    }
                }
                row[fan_in..].fill(z as u8);
            }
            let name = if g.groups == 1 {
                layer.name.clone()
            } else {
                format!("{} group {gi}", layer.name)
            };
            PackedLayer::new(&QuantLayer {
                name,
                kind: LayerKind::Linear {
                    in_features: k,
                    out_features: og,
                },
                weights,
                weight_zero_points: layer.weight_zero_points[o.clone()].to_vec(),
                weight_scales: layer.weight_scales[o.clone()].to_vec(),
                bias: layer.bias[o.clone()].to_vec(),
                m0: layer.m0[o.clone()].to_vec(),
                shift: layer.shift[o].to_vec(),
                ..layer.clone()
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(GemmConv {
        g: *g,
        pad,
        pointwise,
        k,
        groups,
    })
}

/// Packs a convolution followed by the max pool `pool` for [`Node::ChwConvPool`], if it is
/// of that kind: one group, stride 1, a square kernel, a 2×2 pool of stride 2.
fn chw_conv_pool(
    layer: &QuantLayer,
    g: &ConvGeometry,
    pad: u8,
    pool: &PoolGeometry,
) -> Option<Result<ChwConvPool, QuantError>> {
    let size = |h, w| burnq_arch::arch::Size2 { h, w };
    let fits = g.groups == 1
        && g.stride == size(1, 1)
        && g.kernel.h == g.kernel.w
        && pool.kernel == size(2, 2)
        && pool.stride == size(2, 2);
    fits.then(|| {
        let layer = PackedLayer::new(&QuantLayer {
            kind: LayerKind::Conv2d {
                in_channels: g.in_channels,
                out_channels: g.out_channels,
                kernel: g.kernel.h,
            },
            ..layer.clone()
        })?;
        let width = g.output.w.next_multiple_of(8) + g.kernel.w - 1;
        let plan = layer.conv_plan(g.input.h + 2 * g.padding.h, width)?;
        Ok(ChwConvPool {
            g: *g,
            pad,
            layer,
            plan,
            chw_in: false,
            chw_out: false,
        })
    })
}

/// Packs a convolution with one input channel per group for the direct loop.
fn depthwise(layer: &QuantLayer, g: &ConvGeometry, pad: u8) -> Result<Depthwise, QuantError> {
    layer.check_shapes()?;
    layer.check_accumulator_bound()?;
    let taps = g.kernel.h * g.kernel.w;
    let out = g.out_channels;
    let mut weights = vec![0; taps * out];
    for o in 0..out {
        let z = layer.weight_zero_points[o];
        for t in 0..taps {
            let off = i32::from(layer.weights[o * taps + t]) - z;
            weights[t * out + o] = i16::try_from(off).map_err(|_| QuantError::InvalidValue {
                what: layer.name.clone(),
                reason: format!("weight zero point {z} outside [0, 255]"),
            })?;
        }
    }
    let zero_point = layer.input.zero_point();
    Ok(Depthwise {
        g: *g,
        pad: (i32::from(pad) - zero_point) as i16,
        zero_point,
        weights,
        bias: layer.bias.clone(),
        requant: LayerRequant::new(&layer.name, layer.requants().collect())?,
    })
}
