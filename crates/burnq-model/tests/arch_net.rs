//! Networks built from descriptions: shapes and taps for every preset, batch-norm folding and
//! first-layer padding against plain-Rust arithmetic, short training runs, checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Param, RunningState};
use burn::prelude::*;
use burnq_arch::arch::{Activation, Op, PRESETS, Shape, StepParams};
use burnq_arch::{Architecture, Normalization, Plan};
use burnq_data::locate::test_locator;
use burnq_data::{DatasetKind, ImageSet, Split};
use burnq_model::arch_net::ArchLayer;
use burnq_model::checkpoint::{arch_beside, load_arch_net, save_arch_net};
use burnq_model::training::{
    FloatForward, TrainEvent, TrainingConfig, data_parallel_shards, train_arch,
};
use burnq_model::{ArchNet, ModelError, NetConfig};
use burnq_testkit::max_abs_diff;

const MNIST: Normalization = Normalization::MNIST;

fn device() -> Device {
    Device::flex()
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

fn my_net() -> Architecture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/my_net.toml");
    Architecture::load(path.to_str().unwrap()).unwrap()
}

fn every_arch() -> Vec<Architecture> {
    PRESETS
        .iter()
        .map(|p| Architecture::preset(p).unwrap())
        .chain([my_net()])
        .collect()
}

fn dims_of(shape: Shape, n: usize) -> Vec<usize> {
    match shape {
        Shape::Image {
            channels,
            height,
            width,
        } => vec![n, channels, height, width],
        Shape::Features(f) => vec![n, f],
    }
}

#[test]
fn every_preset_and_the_example_build_with_logits_and_taps_of_the_plan_shapes() {
    let archs = every_arch();
    assert!(archs.len() >= 4);
    for arch in archs {
        let plan = arch.plan().unwrap();
        let net = ArchNet::init_seeded(&plan, MNIST, 1, &device());
        let x = input(3, 2);
        let logits = net.forward(x.clone());
        assert_eq!(logits.dims(), [3, plan.classes()], "{}", arch.name);
        let taps = net.forward_taps(x);
        let points = plan.quantization_points();
        let names: Vec<&str> = taps.points.iter().map(|(n, _)| n.as_str()).collect();
        let want: Vec<&str> = points.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, want, "{}", arch.name);
        for (step, (name, value)) in points.iter().zip(&taps.points) {
            assert_eq!(
                value.dims(),
                dims_of(step.output, 3),
                "{}: {name}",
                arch.name
            );
            assert!(taps.get(name).is_some());
            if matches!(step.activation, Activation::Relu | Activation::Relu6) {
                let v = value.to_vec();
                assert!(v.iter().all(|&x| x >= 0.0), "{}: {name}", arch.name);
                if step.activation == Activation::Relu6 {
                    assert!(v.iter().all(|&x| x <= 6.0), "{}: {name}", arch.name);
                }
            }
        }
        // The last quantization point is the classifier: its output is the logits.
        let last = taps.points.last().unwrap().1.to_vec();
        assert_eq!(last, values(taps.logits.clone()));
        assert_eq!(values(taps.logits), values(logits));
        net.float_params().unwrap().check(&plan).unwrap();
    }
}

#[test]
fn same_seed_same_weights_and_float_params_have_the_plan_layout() {
    let plan = Architecture::preset("mobile").unwrap().plan().unwrap();
    let a = ArchNet::init_seeded(&plan, MNIST, 5, &device())
        .float_params()
        .unwrap();
    let b = ArchNet::init_seeded(&plan, MNIST, 5, &device())
        .float_params()
        .unwrap();
    let c = ArchNet::init_seeded(&plan, MNIST, 6, &device())
        .float_params()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let dw = &a.layers["b1_dw"];
    assert_eq!(dw.weight.len(), 64 * 9);
    assert!(dw.bias.is_none());
    let bn = dw.batch_norm.as_ref().unwrap();
    assert_eq!((bn.gamma.len(), bn.mean.len()), (64, 64));
    // PyTorch's default init: uniform ±1/√fan_in (fan_in 9 for the depthwise 3×3).
    assert!(dw.weight.iter().all(|w| w.abs() <= 1.0 / 3.0 + 1e-6));
    let classifier = &a.layers["classifier"];
    assert_eq!(classifier.weight.len(), 10 * 128);
    assert_eq!(classifier.bias.as_ref().unwrap().len(), 10);
}

