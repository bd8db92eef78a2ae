//! `--arch`: every preset and the shipped example file go through the whole chain on a small
//! subset: train, quantize (every calibration method, per tensor and per channel), evaluate
//! the float and integer models, measure each quantization point's SQNR, sweep widths, classify a picture, fine-tune with QAT at 4 bits (fake-quant equal to integer),
//! export ONNX (run by ONNX Runtime where it is installed).

mod common;

use common::{json, text, xtask, xtask_ok};

fn chain(arch: &str, train_images: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let common = ["--arch", arch, "--offline", "--out", out];
    let train = xtask_ok(
        &[
            &[
                "train",
                "--epochs",
                "1",
                "--train-limit",
                train_images,
                "--test-limit",
                "200",
            ][..],
            &common,
        ]
        .concat(),
    );
    assert!(text(&train).contains("| epoch"), "{}", text(&train));
    for f in ["model.bpk", "model.arch.json", "train.json"] {
        assert!(
            dir.path().join("float").join(f).is_file(),
            "{arch}: float/{f}"
        );
    }
    let quantize = xtask_ok(
        &[
            &[
                "quantize",
                "--calib-samples",
                "200",
                "--test-limit",
                "200",
                "--per-channel",
            ][..],
            &common,
        ]
        .concat(),
    );
    let report = json(&dir.path().join("quant/report.json"));
    let variants = report["variants"].as_array().unwrap();
    assert_eq!(
        variants.len(),
        10,
        "{arch}: five methods × two granularities"
    );
    let saved: Vec<_> = variants.iter().filter(|v| v["saved"] == true).collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0]["per_channel"], true);
    assert_eq!(saved[0]["calibration"], "mean-minmax");
    let float = report["float_accuracy"].as_f64().unwrap();
    let int = report["int_accuracy"].as_f64().unwrap();
    assert!(float > 0.1, "{arch}: float accuracy {float}");
    for v in variants {
        let agree = v["agreement_with_float"].as_f64().unwrap();
        assert!(agree > 0.8, "{arch}: {v} agrees with float on {agree}");
    }
    assert!(text(&quantize).contains("(saved)"));
    let cal = json(&dir.path().join("calibration.json"));
    assert_eq!(
        cal["architecture"].as_str(),
        report["architecture"].as_str()
    );

    let model = dir.path().join("quant/model.safetensors");
    let model = model.to_str().unwrap();
    let eval = xtask_ok(&[
        "eval",
        "--arch",
        arch,
        "--quantized",
        "--model",
        model,
        "--limit",
        "200",
        "--offline",
    ]);
    let shown = format!("integer accuracy {:.2}%", 100.0 * int);
    assert!(
        text(&eval).contains(&shown),
        "{}\nexpected {shown}",
        text(&eval)
    );
    xtask_ok(
        &[
            &[
                "qat",
                "--epochs",
                "1",
                "--train-limit",
                "256",
                "--test-limit",
                "200",
            ][..],
            &["--weight-bits", "4", "--act-bits", "4", "--per-channel"],
            &common,
        ]
        .concat(),
    );
    let qat = json(&dir.path().join("qat-w4a4-pc/qat.json"));
    assert_eq!(qat["integer_vs_fake_quant_agreement"], 1.0, "{arch}: {qat}");
    assert!(
        dir.path()
            .join("qat-w4a4-pc/quant/model.safetensors")
            .is_file()
    );
    // sensitivity: every quantization point's SQNR against the float network.
    xtask_ok(
        &[
            &["sensitivity", "--sqnr-images", "100", "--test-limit", "200"][..],
            &common,
        ]
        .concat(),
    );
    let sqnr = json(&dir.path().join("quant/sensitivity.json"));
    let points = sqnr.as_array().unwrap();
    assert_eq!(points.len(), quantization_points(&report), "{arch}: {sqnr}");
    for p in points {
        // 8-bit codes track the float network: a wrong order, grid or layout would not.
        assert!(p[1].as_f64().unwrap() > 10.0, "{arch}: {p}");
    }
    // sweep: two widths, every calibration method per tensor and per channel.
    xtask_ok(
        &[
            &[
                "sweep",
                "--bits",
                "4,8",
                "--qat-epochs",
                "0",
                "--test-limit",
                "200",
            ][..],
            &common,
        ]
        .concat(),
    );
    let sweep = json(&dir.path().join("sweep.json"));
    let rows = sweep["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{arch}: {sweep}");
    assert_eq!(rows[1]["ptq_per_channel"].as_array().unwrap().len(), 5);
    // predict: the first test image as an inverted 56×56 PGM.
    let set = burnq_data::ImageSet::load(
        &burnq_data::locate::test_locator(),
        burnq_data::DatasetKind::Mnist,
        burnq_data::Split::Test,
    )
    .unwrap();
    let mut pgm = b"P5\n56 56\n255\n".to_vec();
    pgm.extend((0..56 * 56).map(|i| 255 - set.image(0)[(i / 56 / 2) * 28 + (i % 56) / 2]));
    let image = dir.path().join("digit.pgm");
    std::fs::write(&image, pgm).unwrap();
    let predict = xtask_ok(&[
        "predict",
        image.to_str().unwrap(),
        "--arch",
        arch,
        "--model",
        model,
        "--offline",
    ]);
    assert!(text(&predict).contains("digit.pgm |"), "{}", text(&predict));
    let onnx = dir.path().join("quant/model.onnx");
    xtask_ok(&[
        "export-onnx",
        "--arch",
        arch,
        "--model",
        model,
        "--offline",
        "--out",
        out,
    ]);
    assert!(onnx.is_file());
}

