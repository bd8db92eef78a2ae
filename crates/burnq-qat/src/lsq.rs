//! Learned step sizes (LSQ, Esser et al. 2019, arXiv 1902.08153) and learned offsets (LSQ+,
//! Bhalgat et al. 2020, arXiv 2004.09576): the step size `s` of each quantizer, and the offset
//! `β` of a signed activation, are trained parameters with their own gradients. One state
//! ([`LsqState`]) serves every network: quantizers are keyed by layer (weights) and
//! quantization point (activations) name.
//!
//! - Weights: symmetric signed codes `v ∈ [−Q_N, Q_P]` with `Q_N = 2^(b−1)`, `Q_P = 2^(b−1) − 1`,
//!   stored by the engine as `q = v + Z` with the fixed zero point `Z = 2^(b−1)` (real 0 exact).
//!   One `s` per tensor or per output channel; initialised as the paper does,
//!   `s = 2·mean|w|/√Q_P` ([`StepInit::Paper`]), or at the step of least quantization error
//!   of the weights it starts from ([`StepInit::Mse`], [`burnq_quant::range::mse_step`]: at
//!   2 bits the paper's step, `≈ 1.6σ` for normal weights, rounds over half of them to 0).
//! - Activations after ReLU/ReLU6: unsigned codes `[0, Q_P]`, `Q_P = 2^b − 1`, zero point 0;
//!   `s = max/Q_P` from the calibrated range. Signed activations (no ReLU fused): with LSQ the
//!   weights' symmetric grid, fixed `Z = 2^(b−1)`, `s = max(−min/Q_N, max/Q_P)`; with LSQ+ codes
//!   `[0, 2^b − 1]` and a learned offset `β`, `x̂ = s·clamp(round((x − β)/s), 0, 2^b − 1) + β`,
//!   started from the calibrated min/max grid (`s = (max − min)/(2^b − 1)`, `β = −s·Z`). The
//!   engine needs real 0 on the grid, so the forward pass uses `β` snapped to `−s·Z`,
//!   `Z = round(−β/s)` clamped to the codes (the exported zero point), and passes `β`'s
//!   gradient straight through the snap. ReLU outputs keep `β = 0` (`Z = 0`).
//! - Forward on codes `q` (the engine's, or `round(c)`), `c = clamp((x − β)/s, 0, Q)`:
//!   `x̂ = s·(c + detach(q − c)) + β`, with `β = −s·Z` for the fixed zero points of LSQ.
//!   Backward: straight through the rounding, so `∂x̂/∂x = 1` inside the range, 0 outside;
//!   `∂x̂/∂s = round(·) − (x − β)/s` inside, the clipped code minus `Z` outside (LSQ: `−Q_N`,
//!   `Q_P`); LSQ+'s `∂x̂/∂β = 0` inside and 1 outside. Gradients of `s` and `β` are scaled by
//!   `g = 1/√(N·Q_P)` (`N` = weights per step size, or activation values per image), written as
//!   `s·g + detach(s − s·g)`, which is `s` forward and `g·∂/∂s` backward.
//! - An activation's codes are not rounded once but computed by the engine's integer
//!   requantization ([`crate::int_sim`]), passed as code offsets `q − Z`; so the LSQ gradient
//!   reaches `s` while the values are the engine's. A described network's weight codes are
//!   likewise the converter's, from its own folded weights.
//! - The step sizes and offsets are updated after each backward pass by SGD with the network's
//!   learning rate and momentum; step sizes are kept positive.
//!
//! The learned grids are exported as they are ([`burnq_quant::convert_with_grids`],
//! [`burnq_quant::convert_graph_with_grids`]).

use std::collections::BTreeMap;

use burn::prelude::*;
use burn::tensor::Gradients;
use burnq_model::export::to_vec;
use burnq_quant::range::mse_step;
use burnq_quant::{LayerGrids, QuantParams};
use serde::{Deserialize, Serialize};

use crate::QatError;

/// Smallest step size kept by an update (a step size must stay a positive normal `f32`).
const MIN_STEP: f32 = 1e-7;

