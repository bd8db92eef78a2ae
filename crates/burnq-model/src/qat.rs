//! Quantization-aware training (Jacob et al. 2018, §3): the forward pass rounds weights and
//! activations to their integer grids exactly where the integer engine will, and the
//! backward pass lets gradients through the rounding (straight-through estimator).
//!
//! - Weights are fake-quantized before each conv/linear with their *current* min/max,
//!   per tensor or per output channel, at `weight_bits`.
//! - Activations are fake-quantized at `act_bits` where inference requantizes them: after
//!   conv1 + ReLU (+ pool), conv2 + ReLU (+ pool), fc1 + ReLU. Their ranges are exponential
//!   moving averages of batch min/max (`r ← decay·r + (1 − decay)·batch`), and quantization
//!   starts after `act_delay` training steps (before that, ranges are only observed).
//! - The logits' range is tracked as well (the integer model's u8 logits use it) but not
//!   quantized: the prediction comes from fc2's i32 accumulators.
//! - Where a layer's input is on its integer grid (always for conv1; for the others when the
//!   previous activation is quantized), its output codes are not rounded once but computed as
//!   the integer engine computes them — `i32` accumulator with the bias rounded onto
//!   `S_in·S_w`, fixed-point multiplier, double rounding, clamp ([`crate::int_sim`]) — and fc2's
//!   logits are snapped to its accumulators, so the fake-quantized network predicts what the
//!   integer model will.
//! - Gradient: `y = clip(x) + detach(fq(clip(x)) − clip(x))`, so ∂y/∂x = 1 inside the range
//!   and 0 where `x` was clipped. Biases stay float; they become i32 at export.
//!
//! The input needs no fake quantization: raw pixel bytes are exact at 8 bits. The export folds
//! the normalization into conv1 (`w' = w/std` on the pixels `p/255`, `b' = b − (mean/std)·Σw`)
//! and quantizes `w'`; conv1 is computed the same folded way here, so that the bias absorbs the
//! float weight sum as it will in the integer model.

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use serde::{Deserialize, Serialize};

use crate::Net;
use crate::int_sim::{LayerRequant, accumulator_scales, snap, weight_scales};
use burnq_data::ImageSet;

use crate::data::ImageBatcher;
use crate::eval::{EvalResult, evaluate_with};
use crate::simulated::fake_quantize;
use crate::training::ForwardMode;

/// Settings of quantization-aware training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QatSettings {
    /// Bits of the weight codes (2..=8).
    pub weight_bits: u32,
    /// Bits of the activation codes (2..=8).
    pub act_bits: u32,
    /// One scale and zero point per output channel instead of per tensor.
    pub per_channel: bool,
    /// EMA decay of the activation ranges.
    pub ema_decay: f32,
    /// Training steps before activations are quantized.
    pub act_delay: usize,
    /// The input normalization `x = (p/255 − mean)/std`, folded into conv1 exactly as the
    /// integer export folds it (see [`QatForward`]).
    pub input_mean: f32,
    /// See `input_mean`.
    pub input_std: f32,
}

/// An exponential moving average of a tensor's batch minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EmaRange {
    /// Current estimate of the minimum.
    pub min: f32,
    /// Current estimate of the maximum.
    pub max: f32,
    /// Batches observed.
    pub updates: usize,
}

impl EmaRange {
    /// Folds one batch's `(min, max)` in: the first batch sets the range, later ones move it
    /// by `1 − decay` of the difference.
    pub fn update(&mut self, batch_min: f32, batch_max: f32, decay: f32) {
        if self.updates == 0 {
            (self.min, self.max) = (batch_min, batch_max);
        } else {
            self.min = decay * self.min + (1.0 - decay) * batch_min;
            self.max = decay * self.max + (1.0 - decay) * batch_max;
        }
        self.updates += 1;
    }
}

/// The QAT forward pass and its activation-range state.
#[derive(Debug, Clone)]
pub struct QatForward {
    settings: QatSettings,
    /// Which of conv1, conv2, fc1, fc2 are quantized (weights and output activation).
    layers: [bool; 4],
    /// Ranges of conv2's input, fc1's input, fc2's input and the logits.
    ranges: [EmaRange; 4],
    steps: usize,
}

impl QatForward {
    /// A fresh QAT state (no range observed yet).
    pub fn new(settings: QatSettings) -> Self {
        Self {
            settings,
            layers: [true; 4],
            ranges: Default::default(),
            steps: 0,
        }
    }

