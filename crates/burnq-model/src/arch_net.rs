//! A network built from a description ([`burnq_arch::Plan`]) instead of hard-coded:
//! [`ArchNet`], a `Vec` of [`ArchLayer`]s, one per step of the plan.
//!
//! Each step computes its operation, then its batch norm (trained as batch norm, running
//! statistics at inference), then its activation; a residual step adds its input to its body's
//! output before the activation. The plan's first step, when it is a convolution with padding,
//! pads its input explicitly with [`Normalization::padding_value`] (the value the integer
//! engine pads the folded first layer with) and convolves without padding; every other
//! convolution pads with 0.

use std::collections::BTreeMap;

use burn::module::{Param, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::ops::PadMode;
use burnq_arch::arch::{Activation, BatchNormParams, FloatParams, Op, Plan, Step, StepParams};
use burnq_arch::{ArchError, Normalization};

use crate::export::to_vec;
use crate::model::SEEDED_INIT;

/// A convolution step: the convolution, its batch norm and activation.
#[derive(Module, Debug)]
pub struct ConvStep {
    /// The convolution (without padding when `input_padding` is set).
    pub conv: Conv2d,
    /// The batch norm after it, if any.
    pub batch_norm: Option<BatchNorm>,
    /// The step's name in the plan.
    #[module(skip)]
    pub name: String,
    /// Applied after the batch norm.
    #[module(skip)]
    pub activation: Activation,
    /// Explicit padding of the input `(rows, columns, value)`: the first layer's.
    #[module(skip)]
    pub input_padding: Option<(usize, usize, f32)>,
}

/// A linear step: the layer, its batch norm and activation.
#[derive(Module, Debug)]
pub struct LinearStep {
    /// The fully connected layer.
    pub linear: Linear,
    /// The batch norm after it, if any.
    pub batch_norm: Option<BatchNorm>,
    /// The step's name in the plan.
    #[module(skip)]
    pub name: String,
    /// Applied after the batch norm.
    #[module(skip)]
    pub activation: Activation,
}

/// A parameter-free reshaping step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshape {
    /// The mean of each channel: `[n, c, h, w] → [n, c, 1, 1]`.
    GlobalAvgPool,
    /// `[n, c, h, w] → [n, c·h·w]` in C, H, W order.
    Flatten,
}

/// A global average pool or a flatten.
#[derive(Module, Debug)]
pub struct ReshapeStep {
    /// Which one.
    #[module(skip)]
    pub kind: Reshape,
}

/// A residual block: `activation(input + body(input))`.
#[derive(Module, Debug)]
pub struct ResidualStep {
    /// The body's layers.
    pub body: Vec<ArchLayer>,
    /// The add's name in the plan.
    #[module(skip)]
    pub name: String,
    /// Applied after the add.
    #[module(skip)]
    pub activation: Activation,
}

/// One step of an [`ArchNet`].
#[derive(Module, Debug)]
pub enum ArchLayer {
    /// A convolution (with batch norm and activation).
    Conv(ConvStep),
    /// A fully connected layer (with batch norm and activation).
    Linear(LinearStep),
    /// Max pooling, no padding.
    MaxPool(MaxPool2d),
    /// Average pooling, no padding.
    AvgPool(AvgPool2d),
    /// Global average pool or flatten.
    Reshape(ReshapeStep),
    /// Dropout (training only).
    Dropout(Dropout),
    /// A residual block.
    Residual(ResidualStep),
}

/// The tensor between two steps: images `[n, c, h, w]` or features `[n, f]`.
#[derive(Debug, Clone)]
pub enum Value {
    /// `[n, c, h, w]`.
    Image(Tensor<4>),
    /// `[n, features]`.
    Features(Tensor<2>),
}

impl Value {
    /// The tensor's dimensions.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Image(t) => t.dims().to_vec(),
            Self::Features(t) => t.dims().to_vec(),
        }
    }

    /// The values, row-major.
    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Self::Image(t) => to_vec(t.clone()),
            Self::Features(t) => to_vec(t.clone()),
        }
    }

    /// The `[n, c, h, w]` tensor; panics on features (a validated plan never asks for them
    /// where it needs an image; `step` names the asking step).
    pub fn image(self, step: &str) -> Tensor<4> {
        match self {
            Self::Image(t) => t,
            Self::Features(_) => panic!("step {step} needs an image input (the plan says so)"),
        }
    }

    /// The `[n, features]` tensor, an image flattened in C, H, W order.
    pub fn features(self) -> Tensor<2> {
        match self {
            Self::Features(t) => t,
            Self::Image(t) => t.flatten(1, 3),
        }
    }

    fn map(
        self,
        f4: impl FnOnce(Tensor<4>) -> Tensor<4>,
        f2: impl FnOnce(Tensor<2>) -> Tensor<2>,
    ) -> Self {
        match self {
            Self::Image(t) => Self::Image(f4(t)),
            Self::Features(t) => Self::Features(f2(t)),
        }
    }

    fn add(self, other: Self) -> Self {
        match (self, other) {
            (Self::Image(a), Self::Image(b)) => Self::Image(a + b),
            (Self::Features(a), Self::Features(b)) => Self::Features(a + b),
            _ => panic!("a residual body changed the rank of its input"),
        }
    }
}