/// A convolution in plain Rust over one image `[c, h, w]`, padding with `pad_value`.
#[allow(clippy::too_many_arguments)]
fn conv_by_hand(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    pad_value: f32,
) -> Vec<f32> {
    let (oh, ow) = (
        (h + 2 * pad - k) / stride + 1,
        (w + 2 * pad - k) / stride + 1,
    );
    let cg = c / groups;
    let og = out / groups;
    let mut y = vec![0.0f32; out * oh * ow];
    for o in 0..out {
        let g = o / og;
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = f64::from(bias[o]);
                for ci in 0..cg {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * stride + ky) as isize - pad as isize;
                            let ix = (ox * stride + kx) as isize - pad as isize;
                            let inside = iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize;
                            let v = if inside {
                                x[(g * cg + ci) * h * w + iy as usize * w + ix as usize]
                            } else {
                                pad_value
                            };
                            let wi = ((o * cg + ci) * k + ky) * k + kx;
                            acc += f64::from(weight[wi]) * f64::from(v);
                        }
                    }
                }
                y[(o * oh + oy) * ow + ox] = acc as f32;
            }
        }
    }
    y
}

fn small_plan() -> Plan {
    let toml = r#"
name = "small"
[[layers]]
type = "conv2d"
name = "a"
out_channels = 4
kernel = 3
padding = 1
bias = false
[[layers]]
type = "batch_norm"
eps = 0.001
[[layers]]
type = "relu6"
[[layers]]
type = "conv2d"
name = "b"
out_channels = 4
kernel = 3
stride = 2
padding = 1
groups = 4
[[layers]]
type = "batch_norm"
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
name = "out"
out_features = 3
"#;
    Architecture::from_toml(toml, Path::new("small.toml"))
        .unwrap()
        .plan()
        .unwrap()
}

/// Gives every batch norm of `net` non-trivial γ, β and running statistics.
fn perturb_batch_norms(net: &mut ArchNet, seed: u64) {
    let d = device();
    d.seed(seed);
    let rand = |n: usize, lo: f64, hi: f64| {
        Tensor::<1>::random([n], burn::tensor::Distribution::Uniform(lo, hi), &d)
    };
    for layer in &mut net.layers {
        if let ArchLayer::Conv(s) = layer
            && let Some(bn) = &mut s.batch_norm
        {
            let n = bn.gamma.dims()[0];
            bn.gamma = Param::from_tensor(rand(n, 0.5, 2.0));
            bn.beta = Param::from_tensor(rand(n, -1.0, 1.0));
            bn.running_mean = RunningState::new(rand(n, -1.0, 1.0));
            bn.running_var = RunningState::new(rand(n, 0.1, 3.0));
        }
    }
}

