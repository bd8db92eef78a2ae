//! Shape inference and validation: a description ([`super::Architecture`]) lowered to a
//! [`Plan`], the sequence of steps every stage works from. A step is one operation with the
//! batch norm and activation that follow it folded in (`conv2d, batch_norm, relu6` is one
//! step), and its inferred input and output shapes. Errors name the layer by its 1-based
//! position (`5.2` is the second layer of the residual block at position 5).

use super::ArchError;
use super::layer::{BatchNorm, Conv2d, Layer, Linear, Pool, Size2};

/// The shape of one image's tensor between two steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Channels × height × width (NCHW without the batch).
    Image {
        /// Channels.
        channels: usize,
        /// Rows.
        height: usize,
        /// Columns.
        width: usize,
    },
    /// Flat features.
    Features(usize),
}

impl Shape {
    /// Number of elements per image.
    pub fn len(&self) -> usize {
        match *self {
            Self::Image {
                channels,
                height,
                width,
            } => channels * height * width,
            Self::Features(n) => n,
        }
    }

    /// Whether the tensor has no elements (never, in a validated plan).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Image {
                channels,
                height,
                width,
            } => write!(f, "{channels}×{height}×{width}"),
            Self::Features(n) => write!(f, "{n} features"),
        }
    }
}

/// The activation folded into a step's output (its clamp, once quantized).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None: the identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

/// A convolution with its shapes inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `[h, w]`.
    pub kernel: Size2,
    /// Stride `[h, w]`.
    pub stride: Size2,
    /// Padding on each side `[h, w]`.
    pub padding: Size2,
    /// Channel groups.
    pub groups: usize,
    /// Input rows and columns.
    pub input: Size2,
    /// Output rows and columns.
    pub output: Size2,
}

impl ConvGeometry {
    /// Weights per output channel: `(in/groups)·kh·kw`, in (channel, row, column) order.
    pub fn fan_in(&self) -> usize {
        self.in_channels / self.groups * self.kernel.h * self.kernel.w
    }

    /// Weight tensor shape `[out, in/groups, kh, kw]` (OIHW, as PyTorch and Burn).
    pub fn weight_shape(&self) -> [usize; 4] {
        let g = self.in_channels / self.groups;
        [self.out_channels, g, self.kernel.h, self.kernel.w]
    }

    /// Whether every group has one input channel: a depthwise convolution.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.groups > 1
    }
}

/// A pool with its shapes inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Channels (unchanged).
    pub channels: usize,
    /// Window `[h, w]`.
    pub kernel: Size2,
    /// Step `[h, w]`.
    pub stride: Size2,
    /// Input rows and columns.
    pub input: Size2,
    /// Output rows and columns.
    pub output: Size2,
}

/// What a step computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A convolution (weights `[out, in/groups, kh, kw]`).
    Conv2d(ConvGeometry),
    /// A fully connected layer (weights `[out, in]`).
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// Max pooling.
    MaxPool(PoolGeometry),
    /// Average pooling (divides by the window).
    AvgPool(PoolGeometry),
    /// Mean of each channel, a pool whose window is the whole image.
    GlobalAvgPool(PoolGeometry),
    /// `[c, h, w] → [c·h·w]`.
    Flatten,
    /// Dropout (training only).
    Dropout(f64),
    /// `input + body(input)`.
    Residual(Vec<Step>),
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The layer's name: the one in the description, or `<kind>_<path>`
    /// (`conv2d_1`, `residual_5`, `conv2d_5_2`).
    pub name: String,
    /// 1-based position in the description (`5.2`: layer 2 of the block at 5).
    pub path: String,
    /// The operation.
    pub op: Op,
    /// Whether a convolution or linear layer has a bias.
    pub bias: bool,
    /// The batch norm folded into a convolution or linear layer.
    pub batch_norm: Option<BatchNorm>,
    /// The activation folded into the output.
    pub activation: Activation,
    /// Input shape.
    pub input: Shape,
    /// Output shape.
    pub output: Shape,
}

impl Step {
    /// Whether the step computes new values, with output parameters of its own once
    /// quantized (convolutions, linear layers, residual adds): a quantization point. Pools,
    /// flatten and dropout keep their input's parameters.
    pub fn is_quantization_point(&self) -> bool {
        matches!(self.op, Op::Conv2d(_) | Op::Linear { .. } | Op::Residual(_))
    }

    /// Trained parameters (weights, bias, batch norm's γ and β), nested steps included.
    pub fn params(&self) -> usize {
        let bn = |c: usize| if self.batch_norm.is_some() { 2 * c } else { 0 };
        match &self.op {
            Op::Conv2d(g) => {
                g.out_channels * g.fan_in()
                    + usize::from(self.bias) * g.out_channels
                    + bn(g.out_channels)
            }
            Op::Linear {
                in_features,
                out_features,
            } => {
                out_features * in_features
                    + usize::from(self.bias) * out_features
                    + bn(*out_features)
            }
            Op::Residual(body) => body.iter().map(Step::params).sum(),
            _ => 0,
        }
    }