/// The signed range `(Q_N, Q_P)` of `bits`-bit codes and their zero point `Z = Q_N`.
fn signed_range(bits: u8) -> (f32, f32, i32) {
    let half = 1i32 << (bits - 1);
    (half as f32, (half - 1) as f32, half)
}

/// The largest code `2^bits − 1`.
fn qmax(bits: u8) -> f32 {
    ((1u32 << bits) - 1) as f32
}

/// The grid of each of `out` output channels from `steps` (one step size per channel, or
/// one for all).
fn grids_of(
    steps: &LearnedScalars,
    out: usize,
    zero_point: i32,
    bits: u8,
) -> Option<Vec<QuantParams>> {
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

/// One group of learned scalars (step sizes or offsets, one per channel, or one) with their
/// SGD momentum, and the tensor of the current training step whose gradient updates them.
#[derive(Debug, Clone)]
pub struct LearnedScalars {
    values: Vec<f32>,
    velocity: Vec<f32>,
    pending: Option<Tensor<1>>,
    /// The least value an update keeps (`MIN_STEP` for step sizes, −∞ for offsets).
    floor: f32,
}

impl LearnedScalars {
    /// Step sizes starting at `values`, kept positive.
    pub fn steps(values: Vec<f32>) -> Self {
        Self::with_floor(values, MIN_STEP)
    }

    /// Offsets starting at `values`, of any sign.
    pub fn offsets(values: Vec<f32>) -> Self {
        Self::with_floor(values, f32::NEG_INFINITY)
    }

    fn with_floor(values: Vec<f32>, floor: f32) -> Self {
        let velocity = vec![0.0; values.len()];
        Self {
            values,
            velocity,
            pending: None,
            floor,
        }
    }

    /// The current values.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values as a tensor on `device` (tracked for the gradient when `train`), with the
    /// gradient scale `g`.
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
            *value = (*value - lr as f32 * *velocity).max(self.floor);
        }
    }
}

/// The kind of values an activation quantization point holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// After ReLU or ReLU6: unsigned codes, zero point 0.
    Unsigned,
    /// Signed values on the symmetric grid, fixed zero point `2^(b−1)` (LSQ).
    Signed,
    /// Signed values with a learned offset `β`, zero point `round(−β/s)` (LSQ+).
    Offset,
}

/// One activation point's quantizer: its width, step size and zero point or learned offset.
#[derive(Debug, Clone)]
struct ActivationQuantizer {
    bits: u8,
    step: LearnedScalars,
    /// The fixed zero point (0 unsigned, `2^(b−1)` signed), without a learned offset.
    zero_point: i32,
    offset: Option<LearnedScalars>,
    /// `Q_P` of the gradient scale.
    grad_qp: f32,
}

impl ActivationQuantizer {
    /// Started from the calibrated `(min, max)` (module docs).
    fn new((min, max): (f32, f32), bits: u8, kind: PointKind) -> Self {
        let step = |s: f32| LearnedScalars::steps(vec![s.max(MIN_STEP)]);
        match kind {
            PointKind::Unsigned => Self {
                bits,
                step: step(max / qmax(bits)),
                zero_point: 0,
                offset: None,
                grad_qp: qmax(bits),
            },
            PointKind::Signed => {
                let (qn, qp, zero_point) = signed_range(bits);
                Self {
                    bits,
                    step: step((-min / qn).max(max / qp.max(1.0))),
                    zero_point,
                    offset: None,
                    grad_qp: qp.max(1.0),
                }
            }
            PointKind::Offset => {
                let (s, z) = QuantParams::from_range(min, max, bits)
                    .map_or((1.0, 0), |g| (g.scale(), g.zero_point()));
                Self {
                    bits,
                    step: step(s),
                    zero_point: 0,
                    offset: Some(LearnedScalars::offsets(vec![-s * z as f32])),
                    grad_qp: qmax(bits),
                }
            }
        }
    }

    /// The zero point: fixed, or `round(−β/s)` clamped to the codes.
    fn zero_point(&self) -> i32 {
        match &self.offset {
            Some(beta) => (-beta.values()[0] / self.step.values()[0])
                .round()
                .clamp(0.0, qmax(self.bits)) as i32,
            None => self.zero_point,
        }
    }