    /// The same state quantizing only layer `index` (0 = conv1 … 3 = fc2): its weights and
    /// its output activation; the rest of the network stays float. For sensitivity reports.
    pub fn only_layer(mut self, index: usize) -> Self {
        self.layers = std::array::from_fn(|i| i == index);
        self
    }

    /// A QAT state whose ranges start from calibrated ones (conv2_in, fc1_in, fc2_in, logits).
    pub fn with_ranges(settings: QatSettings, ranges: [(f32, f32); 4]) -> Self {
        let mut s = Self::new(settings);
        for (r, (lo, hi)) in s.ranges.iter_mut().zip(ranges) {
            r.update(lo, hi, 0.0);
        }
        s
    }

    /// The tracked `(min, max)` of conv2's input, fc1's input, fc2's input and the logits.
    pub fn ranges(&self) -> [(f32, f32); 4] {
        self.ranges.map(|r| (r.min, r.max))
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
        let quantize_acts = !observe || self.steps >= self.settings.act_delay;
        let q = self.layers;
        let bits = self.settings.weight_bits as u8;
        let per_channel = self.settings.per_channel;
        // conv1 reads the raw pixels, whose grid is exactly 1/255.
        let s_in = Some(1.0 / 255.0);
        let (x, w) = self.conv1_folded(&model.conv1, images, q[0]);
        let x = model.pool.forward(relu(x));
        let producer = s_in.zip(w.map(|w| weight_scales(&w, bits, per_channel)));
        let (x, s_in) = self.activation(x, 0, observe, quantize_acts && q[0], producer);
        let (x, w) = self.conv(&model.conv2, x, q[1]);
        let x = model.pool.forward(relu(x));
        let producer = s_in.zip(w.map(|w| weight_scales(&w, bits, per_channel)));
        let (x, s_in) = self.activation(x, 1, observe, quantize_acts && q[1], producer);
        let (x, w) = self.linear(&model.fc1, x.flatten(1, 3), q[2]);
        let producer = s_in.zip(w.map(|w| weight_scales(&w, bits, per_channel)));
        let (x, s_in) = self.activation(relu(x), 2, observe, quantize_acts && q[2], producer);
        let (mut logits, w) = self.linear(&model.fc2, x, q[3]);
        if let Some((s_in, w)) = s_in.zip(w) {
            if let Some(acc_scales) =
                accumulator_scales(s_in, &weight_scales(&w, bits, per_channel))
            {
                logits = snap(logits, &acc_scales);
            }
        }
        if observe {
            let (lo, hi) = batch_range(&logits);
            self.ranges[3].update(lo, hi, self.settings.ema_decay);
            self.steps += 1;
        }
        log_softmax(logits, 1)
    }

    /// The output of a layer (after ReLU and pooling) in `slot`, fake-quantized when
    /// `quantize` and a range is known, with the scale of its grid (`None` when it stays
    /// float). `producer` = the layer's input scale and weight scales, when its input is on
    /// its grid: then the codes are the integer engine's ([`LayerRequant`]).
    fn activation<const D: usize>(
        &mut self,
        x: Tensor<D>,
        slot: usize,
        observe: bool,
        quantize: bool,
        producer: Option<(f32, Vec<f32>)>,
    ) -> (Tensor<D>, Option<f32>) {
        if observe {
            let (lo, hi) = batch_range(&x);
            self.ranges[slot].update(lo, hi, self.settings.ema_decay);
        }
        let r = self.ranges[slot];
        if !quantize || r.updates == 0 {
            return (x, None);
        }
        let bits = self.settings.act_bits;
        let exact = producer.and_then(|(s_in, scales)| {
            LayerRequant::new(s_in, &scales, (r.min, r.max), bits as u8, true)
        });
        match exact {
            Some(requant) => (requant.apply(x), Some(requant.output_scale())),
            None => {
                let scale = (r.max.max(0.0) - r.min.min(0.0)) / ((1u32 << bits) - 1) as f32;
                (fake_quantize_ste(x, r.min, r.max, bits), Some(scale))
            }
        }
    }

    /// conv2 with fake-quantized weights when `quantize`; also returns the float weights
    /// that were quantized.
    fn conv(&self, conv: &Conv2d, x: Tensor<4>, quantize: bool) -> (Tensor<4>, Option<Tensor<4>>) {
        if !quantize {
            return (conv.forward(x), None);
        }
        let mut conv = conv.clone();
        let w = conv.weight.val();
        conv.weight = conv.weight.map(|w| self.weights(w));
        (conv.forward(x), Some(w))
    }

