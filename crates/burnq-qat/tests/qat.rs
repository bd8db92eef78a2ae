//! Quantization-aware training: fake quantization, its gradient, and a short fine-tune at
//! 2 bits (the EMA of the ranges is tested in `burnq_quant::range`).

use std::sync::Arc;

use burn::prelude::*;
use burnq_data::locate::test_locator;
use burnq_data::{DatasetKind, ImageSet, Split};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate_with;
use burnq_model::training::{TrainingConfig, fit, train};
use burnq_model::{Net, NetConfig};
use burnq_qat::qat::{QatForward, QatSettings, fake_quantize_ste};
use burnq_qat::simulated::{fake_quantize, fake_quantize_channels};
use burnq_qat::{QatConfig, QatOutcome, Quantizer, StepInit, run_qat, run_qat_from};
use burnq_quant::derive::weight_params;
use burnq_quant::{LayerBits, QuantParams};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

/// [`run_qat_from`] as `config` says, fine-tuning `start` (teacher `float`), without
/// progress reports.
fn quietly(
    config: &QatConfig,
    float: &Net,
    start: &Net,
    train_set: &ImageSet,
    test_set: &ImageSet,
) -> QatOutcome {
    let device = Device::flex();
    let (on_event, on_epoch) = (&mut |_| {}, &mut |_: &Net, _: &_| Ok(()));
    run_qat_from(
        config,
        float,
        start,
        train_set.clone(),
        test_set,
        &device,
        on_event,
        on_epoch,
    )
    .unwrap()
}

/// The first `n` images of MNIST's `split`.
fn mnist(split: Split, n: usize) -> ImageSet {
    let mut s = ImageSet::load(&test_locator(), DatasetKind::Mnist, split).unwrap();
    s.truncate(n);
    s
}

/// The tutorial network after `epochs` of the tutorial recipe on `train_set`.
fn trained(train_set: Arc<ImageSet>, test_set: &ImageSet, epochs: usize) -> Net {
    let config = TrainingConfig::new(NetConfig::new()).with_epochs(epochs);
    let device = Device::flex();
    let (float, _) = train(
        &config,
        train_set,
        test_set,
        &device,
        &mut |_| {},
        &mut |_, _| Ok(()),
    )
    .unwrap();
    float
}

