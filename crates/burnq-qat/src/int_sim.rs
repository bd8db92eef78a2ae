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
//! The accumulators themselves are computed in integer units ([`crate::exact`]): the sums
//! of input and weight code offsets, exact in `f32` below 2^23 whatever the float kernels'
//! summation order, plus the converter's rounded bias; the rounding of `y/(S_in·S_w[o])` then
//! only recovers those integers.
//!
//! The parameters are the converter's own ([`LayerQuantization`], the one derivation in
//! `burnq-quant`), so both sides agree on every scale and multiplier.

use burn::prelude::*;
use burnq_model::export::to_vec;
use burnq_quant::{LayerQuantization, QuantParams};

/// One layer's output requantization exactly as the integer model runs it.
#[derive(Debug, Clone)]
pub struct LayerRequant {
    layer: LayerQuantization,
}

impl LayerRequant {
    /// The requantization of a layer with the parameters `layer` (from
    /// [`LayerQuantization::derive`] or [`LayerQuantization::from_grids`]).
    pub fn new(layer: LayerQuantization) -> Self {
        Self { layer }
    }

    /// The codes the engine computes for the layer outputs `y` (channels on dim 1, the real
    /// values of the accumulators, after ReLU and max-pooling, which commute with this
    /// increasing map), dequantized; straight-through gradient inside the clamp range.
    pub fn apply<const D: usize>(&self, y: Tensor<D>) -> Tensor<D> {
        let first = self.layer.requants[0];
        let offsets = self.code_offsets(&y);
        straight_through(
            y,
            offsets,
            self.layer.output,
            (first.act_min, first.act_max),
        )
    }

    /// The engine's output codes for `y` as offsets `q − Z_out` in `f32`, without gradient.
    pub fn code_offsets<const D: usize>(&self, y: &Tensor<D>) -> Tensor<D> {
        let LayerQuantization {
            accumulator_scales,
            requants,
            output,
            ..
        } = &self.layer;
        let z = output.zero_point();
        map_accumulators(y, accumulator_scales, |acc, o| {
            (i32::from(requants[o].apply(acc)) - z) as f32
        })
    }
}

/// `x` with its values replaced by `S_out·offsets` (the engine's codes as offsets `q − Z_out`
/// on `output`), with a straight-through gradient inside the clamp `[lo, hi]` (codes) and 0
/// outside it.
pub fn straight_through<const D: usize>(
    x: Tensor<D>,
    offsets: Tensor<D>,
    output: QuantParams,
    (lo, hi): (u8, u8),
) -> Tensor<D> {
    let exact = offsets.mul_scalar(output.scale());
    let clipped = x.clamp(output.dequantize(lo), output.dequantize(hi));
    clipped.clone() + (exact - clipped).detach()
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
    use burnq_quant::{Activation, Requant};
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
            let input = QuantParams::new(s_in, 0, 8).unwrap();
            let grids = w_scales.iter().map(|&s| QuantParams::new(s, 0, 8).unwrap()).collect();
            let output = QuantParams::from_range(0.0, hi, bits).unwrap();
            let layer = LayerQuantization::from_grids(input, grids, output, Activation::Relu).unwrap();
            let r = LayerRequant::new(layer.clone());
            // [2 images, 3 channels, 4 positions]: channel of value i is (i / 4) % 3.
            let y: Vec<f32> = accs
                .iter()
                .enumerate()
                .map(|(i, &a)| (f64::from(a) * layer.accumulator_scales[(i / 4) % 3]) as f32)
                .collect();
            let t = Tensor::<3>::from_data(TensorData::new(y, [2, 3, 4]), &device());
            let got: Vec<f32> = r.apply(t.clone()).into_data().try_into_vec().unwrap();
            let snapped: Vec<f32> =
                snap(t, &layer.accumulator_scales).into_data().try_into_vec().unwrap();
            for (i, &acc) in accs.iter().enumerate() {
                let o = (i / 4) % 3;
                let code = layer.requants[o].apply(acc);
                prop_assert_eq!(got[i], layer.output.dequantize(code), "value {}", i);
                prop_assert_eq!(snapped[i], (f64::from(acc) * layer.accumulator_scales[o]) as f32);
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
}
