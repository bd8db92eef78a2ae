//! The engine's accumulators inside a fake-quantized forward pass, computed in integer units
//! so that they do not depend on the float kernels' summation order.
//!
//! A convolution or linear layer whose input is on a grid `(S_in, Z_in)` and whose weights are
//! on grids `(S_w[o], Z_w[o])` computes, in the integer engine, `acc = Σ (q − Z_in)(q_w −
//! Z_w[o]) + round(b[o]/(S_in·S_w[o]))` (Jacob et al. 2018, eq. 7 with the bias of §2.4). The
//! fake-quantized network computes the same sums as a convolution or matmul of the
//! integer-valued `f32` tensors `q − Z` ([`conv_sums`], [`linear_sums`]) — exact in any order of
//! addition while every partial sum stays below 2^23 — and replaces the forward values of the
//! real-unit output by `S_in·S_w[o]·acc` ([`exact_accumulators`]), the gradient staying the
//! real-unit one (straight-through). Both QAT forward passes (the tutorial network's
//! [`crate::qat`] and described networks' [`crate::arch_qat`]) use it.

use burn::prelude::*;
use burnq_model::export::to_vec;
use burnq_quant::QuantParams;
use burnq_quant::derive::quantize_bias;

/// The integer sums `Σ (q − Z_in)(q_w − Z_w[o])` of a convolution `conv(x, w)` (`w` as
/// `[out, fan_in]`, bias-free) of the activations `x` on `grid` with the fake-quantized
/// weights `w` on `grids`, and the sums of their magnitudes when [`within_exact_bound`] cannot
/// rule out a partial sum of 2^23 or more (`None` when it can).
pub fn conv_sums(
    x: &Tensor<4>,
    grid: QuantParams,
    w: &Tensor<2>,
    grids: &[QuantParams],
    conv: impl Fn(Tensor<4>, Tensor<2>) -> Tensor<4>,
) -> (Tensor<4>, Option<Tensor<4>>) {
    let (xq, wq) = (input_offsets(x, grid), weight_offsets(w, grids));
    let sums = conv(xq.clone(), wq.clone());
    let magnitudes = (!within_exact_bound(&xq, &wq)).then(|| conv(xq.abs(), wq.abs()));
    (sums, magnitudes)
}

/// [`conv_sums`] of a linear layer: `x` is `[n, fan_in]`, `w` is `[out, fan_in]`.
pub fn linear_sums(
    x: &Tensor<2>,
    grid: QuantParams,
    w: &Tensor<2>,
    grids: &[QuantParams],
) -> (Tensor<2>, Option<Tensor<2>>) {
    let (xq, wq) = (input_offsets(x, grid), weight_offsets(w, grids));
    let sums = xq.clone().matmul(wq.clone().transpose());
    let magnitudes = (!within_exact_bound(&xq, &wq)).then(|| xq.abs().matmul(wq.abs().transpose()));
    (sums, magnitudes)
}

/// The integer offsets `q − Z` of activations `x` on `grid` (real values `S·(q − Z)`), without
/// gradient.
fn input_offsets<const D: usize>(x: &Tensor<D>, grid: QuantParams) -> Tensor<D> {
    x.clone().detach().div_scalar(grid.scale()).round()
}

/// The integer offsets `q_w − Z_w[o]` of fake-quantized weights `w` `[out, fan_in]` on
/// `grids` (one per output channel), without gradient.
fn weight_offsets(w: &Tensor<2>, grids: &[QuantParams]) -> Tensor<2> {
    let scales: Vec<f32> = grids.iter().map(QuantParams::scale).collect();
    let scales = Tensor::<1>::from_data(TensorData::new(scales, [grids.len()]), &w.device());
    w.clone()
        .detach()
        .div(scales.reshape([grids.len(), 1]))
        .round()
}

/// Largest magnitude an `f32` sum of integers may reach for the sums below to be exact in any
/// order, and for `S·acc` in `f32` to round back to `acc`: 2^23.
const EXACT_INTEGERS: f32 = 8_388_608.0;

