//! Quantization-aware training (Jacob et al. 2018, §3): the forward pass rounds weights and
//! activations to their integer grids exactly where the integer engine will, and the
//! backward pass lets gradients through the rounding (straight-through estimator).
//!
//! - Weights are fake-quantized before each conv/linear on the grids the converter derives
//!   from their *current* values ([`burnq_quant::derive::weight_params`]: min/max per tensor or
//!   per output channel, `weight_bits`).
//! - Activations are fake-quantized at `act_bits` where inference requantizes them: after
//!   conv1 + ReLU (+ pool), conv2 + ReLU (+ pool), fc1 + ReLU. Their ranges are exponential
//!   moving averages of batch min/max ([`EmaRange`], `r ← decay·r + (1 − decay)·batch`), and
//!   quantization starts after `act_delay` training steps (before that, ranges are only
//!   observed).
//! - The logits' range is tracked as well (the integer model's u8 logits use it) but not
//!   quantized: the prediction comes from fc2's i32 accumulators.
//! - Where a layer's input is on its integer grid (always for conv1; for the others when the
//!   previous activation is quantized), its output codes are not rounded once but computed as
//!   the integer engine computes them, with the parameters of the converter's own derivation
//!   ([`burnq_quant::LayerQuantization`]): `i32` accumulator with the bias rounded onto
//!   `S_in·S_w`, fixed-point multiplier, double rounding, clamp ([`crate::int_sim`]); fc2's
//!   logits are snapped to its accumulators, so the fake-quantized network predicts what the
//!   integer model will. The accumulators themselves are computed in integer units
//!   ([`crate::exact`]: `Σ (q − Z_in)(q_w − Z_w)` on integer-valued tensors plus the bias
//!   rounded as the converter rounds it), so they do not depend on the float kernels'
//!   summation order.
//! - Gradient: `y = clip(x) + detach(fq(clip(x)) − clip(x))`, so ∂y/∂x = 1 inside the grid's
//!   range and 0 where `x` was clipped. Biases stay float; they become i32 at export.
//!
//! The input needs no fake quantization: raw pixel bytes are exact at 8 bits. The export folds
//! the normalization into conv1 (`w' = w/std` on the pixels `p/255`, `b' = b − (mean/std)·Σw`)
//! and quantizes `w'`; conv1 is computed the same folded way here, its forward values those of
//! the converter's own fold ([`fold_normalization`]), so that the bias absorbs the float weight
//! sum as it will in the integer model.

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::Gradients;
use burn::tensor::activation::{log_softmax, relu};
use burnq_data::ImageSet;
use burnq_model::Net;
use burnq_model::data::ImageBatcher;
use burnq_model::eval::{EvalResult, evaluate_with, nll_loss};
use burnq_model::export::to_vec;
use burnq_model::training::ForwardMode;
use burnq_quant::convert::fold_normalization;
use burnq_quant::derive::{LayerQuantization, accumulator_scales, weight_params};
use burnq_quant::range::EmaRange;
use burnq_quant::{
    ARCHITECTURE, Activation, ActivationRanges, LayerBits, LayerGrids, Normalization, QuantParams,
};
use serde::{Deserialize, Serialize};

use crate::exact::{conv_sums, exact_accumulators, linear_sums};
use crate::int_sim::{LayerRequant, snap};
use crate::lsq::{LsqState, PointKind, StepInit};
use crate::simulated::{fake_quantize, fake_quantize_channels};
use crate::{Distillation, QatError};

/// How the quantizers' grids are chosen during QAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantizer {
    /// Weights on the min/max grid of their current values, activations on the grid of an
    /// exponential moving average of their batch min/max.
    #[default]
    Minmax,
    /// Learned step sizes ([`crate::lsq`]): weights symmetric around a fixed zero point,
    /// activations after ReLU unsigned, signed ones symmetric, every step size trained with
    /// the LSQ gradient.
    Lsq,
    /// LSQ+ ([`crate::lsq`]): as [`Quantizer::Lsq`], with a learned offset `β` (zero point
    /// `round(−β/s)`) for activations without a ReLU fused; ReLU outputs keep `β = 0`, so on
    /// the tutorial network, whose activations are all ReLU outputs, it is LSQ.
    #[serde(rename = "lsq+")]
    LsqPlus,
}

