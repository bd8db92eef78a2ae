//! Quantization-aware training of a described network ([`ArchNet`]): a fake-quantized
//! forward pass ([`ArchQat`]) that computes, value for value, what the integer graph
//! converted from the same weights will compute, and [`crate::run_arch_qat`], which fine-tunes,
//! converts through [`burnq_quant::convert_graph`] (or, with learned step sizes,
//! [`burnq_quant::convert_graph_with_grids`]) and measures both on the test set.
//!
//! Per step, the forward values come from the converter's own functions on the host, the
//! gradients from the same formulas on Burn tensors (straight-through):
//! - **convolution / linear**: batch norm **frozen and folded** (Jacob et al. 2018 §3.2 fold
//!   batch norm into the weights; we freeze its running statistics for the whole
//!   fine-tuning, as the paper does after its first phase, because QAT starts from a converged
//!   float model and the integer model folds those very statistics): `w' = w·γ/√(σ²+ε)`,
//!   `b' = (b − μ)·γ/√(σ²+ε) + β` ([`StepParams::folded`]), then the input normalization for
//!   the first layer ([`fold_normalization`]), which reads raw pixels and pads with the
//!   normalization's padding pixel. The folded weights are fake-quantized on the converter's
//!   grids ([`weight_params`]); the output is mapped to the engine's codes by its accumulator
//!   and fixed-point requantization ([`LayerRequant`]), the activation folded into the clamp;
//!   the last layer's logits are snapped to its accumulators. The accumulators are computed in
//!   integer units (codes minus zero points, exact in `f32` below 2^23 whatever the float
//!   kernels' summation order: `int_sim::exact_accumulators`), not recovered from the
//!   real-unit sums.
//! - **max pool**: on the real values (it commutes with the increasing requantization);
//! - **average pool** and **residual add**: the reference integer operations on the codes
//!   ([`reference::avg_pool`], [`QuantAdd::apply`]);
//! - **dropout**: the identity (it would move values off their grids).
//!
//! Output grids come from EMA ranges of each quantization point, started from a calibration;
//! with learned step sizes ([`ArchQat::with_learned_steps`], [`crate::lsq`]) the weight grids
//! and every output grid but the logits' are learned instead, and the engine's codes of each
//! point reach its step size (and LSQ+'s offset) through the LSQ gradient.
//!
//! A step whose integer parameters cannot be derived (a grid that is no longer valid, a
//! multiplier out of range: training diverged) does not panic: the forward pass records the
//! first such error, typed and naming the point ([`ArchQat::failure`]), and answers with the
//! float network for that batch; [`crate::run_arch_qat`] returns the error.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burnq_arch::Normalization;
use burnq_arch::arch::{Activation, BatchNormParams, Op, Plan, PoolGeometry, Step, StepParams};
use burnq_data::ImageSet;
use burnq_model::arch_net::{ArchLayer, ConvStep, LinearStep, Reshape, Value, apply_activation};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::{EvalResult, evaluate_with};
use burnq_model::export::to_vec;
use burnq_model::training::{Classifier, ForwardMode};
use burnq_model::{ArchNet, Device};
use burnq_quant::convert::fold_normalization;
use burnq_quant::derive::{LayerQuantization, accumulator_scales, output_clamp, weight_params};
use burnq_quant::graph::reference;
use burnq_quant::range::EmaRange;
use burnq_quant::{LayerGrids, PointRanges, QuantAdd, QuantParams, QuantScheme};

use crate::exact::{conv_sums, exact_accumulators, linear_sums};
use crate::int_sim::{LayerRequant, snap, straight_through};
use crate::lsq::{LsqState, StepInit};
use crate::simulated::fake_quantize_channels;
use crate::{QatError, Quantizer};