#[test]
fn folded_batch_norm_and_first_layer_padding_match_burn_in_inference() {
    // A small std makes the padding value far from 0 (MNIST's is −0.004), so the test tells
    // padding with it from padding with 0.
    let norm = Normalization {
        mean: 0.1307,
        std: 0.01,
    };
    let pad_value = norm.padding_value();
    assert!(pad_value.abs() > 0.1, "{pad_value}");
    let plan = small_plan();
    let mut net = ArchNet::init_seeded(&plan, norm, 3, &device());
    perturb_batch_norms(&mut net, 4);
    let params = net.float_params().unwrap();
    let x = input(2, 5);
    let taps = net.forward_taps(x.clone());
    let xs = values(x);
    let a_out = taps.get("a").unwrap().to_vec();
    let b_out = taps.get("b").unwrap().to_vec();
    let eps_of = |name: &str| {
        plan.steps
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.batch_norm)
            .unwrap()
            .eps
    };
    let fold = |name: &str| -> (Vec<f32>, Vec<f32>) {
        let p: &StepParams = &params.layers[name];
        assert!(p.batch_norm.is_some());
        p.folded(eps_of(name))
    };
    let (wa, ba) = fold("a");
    let (wb, bb) = fold("b");
    let mut zero_padded_border_differs = false;
    for i in 0..2 {
        let img = &xs[i * 784..(i + 1) * 784];
        let a: Vec<f32> = conv_by_hand(img, (1, 28, 28), &wa, &ba, 4, 3, 1, 1, 1, pad_value)
            .into_iter()
            .map(|v| v.clamp(0.0, 6.0))
            .collect();
        let burn_a = &a_out[i * 4 * 784..(i + 1) * 4 * 784];
        let diff = max_abs_diff(&a, burn_a);
        assert!(
            diff < 1e-4,
            "conv a (padding value, folded bn, relu6): {diff}"
        );
        let zero: Vec<f32> = conv_by_hand(img, (1, 28, 28), &wa, &ba, 4, 3, 1, 1, 1, 0.0)
            .into_iter()
            .map(|v| v.clamp(0.0, 6.0))
            .collect();
        let border_diff = max_abs_diff(&zero, burn_a);
        zero_padded_border_differs |= border_diff > 1e-3;
        // The second (depthwise, strided) convolution pads with 0.
        let b = conv_by_hand(burn_a, (4, 28, 28), &wb, &bb, 4, 3, 2, 1, 4, 0.0);
        let burn_b = &b_out[i * 4 * 196..(i + 1) * 4 * 196];
        let diff = max_abs_diff(&b, burn_b);
        assert!(diff < 1e-4, "conv b (zero padding, folded bn): {diff}");
    }
    assert!(
        zero_padded_border_differs,
        "padding with 0 gives the same output: the test cannot see the padding value"
    );
    // The explicit padding is the first layer's only.
    let pads: Vec<bool> = net
        .layers
        .iter()
        .filter_map(|l| match l {
            ArchLayer::Conv(s) => Some(s.input_padding.is_some()),
            _ => None,
        })
        .collect();
    assert_eq!(pads, [true, false]);
}

fn subset(split: Split, n: usize) -> ImageSet {
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, split).unwrap();
    set.truncate(n);
    set
}

fn train_briefly(preset: &str, n_train: usize) -> (ArchNet, Vec<f32>, f64) {
    let plan = Architecture::preset(preset).unwrap().plan().unwrap();
    let config = TrainingConfig::new(NetConfig::new()).with_epochs(2);
    let mut losses = Vec::new();
    let (net, history) = train_arch(
        &config,
        &plan,
        Arc::new(subset(Split::Train, n_train)),
        &subset(Split::Test, 500),
        &device(),
        &mut |e| {
            if let TrainEvent::Batch { loss, .. } = e {
                losses.push(loss);
            }
        },
        &mut |_, _| Ok(()),
    )
    .unwrap();
    (net, losses, history[1].test.accuracy)
}

/// Two epochs on `n_train` images: the mean loss of the last 20 batches is below `max_ratio`
/// times that of the first 20, and the test accuracy above `min_accuracy`.
fn assert_learns(preset: &str, n_train: usize, max_ratio: f32, min_accuracy: f64) {
    let (net, losses, accuracy) = train_briefly(preset, n_train);
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len() as f32;
    let (first, last) = (mean(&losses[..20]), mean(&losses[losses.len() - 20..]));
    eprintln!("{preset}: loss {first} -> {last}, test accuracy {accuracy}");
    assert!(
        last < max_ratio * first,
        "{preset}: loss went from {first} to {last}"
    );
    assert!(
        accuracy > min_accuracy,
        "{preset}: test accuracy {accuracy}"
    );
    // Trained batch norms have moved their running statistics.
    let params = net.float_params().unwrap();
    if let Some(bn) = params.layers.values().find_map(|p| p.batch_norm.as_ref()) {
        assert!(bn.mean.iter().any(|&m| m != 0.0));
    }
}

