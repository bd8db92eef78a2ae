//! PyTorch import of described networks: `lenet5` trained in PyTorch
//! (`fixtures/lenet5.pt`, made by `fixtures/pytorch_arch.py` with PyTorch's logits and test
//! accuracy in `fixtures/lenet5.json`) and `fixtures/tiny_arch.toml` (batch norm, a residual
//! block, random statistics) give PyTorch's logits in Burn; malformed files are refused with
//! every offending tensor named by its key; `ArchNet` → `FloatParams` → `ArchNet` is exact.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burnq_arch::arch::{FloatParams, PRESETS};
use burnq_arch::{ArchError, Architecture, Normalization};
use burnq_data::{DatasetKind, IMAGE_PIXELS, ImageSet, Split, locate::test_locator};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate_with;
use burnq_model::import_arch::{
    ImportProblem, KeyNaming, import_pytorch_arch, pytorch_arch_tensors,
};
use burnq_model::training::Classifier;
use burnq_model::{ArchNet, Device, ModelError};

const MNIST: Normalization = Normalization::MNIST;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn json(name: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn tiny() -> Architecture {
    Architecture::load(fixture("tiny_arch.toml").to_str().unwrap()).unwrap()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec().unwrap()
}

fn test_set() -> ImageSet {
    ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap()
}

/// `net`'s logits for the first `n` test images, row by row.
fn first_logits(net: &ArchNet, set: &ImageSet, n: usize) -> Vec<Vec<f32>> {
    let batcher = ImageBatcher::new(MNIST);
    let images = batcher.images(&set.pixels[..n * IMAGE_PIXELS], &Device::flex());
    let classes = net.plan.classes();
    values(net.forward(images))
        .chunks(classes)
        .map(<[f32]>::to_vec)
        .collect()
}

fn assert_logits_match(net: &ArchNet, fixture_json: &str) {
    let expected: Vec<Vec<f32>> =
        serde_json::from_value(json(fixture_json)["logits"].clone()).unwrap();
    assert_eq!(expected.len(), 16);
    let actual = first_logits(net, &test_set(), expected.len());
    let mut worst = 0.0f32;
    for (a, e) in actual.iter().flatten().zip(expected.iter().flatten()) {
        worst = worst.max((a - e).abs());
    }
    eprintln!("{fixture_json}: largest logit difference {worst:e}");
    assert!(
        worst <= 1e-4,
        "{fixture_json}: largest logit difference {worst}"
    );
}

#[test]
fn lenet5_trained_in_pytorch_gives_pytorchs_logits_and_accuracy() {
    let arch = Architecture::preset("lenet5").unwrap();
    let device = Device::flex();
    let imported = import_pytorch_arch(&arch, &fixture("lenet5.pt"), MNIST, &device).unwrap();
    assert_eq!(imported.naming, KeyNaming::Sequential);
    assert_eq!(
        (imported.prefix.as_str(), imported.dtype.as_str()),
        ("", "F32")
    );
    assert!(imported.ignored.is_empty(), "{:?}", imported.ignored);
    let keys: Vec<&str> = imported.tensors.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "0.weight",
            "0.bias",
            "3.weight",
            "3.bias",
            "7.weight",
            "7.bias",
            "9.weight",
            "9.bias",
            "11.weight",
            "11.bias"
        ]
    );
    assert_eq!(imported.tensors[4].shape, [120, 400]);
    assert_logits_match(&imported.net, "lenet5.json");

    let set = test_set();
    let batcher = ImageBatcher::new(MNIST);
    let net = &imported.net;
    let (result, _) = evaluate_with(&|x| net.log_probs(x), &set, &batcher, 1000, &device);
    let expected = json("lenet5.json")["test_accuracy"].as_f64().unwrap();
    eprintln!("lenet5: Burn {} vs PyTorch {expected}", result.accuracy);
    assert!(
        expected > 0.95,
        "the fixture is a trained network: {expected}"
    );
    // Same weights and images: only summation order differs (a near-tie may flip).
    assert!(
        (result.accuracy - expected).abs() <= 0.0003,
        "Burn {} vs PyTorch {expected}",
        result.accuracy
    );
}