/// The fake-quantized forward pass of a described network; see the module docs.
#[derive(Debug, Clone)]
pub struct ArchQat {
    /// Model-wide options and each layer's own widths, by step name.
    scheme: QuantScheme,
    norm: Normalization,
    ema_decay: f32,
    ranges: BTreeMap<String, EmaRange>,
    /// Learned step sizes and offsets (LSQ, LSQ+), by layer and point name.
    lsq: Option<LsqState>,
    /// Whether the current forward pass trains (tracks the step sizes' gradients).
    training: bool,
    /// The first error a forward pass met, shared by every clone (evaluation runs on one).
    failure: Arc<Mutex<Option<QatError>>>,
}

/// A tensor between steps with the grid its values lie on.
struct Flow {
    x: Value,
    grid: QuantParams,
    /// The normalization still to fold (into the first convolution or linear layer).
    pending: Option<Normalization>,
}

impl ArchQat {
    /// Starts from the calibrated output ranges `initial` of every quantization point; each
    /// layer on its widths in `scheme` (a residual add's output on the model-wide width, as the
    /// converter puts it).
    pub fn new(
        scheme: QuantScheme,
        norm: Normalization,
        ema_decay: f32,
        initial: &PointRanges,
    ) -> Self {
        let ranges = initial
            .iter()
            .map(|(name, &(min, max))| {
                let mut r = EmaRange::default();
                r.update(min, max, ema_decay);
                (name.clone(), r)
            })
            .collect();
        Self {
            scheme,
            norm,
            ema_decay,
            ranges,
            lsq: None,
            training: false,
            failure: Arc::default(),
        }
    }

    /// The first error a forward pass met (taken: the next call answers `None`), if any.
    pub fn failure(&self) -> Option<QatError> {
        self.failure.lock().ok()?.take()
    }

    /// The same pass with learned step sizes ([`crate::lsq`]; `quantizer` LSQ or LSQ+) for
    /// every layer's weights and every quantization point of `plan` but the logits (not
    /// requantized: predictions come from the accumulators), each started from the point's
    /// starting range: unsigned after ReLU/ReLU6, otherwise symmetric (LSQ) or with a learned
    /// offset (LSQ+); weight step sizes start as `init` says.
    pub fn with_learned_steps(mut self, quantizer: Quantizer, init: StepInit, plan: &Plan) -> Self {
        let points = plan.quantization_points();
        let inner = &points[..points.len().saturating_sub(1)];
        let lsq = inner.iter().fold(LsqState::new(init), |lsq, step| {
            let range = self
                .ranges
                .get(&step.name)
                .map_or((0.0, 0.0), EmaRange::range);
            let relu = step.activation != Activation::None;
            let bits = self.scheme.layer(&step.name).act_bits;
            lsq.with_activation(&step.name, range, bits, quantizer.point_kind(relu))
        });
        self.lsq = Some(lsq);
        self
    }

    /// With learned step sizes, the grids of every quantization point of `plan` to convert
    /// onto ([`convert_graph_with_grids`]): the learned weight and output grids, the logits'
    /// output grid from its range; `None` with min/max grids. Errors naming a point whose
    /// grid is missing (a step size that is no longer a positive normal `f32`).
    pub fn learned_grids(
        &self,
        plan: &Plan,
    ) -> Result<Option<BTreeMap<String, LayerGrids>>, QatError> {
        let Some(lsq) = &self.lsq else {
            return Ok(None);
        };
        let points = plan.quantization_points();
        let logits = points.len() - 1;
        let mut grids = BTreeMap::new();
        for (i, step) in points.into_iter().enumerate() {
            let name = &step.name;
            let options = self.scheme.layer(name);
            let output = if i == logits {
                let range = self.ranges.get(name);
                let (min, max) = range.ok_or_else(|| QatError::NoGrid(name.clone()))?.range();
                let grid = QuantParams::from_range(min, max, options.act_bits);
                Some(grid.map_err(QatError::Quant)?)
            } else {
                None
            };
            let out = match step.op {
                Op::Conv2d(g) => Some(g.out_channels),
                Op::Linear { out_features, .. } => Some(out_features),
                _ => None,
            };
            let weights = out.map(|out| (out, options.weight_bits));
            grids.insert(name.clone(), lsq.grids(name, output, weights)?);
        }
        Ok(Some(grids))
    }

