//! The peer inside the bench, through the binary: a tiny `train` and `quantize`, then the float
//! ONNX export (verified against Burn's forward by ONNX Runtime) and a quick `bench` whose report
//! holds burnq per width, Burn f32 and ONNX Runtime (fp32, its own int8, burnq's graph) at 1
//! and 2 threads, and the ratios of the run. Correctness only: no timed assertion.
//!
//! Without ONNX Runtime the ORT checks are skipped unless `BURNQ_REQUIRE_ONNXRUNTIME=1`
//! (`.ci/run`); the bench's behaviour without a usable Python is checked regardless.

mod common;

use std::path::Path;
use std::process::Command;

use burnq_testkit::onnxruntime::{onnxruntime_available, python};
use common::{json, text, xtask, xtask_ok};
use serde_json::Value;

fn train_and_quantize(out: &str) {
    xtask_ok(&[
        "train",
        "--epochs",
        "1",
        "--train-limit",
        "2560",
        "--test-limit",
        "300",
        "--offline",
        "--out",
        out,
    ]);
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
}

/// `bench` on 300 test images, widths w8a8 (saved) and w4a4, threads 1 and 2.
fn bench(out: &str, report_dir: &str, python: Option<&str>) -> Value {
    let mut args = vec![
        "bench",
        "--test-limit",
        "300",
        "--runs",
        "1",
        "--latency-calls",
        "5",
        "--calib-samples",
        "200",
        "--widths",
        "w4a4",
        "--threads",
        "2",
        "--offline",
        "--models",
        out,
        "--out",
        report_dir,
    ];
    if let Some(p) = python {
        args.extend(["--python", p]);
    }
    let run = xtask(&args);
    assert!(run.status.success(), "{}", text(&run));
    assert!(text(&run).contains("ratio (this run)"), "{}", text(&run));
    for f in ["report.json", "report.md", "throughput.svg"] {
        assert!(Path::new(report_dir).join(f).is_file(), "{f} missing");
    }
    json(&Path::new(report_dir).join("report.json"))
}

fn rows<'a>(report: &'a Value, family: &str) -> Vec<&'a Value> {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["family"] == family)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{v} is not a measured number"))
}

