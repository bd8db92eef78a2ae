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
//! A grid is the asymmetric affine one of Jacob et al. 2018, `r = S(q − Z)`, derived by the one
//! grid function [`QuantParams::from_range`] (range widened to contain 0,
//! `S = (max − min)/(2^bits − 1)`, `Z = round(−min/S)`); fake quantization applies
//! `S·(clamp(round(r/S) + Z, 0, 2^bits − 1) − Z)` to a whole tensor. This module also holds the
//! tensor forms QAT uses ([`fake_quantize`], [`fake_quantize_channels`]).

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::Net;
use burnq_model::data::ImageBatcher;
use burnq_model::export::to_vec;
use burnq_quant::{ActivationRanges, QuantParams};

/// `x` rounded to `grid` and mapped back to float: `S·(clamp(round(x/S) + Z, 0, qmax) − Z)`.
pub fn fake_quantize<const D: usize>(x: Tensor<D>, grid: QuantParams) -> Tensor<D> {
    let (scale, zero_point) = (grid.scale(), grid.zero_point() as f32);
    x.div_scalar(scale)
        .round()
        .add_scalar(zero_point)
        .clamp(0.0, grid.qmax() as f32)
        .sub_scalar(zero_point)
        .mul_scalar(scale)
}

/// [`fake_quantize`] with one grid per slice along dim 0 (an output channel).
pub fn fake_quantize_channels<const D: usize>(w: Tensor<D>, grids: &[QuantParams]) -> Tensor<D> {
    let device = w.device();
    let mut shape = [1; D];
    shape[0] = grids.len();
    let column = |values: Vec<f32>| {
        Tensor::<1>::from_data(TensorData::new(values, [grids.len()]), &device).reshape(shape)
    };
    let scale = column(grids.iter().map(QuantParams::scale).collect());
    let zero_point = column(grids.iter().map(|g| g.zero_point() as f32).collect());
    let qmax = grids.first().map_or(0.0, |g| g.qmax() as f32);
    w.div(scale.clone())
        .round()
        .add(zero_point.clone())
        .clamp(0.0, qmax)
        .sub(zero_point)
        .mul(scale)
}

/// The tensor on the `bits`-bit grid of its own min/max (widened to contain 0); unchanged
/// when it has no grid (non-finite values).
fn fake_quantize_own_range<const D: usize>(w: Tensor<D>, bits: u8) -> Tensor<D> {
    let (lo, hi) = burnq_quant::range::min_max(&to_vec(w.clone()));
    match QuantParams::from_range(lo, hi, bits) {
        Ok(grid) => fake_quantize(w, grid),
        Err(_) => w,
    }
}

/// The tensor on the `bits`-bit grid of the calibrated `(min, max)`; unchanged when the range
/// has no grid.
fn fake_quantize_range<const D: usize>(x: Tensor<D>, (lo, hi): (f32, f32), bits: u8) -> Tensor<D> {
    match QuantParams::from_range(lo, hi, bits) {
        Ok(grid) => fake_quantize(x, grid),
        Err(_) => x,
    }
}

/// Log-probabilities under simulated quantization: the inputs of conv1, conv2, fc1 and fc2
/// on the `bits`-bit grids of their calibrated `ranges`, every weight and bias tensor on the
/// grid of its own min/max.
///
/// # Shapes
/// - input: `[n, 1, 28, 28]`, normalized pixels
/// - output: `[n, classes]`
pub fn forward_simulated(
    model: &Net,
    images: Tensor<4>,
    ranges: &ActivationRanges,
    bits: u8,
) -> Tensor<2> {
    let conv = |c: &burn::nn::conv::Conv2d, x: Tensor<4>| {
        let mut c = c.clone();
        c.weight = c.weight.map(|w| fake_quantize_own_range(w, bits));
        c.bias = c.bias.map(|b| b.map(|b| fake_quantize_own_range(b, bits)));
        c.forward(x)
    };
    let linear = |l: &burn::nn::Linear, x: Tensor<2>| {
        let mut l = l.clone();
        l.weight = l.weight.map(|w| fake_quantize_own_range(w, bits));
        l.bias = l.bias.map(|b| b.map(|b| fake_quantize_own_range(b, bits)));
        l.forward(x)
    };
    let x = fake_quantize_range(images, ranges.input, bits);
    let x = model.pool.forward(relu(conv(&model.conv1, x)));
    let x = fake_quantize_range(x, ranges.conv2_input, bits);
    let x = model.pool.forward(relu(conv(&model.conv2, x)));
    let x = fake_quantize_range(x.flatten(1, 3), ranges.fc1_input, bits);
    let x = relu(linear(&model.fc1, x));
    let x = fake_quantize_range(x, ranges.fc2_input, bits);
    log_softmax(linear(&model.fc2, x), 1)
}

/// Predicted class of every image of `set` under simulated quantization (see
/// [`forward_simulated`]), in batches of `batch_size`.
pub fn simulated_predictions(
    model: &Net,
    set: &ImageSet,
    ranges: &ActivationRanges,
    bits: u8,
    batch_size: usize,
    device: &Device,
) -> Vec<u8> {
    let batcher = ImageBatcher::new(set.kind.normalization());
    let mut out = Vec::with_capacity(set.len());
    for chunk in set.pixels.chunks(batch_size.max(1) * IMAGE_PIXELS) {
        let logp = forward_simulated(model, batcher.images(chunk, device), ranges, bits);
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
        let grid = QuantParams::from_range(-1.0, 3.0, 2).unwrap();
        let y = to_vec(fake_quantize(x, grid));
        let s = 4.0 / 3.0;
        let want = [-s, 0.0, 0.0, 2.0 * s, 2.0 * s];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }
}
