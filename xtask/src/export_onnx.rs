//! `cargo xtask export-onnx`: the integer model as a standard ONNX graph (QLinearConv, uint8
//! MaxPool, MatMulInteger; see `burnq-onnx`), and with `--verify` a run of that graph by ONNX
//! Runtime on the test set (through Python, see `burnq-onnxruntime`), compared with burnq's
//! engine.

use std::path::PathBuf;

use anyhow::Context;
use burnq_model::checkpoint::write_json_atomic;
use burnq_onnx::{ExportInfo, save, to_onnx};
use burnq_onnxruntime::compare;
use serde::Serialize;

use crate::common::{DataArgs, display_path, ensure_images};
use crate::paths::ArtifactDir;
use crate::pipeline::run_integer;
use crate::table::markdown;

/// Flags of `cargo xtask export-onnx`.
#[derive(Debug, clap::Args)]
pub struct ExportOnnxArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Integer model to export (default <out>/quant/model.safetensors).
    #[arg(long)]
    pub model: Option<PathBuf>,
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

pub fn run(args: ExportOnnxArgs) -> anyhow::Result<()> {
    if args.verify {
        // Refused before anything is written.
        ensure_images(args.test_limit.unwrap_or(1), "--test-limit")?;
    }
    let dir = ArtifactDir::new(args.out.as_deref(), args.data.dataset);
    let model_path = args.model.clone().unwrap_or_else(|| dir.quant_model());
    let onnx_path = args
        .onnx
        .clone()
        .unwrap_or_else(|| crate::paths::onnx_beside(&model_path));
    let model = burnq_quant::load(&model_path)?;
    let info = ExportInfo {
        dataset: args.data.dataset.dir_name().into(),
        source: display_path(&model_path),
    };
    let graph = to_onnx(&model, &info);
    let bytes = save(&model, &info, &onnx_path)?;
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
                    "w{}a{} {}",
                    model.weight_bits(),
                    model.act_bits(),
                    if model.per_channel() {
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
    let output = run_integer(&model, &set)?;
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
    let report_path = crate::paths::onnxruntime_report(&onnx_path);
    write_json_atomic(&report, &report_path)?;
    let pct = |x: f64| format!("{:.2}%", 100.0 * x);
    println!(
        "{}",
        markdown(
            &[
                "engine",
                "images",
                "accuracy",
                "same class as burnq",
                "u8 logits equal (values / rows)",
                "max Δ u8 logit",
                "fc2 acc rows equal"
            ],
            &[
                vec![
                    "burnq integer engine".into(),
                    a.images.to_string(),
                    pct(a.burnq_accuracy),
                    "—".into(),
                    "—".into(),
                    "—".into(),
                    "—".into()
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
    );
    println!("wrote {}", display_path(&report_path));
    Ok(())
}