#[test]
fn batch_norm_and_residual_keys_give_pytorchs_logits() {
    let imported =
        import_pytorch_arch(&tiny(), &fixture("tiny_arch.pt"), MNIST, &Device::flex()).unwrap();
    assert_eq!(imported.naming, KeyNaming::Sequential);
    assert_eq!(
        imported.ignored,
        [
            "1.num_batches_tracked",
            "3.body.1.num_batches_tracked",
            "3.body.4.num_batches_tracked"
        ]
    );
    // Every key of the file but the counters is a tensor of the network, with its shape.
    let file_keys = json("tiny_arch.json")["keys"].as_object().unwrap().clone();
    for t in &imported.tensors {
        let shape: Vec<usize> = serde_json::from_value(file_keys[&t.key].clone()).unwrap();
        assert_eq!(shape, t.shape, "{}", t.key);
    }
    assert_eq!(imported.tensors.len() + 3, file_keys.len());
    let bn = imported.params.layers["conv2d_4_1"].batch_norm.as_ref();
    assert!(bn.is_some_and(|bn| bn.var.iter().all(|&v| v != 1.0)));
    assert_logits_match(&imported.net, "tiny_arch.json");
}

#[test]
fn step_name_keys_in_a_float64_checkpoint_import_the_same_network() {
    let device = Device::flex();
    let named =
        import_pytorch_arch(&tiny(), &fixture("tiny_arch_named.pt"), MNIST, &device).unwrap();
    assert_eq!(named.naming, KeyNaming::StepName);
    assert_eq!(named.prefix, "model.module.");
    assert_eq!(named.dtype, "F64");
    assert!(
        named.ignored.iter().all(|k| !k.starts_with("model.")),
        "{:?}",
        named.ignored
    );
    assert!(
        named
            .tensors
            .iter()
            .any(|t| t.key == "conv2d_4_1.bn.running_var")
    );
    let plain = import_pytorch_arch(&tiny(), &fixture("tiny_arch.pt"), MNIST, &device).unwrap();
    assert_eq!(
        named.params, plain.params,
        "float64 → f32 of f32 values is exact"
    );
    assert_logits_match(&named.net, "tiny_arch.json");
}

fn problems(file: &str) -> Vec<ImportProblem> {
    let path = fixture(file);
    match import_pytorch_arch(&tiny(), &path, MNIST, &Device::flex()) {
        Err(e @ ModelError::ImportArch { .. }) => {
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("as tiny"), "{message}");
            let ModelError::ImportArch { problems, .. } = e else {
                unreachable!()
            };
            for p in &problems {
                assert!(message.contains(p.key()), "{message} names {}", p.key());
            }
            problems
        }
        Err(other) => panic!("{file}: expected ImportArch, got {other:?}"),
        Ok(_) => panic!("{file} was accepted"),
    }
}

#[test]
fn a_missing_tensor_is_named_by_its_key() {
    assert_eq!(
        problems("arch_missing_key.pt"),
        [ImportProblem::Missing {
            key: "3.body.1.running_var".into(),
            expected: vec![2],
        }]
    );
}

#[test]
fn an_unexpected_tensor_is_named_by_its_key() {
    assert_eq!(
        problems("arch_unexpected_key.pt"),
        [ImportProblem::Unexpected {
            key: "9.weight".into()
        }]
    );
}

#[test]
fn a_wrong_shape_is_named_by_its_key() {
    assert_eq!(
        problems("arch_wrong_shape.pt"),
        [ImportProblem::Shape {
            key: "8.weight".into(),
            found: vec![10, 36],
            expected: vec![10, 98],
        }]
    );
}

#[test]
fn an_integer_tensor_is_named_by_its_key() {
    assert_eq!(
        problems("arch_wrong_dtype.pt"),
        [ImportProblem::DType {
            key: "0.weight".into(),
            dtype: "I64".into(),
        }]
    );
}