    /// Multiply-accumulates per image of the convolutions and linear layers.
    pub fn macs(&self) -> usize {
        match &self.op {
            Op::Conv2d(g) => g.out_channels * g.output.h * g.output.w * g.fan_in(),
            Op::Linear {
                in_features,
                out_features,
            } => in_features * out_features,
            Op::Residual(body) => body.iter().map(Step::macs).sum(),
            _ => 0,
        }
    }
}

/// A validated network: its input shape and steps; the last step is a linear layer without
/// activation whose outputs are the class logits.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Input shape of one image.
    pub input: Shape,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Number of classes (the last layer's outputs).
    pub fn classes(&self) -> usize {
        self.output().len()
    }

    /// The logits' shape.
    pub fn output(&self) -> Shape {
        self.steps.last().map_or(self.input, |s| s.output)
    }

    /// Trained parameters of the whole network.
    pub fn params(&self) -> usize {
        self.steps.iter().map(Step::params).sum()
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> usize {
        self.steps.iter().map(Step::macs).sum()
    }

    /// Whether each image's training forward pass depends only on that image and the
    /// parameters: false where a batch norm (statistics of the whole batch) or a dropout
    /// (random draws) is in the network. Such a network may train data-parallel.
    pub fn trains_per_image(&self) -> bool {
        self.flat_steps()
            .iter()
            .all(|s| s.batch_norm.is_none() && !matches!(s.op, Op::Dropout(_)))
    }

    /// Every step, nested ones included, in execution order (a residual block's body before
    /// the block's own add).
    pub fn flat_steps(&self) -> Vec<&Step> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a Step>) {
            for step in steps {
                if let Op::Residual(body) = &step.op {
                    walk(body, out);
                }
                out.push(step);
            }
        }
        let mut out = Vec::new();
        walk(&self.steps, &mut out);
        out
    }

    /// The quantization points ([`Step::is_quantization_point`]) in execution order.
    pub fn quantization_points(&self) -> Vec<&Step> {
        self.flat_steps()
            .into_iter()
            .filter(|s| s.is_quantization_point())
            .collect()
    }
}

/// Lowers `layers` (at `prefix`, "" for the top level) from `shape`.
pub(super) fn lower(prefix: &str, layers: &[Layer], input: Shape) -> Result<Vec<Step>, ArchError> {
    let mut steps: Vec<Step> = Vec::new();
    let mut shape = input;
    // The kind of the previous layer in this sequence, for batch norm and activations.
    let mut previous: Option<&'static str> = None;
    for (i, layer) in layers.iter().enumerate() {
        let path = if prefix.is_empty() {
            (i + 1).to_string()
        } else {
            format!("{prefix}.{}", i + 1)
        };
        let fail = |problem: String| ArchError::Layer {
            path: path.clone(),
            kind: layer.kind(),
            problem,
        };
        let default_name = format!("{}_{}", layer.kind(), path.replace('.', "_"));
        match layer {
            Layer::BatchNorm(bn) => {
                let last = steps
                    .last_mut()
                    .filter(|_| matches!(previous, Some("conv2d" | "linear")));
                let Some(last) = last else {
                    return Err(fail("must directly follow a conv2d or linear layer".into()));
                };
                if !(bn.eps.is_finite() && bn.eps > 0.0) {
                    return Err(fail(format!("eps {} must be finite and > 0", bn.eps)));
                }
                last.batch_norm = Some(*bn);
            }
            Layer::Relu | Layer::Relu6 => {
                let last = steps.last_mut().filter(|_| {
                    matches!(
                        previous,
                        Some("conv2d" | "linear" | "batch_norm" | "residual")
                    )
                });
                let Some(last) = last else {
                    return Err(fail(
                        "must directly follow a conv2d, linear, batch_norm or residual layer"
                            .into(),
                    ));
                };
                last.activation = if matches!(layer, Layer::Relu) {
                    Activation::Relu
                } else {
                    Activation::Relu6
                };
            }
            _ => {
                let (op, output, name, bias) = lower_op(layer, shape, &path, &fail)?;
                steps.push(Step {
                    name: name.unwrap_or(default_name),
                    path: path.clone(),
                    op,
                    bias,
                    batch_norm: None,
                    activation: Activation::None,
                    input: shape,
                    output,
                });
                shape = output;
            }
        }
        previous = Some(layer.kind());
    }
    Ok(steps)
}

type Lowered = (Op, Shape, Option<String>, bool);

