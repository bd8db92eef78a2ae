//! The tutorial's *simulated* quantization, for comparison with the real integer engine:
//! every tensor a layer consumes is rounded to the `bits`-bit grid of its calibrated range,
//! every weight and bias tensor to the grid of its own min/max, and the arithmetic stays
//! float (a float layer over zero-point-shifted codes, rescaled, is the same real function).
//!
//! This is the scheme as the tutorial's text describes it. Its published code has two slips,
//! fixed here: it averages the summed per-sample min/max over the number of batches instead
//! of samples (here the calibration averages batch min/max over batches), and it *adds* the
//! bias zero point when dequantizing, `S·(q + Z)`, where `S·(q − Z)` is meant.
//!
//! A grid is the asymmetric affine one of Jacob et al. 2018, `r = S(q − Z)`, with the range
//! widened to contain 0, `S = (max − min)/(2^bits − 1)` and `Z = round(−min/S)`; fake
//! quantization is `S·(clamp(round(r/S) + Z, 0, 2^bits − 1) − Z)`.

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};

use burnq_data::{IMAGE_PIXELS, ImageSet};

use crate::Net;
use crate::data::ImageBatcher;

/// Rounds `x` to the `bits`-bit affine grid of `[min, max]` (widened to contain 0) and maps
/// it back to float. A range of zero width leaves `x` as zeros.
pub fn fake_quantize<const D: usize>(x: Tensor<D>, min: f32, max: f32, bits: u32) -> Tensor<D> {
    let (min, max) = (min.min(0.0), max.max(0.0));
    let qmax = ((1u32 << bits) - 1) as f32;
    let scale = (max - min) / qmax;
    if scale <= 0.0 || !scale.is_finite() {
        return x.zeros_like();
    }
    let zero_point = (-min / scale).round();
    x.div_scalar(scale)
        .round()
        .add_scalar(zero_point)
        .clamp(0.0, qmax)
        .sub_scalar(zero_point)
        .mul_scalar(scale)
}

fn fake_quantize_weights<const D: usize>(w: Tensor<D>, bits: u32) -> Tensor<D> {
    let lo = w.clone().min().into_scalar::<f32>();
    let hi = w.clone().max().into_scalar::<f32>();
    fake_quantize(w, lo, hi, bits)
}

impl Net {
    /// Log-probabilities under simulated quantization: `ranges` are the calibrated
    /// `(min, max)` of the inputs of conv1, conv2, fc1 and fc2, in that order.
    ///
    /// # Shapes
    /// - input: `[n, 1, 28, 28]`, normalized pixels
    /// - output: `[n, classes]`
    pub fn forward_simulated(
        &self,
        images: Tensor<4>,
        ranges: [(f32, f32); 4],
        bits: u32,
    ) -> Tensor<2> {
        let fq = |x: Tensor<4>, i: usize| fake_quantize(x, ranges[i].0, ranges[i].1, bits);
        let fq2 = |x: Tensor<2>, i: usize| fake_quantize(x, ranges[i].0, ranges[i].1, bits);
        let conv = |c: &burn::nn::conv::Conv2d, x: Tensor<4>| {
            let mut c = c.clone();
            c.weight = c.weight.map(|w| fake_quantize_weights(w, bits));
            c.bias = c.bias.map(|b| b.map(|b| fake_quantize_weights(b, bits)));
            c.forward(x)
        };
        let linear = |l: &burn::nn::Linear, x: Tensor<2>| {
            let mut l = l.clone();
            l.weight = l.weight.map(|w| fake_quantize_weights(w, bits));
            l.bias = l.bias.map(|b| b.map(|b| fake_quantize_weights(b, bits)));
            l.forward(x)
        };
        let x = self.pool.forward(relu(conv(&self.conv1, fq(images, 0))));
        let x = self.pool.forward(relu(conv(&self.conv2, fq(x, 1))));
        let x = relu(linear(&self.fc1, fq2(x.flatten(1, 3), 2)));
        log_softmax(linear(&self.fc2, fq2(x, 3)), 1)
    }
}

/// Predicted class of every image of `set` under simulated quantization (see
/// [`Net::forward_simulated`]), in batches of `batch_size`.
pub fn simulated_predictions(
    model: &Net,
    set: &ImageSet,
    ranges: [(f32, f32); 4],
    bits: u32,
    batch_size: usize,
    device: &Device,
) -> Vec<u8> {
    let batcher = ImageBatcher::new(set.kind.normalization());
    let mut out = Vec::with_capacity(set.len());
    for chunk in set.pixels.chunks(batch_size.max(1) * IMAGE_PIXELS) {
        let logp = model.forward_simulated(batcher.images(chunk, device), ranges, bits);
        out.extend(logp.argmax(1).into_data().iter::<i64>().map(|p| p as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_quantize_rounds_to_the_grid_and_keeps_zero_exact() {
        let d = Device::flex();
        let x = Tensor::<1>::from_floats([-1.0, 0.0, 0.26, 3.0, 5.0], &d);
        // [−1, 3] at 2 bits: S = 4/3, Z = round(0.75) = 1; grid {−4/3, 0, 4/3, 8/3}.
        let y: Vec<f32> = fake_quantize(x, -1.0, 3.0, 2)
            .into_data()
            .convert::<f32>()
            .try_into_vec()
            .unwrap();
        let s = 4.0 / 3.0;
        let want = [-s, 0.0, 0.0, 2.0 * s, 2.0 * s];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }
}