#[test]
fn the_tutorial_description_is_the_tutorial_net() {
    let plan = Architecture::preset("tutorial").unwrap().plan().unwrap();
    let arch_net = ArchNet::init_seeded(&plan, MNIST, 13, &device());
    let net = NetConfig::new().init_seeded(13, &device());
    let params = arch_net.float_params().unwrap();
    for layer in net.export_weights() {
        let p = &params.layers[layer.name];
        assert_eq!(p.weight, layer.weight, "{}", layer.name);
        assert_eq!(p.bias.as_ref(), Some(&layer.bias), "{}", layer.name);
    }
    let x = input(3, 14);
    let log_probs = burn::tensor::activation::log_softmax(arch_net.forward(x.clone()), 1);
    assert_eq!(values(log_probs), values(net.forward(x)));
}

#[test]
fn a_short_run_trains_lenet5() {
    assert_learns("lenet5", 8000, 0.5, 0.7);
}

#[test]
fn a_short_run_trains_mobile() {
    assert_learns("mobile", 8000, 0.8, 0.5);
}

fn saved_net(dir: &Path, preset: &str) -> (PathBuf, ArchNet) {
    let arch = Architecture::preset(preset).unwrap();
    let plan = arch.plan().unwrap();
    // Update the batch norms' running statistics with a training-mode forward pass.
    let ad = device().autodiff();
    let net = ArchNet::init_seeded(&plan, MNIST, 7, &ad);
    let _ = net.forward(input(8, 8).to_device(&ad));
    let net = net.valid();
    let path = dir.join(format!("{preset}.bpk"));
    save_arch_net(&net, &arch, &path).unwrap();
    (path, net)
}

#[test]
fn checkpoint_round_trip_reproduces_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    for preset in ["mobile", "lenet5"] {
        let (path, net) = saved_net(dir.path(), preset);
        assert!(arch_beside(&path).is_file());
        let (arch, loaded) = load_arch_net(&path, MNIST, &device()).unwrap();
        assert_eq!(arch, Architecture::preset(preset).unwrap());
        let x = input(4, 9);
        assert_eq!(values(net.forward(x.clone())), values(loaded.forward(x)));
        assert_eq!(net.float_params().unwrap(), loaded.float_params().unwrap());
    }
}

#[test]
fn corrupt_or_mismatched_checkpoints_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, net) = saved_net(dir.path(), "lenet5");
    let load = |p: &Path| load_arch_net(p, MNIST, &device()).map(|_| ());

    // A truncated record.
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.bpk");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::copy(arch_beside(&path), arch_beside(&truncated)).unwrap();
    let err = load(&truncated).unwrap_err();
    assert!(matches!(err, ModelError::Load { .. }), "{err:?}");

    // The record of lenet5 under the description of another network.
    let other = dir.path().join("other.bpk");
    std::fs::copy(&path, &other).unwrap();
    for preset in ["tutorial", "mobile"] {
        let json = Architecture::preset(preset).unwrap().to_json();
        std::fs::write(arch_beside(&other), json).unwrap();
        let err = load(&other).unwrap_err();
        assert!(matches!(err, ModelError::Load { .. }), "{preset}: {err:?}");
    }

    // A description that does not parse, or is not a valid network.
    std::fs::write(arch_beside(&other), "{ not json").unwrap();
    let err = load(&other).unwrap_err();
    assert!(matches!(err, ModelError::Arch { .. }), "{err:?}");
    std::fs::write(arch_beside(&other), r#"{"name": "empty", "layers": []}"#).unwrap();
    let err = load(&other).unwrap_err();
    assert!(matches!(err, ModelError::Arch { .. }), "{err:?}");

    // A missing description or record.
    std::fs::remove_file(arch_beside(&other)).unwrap();
    assert!(matches!(load(&other), Err(ModelError::NotFound { .. })));
    assert!(matches!(
        load(&dir.path().join("none.bpk")),
        Err(ModelError::NotFound { .. })
    ));

    // Saving with a description the network was not built from.
    let err = save_arch_net(&net, &Architecture::preset("mobile").unwrap(), &other).unwrap_err();
    assert!(matches!(err, ModelError::Arch { .. }), "{err:?}");
    assert!(!other.exists() || std::fs::read(&other).unwrap() == bytes);
}

