//! Learned step sizes (LSQ, Esser et al. 2019, arXiv 1902.08153): the step size `s` of each
//! quantizer is a trained parameter with its own gradient.
//!
//! - Weights: symmetric signed codes `v ∈ [−Q_N, Q_P]` with `Q_N = 2^(b−1)`, `Q_P = 2^(b−1) − 1`,
//!   stored by the engine as `q = v + Z` with the fixed zero point `Z = 2^(b−1)` (real 0 exact).
//!   One `s` per tensor or per output channel; initialised as the paper does,
//!   `s = 2·mean|w|/√Q_P`.
//! - Activations (the ReLU outputs of conv1, conv2 and fc1): unsigned codes `[0, Q_P]`,
//!   `Q_P = 2^b − 1`, zero point 0; `s` initialised from the calibrated range,
//!   `s = max/Q_P`.
//! - Forward `ŵ = s·round(clamp(w/s, −Q_N, Q_P))`; backward: straight through the rounding, so
//!   `∂ŵ/∂w = 1` inside the range, 0 outside, and `∂ŵ/∂s = round(w/s) − w/s` inside, `−Q_N` or
//!   `Q_P` at the clip — the LSQ gradient. `s`'s gradient is scaled by `g = 1/√(N·Q_P)`
//!   (`N` = weights per step size, or activation values per image), written as
//!   `s·g + detach(s − s·g)`, which is `s` forward and `g·∂/∂s` backward.
//! - An activation's codes are not rounded once but computed by the engine's integer
//!   requantization ([`crate::int_sim`]): `out = s·(c + detach(q − c))`, `c = clamp(x/s, 0, Q_P)`,
//!   `q` the engine's codes; so the LSQ gradient reaches `s` while the values are the engine's.
//! - The step sizes are updated after each backward pass by SGD with the network's learning
//!   rate and momentum, and kept positive.
//!
//! The learned grids are exported as they are ([`burnq_quant::convert_with_grids`]).

use burn::prelude::*;
use burn::tensor::Gradients;
use burnq_model::export::to_vec;
use burnq_quant::QuantParams;

/// Smallest step size kept by an update (a step size must stay a positive normal `f32`).
const MIN_STEP: f32 = 1e-7;

/// The signed range `(Q_N, Q_P)` of `bits`-bit weights and their zero point `Z = Q_N`.
fn weight_range(bits: u8) -> (f32, f32, i32) {
    let half = 1i32 << (bits - 1);
    (half as f32, (half - 1) as f32, half)
}

/// The grid of each of `out` output channels from `steps` (one step size per channel, or
/// one for all).
fn grids_of(steps: &StepSizes, out: usize, zero_point: i32, bits: u8) -> Option<Vec<QuantParams>> {
    let grids = steps
        .values()
        .iter()
        .map(|&s| QuantParams::new(s, zero_point, bits).ok())
        .collect::<Option<Vec<_>>>()?;
    match grids.as_slice() {
        [one] => Some(vec![*one; out]),
        _ if grids.len() == out => Some(grids),
        _ => None,
    }
}

/// One group of learned step sizes (one per channel, or one) with its SGD momentum, and the
/// tensor of the current training step whose gradient updates it.
#[derive(Debug, Clone)]
pub struct StepSizes {
    values: Vec<f32>,
    velocity: Vec<f32>,
    pending: Option<Tensor<1>>,
}

impl StepSizes {
    /// Step sizes starting at `values`.
    pub fn new(values: Vec<f32>) -> Self {
        let velocity = vec![0.0; values.len()];
        Self {
            values,
            velocity,
            pending: None,
        }
    }

    /// The current step sizes.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The step sizes as a tensor on `device` (tracked for the gradient when `train`), with
    /// the LSQ gradient scale `g`.
    fn tensor(&mut self, device: &Device, grad_scale: f32, train: bool) -> Tensor<1> {
        let s = Tensor::<1>::from_data(
            TensorData::new(self.values.clone(), [self.values.len()]),
            device,
        );
        if !train {
            return s;
        }
        let s = s.require_grad();
        self.pending = Some(s.clone());
        let scaled = s.clone().mul_scalar(grad_scale);
        scaled.clone() + (s - scaled).detach()
    }

