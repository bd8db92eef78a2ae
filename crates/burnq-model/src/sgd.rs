//! SGD with momentum as one pass over each parameter: the update of Burn's
//! `SgdConfig::new().with_momentum(…)`, bit for bit, without its intermediate tensors.
//!
//! With gradient `g`, velocity `v` (none before the first step), momentum `μ`, dampening `δ`
//! and learning rate `η`, every element is updated as Burn's optimizer does it:
//! `v ← g` on the first step, else `v ← g·(1 − δ) + v·μ`; then `p ← p − v·η`, each product
//! and sum rounded to `f32` once (the scalars rounded to `f32` first, as Burn's tensor
//! operations take them). Burn computes that with five tensor operations, each allocating its
//! result; at one thread they were 4 % of a training profile, and with two data-parallel
//! shards the update runs while both shards wait for the next batch.
//!
//! [`FusedSgd`] computes it in one loop over contiguous `f32` flex tensors, writing the
//! velocity (and the parameter, when it owns it alone) in place, on rayon's threads for large
//! parameters (elements are independent, so the split does not change a bit). Parameters on
//! other backends or of other types take the same formula as Burn's tensor operations.

use burn::optim::{LearningRate, Optimizer, RecordState, StateSink, StateSource};
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::train_conv::values;

/// SGD with momentum `μ` and dampening `δ` (no Nesterov, no weight decay): see the module
/// documentation. Use it as `ModuleOptimizer::from(FusedSgd { … })`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedSgd {
    /// Momentum `μ`.
    pub momentum: f64,
    /// Dampening `δ`.
    pub dampening: f64,
}

/// The velocity of one parameter.
#[derive(Debug, Clone)]
pub struct Velocity<const D: usize> {
    /// `v`, shaped like the parameter.
    pub velocity: Tensor<D>,
}

/// Recorded as one tensor leaf, `{prefix}.velocity`, as Burn's momentum state is.
impl<const D: usize> RecordState for Velocity<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_tensor(prefix, "velocity", self.velocity.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let data = src.take_tensor(prefix, "velocity")?;
        Some(Self {
            velocity: Tensor::from_data(data, device),
        })
    }
}

/// Elements per rayon task; parameters with fewer elements than two tasks update on the
/// calling thread.
const CHUNK: usize = 1 << 15;

impl Optimizer for FusedSgd {
    type State<const D: usize> = Velocity<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Velocity<D>>,
    ) -> (Tensor<D>, Option<Velocity<D>>) {
        let Some(velocity) = state.map(|s| s.velocity) else {
            // First step: v = g.
            let tensor = tensor - grad.clone().mul_scalar(lr);
            return (tensor, Some(Velocity { velocity: grad }));
        };
        let [p, g, v] = [&tensor, &grad, &velocity].map(flex_f32);
        let (Some(p), Some(g), Some(v)) = (p, g, v) else {
            let velocity = grad
                .mul_scalar(1.0 - self.dampening)
                .add(velocity.mul_scalar(self.momentum));
            let tensor = tensor - velocity.clone().mul_scalar(lr);
            return (tensor, Some(Velocity { velocity }));
        };
        // The primitives are the only handles left on the parameter's and velocity's storage.
        drop((tensor, velocity));
        let (mut p, mut v) = (owned(p), owned(v));
        let scalars = Scalars {
            keep: (1.0 - self.dampening) as f32,
            momentum: self.momentum as f32,
            lr: lr as f32,
        };
        update(
            p.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
            &values(&g),
            scalars,
        );
        let [p, v] = [p, v].map(Tensor::from_primitive::<Flex>);
        (p, Some(Velocity { velocity: v }))
    }

    fn to_device<const D: usize>(state: Velocity<D>, device: &Device) -> Velocity<D> {
        Velocity {
            velocity: state.velocity.to_device(device),
        }
    }
}

/// The flex primitive of `t` when it is a flex `f32` tensor.
fn flex_f32<const D: usize>(t: &Tensor<D>) -> Option<FlexTensor> {
    let t = t.clone().try_into_primitive::<Flex>().ok()?;
    (t.dtype() == DType::F32).then_some(t)
}

/// `t` as a contiguous tensor holding exactly its elements in storage no other tensor shares
/// (copied only when it is not one already).
fn owned(t: FlexTensor) -> FlexTensor {
    let whole = t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.layout().num_elements() * size_of::<f32>();
    if whole && t.is_unique() {
        t
    } else {
        let shape = t.layout().shape().clone();
        FlexTensor::from_data(TensorData::new(values(&t).to_vec(), shape))
    }
}

/// The step's scalars, rounded to `f32`: `1 − δ`, `μ`, `η`.
#[derive(Debug, Clone, Copy)]
struct Scalars {
    keep: f32,
    momentum: f32,
    lr: f32,
}

/// `v ← g·(1 − δ) + v·μ`, `p ← p − v·η` for every element.
fn update(p: &mut [f32], v: &mut [f32], g: &[f32], s: Scalars) {
    let serial = |(p, v, g): (&mut [f32], &mut [f32], &[f32])| {
        for ((p, v), g) in p.iter_mut().zip(v.iter_mut()).zip(g) {
            *v = g * s.keep + *v * s.momentum;
            *p -= *v * s.lr;
        }
    };
    if p.len() >= 2 * CHUNK && rayon::current_num_threads() > 1 {
        p.par_chunks_mut(CHUNK)
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|((p, v), g)| serial((p, v, g)));
    } else {
        serial((p, v, g));
    }
}
