//! `import --pytorch FILE --arch NAME|FILE`: lenet5 trained in PyTorch
//! (`crates/burnq-model/tests/fixtures/lenet5.pt`) imports into a described network's folder
//! with PyTorch's own test accuracy, and `quantize --arch lenet5` takes it like a Burn-trained
//! one; a malformed file is refused naming the key and writes nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{json, text, xtask, xtask_ok};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/burnq-model/tests/fixtures")
        .join(name)
}

#[test]
fn lenet5_from_pytorch_imports_and_quantizes_within_a_point() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let pt = fixture("lenet5.pt");
    let import = xtask_ok(&[
        "import",
        "--pytorch",
        pt.to_str().unwrap(),
        "--arch",
        "lenet5",
        "--offline",
        "--out",
        out,
    ]);
    assert!(
        text(&import).contains("quantize --arch lenet5"),
        "{}",
        text(&import)
    );
    for f in ["model.bpk", "model.arch.json", "import.json"] {
        assert!(dir.path().join("float").join(f).is_file(), "float/{f}");
    }
    let report = json(&dir.path().join("float/import.json"));
    assert_eq!(report["architecture"], "lenet5");
    assert_eq!(report["key_naming"], "sequential");
    assert_eq!(report["tensors"].as_array().unwrap().len(), 10);
    assert_eq!(report["test_images"], 10000);
    let pytorch = json(&fixture("lenet5.json"))["test_accuracy"]
        .as_f64()
        .unwrap();
    let imported = report["test_accuracy"].as_f64().unwrap();
    assert!(
        (imported - pytorch).abs() <= 0.0003,
        "Burn {imported} vs PyTorch {pytorch}"
    );

    xtask_ok(&[
        "quantize",
        "--arch",
        "lenet5",
        "--out",
        out,
        "--test-limit",
        "500",
        "--calib-samples",
        "200",
        "--offline",
    ]);
    let quant = json(&dir.path().join("quant/report.json"));
    let float = quant["float_accuracy"].as_f64().unwrap();
    let int = quant["int_accuracy"].as_f64().unwrap();
    eprintln!("lenet5 from PyTorch: float {float}, integer {int} on 500 test images");
    assert!(float > 0.95, "float accuracy {float}");
    assert!(
        (float - int).abs() <= 0.01,
        "integer {int} vs float {float}"
    );
}

#[test]
fn a_malformed_state_dict_is_refused_by_key_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let tiny = fixture("tiny_arch.toml");
    let run = xtask(&[
        "import",
        "--pytorch",
        fixture("arch_wrong_shape.pt").to_str().unwrap(),
        "--arch",
        tiny.to_str().unwrap(),
        "--offline",
        "--out",
        out,
    ]);
    let message = text(&run);
    assert_eq!(run.status.code(), Some(1), "{message}");
    assert!(
        message.contains("8.weight: shape [10, 36], expected [10, 98]"),
        "{message}"
    );
    assert!(!dir.path().join("float").exists());
}