    /// One SGD step with momentum on the gradient the last training step left.
    fn update(&mut self, grads: &Gradients, lr: f64, momentum: f64) {
        let Some(s) = self.pending.take() else {
            return;
        };
        let Some(grad) = s.grad(grads) else {
            return;
        };
        for ((value, velocity), g) in self
            .values
            .iter_mut()
            .zip(&mut self.velocity)
            .zip(to_vec(grad))
        {
            if !g.is_finite() {
                continue;
            }
            *velocity = (momentum as f32) * *velocity + g;
            *value = (*value - lr as f32 * *velocity).max(MIN_STEP);
        }
    }
}

/// The learned step sizes of the network: weights of conv1, conv2, fc1, fc2 and the
/// activations leaving conv1, conv2 and fc1.
#[derive(Debug, Clone)]
pub struct LsqState {
    weights: [Option<StepSizes>; 4],
    activations: [StepSizes; 3],
}

impl LsqState {
    /// Activation step sizes from the calibrated output ranges of conv1, conv2 and fc1 (after
    /// ReLU, so `[0, max]`) and their widths `act_bits`: `s = max/Q_P`, `Q_P = 2^bits − 1`.
    /// Weight step sizes start at the first forward pass.
    pub fn new(act_ranges: [(f32, f32); 3], act_bits: [u8; 3]) -> Self {
        Self {
            weights: Default::default(),
            activations: std::array::from_fn(|i| {
                let qp = ((1u32 << act_bits[i]) - 1) as f32;
                StepSizes::new(vec![(act_ranges[i].1 / qp).max(MIN_STEP)])
            }),
        }
    }

    /// Layer `index`'s weights `w` (output channels on dim 0) on their learned grids, with
    /// the grids (one per output channel).
    pub fn weights<const D: usize>(
        &mut self,
        index: usize,
        w: Tensor<D>,
        bits: u8,
        per_channel: bool,
        train: bool,
    ) -> Option<(Tensor<D>, Vec<QuantParams>)> {
        let out = w.dims()[0];
        let (qn, qp, zero_point) = weight_range(bits);
        let steps = self.weights[index].get_or_insert_with(|| {
            let values = to_vec(w.clone().detach());
            let init = |v: &[f32]| {
                let mean = v.iter().map(|x| x.abs()).sum::<f32>() / v.len().max(1) as f32;
                (2.0 * mean / qp.max(1.0).sqrt()).max(MIN_STEP)
            };
            let fan_in = values.len() / out.max(1);
            StepSizes::new(if per_channel {
                values.chunks(fan_in.max(1)).map(init).collect()
            } else {
                vec![init(&values)]
            })
        });
        let grids = grids_of(steps, out, zero_point, bits)?;
        let per_step = if per_channel {
            w.dims()[1..].iter().product()
        } else {
            w.dims().iter().product::<usize>()
        };
        let grad_scale = 1.0 / ((per_step as f32) * qp.max(1.0)).sqrt();
        let s = steps.tensor(&w.device(), grad_scale, train);
        let mut shape = [1; D];
        shape[0] = if per_channel { out } else { 1 };
        let s = s.reshape(shape);
        let c = w.div(s.clone()).clamp(-qn, qp);
        let rounded = c.clone() + (c.clone().round() - c).detach();
        Some((rounded.mul(s), grids))
    }

    /// The current grids of layer `index`'s weights (one per output channel of `out`), once a
    /// forward pass has initialised them.
    pub fn weight_grids(&self, index: usize, out: usize, bits: u8) -> Option<Vec<QuantParams>> {
        let (_, _, zero_point) = weight_range(bits);
        grids_of(self.weights[index].as_ref()?, out, zero_point, bits)
    }

