//! The float parameters of a described network ([`FloatParams`]): what training produces and
//! conversion consumes, keyed by step name, checked against a [`Plan`]; and the one batch-norm
//! folding ([`StepParams::folded`]).

use std::collections::BTreeMap;

use super::ArchError;
use super::plan::{Op, Plan, Step};

/// Batch norm's values per channel: the trained `γ`, `β` and the running mean and variance.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNormParams {
    /// Scale `γ`.
    pub gamma: Vec<f32>,
    /// Shift `β`.
    pub beta: Vec<f32>,
    /// Running mean `μ`.
    pub mean: Vec<f32>,
    /// Running variance `σ²` (≥ 0).
    pub var: Vec<f32>,
}

/// A convolution's or linear layer's parameters in real units.
#[derive(Debug, Clone, PartialEq)]
pub struct StepParams {
    /// Weights, row-major `[out, fan_in]` (OIHW for a convolution).
    pub weight: Vec<f32>,
    /// Bias per output channel, if the layer has one.
    pub bias: Option<Vec<f32>>,
    /// The batch norm that follows, if any.
    pub batch_norm: Option<BatchNormParams>,
}

impl StepParams {
    /// The weights and bias with the batch norm folded in (Jacob et al. 2018, §3.2):
    /// `w'[o, k] = w[o, k]·γ[o]/√(σ²[o] + eps)`, `b'[o] = (b[o] − μ[o])·γ[o]/√(σ²[o] + eps) + β[o]`
    /// (`b = 0` without a bias), computed in `f64`, rounded once to `f32`. Without a batch
    /// norm: the weights and the bias (zeros if none).
    pub fn folded(&self, eps: f64) -> (Vec<f32>, Vec<f32>) {
        let out = self.out_channels();
        let bias = self.bias.clone().unwrap_or_else(|| vec![0.0; out]);
        let Some(bn) = &self.batch_norm else {
            return (self.weight.clone(), bias);
        };
        let fan_in = self.weight.len() / out.max(1);
        let factor: Vec<f64> = (0..out)
            .map(|o| f64::from(bn.gamma[o]) / (f64::from(bn.var[o]) + eps).sqrt())
            .collect();
        let weight = self
            .weight
            .iter()
            .enumerate()
            .map(|(i, &w)| (f64::from(w) * factor[i / fan_in.max(1)]) as f32)
            .collect();
        let bias = (0..out)
            .map(|o| {
                let b = (f64::from(bias[o]) - f64::from(bn.mean[o])) * factor[o];
                (b + f64::from(bn.beta[o])) as f32
            })
            .collect();
        (weight, bias)
    }

    fn out_channels(&self) -> usize {
        match (&self.bias, &self.batch_norm) {
            (Some(b), _) => b.len(),
            (None, Some(bn)) => bn.gamma.len(),
            (None, None) => 0,
        }
    }
}

/// Every convolution's and linear layer's parameters, by step name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatParams {
    /// Parameters by [`Step::name`].
    pub layers: BTreeMap<String, StepParams>,
}