/// Whether every sum of `fan_in` products of the input offsets `xq` and the weight offsets `wq`
/// (`[out, fan_in]`) stays below 2^23 whatever the values: `fan_in·max|xq|·max|wq|`, two
/// reductions, so the exact bound (a convolution of the magnitudes) is computed only when this
/// one fails.
fn within_exact_bound<const D: usize>(xq: &Tensor<D>, wq: &Tensor<2>) -> bool {
    let fan_in = wq.dims()[1] as f32;
    let x_max = xq.clone().abs().max().into_scalar::<f32>();
    fan_in * x_max * wq.clone().abs().max().into_scalar::<f32>() < EXACT_INTEGERS
}

/// `y` (a convolution's or linear layer's outputs in real units, channels on dim 1) with its
/// forward values replaced by the engine's accumulators in real units, `S_in·S_w[o]·acc`, with
/// `acc = sums + round(b[o] / (S_in·S_w[o]))` ([`quantize_bias`], as the converter rounds the
/// bias) and `sums = Σ (q − Z_in)(q_w − Z_w[o])` computed on integer-valued `f32` tensors. Such
/// a sum is exact in whatever order the backend adds while every partial sum stays below 2^23,
/// which `magnitudes = Σ |q − Z_in|·|q_w − Z_w[o]|` bounds (`None`: [`within_exact_bound`]
/// already proved it); so the accumulators do not depend on
/// the float kernels. Where the bound does not hold (or an `|acc|` reaches 2^23), `y` is kept
/// and its accumulators come from rounding the real-unit sums. Gradient: `y`'s.
pub fn exact_accumulators<const D: usize>(
    y: Tensor<D>,
    sums: Tensor<D>,
    magnitudes: Option<Tensor<D>>,
    bias: &[f32],
    scales: &[f64],
) -> Tensor<D> {
    if magnitudes.is_some_and(|m| to_vec(m).iter().any(|&m| m >= EXACT_INTEGERS)) {
        return y;
    }
    let dims = y.dims();
    let (channels, inner) = (dims[1], dims[2..].iter().product::<usize>());
    let bias: Vec<i64> = bias
        .iter()
        .zip(scales)
        .map(|(&b, &s)| i64::from(quantize_bias(b, s)))
        .collect();
    let mut exact = Vec::with_capacity(dims.iter().product());
    for (i, &sum) in to_vec(sums).iter().enumerate() {
        let o = (i / inner) % channels;
        let acc = sum as i64 + bias[o];
        if acc.abs() as f32 >= EXACT_INTEGERS {
            return y;
        }
        exact.push((acc as f64 * scales[o]) as f32);
    }
    let exact = Tensor::from_data(TensorData::new(exact, dims), &y.device());
    y.clone() + (exact - y).detach()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(values: Vec<f32>) -> Tensor<2> {
        let n = values.len() / 2;
        Tensor::from_data(
            TensorData::new(values, [n, 2]),
            &burnq_model::Device::flex(),
        )
    }

    /// The accumulators come from the integer sums and the rounded bias, not from `y`: a `y`
    /// off by 0.7 of an accumulator step (which rounding `y` would turn into a wrong integer)
    /// still gives the exact accumulators; past the 2^23 bound `y` is kept.
    #[test]
    fn accumulators_come_from_the_integer_sums() {
        let scales = [0.5f64, 0.25];
        let bias = [1.2f32, -0.3]; // round(2.4) = 2, round(-1.2) = -1 accumulator steps
        let sums = vec![10.0, -7.0, 3.0, 1_000_000.0];
        let accs = [12.0, -8.0, 5.0, 999_999.0];
        let off: Vec<f32> = accs
            .iter()
            .enumerate()
            .map(|(i, &a)| (a + 0.7) * scales[i % 2] as f32)
            .collect();
        let magnitudes = vec![10.0, 7.0, 3.0, 1_000_000.0];
        let exact = exact_accumulators(
            tensor(off.clone()),
            tensor(sums.clone()),
            Some(tensor(magnitudes)),
            &bias,
            &scales,
        );
        let expected: Vec<f32> = accs
            .iter()
            .enumerate()
            .map(|(i, &a)| a * scales[i % 2] as f32)
            .collect();
        assert_eq!(to_vec(exact), expected);
        let kept = exact_accumulators(
            tensor(off.clone()),
            tensor(sums),
            Some(tensor(vec![10.0, 7.0, 3.0, EXACT_INTEGERS])),
            &bias,
            &scales,
        );
        assert_eq!(to_vec(kept), off);
    }
}
