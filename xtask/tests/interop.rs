//! Interoperability through the binary: the tutorial network trained in PyTorch
//! (`crates/burnq-model/tests/fixtures/mnist_cnn.pt`) is imported, quantized by burnq, exported
//! to ONNX and run by ONNX Runtime on the MNIST test set, which must reproduce burnq's
//! integer engine.
//!
//! ONNX Runtime comes from PyPI; without it the ONNX half is skipped unless
//! `BURNQ_REQUIRE_ONNXRUNTIME=1` (set by `.ci/run`). `BURNQ_PYTHON` names the interpreter.

mod common;

use std::path::Path;

use burnq_testkit::onnxruntime::onnxruntime_available;
use common::{json, text, xtask};

/// `export-onnx --verify` of `<out>/quant/model.safetensors` over `images` test images; returns
/// `onnxruntime.json`.
fn verify(out: &str, images: &str) -> serde_json::Value {
    let run = xtask(&[
        "export-onnx",
        "--verify",
        "--test-limit",
        images,
        "--offline",
        "--out",
        out,
    ]);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("QLinearConv"), "{}", text(&run));
    assert!(Path::new(out).join("quant/model.onnx").is_file());
    json(&Path::new(out).join("quant/onnxruntime.json"))
}

fn quantize(out: &str, extra: &[&str]) {
    let mut args = vec![
        "quantize",
        "--test-limit",
        "2000",
        "--offline",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let run = xtask(&args);
    assert!(run.status.success(), "{}", text(&run));
}

/// `import --pytorch <fixture> --out <out>`, a file of `crates/burnq-model/tests/fixtures/`.
fn import(fixture: &str, out: &str) -> std::process::Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/burnq-model/tests/fixtures")
        .join(fixture);
    xtask(&[
        "import",
        "--pytorch",
        path.to_str().unwrap(),
        "--offline",
        "--out",
        out,
    ])
}

#[test]
fn pytorch_model_is_imported_quantized_and_reproduced_by_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let import = import("mnist_cnn.pt", out);
    assert!(import.status.success(), "{}", text(&import));
    let report = json(&dir.path().join("float/import.json"));
    assert_eq!(report["test_images"], 10_000);
    let float = report["test_accuracy"].as_f64().unwrap();
    assert!(float > 0.985, "the PyTorch-trained network scores {float}");

    quantize(out, &[]);
    let q = json(&dir.path().join("quant/report.json"));
    let (int, float) = (
        q["int_accuracy"].as_f64().unwrap(),
        q["float_accuracy"].as_f64().unwrap(),
    );
    assert!(
        (int - float).abs() <= 0.005,
        "8-bit integer {int} vs float {float}"
    );

    if !onnxruntime_available() {
        return;
    }
    let v = verify(out, "10000");
    assert_eq!(v["images"], 10_000);
    let burnq = v["burnq_accuracy"].as_f64().unwrap();
    let ort = v["onnxruntime_accuracy"].as_f64().unwrap();
    assert!(
        (burnq - ort).abs() <= 0.0005,
        "burnq {burnq} vs ONNX Runtime {ort}"
    );
    let agree = v["class_agreement"].as_f64().unwrap();
    assert!(agree >= 0.999, "class agreement {agree}");

    // 4-bit per-channel: per-channel zero points and the Clip to [0, 15] in the graph.
    quantize(out, &["--bits", "4", "--per-channel"]);
    let v = verify(out, "2000");
    let agree = v["class_agreement"].as_f64().unwrap();
    assert!(agree >= 0.995, "4-bit per-channel class agreement {agree}");
    assert!(v["logits_u8_values_equal"].as_f64().unwrap() >= 0.9, "{v}");
}

#[test]
fn a_pytorch_file_of_another_network_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let run = import("wrong_shape.pt", out);
    assert!(!run.status.success());
    let message = text(&run);
    assert!(
        message.contains("wrong_shape.pt") && message.contains("conv1.weight"),
        "{message}"
    );
    assert!(
        !dir.path().join("float").exists(),
        "nothing may be written on failure"
    );
}
