//! Knowledge distillation (Hinton et al. 2015) from the float network into the fake-quantized
//! one, as low-bit QAT commonly adds to its loss (LSQ's paper reports 2-bit results with it).
//!
//! The training loss of a batch becomes
//! `L = (1 − α)·NLL(y, log p_s) + α·H(p_t, p_s)`, `H(p_t, p_s) = −(1/n)·Σ_i Σ_c p_t[i,c]·log p_s[i,c]`,
//! with `p_s` the fake-quantized student's class probabilities, `p_t` the float teacher's
//! (temperature 1, the teacher's parameters frozen) and `α` the distillation weight. `H` is the
//! KL divergence `KL(p_t ‖ p_s)` plus the teacher's entropy, a constant, so its gradient is
//! the KL divergence's.

use burn::prelude::*;
use burnq_model::Net;
use burnq_model::eval::nll_loss;

/// A frozen float teacher and the weight `α ∈ (0, 1]` of its term in the loss.
#[derive(Debug, Clone)]
pub struct Distillation {
    teacher: Net,
    weight: f64,
}

impl Distillation {
    /// Distills `teacher` (copied onto `device`'s autodiff twin, its parameters frozen) with
    /// weight `weight`.
    pub fn new(teacher: &Net, weight: f64, device: &Device) -> Self {
        let teacher = teacher
            .fresh_copy(&burnq_model::NetConfig::new(), &device.clone().autodiff())
            .no_grad();
        Self { teacher, weight }
    }

    /// `(1 − α)·NLL + α·H(p_t, p_s)` of the student's log-probabilities `log_probs` of
    /// `images` (normalized) with labels `targets`.
    pub fn loss(
        &self,
        log_probs: Tensor<2>,
        targets: Tensor<1, Int>,
        images: Tensor<4>,
    ) -> Tensor<1> {
        let teacher_probs = self.teacher.forward(images).detach().exp();
        let soft = (teacher_probs * log_probs.clone()).sum_dim(1).mean().neg();
        nll_loss(log_probs, targets)
            .mul_scalar(1.0 - self.weight)
            .add(soft.mul_scalar(self.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss against hand-computed values: two images, three classes.
    #[test]
    fn loss_mixes_the_labels_and_the_teachers_probabilities() {
        let device = Device::flex().autodiff();
        let teacher = burnq_model::NetConfig::new().init_seeded(3, &device);
        let images = Tensor::<4>::from_data(
            TensorData::new(
                (0..2 * 784).map(|i| (i % 7) as f32 / 7.0).collect(),
                [2, 1, 28, 28],
            ),
            &device,
        );
        let p_t = burnq_model::export::to_vec(teacher.forward(images.clone()).exp());
        let log_ps = [
            -0.5f32, -1.5, -2.5, -0.2, -2.0, -3.0, -1.0, -1.2, -4.0, -0.9,
        ];
        let log_probs = || {
            let padded: Vec<f32> = (0..20).map(|i| log_ps[i % 10]).collect();
            Tensor::<2>::from_data(TensorData::new(padded, [2, 10]), &device)
        };
        let targets = || Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 4], [2]), &device);
        // row 0 is labelled 1 (log p = −1.5), row 1 is labelled 4 (−2.0)
        let nll = (1.5 + 2.0) / 2.0;
        let soft: f32 = -(0..20).map(|i| p_t[i] * log_ps[i % 10]).sum::<f32>() / 2.0;
        for alpha in [0.0, 0.3, 1.0] {
            let d = Distillation::new(&teacher, alpha, &Device::flex());
            let got = d
                .loss(log_probs(), targets(), images.clone())
                .into_scalar::<f32>();
            let expected = (1.0 - alpha as f32) * nll + alpha as f32 * soft;
            assert!(
                (got - expected).abs() < 1e-5,
                "α = {alpha}: {got} vs {expected}"
            );
        }
    }
}