    /// The current output range of every quantization point (what conversion takes).
    pub fn point_ranges(&self) -> PointRanges {
        self.ranges
            .iter()
            .map(|(n, r)| (n.clone(), r.range()))
            .collect()
    }

    /// The range each quantization point's output grid covers: with learned step sizes the
    /// learned grid's `[s·(0 − Z), s·(2^b − 1 − Z)]`, otherwise (and for the logits) the
    /// tracked range, which is what the converter widens to a grid.
    pub fn output_ranges(&self) -> PointRanges {
        self.ranges
            .iter()
            .map(|(n, r)| {
                let learned = self.lsq.as_ref().and_then(|l| l.activation_grid(n));
                (n.clone(), learned.map_or(r.range(), |g| g.covered()))
            })
            .collect()
    }

    /// Loss, accuracy and predictions of the fake-quantized network on `set`.
    pub fn evaluate(
        &self,
        model: &ArchNet,
        set: &ImageSet,
        device: &Device,
    ) -> (EvalResult, Vec<u8>) {
        let batcher = ImageBatcher::new(set.kind.normalization());
        evaluate_with(&|x| self.eval_forward(model, x), set, &batcher, 500, device)
    }

    /// The fake-quantized log-probabilities; on an error, recorded as [`ArchQat::failure`],
    /// the float network's.
    fn forward(&mut self, model: &ArchNet, images: Tensor<4>, observe: bool) -> Tensor<2> {
        match self.try_forward(model, images.clone(), observe) {
            Ok(log_probs) => log_probs,
            Err(e) => {
                if let Ok(mut failure) = self.failure.lock() {
                    failure.get_or_insert(e);
                }
                model.log_probs(images)
            }
        }
    }

    fn try_forward(
        &mut self,
        model: &ArchNet,
        images: Tensor<4>,
        observe: bool,
    ) -> Result<Tensor<2>, QatError> {
        self.training = observe;
        let Normalization { mean, std } = self.norm;
        let flow = Flow {
            x: Value::Image(images.mul_scalar(std).add_scalar(mean)),
            grid: QuantParams::RAW_PIXELS,
            pending: Some(self.norm),
        };
        let last = model.plan.steps.len() - 1;
        let flow = self.steps(&model.layers, &model.plan.steps, flow, observe, Some(last))?;
        match flow.x {
            Value::Features(logits) => Ok(log_softmax(logits, 1)),
            Value::Image(_) => unreachable!("a validated plan ends with a linear layer"),
        }
    }

    fn steps(
        &mut self,
        layers: &[ArchLayer],
        steps: &[Step],
        mut flow: Flow,
        observe: bool,
        logits_at: Option<usize>,
    ) -> Result<Flow, QatError> {
        for (i, (layer, step)) in layers.iter().zip(steps).enumerate() {
            let logits = logits_at == Some(i);
            flow = match (layer, &step.op) {
                (ArchLayer::Conv(s), Op::Conv2d(_)) => self.conv(s, step, flow, observe)?,
                (ArchLayer::Linear(s), Op::Linear { .. }) => {
                    self.linear(s, step, flow, observe, logits)?
                }
                (ArchLayer::MaxPool(p), _) => Flow {
                    x: Value::Image(p.forward(flow.x.image("max_pool"))),
                    ..flow
                },
                (ArchLayer::AvgPool(p), Op::AvgPool(g)) => {
                    average(step, g, flow, |x| p.forward(x))?
                }
                (ArchLayer::Reshape(_), Op::GlobalAvgPool(g)) => {
                    average(step, g, flow, |x| x.mean_dim(3).mean_dim(2))?
                }
                (ArchLayer::Reshape(r), _) if matches!(r.kind, Reshape::Flatten) => Flow {
                    x: Value::Features(flow.x.features()),
                    ..flow
                },
                (ArchLayer::Dropout(_), _) => flow,
                (ArchLayer::Residual(r), Op::Residual(inner)) => {
                    let (skip, grid) = (flow.x.clone(), flow.grid);
                    let body = self.steps(&r.body, inner, flow, observe, None)?;
                    self.add(step, skip, grid, body, observe)?
                }
                _ => unreachable!("an ArchNet's layers are built from its plan"),
            };
        }
        Ok(flow)
    }