#[test]
fn every_problem_is_listed_and_files_errors_name_the_file() {
    // The tutorial's state_dict read as lenet5: every lenet5 key missing, every tutorial key
    // unexpected.
    let lenet5 = Architecture::preset("lenet5").unwrap();
    let device = Device::flex();
    let Err(ModelError::ImportArch { problems, .. }) =
        import_pytorch_arch(&lenet5, &fixture("mnist_cnn.pt"), MNIST, &device)
    else {
        panic!("the tutorial's file is not lenet5");
    };
    let missing = problems
        .iter()
        .filter(|p| matches!(p, ImportProblem::Missing { .. }))
        .count();
    let unexpected = problems
        .iter()
        .filter(|p| matches!(p, ImportProblem::Unexpected { .. }))
        .count();
    assert_eq!((missing, unexpected), (10, 8), "{problems:?}");

    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.pt");
    let err = import_pytorch_arch(&lenet5, &absent, MNIST, &device).unwrap_err();
    assert!(matches!(err, ModelError::Import { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.pt"), "{err}");
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"not a PyTorch file").unwrap();
    let err = import_pytorch_arch(&lenet5, &garbage, MNIST, &device).unwrap_err();
    assert!(
        err.to_string().contains("not a readable PyTorch file"),
        "{err}"
    );
}

#[test]
fn sequential_keys_count_every_layer() {
    let mobile = Architecture::preset("mobile").unwrap();
    let keys: Vec<String> = pytorch_arch_tensors(&mobile, KeyNaming::Sequential)
        .unwrap()
        .into_iter()
        .map(|t| t.key)
        .collect();
    // stem 0, its batch norm 1, relu6 2, b1_expand 3, …; b2_add is layer 11, its body's
    // expand conv is body.0 and the projection's batch norm body.7.
    assert_eq!(
        &keys[..6],
        [
            "0.weight",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "3.weight"
        ]
    );
    assert!(keys.contains(&"11.body.0.weight".to_owned()), "{keys:?}");
    assert!(
        keys.contains(&"11.body.7.running_var".to_owned()),
        "{keys:?}"
    );
    assert_eq!(keys.last().unwrap(), "35.bias", "{keys:?}");
}

/// A deterministic pseudo-random value in `[-1, 1)`.
fn noise(i: usize) -> f32 {
    let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
    x as f32 / (1u64 << 23) as f32 - 1.0
}

#[test]
fn float_params_round_trip_gives_identical_logits() {
    let device = Device::flex();
    let archs = PRESETS
        .iter()
        .map(|p| Architecture::preset(p).unwrap())
        .chain([tiny()]);
    for arch in archs {
        let plan = arch.plan().unwrap();
        let mut params: FloatParams = ArchNet::init_seeded(&plan, MNIST, 3, &device)
            .float_params()
            .unwrap();
        // Batch norm statistics away from their initial values, so that each one matters.
        for (s, p) in params.layers.values_mut().enumerate() {
            if let Some(bn) = &mut p.batch_norm {
                for (i, v) in bn.var.iter_mut().enumerate() {
                    *v = 1.0 + 0.5 * noise(100 * s + i);
                    bn.mean[i] = 0.3 * noise(100 * s + i + 7);
                    bn.gamma[i] = 1.0 + 0.2 * noise(100 * s + i + 13);
                    bn.beta[i] = 0.1 * noise(100 * s + i + 29);
                }
            }
        }
        let a = ArchNet::from_float_params(&plan, &params, MNIST, &device).unwrap();
        assert_eq!(a.float_params().unwrap(), params, "{}", arch.name);
        let b =
            ArchNet::from_float_params(&plan, &a.float_params().unwrap(), MNIST, &device).unwrap();
        device.seed(5);
        let x = Tensor::<4>::random([4, 1, 28, 28], burn::tensor::Distribution::Default, &device);
        assert_eq!(
            values(a.forward(x.clone())),
            values(b.forward(x)),
            "{}",
            arch.name
        );

        let mut broken = params.clone();
        let first = broken.layers.keys().next().unwrap().clone();
        broken.layers.remove(&first);
        let err = ArchNet::from_float_params(&plan, &broken, MNIST, &device).unwrap_err();
        assert!(
            matches!(&err, ArchError::Params { problems } if problems[0].contains(&first)),
            "{err:?}"
        );
    }
}