    fn grid(&self) -> Option<QuantParams> {
        QuantParams::new(self.step.values()[0], self.zero_point(), self.bits).ok()
    }
}

/// Where the weight step sizes start (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepInit {
    /// The paper's `s = 2·mean|w|/√Q_P`.
    #[default]
    Paper,
    /// The step minimizing the weights' mean squared quantization error.
    Mse,
}

impl StepInit {
    /// Every initialisation, by command-line name.
    pub const ALL: [Self; 2] = [Self::Paper, Self::Mse];

    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Paper => "paper",
            Self::Mse => "mse",
        }
    }

    /// The starting step of `bits`-bit weights `w` on the signed grid `[−Q_N, Q_P]` (`Q_N` the
    /// zero point), never below the least step kept; MSE falls back to the paper's step for
    /// weights without one (all 0).
    fn step(self, w: &[f32], bits: u8) -> f32 {
        let (_, qp, zero_point) = signed_range(bits);
        let paper = || {
            let mean = w.iter().map(|x| x.abs()).sum::<f32>() / w.len().max(1) as f32;
            2.0 * mean / qp.max(1.0).sqrt()
        };
        let s = match self {
            Self::Paper => paper(),
            Self::Mse => mse_step(w, bits, zero_point).unwrap_or_else(paper),
        };
        s.max(MIN_STEP)
    }
}

/// The learned step sizes (and offsets) of a network: weights by layer name, activations by
/// quantization point name.
#[derive(Debug, Clone, Default)]
pub struct LsqState {
    weights: BTreeMap<String, LearnedScalars>,
    activations: BTreeMap<String, ActivationQuantizer>,
    /// Where weight step sizes start.
    weight_init: StepInit,
}

impl LsqState {
    /// A state whose weight step sizes start as `init` says.
    pub fn new(init: StepInit) -> Self {
        Self {
            weight_init: init,
            ..Self::default()
        }
    }

    /// The same state with a quantizer for the activation point `name` of width `bits`,
    /// started from its calibrated `range` (module docs). Weight step sizes start at the
    /// first forward pass.
    pub fn with_activation(
        mut self,
        name: &str,
        range: (f32, f32),
        bits: u8,
        kind: PointKind,
    ) -> Self {
        self.activations
            .insert(name.to_owned(), ActivationQuantizer::new(range, bits, kind));
        self
    }