impl Quantizer {
    /// Every quantizer, by command-line name.
    pub const ALL: [Self; 3] = [Self::Minmax, Self::Lsq, Self::LsqPlus];

    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Minmax => "minmax",
            Self::Lsq => "lsq",
            Self::LsqPlus => "lsq+",
        }
    }

    /// Whether step sizes are learned (LSQ, LSQ+).
    pub const fn learns_steps(self) -> bool {
        matches!(self, Self::Lsq | Self::LsqPlus)
    }

    /// How an activation point is quantized with learned step sizes: unsigned after a ReLU
    /// (`relu`), else symmetric (LSQ) or with a learned offset (LSQ+).
    pub const fn point_kind(self, relu: bool) -> PointKind {
        match (relu, self) {
            (true, _) => PointKind::Unsigned,
            (false, Self::LsqPlus) => PointKind::Offset,
            (false, _) => PointKind::Signed,
        }
    }
}

/// Settings of the fake-quantized forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QatSettings {
    /// How the grids are chosen.
    pub quantizer: Quantizer,
    /// Bits of the weight codes (2..=8).
    pub weight_bits: u8,
    /// Bits of the activation codes (2..=8).
    pub act_bits: u8,
    /// Each layer's own widths (conv1, conv2, fc1, fc2; `act_bits` of a layer is the width of
    /// its output), instead of `weight_bits` and `act_bits` for all.
    #[serde(default)]
    pub bits_per_layer: Option<[LayerBits; 4]>,
    /// One scale and zero point per output channel instead of per tensor.
    pub per_channel: bool,
    /// Where learned weight step sizes start (LSQ, LSQ+).
    #[serde(default)]
    pub step_init: StepInit,
    /// EMA decay of the activation ranges.
    pub ema_decay: f32,
    /// Training steps before activations are quantized.
    pub act_delay: usize,
    /// The input normalization, folded into conv1 exactly as the integer export folds it.
    pub normalization: Normalization,
}

impl QatSettings {
    /// The widths of layer `index` (0 = conv1 … 3 = fc2).
    pub fn layer_bits(&self, index: usize) -> LayerBits {
        self.bits_per_layer.map_or(
            LayerBits {
                weight_bits: self.weight_bits,
                act_bits: self.act_bits,
            },
            |bits| bits[index],
        )
    }
}

/// A layer's float weights (output channels on dim 0), their converter grids, and the
/// fake-quantized weights (straight-through gradient).
struct QuantizedWeights<const D: usize> {
    grids: Vec<QuantParams>,
    fake: Tensor<D>,
}

/// The QAT forward pass and its activation-range state.
#[derive(Debug, Clone)]
pub struct QatForward {
    settings: QatSettings,
    /// Which of conv1, conv2, fc1, fc2 are quantized (weights and output activation).
    layers: [bool; 4],
    /// Output ranges of conv1, conv2, fc1 and fc2 (the logits), by layer index.
    ranges: [EmaRange; 4],
    /// The learned step sizes, with [`Quantizer::Lsq`] or [`Quantizer::LsqPlus`].
    lsq: Option<LsqState>,
    /// Whether the current forward pass trains (tracks the step sizes' gradients).
    training: bool,
    steps: usize,
    /// The float teacher whose probabilities join the training loss, if any.
    distillation: Option<Distillation>,
}

impl QatForward {
    /// A fresh QAT state (no range observed yet).
    pub fn new(settings: QatSettings) -> Self {
        Self {
            settings,
            layers: [true; 4],
            ranges: Default::default(),
            lsq: None,
            training: false,
            steps: 0,
            distillation: None,
        }
    }

    /// The same state, training with `distillation`'s teacher in the loss.
    pub fn with_distillation(self, distillation: Distillation) -> Self {
        Self {
            distillation: Some(distillation),
            ..self
        }
    }