#[test]
fn fake_quantize_equals_quantize_then_dequantize() {
    let d = Device::flex();
    d.seed(21);
    let x = Tensor::<1>::random([4000], burn::tensor::Distribution::Uniform(-3.0, 5.0), &d);
    let xs = values(x.clone());
    for bits in 2..=8u8 {
        let (lo, hi) = (-2.0f32, 4.0f32);
        let p = QuantParams::from_range(lo, hi, bits).unwrap();
        let got = values(fake_quantize(x.clone(), p));
        for (v, g) in xs.iter().zip(&got) {
            let want = p.dequantize(p.quantize(*v));
            assert!(
                (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                "bits {bits}: x {v} -> {g}, want {want}"
            );
        }
    }
}

#[test]
fn straight_through_gradient_is_one_in_range_and_zero_where_clipped() {
    let d = Device::flex().autodiff();
    let x = Tensor::<1>::from_floats([-3.0, -0.9, -0.2, 0.0, 0.33, 0.8, 1.7], &d).require_grad();
    // [−1, 1] at 3 bits: S = 2/7 as an f32, and −min/S = 3.4999998 in f64, so Z = 3 and the
    // grid covers [−3S, 4S] = [−0.857, 1.143]: −0.9 lies outside it and is clipped.
    let grid = QuantParams::from_range(-1.0, 1.0, 3).unwrap();
    assert_eq!(grid.zero_point(), 3);
    let y = fake_quantize_ste(x.clone(), grid);
    let grads = y.sum().backward();
    let g = values(x.grad(&grads).unwrap());
    assert_eq!(g, vec![0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
}

#[test]
fn per_channel_fake_quantization_uses_each_channels_range() {
    let d = Device::flex();
    let w = Tensor::<2>::from_floats([[0.0, 1.0, 3.0], [-0.5, 0.0, 0.25]], &d);
    let grids = weight_params(&values(w.clone()), 2, 2, true).unwrap();
    let q = values(fake_quantize_channels(w, &grids));
    // Row 0: [0, 3], S = 1 → exact. Row 1: [−0.5, 0.25], S = 0.25, Z = 2 → exact.
    assert_eq!(q, vec![0.0, 1.0, 3.0, -0.5, 0.0, 0.25]);
}

#[test]
fn a_short_qat_run_at_2_bits_beats_post_training_2_bits() {
    let (train_set, test_set) = (
        Arc::new(mnist(Split::Train, 6000)),
        mnist(Split::Test, 1000),
    );
    let device = Device::flex();
    let float = trained(train_set.clone(), &test_set, 2);
    let settings = QatSettings {
        quantizer: Quantizer::Minmax,
        weight_bits: 2,
        act_bits: 2,
        bits_per_layer: None,
        per_channel: false,
        step_init: Default::default(),
        ema_decay: 0.99,
        act_delay: 0,
        normalization: DatasetKind::Mnist.normalization(),
    };
    let batcher = ImageBatcher::new(DatasetKind::Mnist.normalization());
    // Post-training: ranges observed on the float model, then fake-quantized evaluation.
    let mut ptq = QatForward::new(settings);
    for chunk in train_set.pixels.chunks(500 * 784).take(2) {
        let _ = burnq_model::training::ForwardMode::train_forward(
            &mut ptq,
            &float,
            batcher.images(chunk, &device),
        );
    }
    let frozen = QatForward::with_ranges(settings, &ptq.ranges());
    let (ptq_eval, _) = evaluate_with(
        &|x| burnq_model::training::ForwardMode::eval_forward(&frozen, &float, x),
        &test_set,
        &batcher,
        500,
        &device,
    );
    let mut qat = QatForward::with_ranges(settings, &ptq.ranges());
    let start = float.fresh_copy(&NetConfig::new(), &device.clone().autodiff());
    let qat_config = TrainingConfig::new(NetConfig::new()).with_epochs(1);
    let (_, history) = fit(
        &qat_config,
        start,
        &mut qat,
        train_set,
        &test_set,
        &device,
        &mut |_| {},
        &mut |_, _| Ok(()),
    )
    .unwrap();
    let qat_acc = history[0].test.accuracy;
    eprintln!(
        "2-bit on 1000 test images: PTQ {:.4}, QAT {qat_acc:.4}",
        ptq_eval.accuracy
    );
    assert!(
        qat_acc > ptq_eval.accuracy + 0.02,
        "QAT {qat_acc} vs PTQ {}",
        ptq_eval.accuracy
    );
}

/// The library entry point: calibrate, fine-tune, convert, run both networks. The integer
/// model must predict exactly what the fake-quantized network predicted, at the extreme
/// widths, with per-layer widths, and at both granularities (here from a briefly trained
/// model, on a small test set).
#[test]
fn run_qat_exports_an_integer_model_that_predicts_what_qat_predicted() {
    let (train_set, test_set) = (mnist(Split::Train, 2000), mnist(Split::Test, 300));
    let device = Device::flex();
    let float = trained(Arc::new(mnist(Split::Train, 1000)), &test_set, 1);
    // Per-layer widths (conv1, conv2, fc1, fc2): every layer on a width of its own.
    let mixed = [(8, 4), (2, 8), (3, 2), (4, 6)].map(|(weight_bits, act_bits)| LayerBits {
        weight_bits,
        act_bits,
    });
    let mut lsq_w2a2 = Vec::new();
    for (quantizer, weight_bits, act_bits, per_channel, bits_per_layer, distill) in [
        (Quantizer::Minmax, 2, 2, true, None, 0.0),
        (Quantizer::Minmax, 8, 3, false, None, 0.0),
        (Quantizer::Lsq, 2, 2, true, None, 0.0),
        (Quantizer::Lsq, 2, 2, true, None, 0.7),
        (Quantizer::Lsq, 4, 3, false, None, 0.0),
        (Quantizer::Minmax, 8, 8, true, Some(mixed), 0.0),
        (Quantizer::Lsq, 8, 8, false, Some(mixed), 0.0),
        (Quantizer::LsqPlus, 2, 2, true, None, 0.0),
    ] {
        let qat = QatConfig {
            quantizer,
            weight_bits,
            act_bits,
            bits_per_layer: bits_per_layer.map(|b| b.to_vec()),
            per_channel,
            epochs: 1,
            train_limit: Some(320),
            distill,
            ..QatConfig::default()
        };
        let mut epochs = 0;
        let outcome = run_qat(
            &qat,
            &float,
            train_set.clone(),
            &test_set,
            &device,
            &mut |_| {},
            &mut |_, _| {
                epochs += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!((epochs, outcome.history.len()), (1, 1));
        let options = outcome.quant.options();
        assert_eq!(
            (options.weight_bits, options.act_bits, options.per_channel),
            (weight_bits, act_bits, per_channel)
        );
        if let Some(bits) = bits_per_layer {
            let got = outcome.quant.layers().clone().map(|l| l.bits());
            assert_eq!(got, bits);
        }
        assert_eq!(outcome.integer_predictions.len(), test_set.len());
        assert_eq!(
            outcome.integer_predictions, outcome.fake_quant_predictions,
            "{quantizer:?} w{weight_bits}a{act_bits} {bits_per_layer:?} per_channel={per_channel} distill={distill}"
        );
        if quantizer != Quantizer::Minmax && weight_bits == 2 {
            lsq_w2a2.push(outcome);
        }
    }
    let [lsq, distilled, lsq_plus] = &lsq_w2a2[..] else {
        unreachable!("three w2a2 runs with learned step sizes")
    };
    // The distillation term reaches the loss the training minimized.
    assert_ne!(lsq.history[0].train_loss, distilled.history[0].train_loss);
    // Every activation of the tutorial network is a ReLU output, whose offset LSQ+ keeps at
    // 0: LSQ+ trains and exports exactly what LSQ does.
    assert_eq!(lsq_plus.history[0].train_loss, lsq.history[0].train_loss);
    assert_eq!(lsq_plus.quant, lsq.quant);
    assert_eq!(lsq_plus.fake_quant_predictions, lsq.fake_quant_predictions);
    assert_eq!(lsq_plus.quant.layers()[1].output.zero_point(), 0);
}

/// At 2 bits, learned step sizes beat min/max ranges on the same short fine-tune (same float
/// model, data, schedule and seed; per-channel weights; the tutorial network on 6000
/// training and 1000 test images).
#[test]
fn a_short_lsq_run_at_2_bits_beats_min_max_qat() {
    let (train_set, test_set) = (mnist(Split::Train, 6000), mnist(Split::Test, 1000));
    let float = trained(Arc::new(train_set.clone()), &test_set, 2);
    let accuracy = |quantizer| {
        let qat = QatConfig {
            quantizer,
            weight_bits: 2,
            act_bits: 2,
            per_channel: true,
            epochs: 1,
            lr: 0.01,
            ..QatConfig::default()
        };
        quietly(&qat, &float, &float, &train_set, &test_set)
            .fake_quant
            .accuracy
    };
    let (minmax, lsq) = (accuracy(Quantizer::Minmax), accuracy(Quantizer::Lsq));
    eprintln!("w2a2 per channel, 1 epoch on 6000 images: min/max {minmax:.4}, LSQ {lsq:.4}");
    assert!(lsq > minmax, "LSQ {lsq} vs min/max {minmax}");
}

/// Progressive precision: `run_qat_from` fine-tunes the model it is given, not the float
/// model, and calibrates its starting activation grids on it, each at its layer's width (with
/// learning rate 0 nothing moves: the weights are the start's, and each learned activation
/// grid covers the start's 2-bit MSE range).
#[test]
fn run_qat_from_starts_from_the_given_model() {
    use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate};

    let (train_set, test_set) = (mnist(Split::Train, 1000), mnist(Split::Test, 100));
    let device = Device::flex();
    let float = trained(Arc::new(mnist(Split::Train, 300)), &test_set, 1);
    let start = trained(Arc::new(train_set.clone()), &test_set, 1);
    let config = QatConfig {
        quantizer: Quantizer::Lsq,
        weight_bits: 2,
        act_bits: 2,
        per_channel: true,
        step_init: StepInit::Mse,
        range_init: CalibrationMethod::Mse,
        epochs: 1,
        lr: 0.0,
        momentum: 0.0,
        train_limit: Some(64),
        ..QatConfig::default()
    };
    let outcome = quietly(&config, &float, &start, &train_set, &test_set);
    let weights = |net: &Net| values(net.fc1.weight.val());
    assert_eq!(weights(&outcome.model), weights(&start));
    assert_ne!(weights(&outcome.model), weights(&float));
    assert_eq!(outcome.integer_predictions, outcome.fake_quant_predictions);
    let mse_at_2_bits = |net: &Net| {
        let settings = CalibrationSettings {
            method: CalibrationMethod::Mse,
            act_bits: 2,
            ..Default::default()
        };
        let ranges = calibrate(net, &train_set, settings, &device).unwrap();
        ranges.ranges(CalibrationMethod::Mse).layer_outputs()
    };
    let (want, other) = (mse_at_2_bits(&start), mse_at_2_bits(&float));
    let got = outcome.forward.output_ranges();
    for i in 0..3 {
        let close = |(_, hi): (f32, f32)| (got[i].1 - hi).abs() <= 1e-5 * hi;
        assert!(close(want[i]), "layer {i}: {:?} vs {:?}", got[i], want[i]);
        assert!(!close(other[i]), "layer {i}");
    }
}