#[test]
fn bench_times_burnq_per_width_against_onnxruntime_in_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    train_and_quantize(out);

    // The float export is written beside the float model, with or without ONNX Runtime.
    let export = xtask_ok(&["export-onnx", "--float", "--offline", "--out", out]);
    assert!(text(&export).contains("Gemm"), "{}", text(&export));
    assert!(dir.path().join("float/model.onnx").is_file());

    // Without a usable Python: the ONNX Runtime rows are there, empty, each with a note.
    let missing = dir.path().join("bench-missing");
    let report = bench(out, missing.to_str().unwrap(), Some("burnq-no-such-python"));
    let ort = rows(&report, "onnxruntime");
    assert!(!ort.is_empty());
    for r in &ort {
        assert!(r["full_test_images_per_s"].is_null(), "{r}");
        assert!(
            r["note"].as_str().unwrap().contains("burnq-no-such-python"),
            "{r}"
        );
    }
    check_burnq_rows(&report);

    if !onnxruntime_available() {
        return;
    }
    xtask_ok(&[
        "export-onnx",
        "--float",
        "--verify",
        "--test-limit",
        "300",
        "--offline",
        "--out",
        out,
    ]);
    let v = json(&dir.path().join("float/onnxruntime.json"));
    assert_eq!(v["images"], 300);
    assert!(f(&v["class_agreement"]) >= 0.99, "{v}");
    assert!(
        f(&v["logits_max_abs_diff"]) <= 1e-3 * f(&v["logits_max_abs"]).max(1.0),
        "{v}"
    );
    assert!(
        (f(&v["burn_accuracy"]) - f(&v["onnxruntime_accuracy"])).abs() <= 0.005,
        "{v}"
    );

    let with = dir.path().join("bench");
    let report = bench(out, with.to_str().unwrap(), None);
    check_burnq_rows(&report);
    assert!(
        report["onnxruntime"]
            .as_str()
            .unwrap()
            .starts_with("onnxruntime ")
    );
    let burn = &rows(&report, "burn")[0];
    let ort = rows(&report, "onnxruntime");
    let names: Vec<(&str, &str)> = ort
        .iter()
        .map(|r| {
            (
                r["engine"].as_str().unwrap(),
                r["threads"].as_str().unwrap(),
            )
        })
        .collect();
    let choice = report["onnxruntime_int8_choice"].as_str().unwrap();
    let int8 = format!("ORT int8 ({choice})");
    assert_eq!(
        names,
        [
            ("ORT fp32", "1"),
            ("ORT fp32", "2"),
            (int8.as_str(), "1"),
            (int8.as_str(), "2"),
            ("ORT on burnq's integer ONNX", "1"),
            ("ORT on burnq's integer ONNX", "2"),
        ]
    );
    for r in &ort {
        assert!(r["note"].is_null(), "{r}");
        for k in [
            "latency_p50_us",
            "batch64_images_per_s",
            "full_test_images_per_s",
        ] {
            assert!(f(&r[k]) > 0.0, "{k}: {r}");
        }
    }
    // ORT fp32 is Burn's model: same predictions; ONNX Runtime's int8 stays close.
    assert!(f(&ort[0]["agreement_with_burn_f32"]) >= 0.99, "{}", ort[0]);
    assert!((f(&ort[0]["accuracy"]) - f(&burn["accuracy"])).abs() <= 0.005);
    assert!(
        (f(&ort[2]["accuracy"]) - f(&ort[0]["accuracy"])).abs() <= 0.05,
        "int8 {} vs fp32 {}",
        ort[2]["accuracy"],
        ort[0]["accuracy"]
    );
    let candidates = report["onnxruntime_int8_candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 5);
    assert!(candidates.iter().any(|c| c["config"] == choice));
    // ORT running burnq's graph predicts what burnq w8a8 predicts.
    let burnq = rows(&report, "burnq");
    let w8 = burnq
        .iter()
        .find(|r| r["width"] == "w8a8" && r["threads"] == "2")
        .unwrap();
    assert!(
        (f(&ort[4]["accuracy"]) - f(&w8["accuracy"])).abs() <= 0.01,
        "{} vs {}",
        ort[4],
        w8
    );
    let ratios: Vec<&str> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ratio"].as_str().unwrap())
        .collect();
    for expected in [
        "burnq w8a8 / best ONNX Runtime, each at its best thread count, img/s full test set",
        "best ONNX Runtime batch-1 p50 / burnq w8a8's, each at its best",
        "burnq w8a8 / best ONNX Runtime, img/s full test set, 2 thread(s)",
        "burnq w8a8 / ORT fp32, img/s full test set, 1 thread(s)",
        "best ONNX Runtime batch-1 p50 / burnq w8a8's, 1 thread(s)",
        "burnq w4a4 / burnq w8a8, img/s full test set, 2 thread(s)",
    ] {
        assert!(ratios.contains(&expected), "{expected} not in {ratios:?}");
    }
    let md = std::fs::read_to_string(with.join("report.md")).unwrap();
    assert!(
        md.contains("quantize_static") && md.contains("(timed)"),
        "{md}"
    );

    // ONNX Runtime restricted to its AVX2 code paths by tools/ort-avx2 (a launcher whose
    // ONNX Runtime sees CPUID without AVX-512 and VNNI): the report says so, rows measured.
    if !cfg!(target_arch = "x86_64") {
        return;
    }
    let masked = dir.path().join("ort-avx2");
    let setup =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/ort-avx2/setup.sh"))
            .arg(python())
            .arg(&masked)
            .output()
            .unwrap();
    assert!(setup.status.success(), "{}", text(&setup));
    let launcher = masked.join("python");
    let avx2 = dir.path().join("bench-avx2");
    let report = bench(
        out,
        avx2.to_str().unwrap(),
        Some(launcher.to_str().unwrap()),
    );
    let runtime = report["onnxruntime"].as_str().unwrap();
    assert!(runtime.contains("AVX2 only: tools/ort-avx2"), "{runtime}");
    let ort = rows(&report, "onnxruntime");
    assert_eq!(ort.len(), 6);
    for r in &ort {
        assert!(r["note"].is_null(), "{r}");
        assert!(f(&r["full_test_images_per_s"]) > 0.0, "{r}");
    }
}