    /// The same state quantizing only layer `index` (0 = conv1 … 3 = fc2): its weights and
    /// its output activation; the rest of the network stays float. For sensitivity reports.
    pub fn only_layer(mut self, index: usize) -> Self {
        self.layers = std::array::from_fn(|i| i == index);
        self
    }

    /// A QAT state whose ranges start from calibrated ones; with learned step sizes the
    /// activation step sizes start from them too. (Without starting ranges, LSQ has nothing to
    /// start from and min/max grids are used.)
    pub fn with_ranges(settings: QatSettings, ranges: &ActivationRanges) -> Self {
        let mut s = Self::new(settings);
        for (r, (lo, hi)) in s.ranges.iter_mut().zip(ranges.layer_outputs()) {
            r.update(lo, hi, 0.0);
        }
        if settings.quantizer.learns_steps() {
            // conv1, conv2 and fc1 output ReLU values; fc2's logits are not requantized.
            let outputs = ranges.layer_outputs();
            let kind = settings.quantizer.point_kind(true);
            s.lsq = Some((0..3).fold(LsqState::new(settings.step_init), |lsq, i| {
                let bits = settings.layer_bits(i).act_bits;
                lsq.with_activation(ARCHITECTURE[i].0, outputs[i], bits, kind)
            }));
        }
        s
    }

    /// The grids the integer model must be converted onto to compute what this network
    /// computes: with learned step sizes, every layer's learned grids (the logits' from
    /// their tracked range); `None` with min/max grids, which the converter derives itself
    /// from the weights and [`QatForward::ranges`]. `model` gives the layers' widths. A layer
    /// whose learned grid is not a valid grid (a step size that is no longer finite) is an
    /// error naming it, never a silent min/max conversion.
    pub fn learned_grids(&self, model: &Net) -> Result<Option<[LayerGrids; 4]>, QatError> {
        let Some(lsq) = self.lsq.as_ref() else {
            return Ok(None);
        };
        let bits = |index| self.settings.layer_bits(index);
        let outs = [
            model.conv1.weight.dims()[0],
            model.conv2.weight.dims()[0],
            model.fc1.weight.dims()[1],
            model.fc2.weight.dims()[1],
        ];
        let (lo, hi) = self.ranges[3].range();
        let logits = QuantParams::from_range(lo, hi, bits(3).act_bits).map_err(QatError::Quant)?;
        let layer = |index: usize| {
            let output = (index == 3).then_some(logits);
            let weights = (outs[index], bits(index).weight_bits);
            lsq.grids(ARCHITECTURE[index].0, output, Some(weights))
        };
        Ok(Some([layer(0)?, layer(1)?, layer(2)?, layer(3)?]))
    }

    /// The tracked ranges. The network input's range is the normalized pixel range
    /// `[(0 − mean)/std, (1 − mean)/std]`.
    pub fn ranges(&self) -> ActivationRanges {
        let norm = self.settings.normalization;
        ActivationRanges::from_layer_outputs(
            (norm.apply(0), norm.apply(255)),
            self.ranges.map(|r| r.range()),
        )
    }

    /// The range each layer's output grid covers (conv1, conv2, fc1, fc2): with learned step
    /// sizes the learned grid's `[s·(0 − Z), s·(2^b − 1 − Z)]`, otherwise (and for the
    /// logits) the tracked range, which the converter widens to a grid.
    pub fn output_ranges(&self) -> [(f32, f32); 4] {
        std::array::from_fn(|i| {
            let learned = self
                .lsq
                .as_ref()
                .and_then(|l| l.activation_grid(ARCHITECTURE[i].0));
            learned.map_or(self.ranges[i].range(), |g| g.covered())
        })
    }

    /// The settings.
    pub fn settings(&self) -> QatSettings {
        self.settings
    }