fn lower_op(
    layer: &Layer,
    shape: Shape,
    path: &str,
    fail: &dyn Fn(String) -> ArchError,
) -> Result<Lowered, ArchError> {
    let image = || match shape {
        Shape::Image {
            channels,
            height,
            width,
        } => Ok((
            channels,
            Size2 {
                h: height,
                w: width,
            },
        )),
        Shape::Features(_) => Err(fail(format!(
            "needs an image input (channels × height × width), its input is {shape}"
        ))),
    };
    Ok(match layer {
        Layer::Conv2d(conv) => {
            let (channels, size) = image()?;
            let g = conv_geometry(conv, channels, size).map_err(fail)?;
            let out = Shape::Image {
                channels: g.out_channels,
                height: g.output.h,
                width: g.output.w,
            };
            (Op::Conv2d(g), out, conv.name.clone(), conv.bias)
        }
        Layer::Linear(Linear {
            name,
            in_features,
            out_features,
            bias,
        }) => {
            let Shape::Features(n) = shape else {
                return Err(fail(format!(
                    "needs flat features, its input is {shape}: add a flatten before it"
                )));
            };
            if let Some(stated) = in_features.filter(|&f| f != n) {
                return Err(fail(format!(
                    "expects {stated} input features, its input has {n}"
                )));
            }
            if *out_features == 0 {
                return Err(fail("out_features must be > 0".into()));
            }
            let op = Op::Linear {
                in_features: n,
                out_features: *out_features,
            };
            (op, Shape::Features(*out_features), name.clone(), *bias)
        }
        Layer::MaxPool(pool) | Layer::AvgPool(pool) => {
            let (channels, size) = image()?;
            let g = pool_geometry(pool, channels, size).map_err(fail)?;
            let out = Shape::Image {
                channels,
                height: g.output.h,
                width: g.output.w,
            };
            let op = if matches!(layer, Layer::MaxPool(_)) {
                Op::MaxPool(g)
            } else {
                Op::AvgPool(g)
            };
            (op, out, None, false)
        }
        Layer::GlobalAvgPool => {
            let (channels, size) = image()?;
            let g = PoolGeometry {
                channels,
                kernel: size,
                stride: size,
                input: size,
                output: Size2::square(1),
            };
            let out = Shape::Image {
                channels,
                height: 1,
                width: 1,
            };
            (Op::GlobalAvgPool(g), out, None, false)
        }
        Layer::Flatten => {
            image()?;
            (Op::Flatten, Shape::Features(shape.len()), None, false)
        }
        Layer::Dropout(d) => {
            if !(0.0..1.0).contains(&d.p) {
                return Err(fail(format!("p = {} must be in [0, 1)", d.p)));
            }
            (Op::Dropout(d.p), shape, None, false)
        }
        Layer::Residual(block) => {
            if block.layers.is_empty() {
                return Err(fail("has no layers".into()));
            }
            let body = lower(path, &block.layers, shape)?;
            let out = body.last().map_or(shape, |s| s.output);
            if out != shape {
                return Err(fail(format!(
                    "its body turns {shape} into {out}; a residual add needs the same shape"
                )));
            }
            (Op::Residual(body), shape, block.name.clone(), false)
        }
        Layer::BatchNorm(_) | Layer::Relu | Layer::Relu6 => {
            unreachable!("folded by `lower`")
        }
    })
}

fn conv_geometry(conv: &Conv2d, channels: usize, input: Size2) -> Result<ConvGeometry, String> {
    let Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
        ..
    } = *conv;
    if let Some(stated) = in_channels.filter(|&c| c != channels) {
        return Err(format!(
            "expects {stated} input channels, its input has {channels}"
        ));
    }
    if out_channels == 0 || groups == 0 {
        return Err(format!(
            "out_channels ({out_channels}) and groups ({groups}) must be > 0"
        ));
    }
    if !channels.is_multiple_of(groups) || !out_channels.is_multiple_of(groups) {
        return Err(format!(
            "groups = {groups} must divide the input channels ({channels}) and out_channels ({out_channels})"
        ));
    }
    let output = window_output(kernel, stride, padding, input)?;
    Ok(ConvGeometry {
        in_channels: channels,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
        input,
        output,
    })
}

fn pool_geometry(pool: &Pool, channels: usize, input: Size2) -> Result<PoolGeometry, String> {
    let stride = pool.stride();
    let output = window_output(pool.kernel, stride, Size2::square(0), input)?;
    Ok(PoolGeometry {
        channels,
        kernel: pool.kernel,
        stride,
        input,
        output,
    })
}

/// Output size `(in + 2p − k)/s + 1` per axis (floor), with every operand checked.
fn window_output(
    kernel: Size2,
    stride: Size2,
    padding: Size2,
    input: Size2,
) -> Result<Size2, String> {
    if kernel.h == 0 || kernel.w == 0 || stride.h == 0 || stride.w == 0 {
        return Err(format!(
            "kernel {}×{} and stride {}×{} must be > 0",
            kernel.h, kernel.w, stride.h, stride.w
        ));
    }
    if padding.h >= kernel.h || padding.w >= kernel.w {
        return Err(format!(
            "padding {}×{} must be smaller than the kernel {}×{} (a window of padding only)",
            padding.h, padding.w, kernel.h, kernel.w
        ));
    }
    let (ph, pw) = (input.h + 2 * padding.h, input.w + 2 * padding.w);
    if kernel.h > ph || kernel.w > pw {
        return Err(format!(
            "kernel {}×{} is larger than its padded input {ph}×{pw}",
            kernel.h, kernel.w
        ));
    }
    Ok(Size2 {
        h: (ph - kernel.h) / stride.h + 1,
        w: (pw - kernel.w) / stride.w + 1,
    })
}
