//! `cargo xtask export-onnx`: the integer model as a standard ONNX graph (QLinearConv, uint8
//! MaxPool, MatMulInteger; see `burnq-onnx`), and with `--verify` a run of that graph by ONNX
//! Runtime on the test set (through Python, see `burnq-onnxruntime`), compared with burnq's
//! engine. With `--float`, the float model instead (Conv, Relu, MaxPool, Flatten, Gemm; the
//! peer `cargo xtask bench` times ONNX Runtime on), and `--verify` compares ONNX Runtime's float
//! logits with Burn's forward.

use std::path::PathBuf;

use anyhow::Context;
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::logits;
use burnq_model::{BackendChoice, NetConfig};
use burnq_onnx::{ExportInfo, graph_to_onnx, save, save_graph, to_onnx};
use burnq_onnxruntime::{FloatRuntimeOutput, compare};
use burnq_qat::float_network;
use burnq_quant::NUM_CLASSES;
use serde::Serialize;

use crate::common::{DataArgs, display_path, ensure_images};
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, run_graph};
use crate::table::markdown;

/// Flags of `cargo xtask export-onnx`.
#[derive(Debug, clap::Args)]
pub struct ExportOnnxArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Integer model to export (default <out>/quant/model.safetensors; with --float the float
    /// model, default <out>/float/model.bpk).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Export the float model (f32 Conv/Gemm graph, same raw-pixel input) instead of the
    /// integer one; --verify then compares ONNX Runtime's logits with Burn's forward.
    #[arg(long)]
    pub float: bool,
    /// ONNX file to write (default: the model's path with the extension .onnx).
    #[arg(long)]
    pub onnx: Option<PathBuf>,
    /// Run the exported graph with ONNX Runtime on the test set and compare it with burnq
    /// (needs Python 3 with `pip install onnxruntime onnx numpy`); writes onnxruntime.json.
    #[arg(long)]
    pub verify: bool,
    /// Python interpreter for --verify.
    #[arg(long, env = "BURNQ_PYTHON", default_value = "python3")]
    pub python: String,
    /// With --verify: compare on the first N test images only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network whose artifacts folder holds the model (a preset or a description file,
    /// as trained by `cargo xtask train --arch`); any integer model file exports by itself.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

/// `onnxruntime.json`: ONNX Runtime against burnq on the same images.
#[derive(Debug, Serialize)]
struct VerifyReport {
    onnx: String,
    runtime: String,
    images: usize,
    burnq_accuracy: f64,
    onnxruntime_accuracy: f64,
    class_agreement: f64,
    logits_u8_rows_equal: f64,
    logits_u8_values_equal: f64,
    logits_u8_max_abs_diff: u8,
    fc2_acc_rows_equal: f64,
}

/// `onnxruntime.json` beside the float export: ONNX Runtime's f32 logits against Burn's.
#[derive(Debug, Serialize)]
struct FloatVerifyReport {
    onnx: String,
    runtime: String,
    images: usize,
    burn_accuracy: f64,
    onnxruntime_accuracy: f64,
    /// Fraction of images with the same predicted class.
    class_agreement: f64,
    /// Largest |Δ| between the two runs' logits (fc2 outputs, before log-softmax).
    logits_max_abs_diff: f32,
    /// Largest |logit| of Burn's, for scale.
    logits_max_abs: f32,
}

pub fn run(args: ExportOnnxArgs) -> anyhow::Result<()> {
    if args.verify {
        // Refused before anything is written.
        ensure_images(args.test_limit.unwrap_or(1), "--test-limit")?;
    }
    let arch = burnq_arch::Architecture::load(&args.arch)?;
    let dir = ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?;
    if args.float {
        anyhow::ensure!(
            arch.name == "tutorial",
            "--float exports the tutorial network only (not {:?})",
            arch.name
        );
        return run_float(&args, &dir);
    }
    let model_path = args.model.clone().unwrap_or_else(|| dir.quant_model());
    let onnx_path = args
        .onnx
        .clone()
        .unwrap_or_else(|| crate::paths::onnx_beside(&model_path));
    // Every model file reads as a graph; tutorial files (versions 1–3) keep their own export.
    let quant = burnq_quant::load_graph(&model_path)?;
    let info = ExportInfo {
        dataset: args.data.dataset.dir_name().into(),
        source: display_path(&model_path),
    };
    let (graph, bytes) = match burnq_quant::load(&model_path) {
        Ok(model) => (to_onnx(&model, &info), save(&model, &info, &onnx_path)?),
        Err(_) => (
            graph_to_onnx(&quant, &info),
            save_graph(&quant, &info, &onnx_path)?,
        ),
    };
    let options = quant.options();
    let mut ops: Vec<&str> = graph.nodes.iter().map(|n| n.op_type).collect();
    ops.sort_unstable();
    ops.dedup();
    println!(
        "{}",
        markdown(
            &[
                "ONNX file",
                "bytes",
                "opset",
                "nodes",
                "operators",
                "weights"
            ],
            &[vec![
                display_path(&onnx_path),
                bytes.to_string(),
                burnq_onnx::OPSET.to_string(),
                graph.nodes.len().to_string(),
                ops.join(", "),
                format!(
                    "{} {} {}",
                    quant.architecture().name,
                    burnq_quant::widths_label(options, &quant.layers()),
                    if options.per_channel {
                        "per channel"
                    } else {
                        "per tensor"
                    }
                ),
            ]],
        )
    );
    if !args.verify {
        return Ok(());
    }

    let set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let runtime = burnq_onnxruntime::run(&args.python, &onnx_path, &set.pixels)
        .context("--verify: running the ONNX graph with ONNX Runtime")?;
    let output = run_graph(&quant, &set.pixels)?;
    let a = compare(&output, &runtime, &set.labels);
    let report = VerifyReport {
        onnx: display_path(&onnx_path),
        runtime: runtime.versions.clone(),
        images: a.images,
        burnq_accuracy: a.burnq_accuracy,
        onnxruntime_accuracy: a.runtime_accuracy,
        class_agreement: a.classes,
        logits_u8_rows_equal: a.logits_u8_rows,
        logits_u8_values_equal: a.logits_u8_values,
        logits_u8_max_abs_diff: a.logits_u8_max_diff,
        fc2_acc_rows_equal: a.fc2_acc_rows,
    };
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    write_and_print(
        &report,
        &onnx_path,
        &[
            "engine",
            "images",
            "accuracy",
            "same class as burnq",
            "u8 logits equal (values / rows)",
            "max Δ u8 logit",
            "fc2 acc rows equal",
        ],
        &[
            vec![
                "burnq integer engine".into(),
                a.images.to_string(),
                pct(a.burnq_accuracy),
                "—".into(),
                "—".into(),
                "—".into(),
                "—".into(),
            ],
            vec![
                runtime.versions.clone(),
                a.images.to_string(),
                pct(a.runtime_accuracy),
                pct(a.classes),
                format!("{} / {}", pct(a.logits_u8_values), pct(a.logits_u8_rows)),
                format!("{} code(s)", a.logits_u8_max_diff),
                pct(a.fc2_acc_rows),
            ],
        ],
    )
}

/// `export-onnx --float [--verify]`.
fn run_float(args: &ExportOnnxArgs, dir: &ArtifactDir) -> anyhow::Result<()> {
    let model_path = args.model.clone().unwrap_or_else(|| dir.float_model());
    let onnx_path = args
        .onnx
        .clone()
        .unwrap_or_else(|| crate::paths::onnx_beside(&model_path));
    let device = BackendChoice::Flex.device()?;
    let net = load_model(&NetConfig::new(), &model_path, &device)?;
    let norm = args.data.dataset.normalization();
    let info = ExportInfo {
        dataset: args.data.dataset.dir_name().into(),
        source: display_path(&model_path),
    };
    let (bytes, ops) = save_float_onnx(&net, norm, &info, &onnx_path)?;
    println!(
        "{}",
        markdown(
            &["ONNX file", "bytes", "opset", "operators", "weights"],
            &[vec![
                display_path(&onnx_path),
                bytes.to_string(),
                burnq_onnx::OPSET.to_string(),
                ops,
                "f32".into(),
            ]],
        )
    );
    if !args.verify {
        return Ok(());
    }
    let set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let runtime = burnq_onnxruntime::run_float(&args.python, &onnx_path, &set.pixels)
        .context("--verify: running the float ONNX graph with ONNX Runtime")?;
    let burn = logits(&net, &set, &ImageBatcher::new(norm), 1000, &device);
    let report = compare_float(&onnx_path, &runtime, &burn, &set.labels);
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    write_and_print(
        &report,
        &onnx_path,
        &[
            "engine",
            "images",
            "accuracy",
            "same class as Burn",
            "max abs Δ logit",
            "max abs logit",
        ],
        &[
            vec![
                "Burn f32 (flex)".into(),
                report.images.to_string(),
                pct(report.burn_accuracy),
                "—".into(),
                "—".into(),
                format!("{:.3}", report.logits_max_abs),
            ],
            vec![
                report.runtime.clone(),
                report.images.to_string(),
                pct(report.onnxruntime_accuracy),
                pct(report.class_agreement),
                format!("{:.2e}", report.logits_max_abs_diff),
                "—".into(),
            ],
        ],
    )
}

/// Writes the float ONNX graph of `net`; returns its size and its operators.
pub fn save_float_onnx(
    net: &burnq_model::Net,
    norm: burnq_quant::Normalization,
    info: &ExportInfo,
    path: &std::path::Path,
) -> anyhow::Result<(u64, String)> {
    let network = float_network(net)?;
    let bytes = burnq_onnx::save_float(&network, norm, info, path)?;
    let mut ops: Vec<&str> = burnq_onnx::to_float_onnx(&network, norm, info)
        .nodes
        .iter()
        .map(|n| n.op_type)
        .collect();
    ops.sort_unstable();
    ops.dedup();
    Ok((bytes, ops.join(", ")))
}

/// ONNX Runtime's float run against Burn's logits (`[n × 10]`) on images labelled `labels`.
fn compare_float(
    onnx: &std::path::Path,
    runtime: &FloatRuntimeOutput,
    burn: &[f32],
    labels: &[u8],
) -> FloatVerifyReport {
    let burn_classes: Vec<u8> = burn
        .chunks_exact(NUM_CLASSES)
        .map(|row| {
            (0..row.len()).fold(0, |best, i| if row[i] > row[best] { i } else { best }) as u8
        })
        .collect();
    let ort_classes: Vec<u8> = runtime.classes.iter().map(|&c| c as u8).collect();
    FloatVerifyReport {
        onnx: display_path(onnx),
        runtime: runtime.versions.clone(),
        images: labels.len(),
        burn_accuracy: agreement(&burn_classes, labels),
        onnxruntime_accuracy: agreement(&ort_classes, labels),
        class_agreement: agreement(&burn_classes, &ort_classes),
        logits_max_abs_diff: burn
            .iter()
            .zip(&runtime.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max),
        logits_max_abs: burn.iter().map(|v| v.abs()).fold(0.0, f32::max),
    }
}

/// Writes `report` as `onnxruntime.json` beside `onnx` and prints the comparison table.
fn write_and_print<T: Serialize>(
    report: &T,
    onnx: &std::path::Path,
    headers: &[&str],
    rows: &[Vec<String>],
) -> anyhow::Result<()> {
    let path = crate::paths::onnxruntime_report(onnx);
    write_json_atomic(report, &path)?;
    println!("{}", markdown(headers, rows));
    println!("wrote {}", display_path(&path));
    Ok(())
}