    /// Loss, accuracy and per-image predictions of the fake-quantized network on `set`
    /// (ranges frozen).
    pub fn evaluate(
        &self,
        model: &Net,
        set: &ImageSet,
        batch_size: usize,
        device: &Device,
    ) -> (EvalResult, Vec<u8>) {
        let batcher = ImageBatcher::new(set.kind.normalization());
        evaluate_with(
            &|x| self.eval_forward(model, x),
            set,
            &batcher,
            batch_size,
            device,
        )
    }

    fn forward(&mut self, model: &Net, images: Tensor<4>, observe: bool) -> Tensor<2> {
        self.training = observe;
        let quantize_acts = !observe || self.steps >= self.settings.act_delay;
        let q = self.layers;
        // conv1 reads the raw pixels, whose grid is exactly 1/255.
        let input = Some(QuantParams::RAW_PIXELS);
        let (x, w) = self.conv1_folded(&model.conv1, images, q[0]);
        let x = model.pool.forward(relu(x));
        let (x, input) = self.activation(x, 0, observe, quantize_acts && q[0], input.zip(w));
        let (x, w) = self.conv(1, &model.conv2, x, input, q[1]);
        let x = model.pool.forward(relu(x));
        let (x, input) = self.activation(x, 1, observe, quantize_acts && q[1], input.zip(w));
        let (x, w) = self.linear(2, &model.fc1, x.flatten(1, 3), input, q[2]);
        let (x, input) = self.activation(relu(x), 2, observe, quantize_acts && q[2], input.zip(w));
        let (mut logits, w) = self.linear(3, &model.fc2, x, input, q[3]);
        if let Some((input, grids)) = input.zip(w) {
            logits = snap(logits, &accumulator_scales(input, &grids));
        }
        if observe {
            let (lo, hi) = batch_range(&logits);
            self.ranges[3].update(lo, hi, self.settings.ema_decay);
            self.steps += 1;
        }
        log_softmax(logits, 1)
    }

    /// The output of layer `index` (after ReLU and pooling), fake-quantized when `quantize`
    /// and a range is known, with the grid it is on (`None` when it stays float).
    /// `producer` = the layer's input grid and weight grids, when its input is on its grid:
    /// then the codes are the integer engine's ([`LayerRequant`]).
    fn activation<const D: usize>(
        &mut self,
        x: Tensor<D>,
        index: usize,
        observe: bool,
        quantize: bool,
        producer: Option<(QuantParams, Vec<QuantParams>)>,
    ) -> (Tensor<D>, Option<QuantParams>) {
        if observe {
            let (lo, hi) = batch_range(&x);
            self.ranges[index].update(lo, hi, self.settings.ema_decay);
        }
        let r = self.ranges[index];
        if !quantize || r.updates == 0 {
            return (x, None);
        }
        let bits = self.settings.layer_bits(index).act_bits;
        let learned = self
            .lsq
            .as_ref()
            .and_then(|lsq| lsq.activation_grid(ARCHITECTURE[index].0));
        let output = match learned {
            Some(grid) => grid,
            None => match QuantParams::from_range(r.min, r.max, bits) {
                Ok(grid) => grid,
                Err(_) => return (x, None),
            },
        };
        let exact = producer.and_then(|(input, grids)| {
            LayerQuantization::from_grids(input, grids, output, Activation::Relu).ok()
        });
        if let (Some(lsq), true) = (self.lsq.as_mut(), learned.is_some()) {
            let codes = exact.map(|layer| LayerRequant::new(layer).code_offsets(&x));
            return (
                lsq.activation(ARCHITECTURE[index].0, x, codes, self.training),
                Some(output),
            );
        }
        match exact {
            Some(layer) => (LayerRequant::new(layer).apply(x), Some(output)),
            None => (fake_quantize_ste(x, output), Some(output)),
        }
    }

    /// conv2 with fake-quantized weights when `quantize`, its forward values the engine's
    /// accumulators when its input is on the grid `input`; also returns the weight grids.
    fn conv(
        &mut self,
        index: usize,
        conv: &Conv2d,
        x: Tensor<4>,
        input: Option<QuantParams>,
        quantize: bool,
    ) -> (Tensor<4>, Option<Vec<QuantParams>>) {
        if !quantize {
            return (conv.forward(x), None);
        }
        let Some(w) = self.weights(index, conv.weight.val()) else {
            return (conv.forward(x), None);
        };
        let bias = conv.bias.as_ref().map(|b| b.val());
        let y = exact_conv(conv, x, w.fake, bias, input, &w.grids);
        (y, Some(w.grids))
    }