    /// The output grid of quantization point `step` after observing `y` (post-activation).
    fn output_grid<const D: usize>(
        &mut self,
        step: &Step,
        y: &Tensor<D>,
        observe: bool,
    ) -> Result<QuantParams, QatError> {
        let range = self.ranges.entry(step.name.clone()).or_default();
        if observe {
            let a = apply_activation(y.clone().detach(), step.activation);
            let (lo, hi) = (
                a.clone().min().into_scalar::<f32>(),
                a.max().into_scalar::<f32>(),
            );
            range.update(lo, hi, self.ema_decay);
        }
        if let Some(grid) = self
            .lsq
            .as_ref()
            .and_then(|l| l.activation_grid(&step.name))
        {
            return Ok(grid);
        }
        let (min, max) = range.range();
        QuantParams::from_range(min, max, self.scheme.layer(&step.name).act_bits)
            .map_err(point_error(step))
    }

    /// The output of point `step` whose engine codes are `offsets` (`q − Z_out`) and whose
    /// float value, activation applied, is `x`: on the learned grid (LSQ's gradients), or the
    /// codes with a straight-through gradient inside the clamp `[lo, hi]` of `output`.
    fn requantized<const D: usize>(
        &mut self,
        step: &Step,
        x: Tensor<D>,
        offsets: Tensor<D>,
        output: QuantParams,
        clamp: (u8, u8),
    ) -> Tensor<D> {
        match self.lsq.as_mut() {
            Some(lsq) => lsq.activation(&step.name, x, Some(offsets), self.training),
            None => straight_through(x, offsets, output, clamp),
        }
    }

    /// The output of convolution or linear `step` on `layer`'s grids from its accumulators
    /// `y` in real units ([`LayerRequant`]).
    fn requantize_layer<const D: usize>(
        &mut self,
        step: &Step,
        layer: LayerQuantization,
        y: Tensor<D>,
    ) -> Tensor<D> {
        let (output, clamp) = (layer.output, output_clamp(layer.output, step.activation));
        let offsets = LayerRequant::new(layer).code_offsets(&y);
        let x = apply_activation(y, step.activation);
        self.requantized(step, x, offsets, output, clamp)
    }