#[test]
fn relu6_and_residual_add_follow_the_plan() {
    // my_net: block_add = relu(input + bn(conv(input))).
    let plan = my_net().plan().unwrap();
    let net = ArchNet::init_seeded(&plan, MNIST, 11, &device());
    let taps = net.forward_taps(input(2, 12));
    let conv_in = taps.get("conv_in").unwrap().to_vec();
    let body = taps.get("block_conv").unwrap().to_vec();
    let add = taps.get("block_add").unwrap().to_vec();
    for ((x, b), y) in conv_in.iter().zip(&body).zip(&add) {
        assert!(
            (y - (x + b).max(0.0)).abs() < 1e-5,
            "{y} vs relu({x} + {b})"
        );
    }
    let residual = plan.steps.iter().find(|s| s.name == "block_add").unwrap();
    assert!(matches!(residual.op, Op::Residual(_)));
    assert_eq!(residual.activation, Activation::Relu);
}

#[test]
fn data_parallel_training_shards_only_networks_without_batch_norm_or_dropout() {
    let config = TrainingConfig::new(NetConfig::new()).with_shards(2);
    let shards = |preset: &str| {
        let plan = Architecture::preset(preset).unwrap().plan().unwrap();
        let net = ArchNet::init(&plan, MNIST, &device().autodiff());
        data_parallel_shards(&config, &net, &FloatForward)
    };
    assert_eq!(shards("lenet5"), 2);
    assert_eq!(shards("tutorial"), 2);
    // batch norm: statistics of the whole batch
    assert_eq!(shards("mobile"), 1);
    // dropout: random draws from the device's one RNG
    let dropout: Architecture = serde_json::from_str(
        r#"{"name": "d", "layers": [{"type": "flatten"},
        {"type": "linear", "out_features": 32}, {"type": "dropout", "p": 0.5},
        {"type": "linear", "out_features": 10}]}"#,
    )
    .unwrap();
    let net = ArchNet::init(&dropout.plan().unwrap(), MNIST, &device().autodiff());
    assert_eq!(data_parallel_shards(&config, &net, &FloatForward), 1);
    assert!(!dropout.plan().unwrap().trains_per_image());
}

#[test]
fn data_parallel_training_trains_the_same_network() {
    let train = |shards| {
        let plan = Architecture::preset("lenet5").unwrap().plan().unwrap();
        let config = TrainingConfig::new(NetConfig::new())
            .with_epochs(1)
            .with_shards(shards);
        let (net, _) = train_arch(
            &config,
            &plan,
            Arc::new(subset(Split::Train, 192)),
            &subset(Split::Test, 10),
            &device(),
            &mut |_| {},
            &mut |_, _| Ok(()),
        )
        .unwrap();
        net.float_params().unwrap()
    };
    let (whole, sharded) = (train(1), train(2));
    // the sums' order changes the bits, so the sharded path was taken…
    assert_ne!(whole, sharded, "lenet5 with 2 shards trained as one pass");
    // …and three steps later the network is the same up to rounding.
    for (name, layer) in &whole.layers {
        let worst = max_abs_diff(&layer.weight, &sharded.layers[name].weight);
        assert!(worst < 1e-4, "{name}: weights differ by {worst}");
    }
}
