//! The integer engine's requantization, bit for bit, inside QAT's fake-quantized forward pass.
//!
//! Fake quantization that rounds `y/S_out` once disagrees with the integer model wherever
//! burnq's requantization rounds differently: gemmlowp/TFLite's double rounding
//! (`SaturatingRoundingDoublingHighMul`, then `RoundingDivideByPOT`) sends a value just below
//! half a step up when the first rounding lands on the half, and at 2 bits one code is a large
//! step. So, after each quantized layer (conv1, conv2, fc1), the float outputs are mapped to
//! the codes the engine will compute: `acc = round(y/(S_in·S_w[o]))` — the `i32` accumulator,
//! bias included, which the on-grid inputs and weights make an integer up to float error, and
//! which rounds the bias as the converter does — then `q = Requant::apply(acc)` with the
//! `(m0, shift)` that `burnq_quant::convert` will derive, and back to `S_out·(q − Z_out)`. The
//! gradient passes straight through inside the clamp range and is 0 outside it. fc2's logits
//! are snapped to `S_in·S_w[o]·acc`, the quantity the engine compares to predict.
//!
//! Scales are computed the converter's way (`QuantParams::from_range`, `f64` products), so
//! both sides agree on every multiplier.

use burn::prelude::*;
use burnq_quant::{QuantParams, Requant, quantize_multiplier};

use crate::export::to_vec;

/// Each output channel's weight scale as the converter computes it: the channel's (or, per
/// tensor, the whole tensor's) min/max on a `bits`-bit grid. `w` has output channels on dim 0.
pub fn weight_scales<const D: usize>(w: &Tensor<D>, bits: u8, per_channel: bool) -> Vec<f32> {
    let out = w.dims()[0];
    let values = to_vec(w.clone().detach());
    let scale = |v: &[f32]| {
        let (lo, hi) = burnq_quant::range::min_max(v);
        QuantParams::from_range(lo, hi, bits).map_or(f32::NAN, |p| p.scale())
    };
    if per_channel {
        values
            .chunks(values.len() / out.max(1))
            .map(scale)
            .collect()
    } else {
        vec![scale(&values); out]
    }
}

/// One layer's output requantization exactly as the integer model runs it.
#[derive(Debug, Clone)]
pub struct LayerRequant {
    /// `S_in·S_w[o]`: the real value of one accumulator unit, per output channel.
    acc_scales: Vec<f64>,
    /// Per output channel.
    requants: Vec<Requant>,
    /// Output scale, zero point and bits.
    output: QuantParams,
}