    /// Folded, fake-quantized weights `[out, fan_in…]` and bias of a convolution or linear
    /// step: values from the converter's functions, gradients through `weight`/`bn`.
    fn folded(
        &mut self,
        step: &Step,
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
        bn: Option<&burn::nn::BatchNorm>,
        pending: Option<Normalization>,
    ) -> Result<(Tensor<2>, Tensor<1>, Vec<QuantParams>), QatError> {
        let [out, fan_in] = weight.dims();
        let device = weight.device();
        let params = StepParams {
            weight: to_vec(weight.clone().detach()),
            bias: bias.as_ref().map(|b| to_vec(b.clone().detach())),
            batch_norm: bn.map(|bn| BatchNormParams {
                gamma: to_vec(bn.gamma.val().detach()),
                beta: to_vec(bn.beta.val().detach()),
                mean: to_vec(bn.running_mean.value()),
                var: to_vec(bn.running_var.value()),
            }),
        };
        let eps = step.batch_norm.map_or(0.0, |b| b.eps);
        let (mut w_host, mut b_host) = params.folded(eps);
        let mut w = weight;
        let mut b = bias.unwrap_or_else(|| Tensor::zeros([out], &device));
        if let Some(bn) = bn {
            let factor = bn
                .gamma
                .val()
                .div(bn.running_var.value().add_scalar(eps).sqrt());
            w = w.mul(factor.clone().reshape([out, 1]));
            b = (b - bn.running_mean.value()).mul(factor) + bn.beta.val();
        }
        if let Some(norm) = pending {
            (w_host, b_host) = fold_normalization(&w_host, &b_host, fan_in, norm);
            let sums: Tensor<1> = w.clone().sum_dim(1).reshape([out]);
            w = w.div_scalar(norm.std);
            b = b - sums.mul_scalar(norm.mean / norm.std);
        }
        let options = self.scheme.layer(&step.name);
        let (bits, per_channel) = (options.weight_bits, options.per_channel);
        let (w, grids) = match self.lsq.as_mut() {
            Some(lsq) => lsq
                .weights(
                    &step.name,
                    w,
                    Some(&w_host),
                    bits,
                    per_channel,
                    self.training,
                )
                .ok_or_else(|| QatError::NoGrid(step.name.clone()))?,
            None => {
                let grids =
                    weight_params(&w_host, out, bits, per_channel).map_err(point_error(step))?;
                let w_host = Tensor::from_data(TensorData::new(w_host, [out, fan_in]), &device);
                let q = fake_quantize_channels(w_host, &grids);
                (w.clone() + (q - w).detach(), grids)
            }
        };
        let b_host: Tensor<1> = Tensor::from_data(TensorData::new(b_host, [out]), &device);
        let b = b.clone() + (b_host - b).detach();
        Ok((w, b, grids))
    }

    fn conv(
        &mut self,
        s: &ConvStep,
        step: &Step,
        flow: Flow,
        observe: bool,
    ) -> Result<Flow, QatError> {
        let Op::Conv2d(g) = &step.op else {
            unreachable!()
        };
        let weight = s.conv.weight.val();
        let dims = weight.dims();
        let flat = weight.reshape([dims[0], dims[1] * dims[2] * dims[3]]);
        let bias = s.conv.bias.as_ref().map(|b| b.val());
        let (w, b, grids) = self.folded(step, flat, bias, s.batch_norm.as_ref(), flow.pending)?;
        let mut x = flow.x.image(&step.name);
        let (ph, pw) = (g.padding.h, g.padding.w);
        let mut padding = [ph, pw];
        if let (Some(norm), true) = (flow.pending, ph > 0 || pw > 0) {
            // Raw pixels padded with the normalization's padding pixel, as the engine pads.
            let value = f32::from(norm.padding_pixel()) / 255.0;
            x = x.pad(
                [(ph, ph), (pw, pw)],
                burn::tensor::ops::PadMode::Constant(value),
            );
            padding = [0, 0];
        }
        let options = ConvOptions::new([g.stride.h, g.stride.w], padding, [1, 1], g.groups);
        let (sums, magnitudes) = conv_sums(&x, flow.grid, &w, &grids, |x, w| {
            conv2d(x, w.reshape(dims), None, options.clone())
        });
        let bias = to_vec(b.clone().detach());
        let y = conv2d(x, w.reshape(dims), Some(b), options);
        let output = self.output_grid(step, &y, observe)?;
        let layer = LayerQuantization::from_grids(flow.grid, grids, output, step.activation)
            .map_err(point_error(step))?;
        let y = exact_accumulators(y, sums, magnitudes, &bias, &layer.accumulator_scales);
        Ok(Flow {
            x: Value::Image(self.requantize_layer(step, layer, y)),
            grid: output,
            pending: None,
        })
    }