    /// The grid of the activation leaving layer `index` (0 = conv1 … 2 = fc1).
    pub fn activation_grid(&self, index: usize, bits: u8) -> Option<QuantParams> {
        QuantParams::new(self.activations[index].values()[0], 0, bits).ok()
    }

    /// The activation `x` leaving layer `index` with the engine's code offsets `codes` (or,
    /// without them, `x` rounded on the grid): `s·(c + detach(q − c))`, `c = clamp(x/s, 0, Q_P)`.
    pub fn activation<const D: usize>(
        &mut self,
        index: usize,
        x: Tensor<D>,
        codes: Option<Tensor<D>>,
        bits: u8,
        train: bool,
    ) -> Tensor<D> {
        let qp = ((1u32 << bits) - 1) as f32;
        let per_image: usize = x.dims()[1..].iter().product();
        let grad_scale = 1.0 / ((per_image as f32) * qp).sqrt();
        let mut shape = [1; D];
        shape[0] = 1;
        let s = self.activations[index]
            .tensor(&x.device(), grad_scale, train)
            .reshape(shape);
        let c = x.div(s.clone()).clamp(0.0, qp);
        let q = codes.unwrap_or_else(|| c.clone().round());
        (c.clone() + (q - c).detach()).mul(s)
    }

    /// Updates every step size from the gradients of the last training step (SGD with
    /// `momentum`, dampening 0, as the network's optimizer).
    pub fn update(&mut self, grads: &Gradients, lr: f64, momentum: f64) {
        for steps in self.weights.iter_mut().flatten() {
            steps.update(grads, lr, momentum);
        }
        for steps in &mut self.activations {
            steps.update(grads, lr, momentum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::flex().autodiff()
    }

    #[test]
    fn weight_grids_are_symmetric_with_zero_exact() {
        assert_eq!(weight_range(2), (2.0, 1.0, 2));
        assert_eq!(weight_range(8), (128.0, 127.0, 128));
        let mut lsq = LsqState::new([(0.0, 1.0); 3], [4; 3]);
        let w = Tensor::<2>::from_floats([[0.3, -0.2, 0.0], [0.05, 0.1, -0.4]], &device());
        let (q, grids) = lsq.weights(0, w, 4, true, false).unwrap();
        assert_eq!(grids.len(), 2);
        for (row, grid) in to_vec(q).chunks(3).zip(&grids) {
            assert_eq!(grid.zero_point(), 8);
            for v in row {
                let k = v / grid.scale();
                assert!(
                    (k - k.round()).abs() < 1e-4 && (-8.0..=7.0).contains(&k.round()),
                    "{v}"
                );
            }
        }
    }

    #[test]
    fn step_size_gradient_is_the_lsq_gradient() {
        let d = device();
        // One activation step size s = 1 at 2 bits (Q_P = 3), four values per image, so
        // g = 1/√(4·3). Inside the range ∂/∂s = round(x/s) − x/s; clipped above: Q_P.
        let mut lsq = LsqState::new([(0.0, 3.0); 3], [2; 3]);
        let x = Tensor::<2>::from_floats([[0.4, 1.6, 2.2, 7.0]], &d);
        let y = lsq.activation(0, x, None, 2, true);
        assert_eq!(to_vec(y.clone()), [0.0, 2.0, 2.0, 3.0]);
        let grads = y.sum().backward();
        let s = lsq.activations[0].pending.clone().unwrap();
        let got = to_vec(s.grad(&grads).unwrap())[0];
        let g = 1.0 / (12.0f32).sqrt();
        let want = g * ((0.0 - 0.4) + (2.0 - 1.6) + (2.0 - 2.2) + 3.0);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // One SGD step with lr 0.1 moves s against its gradient.
        lsq.update(&grads, 0.1, 0.0);
        let s = lsq.activations[0].values()[0];
        assert!((s - (1.0 - 0.1 * got)).abs() < 1e-6, "{s}");
    }
}