    /// Layer `name`'s weights `w` (output channels on dim 0) on their learned grids, with
    /// the grids (one per output channel). `exact`: the weights' values as the converter
    /// sees them (row-major, `w`'s shape), whose codes the forward pass then uses; without
    /// them `w/s` is rounded. `None` when the weights have no grid (no longer finite).
    pub fn weights<const D: usize>(
        &mut self,
        name: &str,
        w: Tensor<D>,
        exact: Option<&[f32]>,
        bits: u8,
        per_channel: bool,
        train: bool,
    ) -> Option<(Tensor<D>, Vec<QuantParams>)> {
        let dims = w.dims();
        let out = dims[0];
        let (qn, qp, zero_point) = signed_range(bits);
        let init = self.weight_init;
        let steps = self.weights.entry(name.to_owned()).or_insert_with(|| {
            let values = exact.map_or_else(|| to_vec(w.clone().detach()), <[f32]>::to_vec);
            let fan_in = values.len() / out.max(1);
            LearnedScalars::steps(if per_channel {
                values
                    .chunks(fan_in.max(1))
                    .map(|c| init.step(c, bits))
                    .collect()
            } else {
                vec![init.step(&values, bits)]
            })
        });
        let grids = grids_of(steps, out, zero_point, bits)?;
        let per_step = if per_channel {
            dims[1..].iter().product()
        } else {
            dims.iter().product::<usize>()
        };
        let grad_scale = 1.0 / ((per_step as f32) * qp.max(1.0)).sqrt();
        let s = steps.tensor(&w.device(), grad_scale, train);
        let mut shape = [1; D];
        shape[0] = if per_channel { out } else { 1 };
        let s = s.reshape(shape);
        let c = w.div(s.clone()).clamp(-qn, qp);
        let q = match exact {
            Some(values) => {
                let fan_in = values.len() / out.max(1);
                let offsets: Vec<f32> = values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let grid = grids[i / fan_in.max(1)];
                        (i32::from(grid.quantize(v)) - zero_point) as f32
                    })
                    .collect();
                Tensor::from_data(TensorData::new(offsets, dims), &c.device())
            }
            None => c.clone().round(),
        };
        Some(((c.clone() + (q - c).detach()).mul(s), grids))
    }

    /// The current grids of layer `name`'s weights (one per output channel of `out`), once a
    /// forward pass has initialised them.
    pub fn weight_grids(&self, name: &str, out: usize, bits: u8) -> Option<Vec<QuantParams>> {
        let (_, _, zero_point) = signed_range(bits);
        grids_of(self.weights.get(name)?, out, zero_point, bits)
    }

    /// The grids layer `name` is converted onto: `output` when given (the logits', from their
    /// tracked range), else its learned output grid, and with `weights = Some((out, bits))`
    /// the learned grids of its `out` channels of `bits`-bit weights. Errors naming `name`
    /// when a learned grid is missing (a step size no longer a positive normal `f32`), so
    /// that a learned model is never converted onto other grids.
    pub fn grids(
        &self,
        name: &str,
        output: Option<QuantParams>,
        weights: Option<(usize, u8)>,
    ) -> Result<LayerGrids, QatError> {
        let missing = || QatError::NoGrid(name.to_owned());
        let output = match output {
            Some(grid) => grid,
            None => self.activation_grid(name).ok_or_else(missing)?,
        };
        let weights = weights
            .map(|(out, bits)| self.weight_grids(name, out, bits).ok_or_else(missing))
            .transpose()?;
        Ok(LayerGrids { output, weights })
    }

    /// The grid of activation point `name`, if it has a quantizer.
    pub fn activation_grid(&self, name: &str) -> Option<QuantParams> {
        self.activations.get(name)?.grid()
    }

    /// The activation `x` of point `name` with the engine's code offsets `q − Z` (or, without
    /// them, `x` rounded on the grid): `s·(c + detach(q − c)) + β` (module docs). `x` is
    /// returned as it is when `name` has no quantizer.
    pub fn activation<const D: usize>(
        &mut self,
        name: &str,
        x: Tensor<D>,
        offsets: Option<Tensor<D>>,
        train: bool,
    ) -> Tensor<D> {
        let Some(a) = self.activations.get_mut(name) else {
            return x;
        };
        let z = a.zero_point();
        let qp = qmax(a.bits);
        let per_image: usize = x.dims()[1..].iter().product();
        let grad_scale = 1.0 / ((per_image as f32) * a.grad_qp).sqrt();
        let device = x.device();
        let shape = [1; D];
        let s = a.step.tensor(&device, grad_scale, train).reshape(shape);
        let beta = match &mut a.offset {
            Some(beta) => {
                let beta = beta.tensor(&device, grad_scale, train).reshape(shape);
                let snapped = s.clone().detach().mul_scalar(-(z as f32));
                Some(beta.clone() + (snapped - beta).detach())
            }
            None if z != 0 => Some(s.clone().mul_scalar(-(z as f32))),
            None => None,
        };
        let shifted = match &beta {
            Some(beta) => x - beta.clone(),
            None => x,
        };
        let c = shifted.div(s.clone()).clamp(0.0, qp);
        let q = offsets.map_or_else(|| c.clone().round(), |v| v.add_scalar(z));
        let y = (c.clone() + (q - c).detach()).mul(s);
        match beta {
            Some(beta) => y + beta,
            None => y,
        }
    }

    /// Updates every step size and offset from the gradients of the last training step (SGD
    /// with `momentum`, dampening 0, as the network's optimizer).
    pub fn update(&mut self, grads: &Gradients, lr: f64, momentum: f64) {
        for steps in self.weights.values_mut() {
            steps.update(grads, lr, momentum);
        }
        for a in self.activations.values_mut() {
            a.step.update(grads, lr, momentum);
            if let Some(beta) = &mut a.offset {
                beta.update(grads, lr, momentum);
            }
        }
    }
}

#[cfg(test)]
mod tests;