/// The number of quantization points of the report's network.
fn quantization_points(report: &serde_json::Value) -> usize {
    let name = report["architecture"].as_str().unwrap();
    let arch = match burnq_arch::Architecture::preset(name) {
        Some(a) => a,
        None => burnq_arch::Architecture::load(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../examples/my_net.toml"
        ))
        .unwrap(),
    };
    arch.plan().unwrap().quantization_points().len()
}

#[test]
fn lenet5_trains_quantizes_evaluates_and_exports() {
    chain("lenet5", "2000");
}

#[test]
fn mobile_trains_quantizes_evaluates_and_exports() {
    chain("mobile", "640");
}

#[test]
fn a_description_file_trains_quantizes_evaluates_and_exports() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/my_net.toml");
    chain(example, "640");
}

#[test]
fn a_broken_description_is_refused_by_name_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"name": "bad", "layers": [{"type": "conv2d", "out_channels": 4, "kernel": 3},
            {"type": "conv2d", "in_channels": 5, "out_channels": 4, "kernel": 3},
            {"type": "flatten"}, {"type": "linear", "out_features": 10}]}"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let run = xtask(&[
        "train",
        "--arch",
        file.to_str().unwrap(),
        "--epochs",
        "1",
        "--offline",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    let msg = text(&run);
    assert!(
        msg.contains("layer 2 (conv2d): expects 5 input channels, its input has 4"),
        "{msg}"
    );
    assert!(!out.exists(), "nothing is written for a broken description");
    // qat --arch --bits-per-layer: an unknown layer is named with the known ones, before any
    // model is read.
    let bad_layer = xtask(&[
        "qat",
        "--arch",
        "lenet5",
        "--bits-per-layer",
        "c1=w4,conv9=w2",
        "--offline",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!bad_layer.status.success());
    let msg = text(&bad_layer);
    assert!(
        msg.contains("--bits-per-layer")
            && msg.contains("no layer \"conv9\"; the layers are c1, c3, f5, f6, output"),
        "{msg}"
    );
    assert!(!msg.contains("panicked"), "{msg}");
    assert!(!out.exists(), "nothing is written for a refused width");
    let unknown = xtask(&["quantize", "--arch", "resnet50", "--offline"]);
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("not a preset"),
        "{}",
        text(&unknown)
    );
}