    /// conv1 on `p/255` with the normalization folded in: `w' = w/std`, fake-quantized,
    /// and `b' = b − (mean/std)·Σ_k w[o,k]` from the float weights, their forward values the
    /// converter's ([`fold_normalization`]); the input is on the raw pixels' grid, so the
    /// forward values are the engine's accumulators. Also returns the grids of `w'`.
    fn conv1_folded(
        &mut self,
        conv: &Conv2d,
        images: Tensor<4>,
        quantize: bool,
    ) -> (Tensor<4>, Option<Vec<QuantParams>>) {
        if !quantize {
            return (conv.forward(images), None);
        }
        let norm = self.settings.normalization;
        let w = conv.weight.val();
        let dims = w.dims();
        let (out, fan_in) = (dims[0], dims[1] * dims[2] * dims[3]);
        let device = w.device();
        let b = conv
            .bias
            .as_ref()
            .map_or_else(|| Tensor::zeros([out], &device), |b| b.val());
        let (w_host, b_host) = fold_normalization(
            &to_vec(w.clone().detach()),
            &to_vec(b.clone().detach()),
            fan_in,
            norm,
        );
        let weight_sum: Tensor<1> = w.clone().sum_dims(&[1, 2, 3]).reshape([out]);
        let (w, b) = (
            w.div_scalar(norm.std),
            b - weight_sum.mul_scalar(norm.mean / norm.std),
        );
        let w_host = Tensor::from_data(TensorData::new(w_host, dims), &device);
        let b_host = Tensor::from_data(TensorData::new(b_host, [out]), &device);
        let w = w.clone() + (w_host - w).detach();
        let b = b.clone() + (b_host - b).detach();
        let Some(folded) = self.weights(0, w) else {
            return (conv.forward(images), None);
        };
        let pixels = images.mul_scalar(norm.std).add_scalar(norm.mean);
        let input = Some(QuantParams::RAW_PIXELS);
        let y = exact_conv(conv, pixels, folded.fake, Some(b), input, &folded.grids);
        (y, Some(folded.grids))
    }

    /// A linear layer with fake-quantized weights when `quantize`, its forward values the
    /// engine's accumulators when its input is on the grid `input`; also returns the weight
    /// grids.
    fn linear(
        &mut self,
        index: usize,
        linear: &Linear,
        x: Tensor<2>,
        input: Option<QuantParams>,
        quantize: bool,
    ) -> (Tensor<2>, Option<Vec<QuantParams>>) {
        if !quantize {
            return (linear.forward(x), None);
        }
        // Burn stores [in, out]: output channels are the columns, so transpose for
        // per-channel grids and back.
        let Some(w) = self.weights(index, linear.weight.val().transpose()) else {
            return (linear.forward(x), None);
        };
        let [out, _] = w.fake.dims();
        let bias = linear.bias.as_ref().map(|b| b.val());
        let mut y = x.clone().matmul(w.fake.clone().transpose());
        if let Some(b) = &bias {
            y = y + b.clone().reshape([1, out]);
        }
        if let Some(grid) = input {
            let (sums, magnitudes) = linear_sums(&x, grid, &w.fake, &w.grids);
            let bias = bias.map_or_else(|| vec![0.0; out], |b| to_vec(b.detach()));
            let scales = accumulator_scales(grid, &w.grids);
            y = exact_accumulators(y, sums, magnitudes, &bias, &scales);
        }
        (y, Some(w.grids))
    }

