//! PyTorch import: the tutorial network trained in PyTorch (`fixtures/mnist_cnn.pt`, made by
//! `fixtures/pytorch_tutorial.py`, whose run recorded its own test accuracy in
//! `fixtures/mnist_cnn.json`) must score the same in Burn; malformed files are refused with
//! the file and the offending tensor named.

use std::path::{Path, PathBuf};

use burnq_data::{DatasetKind, ImageSet, Split, locate::test_locator};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate;
use burnq_model::import::import_pytorch;
use burnq_model::{Device, ModelError, NetConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn import_error(path: &Path) -> String {
    match import_pytorch(&NetConfig::new(), path, &Device::flex()) {
        Err(e @ ModelError::Import { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "the message names the file: {message}"
            );
            message
        }
        Err(other) => panic!("expected an import error, got {other:?}"),
        Ok(_) => panic!("{} was accepted", path.display()),
    }
}

/// The test accuracy PyTorch measured after the last epoch of the fixture's training run.
fn pytorch_accuracy() -> f64 {
    let text = std::fs::read_to_string(fixture("mnist_cnn.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let history = json["history"].as_array().unwrap();
    history.last().unwrap()["test_accuracy"].as_f64().unwrap()
}

#[test]
fn the_pytorch_trained_network_scores_in_burn_what_it_scored_in_pytorch() {
    let device = Device::flex();
    let imported = import_pytorch(&NetConfig::new(), &fixture("mnist_cnn.pt"), &device).unwrap();
    assert_eq!(
        (imported.prefix.as_str(), imported.dtype.as_str()),
        ("", "F32")
    );
    assert!(imported.ignored.is_empty());
    let model = imported.net;
    let set = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
    let batcher = ImageBatcher::new(DatasetKind::Mnist.normalization());
    let (result, _) = evaluate(&model, &set, &batcher, 1000, &device);
    let expected = pytorch_accuracy();
    assert!(
        expected > 0.98,
        "the fixture is a trained network: {expected}"
    );
    // Same weights, same images, same normalization: only float summation order differs, which
    // may flip an image whose top two logits are within rounding of each other.
    assert!(
        (result.accuracy - expected).abs() <= 0.0003,
        "Burn {} vs PyTorch {expected}",
        result.accuracy
    );
    // Linear weights arrive transposed to Burn's [in, out]; exported back they are out × in.
    let layers = model.export_weights();
    assert_eq!(layers[2].weight_shape, [500, 800]);
    assert_eq!(layers[3].weight_shape, [10, 500]);
}

#[test]
fn a_float16_checkpoint_with_prefixes_imports() {
    // {"epoch": 10, "state_dict": {"module.conv1.weight": f16, ...}}: the same trained weights.
    let device = Device::flex();
    let imported =
        import_pytorch(&NetConfig::new(), &fixture("checkpoint_f16.pt"), &device).unwrap();
    assert_eq!(imported.prefix, "state_dict.module.");
    assert_eq!(imported.dtype, "F16");
    let full = import_pytorch(&NetConfig::new(), &fixture("mnist_cnn.pt"), &device).unwrap();
    for (half, single) in imported
        .net
        .export_weights()
        .iter()
        .zip(full.net.export_weights())
    {
        assert_eq!(half.weight_shape, single.weight_shape);
        for (h, s) in half.weight.iter().zip(&single.weight) {
            // float16 keeps 11 significant bits: relative error ≤ 2^-11 (absolute near 0).
            assert!(
                (h - s).abs() <= s.abs() / 2048.0 + 1e-7,
                "{}: {h} vs {s}",
                half.name
            );
        }
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let message = import_error(&fixture("missing_key.pt"));
    assert!(
        message.contains("missing tensors conv2.weight"),
        "{message}"
    );
    assert!(message.contains("fc2.bias"), "{message}");
}

#[test]
fn an_unexpected_tensor_is_named() {
    let message = import_error(&fixture("unexpected_key.pt"));
    assert!(
        message.contains("unexpected tensors fc3.weight"),
        "{message}"
    );
}

#[test]
fn a_wrong_shape_is_named_in_both_pytorch_formats() {
    for name in ["wrong_shape.pt", "wrong_shape_legacy.pt"] {
        let message = import_error(&fixture(name));
        assert!(
            message.contains("conv1.weight has shape [2], expected [20, 1, 5, 5]"),
            "{name}: {message}"
        );
    }
}

#[test]
fn an_integer_tensor_is_refused() {
    let message = import_error(&fixture("wrong_dtype.pt"));
    assert!(
        message.contains("conv1.weight has dtype I64, expected a floating-point tensor"),
        "{message}"
    );
}

#[test]
fn unreadable_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"this is not a PyTorch file").unwrap();
    assert!(import_error(&garbage).contains("not a readable PyTorch file"));

    let full = std::fs::read(fixture("mnist_cnn.pt")).unwrap();
    let truncated = dir.path().join("truncated.pt");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    import_error(&truncated);

    assert!(import_error(&dir.path().join("absent.pt")).contains("file not found"));
}