    /// conv1 on `p/255` with the normalization folded in: `w' = w/std`, fake-quantized,
    /// and `b' = b − (mean/std)·Σ_k w[o,k]` from the float weights.
    /// Also returns the folded float weights `w/std` that were quantized.
    fn conv1_folded(
        &self,
        conv: &Conv2d,
        images: Tensor<4>,
        quantize: bool,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        if !quantize {
            return (conv.forward(images), None);
        }
        let (mean, std) = (self.settings.input_mean, self.settings.input_std);
        let pixels = images.mul_scalar(std).add_scalar(mean);
        let w = conv.weight.val();
        let out_channels = w.dims()[0];
        let weight_sum: Tensor<1> = w.clone().sum_dims(&[1, 2, 3]).reshape([out_channels]);
        let mut folded = conv.clone();
        folded.weight = folded.weight.map(|w| self.weights(w.div_scalar(std)));
        folded.bias = folded
            .bias
            .map(|b| b.map(|b| b - weight_sum.mul_scalar(mean / std)));
        (folded.forward(pixels), Some(w.div_scalar(std)))
    }

    /// A linear layer with fake-quantized weights when `quantize`; also returns the float
    /// weights that were quantized, out × in.
    fn linear(
        &self,
        linear: &Linear,
        x: Tensor<2>,
        quantize: bool,
    ) -> (Tensor<2>, Option<Tensor<2>>) {
        if !quantize {
            return (linear.forward(x), None);
        }
        // Burn stores [in, out]: output channels are the columns, so transpose for
        // per-channel ranges and back.
        let mut linear = linear.clone();
        let w = linear.weight.val().transpose();
        linear.weight = linear
            .weight
            .map(|w| self.weights(w.transpose()).transpose());
        (linear.forward(x), Some(w))
    }

    /// Fake-quantized weights with a straight-through gradient; output channels on dim 0.
    fn weights<const D: usize>(&self, w: Tensor<D>) -> Tensor<D> {
        let bits = self.settings.weight_bits;
        if self.settings.per_channel {
            let q = fake_quantize_per_channel(w.clone().detach(), bits);
            w.clone() + (q - w).detach()
        } else {
            let (lo, hi) = batch_range(&w);
            let q = fake_quantize(w.clone().detach(), lo, hi, bits);
            w.clone() + (q - w).detach()
        }
    }
}

impl ForwardMode for QatForward {
    fn train_forward(&mut self, model: &Net, images: Tensor<4>) -> Tensor<2> {
        self.forward(model, images, true)
    }

    fn eval_forward(&self, model: &Net, images: Tensor<4>) -> Tensor<2> {
        self.clone().forward(model, images, false)
    }
}

/// `(min, max)` of a tensor, as plain floats.
fn batch_range<const D: usize>(x: &Tensor<D>) -> (f32, f32) {
    let x = x.clone().detach();
    (
        x.clone().min().into_scalar::<f32>(),
        x.max().into_scalar::<f32>(),
    )
}

/// Fake quantization with a straight-through gradient that is zero where `x` is clipped.
pub fn fake_quantize_ste<const D: usize>(x: Tensor<D>, min: f32, max: f32, bits: u32) -> Tensor<D> {
    let (lo, hi) = (min.min(0.0), max.max(0.0));
    let clipped = x.clamp(lo, hi);
    let q = fake_quantize(clipped.clone().detach(), lo, hi, bits);
    clipped.clone() + (q - clipped).detach()
}

/// Fake quantization with one range per slice along dim 0 (an output channel): each
/// channel's own min/max, widened to contain 0, on a `bits`-bit affine grid.
pub fn fake_quantize_per_channel<const D: usize>(w: Tensor<D>, bits: u32) -> Tensor<D> {
    let dims: Vec<usize> = (1..D).collect();
    let lo = w.clone().min_dims(&dims).clamp_max(0.0);
    let hi = w.clone().max_dims(&dims).clamp_min(0.0);
    let qmax = ((1u32 << bits) - 1) as f32;
    let scale = (hi - lo.clone())
        .div_scalar(qmax)
        .clamp_min(f32::MIN_POSITIVE);
    let zero_point = lo.neg().div(scale.clone()).round();
    w.div(scale.clone())
        .round()
        .add(zero_point.clone())
        .clamp(0.0, qmax)
        .sub(zero_point)
        .mul(scale)
}
