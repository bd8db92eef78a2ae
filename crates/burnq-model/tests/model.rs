//! The network, its taps, its exported weights and its checkpoints.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};
use burnq_data::{DatasetKind, IMAGE_PIXELS};
use burnq_model::checkpoint::{load_model, save_model};
use burnq_model::data::{ImageBatcher, ImageItem};
use burnq_model::{Net, NetConfig};
use burnq_testkit::max_abs_diff;

fn device() -> Device {
    Device::flex()
}

fn model(seed: u64) -> Net {
    NetConfig::new().init_seeded(seed, &device())
}

fn input(n: usize, seed: u64) -> Tensor<4> {
    let d = device();
    d.seed(seed);
    Tensor::random(
        [n, 1, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &d,
    )
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

#[test]
fn output_is_log_probabilities_of_ten_classes() {
    let out = model(1).forward(input(3, 2));
    assert_eq!(out.dims(), [3, 10]);
    let probs = values(out.exp().sum_dim(1));
    for p in probs {
        assert!((p - 1.0).abs() < 1e-5, "row sums to {p}");
    }
}

#[test]
fn taps_are_the_tensors_forward_computes() {
    let net = model(3);
    let x = input(4, 4);
    let taps = net.forward_taps(x.clone());
    assert_eq!(taps.conv2_in.dims(), [4, 20, 12, 12]);
    assert_eq!(taps.fc1_in.dims(), [4, 800]);
    assert_eq!(taps.fc2_in.dims(), [4, 500]);
    assert_eq!(values(taps.conv1_in.clone()), values(x.clone()));
    // Each tap, pushed through the next layer, gives the following tap.
    let conv2_in = net.pool.forward(relu(net.conv1.forward(taps.conv1_in)));
    assert_eq!(values(conv2_in), values(taps.conv2_in.clone()));
    let fc1_in: Tensor<2> = net
        .pool
        .forward(relu(net.conv2.forward(taps.conv2_in)))
        .flatten(1, 3);
    assert_eq!(values(fc1_in), values(taps.fc1_in.clone()));
    assert_eq!(
        values(relu(net.fc1.forward(taps.fc1_in))),
        values(taps.fc2_in.clone())
    );
    assert_eq!(
        values(net.fc2.forward(taps.fc2_in)),
        values(taps.logits.clone())
    );
    assert_eq!(values(log_softmax(taps.logits, 1)), values(net.forward(x)));
    // ReLU outputs are non-negative.
    assert!(
        values(net.forward_taps(input(2, 5)).fc2_in)
            .iter()
            .all(|&v| v >= 0.0)
    );
}

#[test]
fn exported_weights_reproduce_the_layers() {
    let net = model(5);
    let layers = net.export_weights();
    let names: Vec<_> = layers.iter().map(|l| l.name).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
    let shapes: Vec<_> = layers.iter().map(|l| l.weight_shape.clone()).collect();
    assert_eq!(
        shapes,
        [
            vec![20, 1, 5, 5],
            vec![50, 20, 5, 5],
            vec![500, 800],
            vec![10, 500]
        ]
    );
    for l in &layers {
        assert_eq!(l.weight.len(), l.weight_shape.iter().product::<usize>());
        assert_eq!(l.bias.len(), l.weight_shape[0]);
    }
    // fc2 by hand with the exported out×in weights equals Burn's fc2.
    let taps = net.forward_taps(input(2, 6));
    let x = values(taps.fc2_in);
    let fc2 = &layers[3];
    let mut by_hand = Vec::new();
    for row in x.chunks(500) {
        for o in 0..10 {
            let w = &fc2.weight[o * 500..(o + 1) * 500];
            by_hand.push(fc2.bias[o] + w.iter().zip(row).map(|(a, b)| a * b).sum::<f32>());
        }
    }
    assert!(max_abs_diff(&by_hand, &values(taps.logits)) < 1e-4);
    // conv1 by hand at output (0, 0) of channel 0 for image 0.
    let img = values(input(1, 7));
    let conv1 = &layers[0];
    let mut acc = conv1.bias[0];
    for ky in 0..5 {
        for kx in 0..5 {
            acc += conv1.weight[ky * 5 + kx] * img[ky * 28 + kx];
        }
    }
    let burn_conv = values(net.conv1.forward(input(1, 7)));
    assert!((acc - burn_conv[0]).abs() < 1e-4);
}

#[test]
fn save_then_load_gives_identical_outputs_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bpk");
    let net = model(8);
    save_model(&net, &path).unwrap();
    let loaded = load_model(&NetConfig::new(), &path, &device()).unwrap();
    let x = input(5, 9);
    assert_eq!(values(net.forward(x.clone())), values(loaded.forward(x)));

    let missing = load_model(&NetConfig::new(), &dir.path().join("none.bpk"), &device());
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("cargo xtask train")
    );

    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.bpk");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_model(&NetConfig::new(), &truncated, &device()).unwrap_err();
    assert!(err.to_string().contains("truncated.bpk"), "{err}");

    let garbage = dir.path().join("garbage.bpk");
    std::fs::write(&garbage, b"definitely not a burnpack file").unwrap();
    assert!(load_model(&NetConfig::new(), &garbage, &device()).is_err());

    let other = NetConfig::new().with_hidden(64);
    let err = load_model(&other, &path, &device()).unwrap_err();
    assert!(err.to_string().contains("model.bpk"), "{err}");
}

#[test]
fn batcher_normalizes_with_the_data_set_constants() {
    let batcher = ImageBatcher::new(DatasetKind::Mnist.normalization());
    let mut pixels = vec![0u8; IMAGE_PIXELS];
    pixels[1] = 255;
    pixels[2] = 128;
    let items = vec![ImageItem { pixels, label: 7 }];
    let batch = batcher.batch(items, &device());
    assert_eq!(batch.images.dims(), [1, 1, 28, 28]);
    let v = values(batch.images);
    let expect = |p: f32| (p / 255.0 - 0.1307) / 0.3081;
    assert!((v[0] - expect(0.0)).abs() < 1e-6);
    assert!((v[1] - expect(255.0)).abs() < 1e-6);
    assert!((v[2] - expect(128.0)).abs() < 1e-6);
    let t: Vec<i64> = batch.targets.into_data().iter::<i64>().collect();
    assert_eq!(t, vec![7]);
}

#[test]
fn predictor_matches_evaluate_and_burn_q8_mostly_agrees() {
    use burnq_data::{ImageSet, Split, locate::test_locator};
    use burnq_model::eval::evaluate;
    use burnq_model::predict::Predictor;
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
    set.truncate(200);
    let net = model(12);
    let norm = DatasetKind::Mnist.normalization();
    let (_, want) = evaluate(&net, &set, &ImageBatcher::new(norm), 64, &device());
    let predictor = Predictor::new(&net, device(), norm);
    assert_eq!(predictor.predict(&set.pixels), want);
    let q8 = predictor.burn_q8_weights().predict(&set.pixels);
    let agree = q8.iter().zip(&want).filter(|(a, b)| a == b).count();
    assert!(agree >= 180, "Burn Q8 agrees with float on {agree}/200");
}