impl FloatParams {
    /// Checks the parameters against `plan`: one entry per convolution and linear step (no
    /// missing, no extra), a weight of `out·fan_in` values, a bias exactly where the step has
    /// one and a batch norm exactly where it has one (`out` values each), finite values and
    /// variances ≥ 0. The error lists every problem by tensor name.
    pub fn check(&self, plan: &Plan) -> Result<(), ArchError> {
        let mut problems = Vec::new();
        let steps: Vec<&Step> = plan
            .flat_steps()
            .into_iter()
            .filter(|s| weighted(s).is_some())
            .collect();
        for step in &steps {
            let (out, fan_in) = weighted(step).unwrap_or_default();
            let Some(p) = self.layers.get(&step.name) else {
                problems.push(format!("{}: missing", step.name));
                continue;
            };
            let mut expect = |what: &str, values: Option<&Vec<f32>>, want: Option<usize>| {
                let name = format!("{}.{what}", step.name);
                match (values, want) {
                    (None, None) => {}
                    (Some(_), None) => problems.push(format!("{name}: not expected")),
                    (None, Some(_)) => problems.push(format!("{name}: missing")),
                    (Some(v), Some(n)) if v.len() != n => {
                        problems.push(format!("{name}: {} values, expected {n}", v.len()))
                    }
                    (Some(v), Some(_)) => {
                        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                            problems.push(format!("{name}: value {i} is {}", v[i]));
                        }
                    }
                }
            };
            expect("weight", Some(&p.weight), Some(out * fan_in));
            expect("bias", p.bias.as_ref(), step.bias.then_some(out));
            let bn_len = step.batch_norm.map(|_| out);
            let bn = p.batch_norm.as_ref();
            expect("bn.gamma", bn.map(|b| &b.gamma), bn_len);
            expect("bn.beta", bn.map(|b| &b.beta), bn_len);
            expect("bn.mean", bn.map(|b| &b.mean), bn_len);
            expect("bn.var", bn.map(|b| &b.var), bn_len);
            if let Some(i) = bn.and_then(|b| b.var.iter().position(|&v| v < 0.0)) {
                problems.push(format!("{}.bn.var: value {i} is negative", step.name));
            }
        }
        for name in self.layers.keys() {
            if !steps.iter().any(|s| &s.name == name) {
                problems.push(format!(
                    "{name}: not a convolution or linear layer of the network"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ArchError::Params { problems })
        }
    }
}

/// `(out, fan_in)` of a convolution or linear step.
fn weighted(step: &Step) -> Option<(usize, usize)> {
    match &step.op {
        Op::Conv2d(g) => Some((g.out_channels, g.fan_in())),
        Op::Linear {
            in_features,
            out_features,
        } => Some((*out_features, *in_features)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    fn tutorial_params() -> FloatParams {
        let plan = Architecture::preset("tutorial").unwrap().plan().unwrap();
        let layers = plan
            .quantization_points()
            .iter()
            .map(|s| {
                let (out, fan_in) = weighted(s).unwrap();
                let p = StepParams {
                    weight: vec![0.5; out * fan_in],
                    bias: Some(vec![0.0; out]),
                    batch_norm: None,
                };
                (s.name.clone(), p)
            })
            .collect();
        FloatParams { layers }
    }

    #[test]
    fn check_lists_every_problem_by_name() {
        let plan = Architecture::preset("tutorial").unwrap().plan().unwrap();
        let mut params = tutorial_params();
        params.check(&plan).unwrap();
        params.layers.remove("conv2");
        params.layers.get_mut("fc1").unwrap().weight.pop();
        params.layers.get_mut("fc2").unwrap().bias.as_mut().unwrap()[3] = f32::NAN;
        params.layers.get_mut("conv1").unwrap().batch_norm = Some(BatchNormParams {
            gamma: vec![1.0; 20],
            beta: vec![0.0; 20],
            mean: vec![0.0; 20],
            var: vec![1.0; 20],
        });
        params
            .layers
            .insert("fc3".into(), params.layers["fc2"].clone());
        let Err(ArchError::Params { problems }) = params.check(&plan) else {
            panic!("expected a params error");
        };
        assert_eq!(
            problems,
            [
                "conv1.bn.gamma: not expected",
                "conv1.bn.beta: not expected",
                "conv1.bn.mean: not expected",
                "conv1.bn.var: not expected",
                "conv2: missing",
                "fc1.weight: 399999 values, expected 400000",
                "fc2.bias: value 3 is NaN",
                "fc3: not a convolution or linear layer of the network",
            ]
        );
    }

    #[test]
    fn batch_norm_folds_into_weights_and_bias() {
        let p = StepParams {
            weight: vec![1.0, -2.0, 0.5, 4.0],
            bias: None,
            batch_norm: Some(BatchNormParams {
                gamma: vec![2.0, 0.5],
                beta: vec![0.25, -1.0],
                mean: vec![1.0, -3.0],
                var: vec![3.0, 0.0],
            }),
        };
        let eps = 1.0;
        let (w, b) = p.folded(eps);
        // Channel 0: factor 2/√4 = 1; channel 1: 0.5/√1 = 0.5.
        assert_eq!(w, [1.0, -2.0, 0.25, 2.0]);
        assert_eq!(b, [(0.0 - 1.0) * 1.0 + 0.25, (0.0 + 3.0) * 0.5 - 1.0]);
        // The folded layer equals layer-then-batch-norm on an input.
        let x = [0.3f32, -1.7];
        for o in 0..2 {
            let z: f32 = (0..2).map(|k| p.weight[o * 2 + k] * x[k]).sum();
            let bn = p.batch_norm.as_ref().unwrap();
            let y = bn.gamma[o] * (z - bn.mean[o]) / (bn.var[o] + eps as f32).sqrt() + bn.beta[o];
            let folded: f32 = (0..2).map(|k| w[o * 2 + k] * x[k]).sum::<f32>() + b[o];
            assert!((y - folded).abs() < 1e-6, "{y} vs {folded}");
        }
        let plain = StepParams {
            batch_norm: None,
            bias: Some(vec![1.0, 2.0]),
            ..p
        };
        assert_eq!(plain.folded(eps), (plain.weight.clone(), vec![1.0, 2.0]));
    }
}