    /// The converter's grids of `w` (output channels on dim 0) and `w` fake-quantized on
    /// them with a straight-through gradient; `None` when the weights have no grid (they are
    /// no longer finite: the loss then diverges and training stops with an error).
    fn weights<const D: usize>(
        &mut self,
        index: usize,
        w: Tensor<D>,
    ) -> Option<QuantizedWeights<D>> {
        let (bits, per_channel) = (
            self.settings.layer_bits(index).weight_bits,
            self.settings.per_channel,
        );
        if let Some(lsq) = self.lsq.as_mut() {
            let (fake, grids) = lsq.weights(
                ARCHITECTURE[index].0,
                w,
                None,
                bits,
                per_channel,
                self.training,
            )?;
            return Some(QuantizedWeights { grids, fake });
        }
        let out_channels = w.dims()[0];
        let grids =
            weight_params(&to_vec(w.clone().detach()), out_channels, bits, per_channel).ok()?;
        let q = fake_quantize_channels(w.clone().detach(), &grids);
        Some(QuantizedWeights {
            grids,
            fake: w.clone() + (q - w).detach(),
        })
    }
}

impl ForwardMode for QatForward {
    fn train_forward(&mut self, model: &Net, images: Tensor<4>) -> Tensor<2> {
        self.forward(model, images, true)
    }

    fn eval_forward(&self, model: &Net, images: Tensor<4>) -> Tensor<2> {
        self.clone().forward(model, images, false)
    }

    fn after_backward(&mut self, grads: &Gradients, lr: f64, momentum: f64) {
        if let Some(lsq) = self.lsq.as_mut() {
            lsq.update(grads, lr, momentum);
        }
    }

    fn training_loss(
        &self,
        log_probs: Tensor<2>,
        targets: Tensor<1, Int>,
        images: Tensor<4>,
    ) -> Tensor<1> {
        match &self.distillation {
            Some(d) => d.loss(log_probs, targets, images),
            None => nll_loss(log_probs, targets),
        }
    }
}

/// The convolution of `x` by the fake-quantized weights `w` with `bias`, with `conv`'s
/// geometry; when `x` is on the grid `input` (weights on `grids`), its forward values are the
/// engine's accumulators ([`exact_accumulators`]).
fn exact_conv(
    conv: &Conv2d,
    x: Tensor<4>,
    w: Tensor<4>,
    bias: Option<Tensor<1>>,
    input: Option<QuantParams>,
    grids: &[QuantParams],
) -> Tensor<4> {
    let dims = w.dims();
    // `conv`'s geometry (stride, padding, dilation, groups) with the weights `w`, bias-free.
    let with = |w: Tensor<4>| Conv2d {
        weight: conv.weight.clone().map(|_| w),
        bias: None,
        ..conv.clone()
    };
    let mut y = with(w.clone()).forward(x.clone());
    if let Some(b) = &bias {
        y = y + b.clone().reshape([1, dims[0], 1, 1]);
    }
    let Some(grid) = input else {
        return y;
    };
    let flat = w.reshape([dims[0], dims[1] * dims[2] * dims[3]]);
    let (sums, magnitudes) = conv_sums(&x, grid, &flat, grids, |x, w| {
        with(w.reshape(dims)).forward(x)
    });
    let bias = bias.map_or_else(|| vec![0.0; dims[0]], |b| to_vec(b.detach()));
    exact_accumulators(y, sums, magnitudes, &bias, &accumulator_scales(grid, grids))
}

/// `(min, max)` of a tensor, as plain floats.
fn batch_range<const D: usize>(x: &Tensor<D>) -> (f32, f32) {
    let x = x.clone().detach();
    (
        x.clone().min().into_scalar::<f32>(),
        x.max().into_scalar::<f32>(),
    )
}

/// Fake quantization on `grid` with a straight-through gradient that is zero where `x` is
/// clipped to the grid's range `[S·(0 − Z), S·(qmax − Z)]`.
pub fn fake_quantize_ste<const D: usize>(x: Tensor<D>, grid: QuantParams) -> Tensor<D> {
    let (lo, hi) = grid.covered();
    let clipped = x.clamp(lo, hi);
    let q = fake_quantize(clipped.clone().detach(), grid);
    clipped.clone() + (q - clipped).detach()
}