/// burnq's rows: the saved w8a8 model and w4a4, each at 1 and 2 threads, bit-exact with
/// the scalar reference; the 2-thread rows say which thread count their latency used.
fn check_burnq_rows(report: &Value) {
    let burnq = rows(report, "burnq");
    for width in ["w8a8", "w4a4"] {
        for threads in ["1", "2"] {
            let r = burnq
                .iter()
                .find(|r| {
                    r["width"] == width
                        && r["threads"] == threads
                        && !r["engine"].as_str().unwrap().contains("reference")
                        && !r["engine"].as_str().unwrap().contains("generic")
                })
                .unwrap_or_else(|| panic!("no {width} row at {threads} thread(s)"));
            assert_eq!(r["bit_exact_with_reference"], true, "{r}");
            assert!(f(&r["accuracy"]) > 0.1, "{r}");
            let lat = r["latency_threads"].as_str().unwrap();
            assert!(lat == "1" || lat == threads, "{r}");
        }
    }
    assert_eq!(report["threads"], 2);
    assert_eq!(report["test_images"], 300);
    // The per-layer breakdown: per width, the six stages in the engine's order, each timed,
    // the GEMM stages' multiply-accumulates adding up to the network's.
    let layers = report["layers"].as_array().unwrap();
    for width in ["w8a8", "w4a4"] {
        let stages: Vec<_> = layers.iter().filter(|l| l["width"] == width).collect();
        let names: Vec<String> = stages
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["layer"].as_str().unwrap(),
                    l["stage"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                "conv1 im2col + GEMM",
                "conv1 requant + 2×2 max pool",
                "conv2 im2col + GEMM",
                "conv2 requant + 2×2 max pool",
                "fc1 GEMM + requant",
                "fc2 GEMM"
            ]
        );
        for l in &stages {
            let us = f(&l["us_per_image"]);
            assert!(us.is_finite() && us >= 0.0, "{l}");
        }
        let gemm_us: f64 = stages
            .iter()
            .filter(|l| !l["macs_per_image"].is_null())
            .map(|l| f(&l["us_per_image"]))
            .sum();
        assert!(gemm_us > 0.0, "{width}: {stages:?}");
        let macs: u64 = stages
            .iter()
            .filter_map(|l| l["macs_per_image"].as_u64())
            .sum();
        assert_eq!(macs, report["macs_per_image"].as_u64().unwrap(), "{width}");
        // Each GEMM stage names the instruction that bounds its form on this kernel and its
        // share of that instruction's limit on one core, measured in the same run.
        if report["kernel"] == "generic" {
            continue;
        }
        let limits = &report["instruction_limits"];
        assert!(f(&limits["clock_ghz"]) > 0.0, "{limits}");
        let measured = limits["instructions"].as_array().unwrap();
        for l in stages.iter().filter(|l| !l["macs_per_image"].is_null()) {
            let name = l["instruction"].as_str().unwrap();
            let limit = measured
                .iter()
                .find(|i| i["instruction"] == name)
                .unwrap_or_else(|| panic!("{name} not measured: {limits}"));
            assert!(f(&limit["gmacs"]) > 0.0, "{limit}");
            assert!(f(&l["share_of_limit"]) > 0.0, "{l}");
        }
    }
}