/// What [`ArchNet::forward_taps`] returns: the logits and every quantization point's output.
#[derive(Debug, Clone)]
pub struct ArchTaps {
    /// `[n, classes]`.
    pub logits: Tensor<2>,
    /// Each quantization point's output (after batch norm and activation; a residual's after
    /// the add and activation), by step name, in execution order
    /// ([`Plan::quantization_points`]).
    pub points: Vec<(String, Value)>,
}

impl ArchTaps {
    /// The output of the quantization point `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.points.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A sequential CNN built from a [`Plan`].
#[derive(Module, Debug)]
pub struct ArchNet {
    /// One layer per top-level step.
    pub layers: Vec<ArchLayer>,
    /// The plan it was built from.
    #[module(skip)]
    pub plan: Plan,
    /// The input normalization it is trained with (the first layer's padding value).
    #[module(skip)]
    pub normalization: Normalization,
}

/// `activation` applied to `x`: identity, `max(x, 0)` or `min(max(x, 0), 6)`.
pub fn apply_activation<const D: usize>(x: Tensor<D>, activation: Activation) -> Tensor<D> {
    match activation {
        Activation::None => x,
        Activation::Relu => relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

fn batch_norm_of(step: &Step, channels: usize, device: &Device) -> Option<BatchNorm> {
    step.batch_norm.map(|bn| {
        BatchNormConfig::new(channels)
            .with_epsilon(bn.eps)
            .init(device)
    })
}

fn build(steps: &[Step], first_padding: Option<f32>, device: &Device) -> Vec<ArchLayer> {
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| build_step(step, first_padding.filter(|_| i == 0), device))
        .collect()
}

fn build_step(step: &Step, padding_value: Option<f32>, device: &Device) -> ArchLayer {
    match &step.op {
        Op::Conv2d(g) => {
            let (ph, pw) = (g.padding.h, g.padding.w);
            let explicit = padding_value.filter(|_| ph > 0 || pw > 0);
            let padding = if explicit.is_some() {
                PaddingConfig2d::Valid
            } else {
                PaddingConfig2d::Explicit(ph, pw, ph, pw)
            };
            let conv = Conv2dConfig::new([g.in_channels, g.out_channels], [g.kernel.h, g.kernel.w])
                .with_stride([g.stride.h, g.stride.w])
                .with_padding(padding)
                .with_groups(g.groups)
                .with_bias(step.bias)
                .init(device);
            ArchLayer::Conv(ConvStep {
                conv,
                batch_norm: batch_norm_of(step, g.out_channels, device),
                name: step.name.clone(),
                activation: step.activation,
                input_padding: explicit.map(|v| (ph, pw, v)),
            })
        }
        Op::Linear {
            in_features,
            out_features,
        } => ArchLayer::Linear(LinearStep {
            linear: LinearConfig::new(*in_features, *out_features)
                .with_bias(step.bias)
                .init(device),
            batch_norm: batch_norm_of(step, *out_features, device),
            name: step.name.clone(),
            activation: step.activation,
        }),
        Op::MaxPool(p) => ArchLayer::MaxPool(
            MaxPool2dConfig::new([p.kernel.h, p.kernel.w])
                .with_strides([p.stride.h, p.stride.w])
                .init(),
        ),
        Op::AvgPool(p) => ArchLayer::AvgPool(
            AvgPool2dConfig::new([p.kernel.h, p.kernel.w])
                .with_strides([p.stride.h, p.stride.w])
                .init(),
        ),
        Op::GlobalAvgPool(_) => ArchLayer::Reshape(ReshapeStep {
            kind: Reshape::GlobalAvgPool,
        }),
        Op::Flatten => ArchLayer::Reshape(ReshapeStep {
            kind: Reshape::Flatten,
        }),
        Op::Dropout(p) => ArchLayer::Dropout(DropoutConfig::new(*p).init()),
        Op::Residual(body) => ArchLayer::Residual(ResidualStep {
            body: build(body, None, device),
            name: step.name.clone(),
            activation: step.activation,
        }),
    }
}

type TapSink<'a> = Option<&'a mut Vec<(String, Value)>>;

fn run(layers: &[ArchLayer], mut x: Value, mut taps: TapSink<'_>) -> Value {
    for layer in layers {
        x = run_layer(layer, x, taps.as_deref_mut());
    }
    x
}

fn run_layer(layer: &ArchLayer, x: Value, taps: TapSink<'_>) -> Value {
    let (name, y) = match layer {
        ArchLayer::Conv(s) => {
            let mut x = x.image(&s.name);
            if let Some((ph, pw, value)) = s.input_padding {
                x = x.pad([(ph, ph), (pw, pw)], PadMode::Constant(value));
            }
            let mut y = crate::train_conv::conv2d(&s.conv, x);
            if let Some(bn) = &s.batch_norm {
                y = bn.forward(y);
            }
            (&s.name, Value::Image(apply_activation(y, s.activation)))
        }
        ArchLayer::Linear(s) => {
            let mut y = s.linear.forward(x.features());
            if let Some(bn) = &s.batch_norm {
                y = bn.forward(y);
            }
            (&s.name, Value::Features(apply_activation(y, s.activation)))
        }
        ArchLayer::MaxPool(p) => {
            let x = x.image("max_pool");
            return Value::Image(crate::train_pool::max_pool2d(p, x, false));
        }
        ArchLayer::AvgPool(p) => return Value::Image(p.forward(x.image("avg_pool"))),
        ArchLayer::Reshape(r) => {
            return match r.kind {
                Reshape::GlobalAvgPool => {
                    Value::Image(x.image("global_avg_pool").mean_dim(3).mean_dim(2))
                }
                Reshape::Flatten => Value::Features(x.features()),
            };
        }
        ArchLayer::Dropout(d) => return x.map(|t| d.forward(t), |t| d.forward(t)),
        ArchLayer::Residual(s) => {
            let mut taps = taps;
            let body = run(&s.body, x.clone(), taps.as_deref_mut());
            let y = x.add(body).map(
                |t| apply_activation(t, s.activation),
                |t| apply_activation(t, s.activation),
            );
            if let Some(taps) = taps {
                taps.push((s.name.clone(), y.clone()));
            }
            return y;
        }
    };
    if let Some(taps) = taps {
        taps.push((name.clone(), y.clone()));
    }
    y
}

impl ArchNet {
    /// Builds a network for `plan` on `device` from the backend's current RNG state
    /// (PyTorch's default initialization: uniform ±1/√fan_in; batch norm γ = 1, β = 0).
    pub fn init(plan: &Plan, normalization: Normalization, device: &Device) -> Self {
        Self {
            layers: build(&plan.steps, Some(normalization.padding_value()), device),
            plan: plan.clone(),
            normalization,
        }
    }

    /// Seeds `device` with `seed` and draws a fresh network from it: the same seed on the
    /// same backend always gives the same weights.
    pub fn init_seeded(
        plan: &Plan,
        normalization: Normalization,
        seed: u64,
        device: &Device,
    ) -> Self {
        let _guard = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        let net = Self::init(plan, normalization, device);
        // Burn draws parameters lazily, on first use: draw them now, under the lock.
        let _ = net.float_params();
        net
    }

    /// The class logits.
    ///
    /// # Shapes
    /// - input: `[n, c, h, w]` (the plan's input), normalized pixels
    /// - output: `[n, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        run(&self.layers, Value::Image(images), None).features()
    }

    /// The logits and every quantization point's output tensor (see [`ArchTaps`]).
    pub fn forward_taps(&self, images: Tensor<4>) -> ArchTaps {
        let mut points = Vec::new();
        let logits = run(&self.layers, Value::Image(images), Some(&mut points)).features();
        ArchTaps { logits, points }
    }

    /// Every convolution's and linear layer's float parameters by step name (weights OIHW /
    /// `[out, in]`, bias, batch norm's γ, β and running statistics), checked against the plan.
    pub fn float_params(&self) -> Result<FloatParams, ArchError> {
        let mut params = FloatParams::default();
        collect_params(&self.layers, &mut params.layers);
        params.check(&self.plan)?;
        Ok(params)
    }

    /// The network for `plan` with `params` as its parameters (weights OIHW / `[out, in]` as
    /// in [`FloatParams`]; linear weights are transposed to Burn's `[in, out]`), checked
    /// against the plan first ([`FloatParams::check`]: every missing, extra, mis-sized or
    /// non-finite tensor by name). The inverse of [`ArchNet::float_params`].
    pub fn from_float_params(
        plan: &Plan,
        params: &FloatParams,
        normalization: Normalization,
        device: &Device,
    ) -> Result<Self, ArchError> {
        params.check(plan)?;
        let mut net = Self::init(plan, normalization, device);
        let steps: BTreeMap<&str, &Step> = plan
            .flat_steps()
            .into_iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        set_params(&mut net.layers, &steps, params, device);
        Ok(net)
    }
}

fn vector(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

fn set_bn(bn: &mut Option<BatchNorm>, p: &Option<BatchNormParams>, device: &Device) {
    if let (Some(bn), Some(p)) = (bn.as_mut(), p) {
        bn.gamma = Param::from_tensor(vector(&p.gamma, device));
        bn.beta = Param::from_tensor(vector(&p.beta, device));
        bn.running_mean = RunningState::new(vector(&p.mean, device));
        bn.running_var = RunningState::new(vector(&p.var, device));
    }
}

/// Sets every convolution's and linear layer's parameters from `params` (already checked
/// against the plan whose steps are `steps`).
fn set_params(
    layers: &mut [ArchLayer],
    steps: &BTreeMap<&str, &Step>,
    params: &FloatParams,
    device: &Device,
) {
    for layer in layers {
        match layer {
            ArchLayer::Conv(s) => {
                let p = &params.layers[&s.name];
                let Op::Conv2d(g) = &steps[s.name.as_str()].op else {
                    unreachable!("step {} is a convolution", s.name)
                };
                let data = TensorData::new(p.weight.clone(), g.weight_shape());
                s.conv.weight = Param::from_tensor(Tensor::from_data(data, device));
                s.conv.bias = p
                    .bias
                    .as_ref()
                    .map(|b| Param::from_tensor(vector(b, device)));
                set_bn(&mut s.batch_norm, &p.batch_norm, device);
            }
            ArchLayer::Linear(s) => {
                let p = &params.layers[&s.name];
                let Op::Linear {
                    in_features,
                    out_features,
                } = steps[s.name.as_str()].op
                else {
                    unreachable!("step {} is a linear layer", s.name)
                };
                // FloatParams: [out, in]; Burn: [in, out].
                let data = TensorData::new(p.weight.clone(), [out_features, in_features]);
                let weight = Tensor::<2>::from_data(data, device).transpose();
                s.linear.weight = Param::from_tensor(weight);
                s.linear.bias = p
                    .bias
                    .as_ref()
                    .map(|b| Param::from_tensor(vector(b, device)));
                set_bn(&mut s.batch_norm, &p.batch_norm, device);
            }
            ArchLayer::Residual(s) => set_params(&mut s.body, steps, params, device),
            _ => {}
        }
    }
}

fn bn_params(bn: &Option<BatchNorm>) -> Option<BatchNormParams> {
    bn.as_ref().map(|bn| BatchNormParams {
        gamma: to_vec(bn.gamma.val()),
        beta: to_vec(bn.beta.val()),
        mean: to_vec(bn.running_mean.value()),
        var: to_vec(bn.running_var.value()),
    })
}

fn bias_of(bias: &Option<Param<Tensor<1>>>) -> Option<Vec<f32>> {
    bias.as_ref().map(|b| to_vec(b.val()))
}

fn collect_params(layers: &[ArchLayer], out: &mut BTreeMap<String, StepParams>) {
    for layer in layers {
        match layer {
            ArchLayer::Conv(s) => {
                let p = StepParams {
                    weight: to_vec(s.conv.weight.val()),
                    bias: bias_of(&s.conv.bias),
                    batch_norm: bn_params(&s.batch_norm),
                };
                out.insert(s.name.clone(), p);
            }
            ArchLayer::Linear(s) => {
                // Burn stores a linear weight as [in, out]; FloatParams uses [out, in].
                let p = StepParams {
                    weight: to_vec(s.linear.weight.val().transpose()),
                    bias: bias_of(&s.linear.bias),
                    batch_norm: bn_params(&s.batch_norm),
                };
                out.insert(s.name.clone(), p);
            }
            ArchLayer::Residual(s) => collect_params(&s.body, out),
            _ => {}
        }
    }
}