impl LayerRequant {
    /// The requantization of a layer reading inputs of scale `s_in` with weight scales
    /// `w_scales`, writing `act_bits`-bit codes over `out_range` (a folded ReLU when `relu`).
    /// `None` when a scale or multiplier is degenerate (then plain fake quantization applies).
    pub fn new(
        s_in: f32,
        w_scales: &[f32],
        out_range: (f32, f32),
        act_bits: u8,
        relu: bool,
    ) -> Option<Self> {
        let output = QuantParams::from_range(out_range.0, out_range.1, act_bits).ok()?;
        let z = output.zero_point();
        let acc_scales = accumulator_scales(s_in, w_scales)?;
        let requants = acc_scales
            .iter()
            .map(|&a| {
                let (m0, shift) = quantize_multiplier(a / f64::from(output.scale())).ok()?;
                Some(Requant {
                    m0,
                    shift,
                    output_zero_point: z,
                    act_min: if relu { u8::try_from(z).ok()? } else { 0 },
                    act_max: u8::try_from(output.qmax()).ok()?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            acc_scales,
            requants,
            output,
        })
    }

    /// The output grid's scale.
    pub fn output_scale(&self) -> f32 {
        self.output.scale()
    }

    /// The codes the engine computes for the layer outputs `y` (channels on dim 1, the real
    /// values of the accumulators, after ReLU and max-pooling, which commute with this
    /// increasing map), dequantized; straight-through gradient inside the clamp range.
    pub fn apply<const D: usize>(&self, y: Tensor<D>) -> Tensor<D> {
        let codes = map_accumulators(&y, &self.acc_scales, |acc, o| {
            let r = &self.requants[o];
            self.output.dequantize(r.apply(acc))
        });
        let lo = self.output.dequantize(self.requants[0].act_min);
        let hi = self.output.dequantize(self.requants[0].act_max);
        let clipped = y.clamp(lo, hi);
        clipped.clone() + (codes - clipped).detach()
    }
}

/// `S_in·S_w[o]` per output channel: the real value of one accumulator unit. `None` when one
/// is not finite and positive (a degenerate weight scale).
pub fn accumulator_scales(s_in: f32, w_scales: &[f32]) -> Option<Vec<f64>> {
    let scales: Vec<f64> = w_scales
        .iter()
        .map(|&s| f64::from(s_in) * f64::from(s))
        .collect();
    scales
        .iter()
        .all(|a| a.is_finite() && *a > 0.0)
        .then_some(scales)
}

/// `acc_scales[o]·acc` for the layer outputs `y` (fc2's logits, channels on dim 1): the
/// accumulators the engine compares to predict, in real units; straight-through gradient.
pub fn snap<const D: usize>(y: Tensor<D>, acc_scales: &[f64]) -> Tensor<D> {
    let snapped = map_accumulators(&y, acc_scales, |acc, o| {
        (f64::from(acc) * acc_scales[o]) as f32
    });
    y.clone() + (snapped - y).detach()
}

/// `f(acc, channel)` over every value of `y` (channels on dim 1), with
/// `acc = round(y/acc_scales[o])` (ties away from zero, saturating in `i32`).
fn map_accumulators<const D: usize>(
    y: &Tensor<D>,
    acc_scales: &[f64],
    f: impl Fn(i32, usize) -> f32,
) -> Tensor<D> {
    let dims = y.dims();
    let channels = dims[1];
    let inner: usize = dims[2..].iter().product();
    let out: Vec<f32> = to_vec(y.clone().detach())
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let o = (i / inner) % channels;
            let acc = (f64::from(v) / acc_scales[o])
                .round()
                .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
            f(acc, o)
        })
        .collect();
    Tensor::from_data(TensorData::new(out, dims), &y.device())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device() -> Device {
        Device::flex()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For accumulators on the grid, `apply` gives exactly `Requant::apply`'s codes and
        /// `snap` gives back `S_in·S_w[o]·acc`.
        #[test]
        fn codes_equal_the_engines(
            accs in prop::collection::vec(-40_000i32..40_000, 2 * 3 * 4),
            s_in in 1e-3f32..1.0,
            w_scales in prop::collection::vec(1e-3f32..0.1, 3),
            hi in 0.5f32..60.0,
            bits in 2u8..=8,
        ) {
            let r = LayerRequant::new(s_in, &w_scales, (0.0, hi), bits, true).unwrap();
            // [2 images, 3 channels, 4 positions]: channel of value i is (i / 4) % 3.
            let y: Vec<f32> = accs
                .iter()
                .enumerate()
                .map(|(i, &a)| (f64::from(a) * r.acc_scales[(i / 4) % 3]) as f32)
                .collect();
            let t = Tensor::<3>::from_data(TensorData::new(y, [2, 3, 4]), &device());
            let got: Vec<f32> = r.apply(t.clone()).into_data().try_into_vec().unwrap();
            let snapped: Vec<f32> = snap(t, &r.acc_scales).into_data().try_into_vec().unwrap();
            for (i, &acc) in accs.iter().enumerate() {
                let o = (i / 4) % 3;
                let code = r.requants[o].apply(acc);
                prop_assert_eq!(got[i], r.output.dequantize(code), "value {}", i);
                prop_assert_eq!(snapped[i], (f64::from(acc) * r.acc_scales[o]) as f32);
            }
        }
    }

    #[test]
    fn double_rounding_is_reproduced() {
        // The case found in a 2-bit model: acc 426 with m0 1288633565, shift −9 is 0.4993 of a
        // step, which one rounding sends to 0 and the engine's double rounding to 1.
        let requant = Requant {
            m0: 1_288_633_565,
            shift: -9,
            output_zero_point: 0,
            act_min: 0,
            act_max: 3,
        };
        assert_eq!(requant.apply(426), 1);
        let m = f64::from(requant.m0) * 2f64.powi(requant.shift - 31);
        assert!((426.0 * m) < 0.5, "single rounding would give 0");
    }

    #[test]
    fn weight_scales_follow_the_converter() {
        let w = Tensor::<2>::from_data(
            TensorData::new(vec![-1.0f32, 2.0, 0.5, 0.25], [2, 2]),
            &device(),
        );
        // Per channel: [−1, 2] → 3/3 = 1; [0, 0.5] (widened to 0) → 0.5/3. Per tensor: 1.
        let per_channel = weight_scales(&w, 2, true);
        assert_eq!(per_channel, [1.0, 0.5 / 3.0]);
        assert_eq!(weight_scales(&w, 2, false), [1.0, 1.0]);
    }
}
