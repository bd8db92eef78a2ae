//! The ONNX export run by ONNX Runtime (with `burnq-onnxruntime`, the runner `cargo xtask
//! export-onnx --verify` uses) and compared with burnq's integer engine, on the golden model
//! (an independent implementation's 8-bit MNIST network, `shared/golden/`) over the whole
//! MNIST test set.
//!
//! ONNX Runtime comes from PyPI (`pip install onnxruntime onnx numpy`; `.ci/run` installs it and
//! sets `BURNQ_REQUIRE_ONNXRUNTIME=1`, so CI fails rather than skips). `BURNQ_PYTHON` names the
//! interpreter (default `python3`).

use burnq_data::{DatasetKind, ImageSet, Split, locate::test_locator};
use burnq_onnx::{ExportInfo, save};
use burnq_onnxruntime::{Agreement, compare};
use burnq_quant::{Engine, IMAGE_PIXELS, QuantModel};
use burnq_testkit::golden;
use burnq_testkit::onnxruntime::{onnxruntime_available, python};

fn export(model: &QuantModel, dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("model.onnx");
    let info = ExportInfo {
        dataset: "mnist".into(),
        source: "golden".into(),
    };
    save(model, &info, &path).expect("export");
    path
}

fn run_both(model: &QuantModel, set: &ImageSet) -> Agreement {
    let dir = tempfile::tempdir().unwrap();
    let path = export(model, dir.path());
    let runtime = burnq_onnxruntime::run(&python(), &path, &set.pixels).expect("ONNX Runtime runs");
    let output = Engine::new(model)
        .unwrap()
        .forward_parallel(&set.pixels, set.len(), 0)
        .unwrap();
    let agreement = compare(&output, &runtime, &set.labels);
    eprintln!("{}: {agreement:#?}", runtime.versions);
    agreement
}

#[test]
fn onnxruntime_matches_burnq_on_the_mnist_test_set() {
    if !onnxruntime_available() {
        return;
    }
    let set = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
    let a = run_both(&golden::model(), &set);
    assert_eq!(a.images, 10_000);
    assert!(
        a.burnq_accuracy > 0.98,
        "the golden model is a trained network: {}",
        a.burnq_accuracy
    );
    assert!(
        (a.burnq_accuracy - a.runtime_accuracy).abs() <= 0.0005,
        "accuracy: burnq {} vs ONNX Runtime {}",
        a.burnq_accuracy,
        a.runtime_accuracy
    );
    assert!(a.classes >= 0.999, "class agreement {}", a.classes);
    // ONNX Runtime requantizes with an f32 multiplier, burnq with m0·2^(shift−31): codes within
    // ~0.01 of a rounding tie can land one apart, and such differences propagate layer to layer.
    // Measured on this model: 97.5 % of u8 logits equal, none more than one code apart.
    assert!(
        a.logits_u8_values >= 0.95,
        "u8 logits equal: {}",
        a.logits_u8_values
    );
    assert!(
        a.logits_u8_max_diff <= 2,
        "u8 logits differ by {} codes",
        a.logits_u8_max_diff
    );
}

#[test]
fn onnxruntime_reproduces_the_golden_images() {
    if !onnxruntime_available() {
        return;
    }
    let bytes = golden::read();
    let g = golden::Golden::parse(&bytes);
    let model = g.model();
    let pixels = g.u8s("out.q_in");
    let dir = tempfile::tempdir().unwrap();
    let runtime = burnq_onnxruntime::run(&python(), &export(&model, dir.path()), &pixels).unwrap();
    let expected: Vec<i64> = g.predictions().iter().map(|&p| p as i64).collect();
    assert_eq!(runtime.classes, expected);
    assert_eq!(runtime.classes.len(), pixels.len() / IMAGE_PIXELS);
}
