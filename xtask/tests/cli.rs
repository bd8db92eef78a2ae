//! End to end through the binary: a tiny `train`, then `quantize`, then the error paths.

mod common;

use std::path::Path;

use common::{command, json, text, xtask, xtask_ok};

#[test]
fn train_then_quantize_writes_every_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let train = xtask_ok(&[
        "train",
        "--epochs",
        "1",
        "--train-limit",
        "1280",
        "--test-limit",
        "300",
        "--offline",
        "--out",
        out,
    ]);
    for f in ["model.bpk", "config.json", "train.json", "training.svg"] {
        assert!(
            dir.path().join("float").join(f).is_file(),
            "float/{f} missing"
        );
    }
    let report = json(&dir.path().join("float/train.json"));
    assert_eq!(report["dataset"], "mnist");
    assert_eq!(report["backend"], "flex");
    assert_eq!(report["epochs"], 1);
    assert_eq!(report["seed"], 1);
    assert_eq!(report["train_images"], 1280);
    assert_eq!(report["history"].as_array().unwrap().len(), 1);
    let acc = report["test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.3 && acc <= 1.0, "accuracy {acc}");
    assert!(
        text(&train).contains("| epoch"),
        "no summary table:\n{}",
        text(&train)
    );

    xtask_ok(&[
        "quantize",
        "--calib-samples",
        "200",
        "--test-limit",
        "300",
        "--offline",
        "--out",
        out,
    ]);
    assert!(dir.path().join("quant/model.safetensors").is_file());
    let cal = json(&dir.path().join("calibration.json"));
    assert_eq!(cal["samples"], 200);
    assert_eq!(cal["split"], "train");
    assert_eq!(cal["taps"].as_array().unwrap().len(), 5);
    let q = json(&dir.path().join("quant/report.json"));
    for key in [
        "float_accuracy",
        "simulated_accuracy",
        "int_accuracy",
        "agreement",
        "float_model_bytes",
        "int_model_bytes",
        "bits",
        "calibration",
    ] {
        assert!(!q[key].is_null(), "report.json lacks {key}");
    }
    let layers = q["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    assert!(
        layers.iter().all(|l| l["sqnr_db"].as_f64().unwrap() > 20.0),
        "{layers:?}"
    );
    assert_eq!(
        (q["weight_bits"].as_u64(), q["act_bits"].as_u64()),
        (Some(8), Some(8))
    );
    let results = q["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        7,
        "float + simulated + 5 integer rows (one per calibration method)"
    );
    let float_acc = results[0]["accuracy"].as_f64().unwrap();
    for r in results {
        let a = r["accuracy"].as_f64().unwrap();
        assert!(
            (a - float_acc).abs() < 0.05,
            "{} at {a} vs float {float_acc}",
            r["engine"]
        );
    }
    assert!(q["int_model_bytes"].as_u64().unwrap() * 3 < q["float_model_bytes"].as_u64().unwrap());

    xtask_ok(&[
        "sensitivity",
        "--test-limit",
        "300",
        "--sqnr-images",
        "100",
        "--offline",
        "--out",
        out,
    ]);
    let s = json(&dir.path().join("quant/sensitivity.json"));
    let layers = s["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 4);
    for l in layers {
        assert!(l["sqnr_db"].as_f64().unwrap() > 20.0, "{l}");
    }

    // Quick QAT runs (one epoch on a few images).
    let quick = |args: &[&str]| {
        let common = [
            "--epochs",
            "1",
            "--train-limit",
            "640",
            "--test-limit",
            "300",
            "--offline",
            "--out",
            out,
        ];
        xtask_ok(&[args, &common[..]].concat())
    };
    quick(&[
        "qat",
        "--weight-bits",
        "4",
        "--act-bits",
        "4",
        "--calibration",
        "mse",
        "--ema-decay",
        "1",
    ]);
    let r = json(&dir.path().join("qat-w4a4/qat.json"));
    assert_eq!(r["range_init"], "mse");
    assert!(
        dir.path()
            .join("qat-w4a4/quant/model.safetensors")
            .is_file()
    );
    // QAT computes the integer engine's codes (burnq_model::int_sim): the fake-quantized
    // network predicts exactly what the exported integer model predicts.
    let agree = r["integer_vs_fake_quant_agreement"].as_f64().unwrap();
    assert_eq!(
        agree, 1.0,
        "integer and fake-quant predictions agree on {agree}"
    );

    // Progressive precision: w2a2 LSQ started from the w4a4 run's model. At learning rate 0
    // nothing moves, so the run's fine-tuned model is that model, byte for byte.
    let w4a4 = dir.path().join("qat-w4a4");
    quick(&[
        "qat",
        "--quantizer",
        "lsq",
        "--step-init",
        "mse",
        "--weight-bits",
        "2",
        "--act-bits",
        "2",
        "--per-channel",
        "--lr",
        "0",
        "--momentum",
        "0",
        "--init-from",
        w4a4.to_str().unwrap(),
    ]);
    let progressive = dir.path().join("qat-lsq-w2a2-pc-from-qat-w4a4");
    let r = json(&progressive.join("qat.json"));
    assert_eq!(r["settings"]["step_init"], "mse");
    assert!(
        r["init_from"].as_str().unwrap().ends_with("qat-w4a4"),
        "{r}"
    );
    assert_eq!(r["integer_vs_fake_quant_agreement"].as_f64(), Some(1.0));
    let model = |run: &std::path::Path| std::fs::read(run.join("float/model.bpk")).unwrap();
    assert!(model(&progressive) == model(&w4a4));

    // Per-layer widths: each layer on its own widths, exported exactly as trained; then the
    // budgeted search, whose model must fit its budget.
    quick(&[
        "qat",
        "--bits-per-layer",
        "conv1=w8a8,conv2=w4a8,fc1=w2a4,fc2=a8",
        "--weight-bits",
        "4",
    ]);
    quick(&[
        "mixed",
        "--budget-kb",
        "120",
        "--widths",
        "2,8",
        "--uniform",
        "8",
        "--sensitivity-images",
        "200",
    ]);
    let m = json(&dir.path().join("mixed.json"));
    let points = m["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "one budget and one uniform width");
    assert_eq!(
        (points[0]["kind"].as_str(), points[1]["kind"].as_str()),
        (Some("mixed"), Some("uniform"))
    );
    let bytes = points[0]["weight_bytes"].as_u64().unwrap();
    assert!(
        bytes <= 120_000,
        "the mixed model's weights take {bytes} bytes"
    );
    assert_eq!(points[1]["weight_bytes"], 430_500);
    for p in points {
        assert_eq!(
            p["integer_vs_fake_quant_agreement"].as_f64(),
            Some(1.0),
            "{p}"
        );
    }
    assert_eq!(m["sensitivities"].as_array().unwrap().len(), 8);
    assert!(dir.path().join("mixed.svg").is_file() && dir.path().join("mixed.md").is_file());
    let r = json(&dir.path().join("qat-mixed-w8a8.w4a8.w2a4.w4a8/qat.json"));
    assert_eq!(
        r["bits_per_layer"],
        "conv1=w8a8,conv2=w4a8,fc1=w2a4,fc2=w4a8"
    );
    assert_eq!(r["integer_vs_fake_quant_agreement"].as_f64(), Some(1.0));
    // Weight bytes: 500 + 25000·4/8 + 400000·2/8 + 5000·4/8.
    assert_eq!(r["int_weight_bytes"], 500 + 12_500 + 100_000 + 2_500);

    let dump = dir.path().join("dump");
    xtask_ok(&[
        "eval",
        "--quantized",
        "--limit",
        "50",
        "--offline",
        "--model",
        &format!("{out}/quant/model.safetensors"),
        "--dump",
        dump.to_str().unwrap(),
    ]);
    for (f, bytes) in [
        ("input.npy", 50 * 784),
        ("fc2_acc.npy", 50 * 40),
        ("logits.npy", 500),
        ("pred.npy", 400),
        ("labels.npy", 400),
    ] {
        let len = std::fs::metadata(dump.join(f)).unwrap().len() as usize;
        assert_eq!(
            len % 64,
            bytes % 64,
            "{f}: header must pad the data to 64 bytes"
        );
        assert!(
            len > bytes && len <= bytes + 128,
            "{f}: {len} bytes for {bytes} of data"
        );
    }

    // predict: the first test image, inverted and enlarged 3× into an 84×84 PGM.
    let set = burnq_data::ImageSet::load(
        &burnq_data::locate::test_locator(),
        burnq_data::DatasetKind::Mnist,
        burnq_data::Split::Test,
    )
    .unwrap();
    let mut pgm = b"P5\n84 84\n255\n".to_vec();
    pgm.extend((0..84 * 84).map(|i| 255 - set.image(0)[(i / 84 / 3) * 28 + (i % 84) / 3]));
    let image = dir.path().join("seven.pgm");
    std::fs::write(&image, pgm).unwrap();
    let model_file = format!("{out}/quant/model.safetensors");
    let predict = xtask_ok(&[
        "predict",
        image.to_str().unwrap(),
        "--model",
        &model_file,
        "--offline",
    ]);
    assert!(text(&predict).contains("seven.pgm |"), "{}", text(&predict));
    let bad = dir.path().join("bad.pgm");
    std::fs::write(&bad, b"P5\n9 9\n255\n").unwrap();
    let refused = xtask(&[
        "predict",
        bad.to_str().unwrap(),
        "--model",
        &model_file,
        "--offline",
    ]);
    assert!(
        !refused.status.success() && text(&refused).contains("bad.pgm"),
        "{}",
        text(&refused)
    );

    xtask_ok(&[
        "sweep",
        "--bits",
        "4",
        "--qat-epochs",
        "0",
        "--test-limit",
        "300",
        "--offline",
        "--out",
        out,
    ]);
    let w = json(&dir.path().join("sweep.json"));
    assert_eq!(w["rows"][0]["ptq_per_channel"].as_array().unwrap().len(), 5);
    assert!(dir.path().join("sweep.svg").is_file() && dir.path().join("sweep.md").is_file());

    // An empty evaluation is an error naming its flag (status 1), as an empty training set is.
    let float_file = format!("{out}/float/model.bpk");
    let fixture = format!(
        "{}/../crates/burnq-model/tests/fixtures/mnist_cnn.pt",
        env!("CARGO_MANIFEST_DIR")
    );
    let pytorch_out = format!("{out}/pytorch");
    for (args, flag) in [
        (
            vec![
                "eval",
                "--quantized",
                "--limit",
                "0",
                "--model",
                &model_file,
            ],
            "--limit 0",
        ),
        (
            vec!["eval", "--limit", "0", "--model", &float_file],
            "--limit 0",
        ),
        (
            vec!["quantize", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
        (
            vec!["qat", "--epochs", "1", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
        (
            vec!["sweep", "--bits", "4", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
        (
            vec!["sensitivity", "--sqnr-images", "0", "--out", out],
            "--sqnr-images 0",
        ),
        (
            vec!["sensitivity", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
        (
            vec!["export-onnx", "--verify", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
        (
            vec![
                "import",
                "--pytorch",
                &fixture,
                "--test-limit",
                "0",
                "--out",
                &pytorch_out,
            ],
            "--test-limit 0",
        ),
        (
            vec!["train", "--test-limit", "0", "--out", out],
            "--test-limit 0",
        ),
    ] {
        let run = xtask(&[args.as_slice(), &["--offline"]].concat());
        let message = text(&run);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains(&format!("{flag} leaves no test image to evaluate"))
                && !message.contains("accuracy"),
            "{args:?}: {message}"
        );
    }
    assert!(!dir.path().join("quant/model.onnx").exists() && !Path::new(&pytorch_out).exists());

    // export-onnx --verify without a usable Python: the runner's error, with xtask's context.
    let no_python = xtask(&[
        "export-onnx",
        "--verify",
        "--python",
        "burnq-no-such-python",
        "--test-limit",
        "10",
        "--offline",
        "--out",
        out,
    ]);
    let message = text(&no_python);
    assert_eq!(no_python.status.code(), Some(1), "{message}");
    assert!(
        message.contains("--verify")
            && message.contains("cannot start `burnq-no-such-python`")
            && message.contains("pip install onnxruntime"),
        "{message}"
    );

    // A failing run leaves the previous artifacts as they were.
    let model = std::fs::read(dir.path().join("quant/model.safetensors")).unwrap();
    let empty = xtask(&[
        "quantize",
        "--calib-samples",
        "0",
        "--offline",
        "--out",
        out,
    ]);
    assert!(!empty.status.success());
    assert!(
        text(&empty).contains("calibration set is empty"),
        "{}",
        text(&empty)
    );
    let too_many = xtask(&[
        "quantize",
        "--calib-samples",
        "70000",
        "--offline",
        "--out",
        out,
    ]);
    assert!(
        text(&too_many).contains("holds only 60000"),
        "{}",
        text(&too_many)
    );
    assert_eq!(
        std::fs::read(dir.path().join("quant/model.safetensors")).unwrap(),
        model
    );
}

#[test]
fn errors_name_the_problem_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let missing = xtask(&["quantize", "--offline", "--out", out]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains("cargo xtask train"),
        "{}",
        text(&missing)
    );

    let no_data = command(&[
        "train",
        "--offline",
        "--data-dir",
        "/nonexistent",
        "--out",
        out,
    ])
    .env_remove("BURNQ_DATA_DIR")
    .output()
    .unwrap();
    assert!(!no_data.status.success());
    let msg = text(&no_data);
    assert!(
        msg.contains("--data-dir") && msg.contains("BURNQ_DATA_DIR"),
        "{msg}"
    );

    let bad_bits = xtask(&["quantize", "--bits", "9", "--offline", "--out", out]);
    assert!(!bad_bits.status.success());
    assert!(text(&bad_bits).contains("--bits"), "{}", text(&bad_bits));
    for (args, needle) in [
        (
            ["quantize", "--bits-per-layer", "conv9=4"],
            "no layer \"conv9\"; the layers are conv1, conv2, fc1, fc2",
        ),
        (
            ["quantize", "--bits-per-layer", "8,4,2"],
            "3 positional entries for 4 layers",
        ),
        (
            ["qat", "--bits-per-layer", "fc1=w9"],
            "weight width 9 outside 2..=8",
        ),
    ] {
        let bad = xtask(&[args[0], args[1], args[2], "--offline", "--out", out]);
        assert!(!bad.status.success());
        let message = text(&bad);
        assert!(
            message.contains("--bits-per-layer") && message.contains(needle),
            "{message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
    assert!(
        !dir.path().join("quant").exists(),
        "nothing may be written on failure"
    );
}
