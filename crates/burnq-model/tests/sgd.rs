//! [`FusedSgd`] against Burn's SGD with momentum: the same parameters, bit for bit, after
//! every step of a few steps of training the tutorial's network (the first step has no
//! velocity yet; later ones update it in place), with and without dampening, at several
//! learning rates.

use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burnq_model::eval::nll_loss;
use burnq_model::sgd::FusedSgd;
use burnq_model::{Net, NetConfig};
use burnq_testkit::Rng;

/// Every weight and bias of `net`, as bits.
fn bits(net: &Net) -> Vec<u32> {
    net.valid()
        .export_weights()
        .into_iter()
        .flat_map(|l| l.weight.into_iter().chain(l.bias))
        .map(f32::to_bits)
        .collect()
}

/// Trains a copy of `net` for `steps` batches with `optim`, returning its parameters after
/// each step.
fn train(net: &Net, mut optim: ModuleOptimizer, lrs: &[f64], device: &Device) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(11);
    let mut net = net.clone();
    let mut after = Vec::new();
    for &lr in lrs {
        let n = 6;
        let pixels: Vec<f32> = (0..n * 784).map(|_| rng.symmetric(1.5)).collect();
        let targets: Vec<i64> = (0..n).map(|_| (rng.next_u64() % 10) as i64).collect();
        let images = Tensor::from_data(TensorData::new(pixels, [n, 1, 28, 28]), device);
        let targets = Tensor::from_data(TensorData::new(targets, [n]), device);
        let grads = nll_loss(net.forward(images), targets).backward();
        let grads = GradientsParams::from_grads(grads, &net);
        net = optim.step(lr, net, grads);
        after.push(bits(&net));
    }
    after
}

#[test]
fn fused_sgd_is_burns_sgd_bit_for_bit() {
    let device = Device::flex().autodiff();
    let net = NetConfig::new().init_seeded(5, &device);
    let lrs = [0.01, 0.01, 0.05, 0.003, 0.01];
    for (momentum, dampening) in [(0.5, 0.0), (0.9, 0.1)] {
        let burn = SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum,
                dampening,
                nesterov: false,
            }))
            .init();
        let fused = ModuleOptimizer::from(FusedSgd {
            momentum,
            dampening,
        });
        let expected = train(&net, burn, &lrs, &device);
        let got = train(&net, fused, &lrs, &device);
        for (step, (a, b)) in got.iter().zip(&expected).enumerate() {
            assert!(
                a == b,
                "step {step} (momentum {momentum}, dampening {dampening})"
            );
        }
        assert_ne!(expected[0], bits(&net), "a step moves the parameters");
    }
}
