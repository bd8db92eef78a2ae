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
use burnq_quant::{ConvertOptions, Engine, IMAGE_PIXELS, QuantModel, QuantScheme};
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

/// A model with per-layer widths (each layer's weights packed at its width, narrow outputs
/// clipped per layer) runs under ONNX Runtime and agrees with burnq as a uniform model does:
/// u8 logits at most one code apart, the same class on nearly every image (a random network
/// has small margins: its uniform 8-bit export agrees on 99.55 % of these images). Activation
/// widths that do not grow along the network keep ONNX Runtime's float requantization
/// (one code apart at a rounding tie, as above) one code apart; a narrow layer followed by a
/// wider one magnifies such a code (measured: `w8a4,w2a4,w4a4,w3a8` up to 9 codes, 95 % of
/// classes), which is the runtime's rounding, not the export.
#[test]
fn onnxruntime_runs_per_layer_widths() {
    if !onnxruntime_available() {
        return;
    }
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
    set.truncate(2000);
    let scheme = QuantScheme::parse(
        ConvertOptions::uniform(8),
        "w8a8,w2a6,w4a4,w3a3",
        &burnq_quant::tutorial_layer_names(),
    )
    .unwrap();
    let a = run_both(&burnq_testkit::model_file::model(scheme), &set);
    assert_eq!(a.images, 2000);
    assert!(a.classes >= 0.98, "class agreement {}", a.classes);
    assert!(
        a.logits_u8_max_diff <= 1,
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

/// The float export runs under ONNX Runtime (its `class` is the argmax of its `logits`), is
/// timed by the bench's runner, and ONNX Runtime's own int8 quantization of it runs too. Its
/// agreement with Burn's forward is checked where Burn is: `xtask/tests/peer.rs`.
#[test]
fn the_float_export_runs_times_and_quantizes_under_onnxruntime() {
    if !onnxruntime_available() {
        return;
    }
    let set = {
        let mut s = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
        s.truncate(200);
        s
    };
    let network = burnq_testkit::random_network(3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("float.onnx");
    let info = ExportInfo {
        dataset: "mnist".into(),
        source: "random".into(),
    };
    burnq_onnx::save_float(&network, burnq_quant::Normalization::MNIST, &info, &path).unwrap();
    let out = burnq_onnxruntime::run_float(&python(), &path, &set.pixels).expect("runs");
    assert_eq!(out.logits.len(), 200 * 10);
    assert!(out.logits.iter().all(|v| v.is_finite()));
    for (row, &class) in out.logits.chunks_exact(10).zip(&out.classes) {
        let argmax = (0..10).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(class, argmax as i64);
    }

    let spec = burnq_onnxruntime::TimeSpec {
        threads: vec![1, 2],
        runs: 2,
        latency_calls: 5,
        batch: 64,
    };
    let timing = burnq_onnxruntime::time(&python(), &path, &set.pixels, &spec).unwrap();
    assert_eq!(timing.classes, out.classes);
    assert_eq!(timing.timings.len(), 2);
    for (t, threads) in timing.timings.iter().zip([1, 2]) {
        assert_eq!(t.threads, threads);
        assert_eq!(t.full_images_per_s.len(), 2);
        assert_eq!(t.batch64_images_per_s.len(), 2);
        assert_eq!(t.latency_us.len(), 5);
        assert!(t.full_images_per_s.iter().all(|v| *v > 0.0));
    }

    let int8 = dir.path().join("int8.onnx");
    let config = burnq_onnxruntime::Int8Config::CANDIDATES[0];
    burnq_onnxruntime::quantize_static(
        &python(),
        &path,
        &set.pixels[..100 * IMAGE_PIXELS],
        &int8,
        config,
    )
    .expect("quantize_static runs");
    let q = burnq_onnxruntime::run_float(&python(), &int8, &set.pixels).expect("int8 runs");
    let same = q
        .classes
        .iter()
        .zip(&out.classes)
        .filter(|(a, b)| a == b)
        .count();
    // A random network's logits are close together, so int8 may flip some classes.
    assert!(same >= 150, "int8 agrees with fp32 on {same} of 200 images");
}

/// Every preset (strided, padded, depthwise convolutions, batch norm folded, ReLU6, average
/// pooling and residual adds in `mobile`) exported as a graph and run by ONNX Runtime: the
/// graph loads, runs, and agrees with burnq's reference engine up to the float-vs-fixed-point
/// rounding differences the module docs describe.
#[test]
fn onnxruntime_runs_every_preset() {
    if !onnxruntime_available() {
        return;
    }
    let set = {
        let mut s = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
        s.truncate(300);
        s
    };
    let info = ExportInfo {
        dataset: "mnist".into(),
        source: "random".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    for name in burnq_arch::arch::PRESETS {
        let arch = burnq_arch::Architecture::preset(name).unwrap();
        let (params, ranges) = burnq_testkit::graph::random_graph_inputs(&arch.plan().unwrap(), 5);
        for per_channel in [false, true] {
            let options = burnq_quant::ConvertOptions {
                per_channel,
                ..burnq_quant::ConvertOptions::uniform(8)
            };
            let graph = burnq_quant::convert_graph(
                &arch,
                &params,
                &ranges,
                burnq_quant::Normalization::MNIST,
                options,
            )
            .unwrap();
            let path = dir.path().join(format!("{name}.onnx"));
            burnq_onnx::save_graph(&graph, &info, &path).unwrap();
            let runtime = burnq_onnxruntime::run(&python(), &path, &set.pixels).expect("runs");
            let output = graph.forward_reference(&set.pixels, set.len()).unwrap();
            let a = compare(&output, &runtime, &set.labels);
            eprintln!("{name} per_channel={per_channel}: {a:?}");
            assert_eq!(a.images, 300);
            assert!(a.classes >= 0.95, "{name}: class agreement {}", a.classes);
            // Measured (random weights, 300 MNIST images): tutorial and lenet5 ≥ 91 % of u8
            // logits equal, at most 1 code apart; mobile (17 requantizing layers, QDQ pools
            // and adds) 48 % equal, at most 4 apart; classes 99.7–100 % everywhere. A wrong
            // stride, padding, group or add would scramble the logits far beyond this.
            assert!(
                a.logits_u8_max_diff <= 8,
                "{name}: u8 logits differ by {} codes",
                a.logits_u8_max_diff
            );
        }
    }
}