    fn linear(
        &mut self,
        s: &LinearStep,
        step: &Step,
        flow: Flow,
        observe: bool,
        logits: bool,
    ) -> Result<Flow, QatError> {
        // Burn stores [in, out].
        let weight = s.linear.weight.val().transpose();
        let bias = s.linear.bias.as_ref().map(|b| b.val());
        let (w, b, grids) = self.folded(step, weight, bias, s.batch_norm.as_ref(), flow.pending)?;
        let x = flow.x.features();
        let [out, _] = w.dims();
        let (sums, magnitudes) = linear_sums(&x, flow.grid, &w, &grids);
        let bias = to_vec(b.clone().detach());
        let y = x.matmul(w.transpose()) + b.reshape([1, out]);
        let scales = accumulator_scales(flow.grid, &grids);
        let y = exact_accumulators(y, sums, magnitudes, &bias, &scales);
        if logits {
            return Ok(Flow {
                x: Value::Features(snap(y, &scales)),
                grid: flow.grid,
                pending: None,
            });
        }
        let output = self.output_grid(step, &y, observe)?;
        let layer = LayerQuantization::from_grids(flow.grid, grids, output, step.activation)
            .map_err(point_error(step))?;
        Ok(Flow {
            x: Value::Features(self.requantize_layer(step, layer, y)),
            grid: output,
            pending: None,
        })
    }

    fn add(
        &mut self,
        step: &Step,
        skip: Value,
        skip_grid: QuantParams,
        body: Flow,
        observe: bool,
    ) -> Result<Flow, QatError> {
        let (a, b) = (skip.image(&step.name), body.x.image(&step.name));
        let sum = a.clone() + b.clone();
        let output = self.output_grid(step, &sum, observe)?;
        let add = QuantAdd::derive(skip_grid, body.grid, output, step.activation)
            .map_err(point_error(step))?;
        let (qa, qb) = (codes(&a, skip_grid), codes(&b, body.grid));
        let offsets: Vec<f32> = qa
            .iter()
            .zip(&qb)
            .map(|(&x, &y)| (i32::from(add.apply(x, y)) - output.zero_point()) as f32)
            .collect();
        let offsets = Tensor::from_data(TensorData::new(offsets, sum.dims()), &sum.device());
        let x = apply_activation(sum, step.activation);
        let clamp = (add.act_min, add.act_max);
        Ok(Flow {
            x: Value::Image(self.requantized(step, x, offsets, output, clamp)),
            grid: output,
            pending: None,
        })
    }
}

/// The error of quantization point `step`'s integer parameters, naming it.
fn point_error(step: &Step) -> impl FnOnce(burnq_quant::QuantError) -> QatError + '_ {
    |source| QatError::Point {
        point: step.name.clone(),
        source: Box::new(source),
    }
}

/// Average pooling (`step`) on the codes (the reference operation), straight-through gradient
/// of the float average.
fn average(
    step: &Step,
    g: &PoolGeometry,
    flow: Flow,
    float: impl Fn(Tensor<4>) -> Tensor<4>,
) -> Result<Flow, QatError> {
    let x = flow.x.image(&step.name);
    let n = x.dims()[0];
    let float = float(x.clone());
    let q = codes(&x, flow.grid);
    let pooled = reference::avg_pool(g, flow.grid, &q, n).map_err(point_error(step))?;
    let exact: Vec<f32> = pooled.iter().map(|&q| flow.grid.dequantize(q)).collect();
    let exact = Tensor::from_data(TensorData::new(exact, float.dims()), &float.device());
    Ok(Flow {
        x: Value::Image(float.clone() + (exact - float).detach()),
        ..flow
    })
}

fn codes<const D: usize>(x: &Tensor<D>, grid: QuantParams) -> Vec<u8> {
    to_vec(x.clone().detach())
        .iter()
        .map(|&v| grid.quantize(v))
        .collect()
}

impl ForwardMode<ArchNet> for ArchQat {
    fn train_forward(&mut self, model: &ArchNet, images: Tensor<4>) -> Tensor<2> {
        self.forward(model, images, true)
    }

    fn eval_forward(&self, model: &ArchNet, images: Tensor<4>) -> Tensor<2> {
        self.clone().forward(model, images, false)
    }

    fn after_backward(&mut self, grads: &burn::tensor::Gradients, lr: f64, momentum: f64) {
        if let Some(lsq) = self.lsq.as_mut() {
            lsq.update(grads, lr, momentum);
        }
    }
}
