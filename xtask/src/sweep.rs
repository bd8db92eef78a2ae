//! `cargo xtask sweep`: test-set accuracy of the integer engine for each bit width ×
//! {post-training per tensor, post-training per channel (each calibration method),
//! quantization-aware training}, as `artifacts/<dataset>/sweep.{md,json,svg}`.

use std::path::PathBuf;

use burnq_arch::write_atomic;
use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate, calibrate_arch};
use burnq_data::Split;
use burnq_model::checkpoint::{load_arch_net, load_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::{evaluate, evaluate_with};
use burnq_model::{BackendChoice, NetConfig};
use burnq_qat::{QatConfig, float_network};
use burnq_quant::{ConvertOptions, convert_graph};
use serde::Serialize;

use crate::common::{DataArgs, display_path, progress_bar};
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, run_graph, run_integer};
use crate::plot::{Panel, Series, line_panels};
use crate::qat::{QatAccuracies, QatStart, run_arch_qat_command, run_qat_command};
use crate::quantize::convert_with;
use crate::table::markdown;

/// Flags of `cargo xtask sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Bit widths to sweep (weights and activations alike), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5,6,7,8")]
    pub bits: Vec<u8>,
    /// Epochs of quantization-aware fine-tuning per bit width (0 skips QAT).
    #[arg(long, default_value_t = 2)]
    pub qat_epochs: usize,
    /// QAT with per-channel weights.
    #[arg(long)]
    pub qat_per_channel: bool,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// trained with `cargo xtask train --arch`.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

/// One bit width's accuracies.
#[derive(Debug, Serialize)]
struct SweepRow {
    bits: u8,
    /// Per calibration method, in the order of `CalibrationMethod::ALL`.
    ptq_per_tensor: Vec<f64>,
    ptq_per_channel: Vec<f64>,
    qat: Option<f64>,
    qat_fake_quant: Option<f64>,
    qat_agreement: Option<f64>,
}

#[derive(Debug, Serialize)]
struct SweepReport {
    dataset: String,
    float_accuracy: f64,
    methods: Vec<&'static str>,
    qat_epochs: usize,
    qat_per_channel: bool,
    rows: Vec<SweepRow>,
}

pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    let args = &args;
    for &b in &args.bits {
        anyhow::ensure!(
            (2..=8).contains(&b),
            "--bits {b}: each width must be in 2..=8"
        );
    }
    if args.arch != "tutorial" {
        let arch = burnq_arch::Architecture::load(&args.arch)?;
        return run_arch(args, &arch);
    }
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::new(args.out.as_deref(), args.data.dataset);
    let model = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
    let train_set = args.data.load(Split::Train)?;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let norm = args.data.dataset.normalization();
    let network = float_network(&model)?;
    let (float_eval, _) = evaluate(&model, &test_set, &ImageBatcher::new(norm), 1000, &device);

    let rows = sweep_rows(
        args,
        |bits| {
            let settings = CalibrationSettings {
                act_bits: bits,
                ..Default::default()
            };
            let calibration = calibrate(&model, &train_set, settings, &device)?;
            let ptq = |per_channel| -> anyhow::Result<Vec<f64>> {
                let options = ConvertOptions {
                    per_channel,
                    ..ConvertOptions::uniform(bits)
                };
                CalibrationMethod::ALL
                    .iter()
                    .map(|&m| {
                        let quant = convert_with(&network, &calibration, m, norm, options)?;
                        Ok(agreement(
                            &run_integer(&quant, &test_set)?.predictions,
                            &test_set.labels,
                        ))
                    })
                    .collect()
            };
            Ok((ptq(false)?, ptq(true)?))
        },
        |config| {
            let q = run_qat_command(
                config,
                &args.data,
                args.test_limit,
                QatStart {
                    out: args.out.as_deref(),
                    init_from: None,
                },
                false,
            )?;
            Ok(q.accuracies)
        },
    )?;
    let report = SweepReport {
        dataset: args.data.dataset.dir_name().into(),
        float_accuracy: float_eval.accuracy,
        methods: CalibrationMethod::ALL.iter().map(|m| m.name()).collect(),
        qat_epochs: args.qat_epochs,
        qat_per_channel: args.qat_per_channel,
        rows,
    };
    write_reports(&report, &dir)
}

/// `sweep --arch`: the same table for a described network (graph conversion, graph engine,
/// `run_arch_qat`).
fn run_arch(args: &SweepArgs, arch: &burnq_arch::Architecture) -> anyhow::Result<()> {
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?;
    let norm = args.data.dataset.normalization();
    let (_, model) = load_arch_net(&dir.float_model(), norm, &device)?;
    let plan = arch.plan()?;
    let params = model.float_params()?;
    let train_set = args.data.load(Split::Train)?;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let forward = |x| burnq_model::training::Classifier::log_probs(&model, x);
    let (float_eval, _) =
        evaluate_with(&forward, &test_set, &ImageBatcher::new(norm), 500, &device);
    let rows = sweep_rows(
        args,
        |bits| {
            let settings = CalibrationSettings {
                act_bits: bits,
                ..Default::default()
            };
            let calibration = calibrate_arch(&model, &arch.name, &train_set, settings, &device)?;
            let ptq = |per_channel| -> anyhow::Result<Vec<f64>> {
                let options = ConvertOptions {
                    per_channel,
                    ..ConvertOptions::uniform(bits)
                };
                CalibrationMethod::ALL
                    .iter()
                    .map(|&m| {
                        let ranges = calibration.point_ranges(&plan, m)?;
                        let graph = convert_graph(arch, &params, &ranges, norm, options)?;
                        let out = run_graph(&graph, &test_set.pixels)?;
                        Ok(agreement(&out.predictions, &test_set.labels))
                    })
                    .collect()
            };
            Ok((ptq(false)?, ptq(true)?))
        },
        |config| {
            let start = QatStart {
                out: args.out.as_deref(),
                init_from: None,
            };
            let q = run_arch_qat_command(config, arch, &args.data, args.test_limit, start, false)?;
            Ok(q.accuracies)
        },
    )?;
    let report = SweepReport {
        dataset: format!("{} ({})", args.data.dataset.dir_name(), arch.name),
        float_accuracy: float_eval.accuracy,
        methods: CalibrationMethod::ALL.iter().map(|m| m.name()).collect(),
        qat_epochs: args.qat_epochs,
        qat_per_channel: args.qat_per_channel,
        rows,
    };
    write_reports(&report, &dir)
}

/// One row per `--bits` width: `ptq(bits)` gives the post-training accuracies per calibration
/// method, per tensor then per channel; `qat(config)` the QAT run's accuracies (not called
/// with `--qat-epochs 0`).
fn sweep_rows(
    args: &SweepArgs,
    mut ptq: impl FnMut(u8) -> anyhow::Result<(Vec<f64>, Vec<f64>)>,
    mut qat: impl FnMut(&QatConfig) -> anyhow::Result<QatAccuracies>,
) -> anyhow::Result<Vec<SweepRow>> {
    let bar = progress_bar(args.bits.len() as u64, "sweep [{bar:30}] {pos}/{len} {msg}");
    let mut rows = Vec::new();
    for &bits in &args.bits {
        bar.set_message(format!("{bits} bits"));
        let (ptq_per_tensor, ptq_per_channel) = ptq(bits)?;
        let qat = if args.qat_epochs > 0 {
            Some(qat(&QatConfig {
                weight_bits: bits,
                act_bits: bits,
                per_channel: args.qat_per_channel,
                epochs: args.qat_epochs,
                ..QatConfig::default()
            })?)
        } else {
            None
        };
        rows.push(SweepRow {
            bits,
            ptq_per_tensor,
            ptq_per_channel,
            qat: qat.map(|q| q.integer_accuracy),
            qat_fake_quant: qat.map(|q| q.fake_quant_accuracy),
            qat_agreement: qat.map(|q| q.integer_vs_fake_quant_agreement),
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

fn write_reports(report: &SweepReport, dir: &ArtifactDir) -> anyhow::Result<()> {
    let mut headers = vec!["bits".to_string()];
    for kind in ["PTQ/tensor", "PTQ/channel"] {
        headers.extend(report.methods.iter().map(|m| format!("{kind} {m}")));
    }
    headers.extend(["QAT".into(), "QAT fake-quant".into(), "QAT agree".into()]);
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            let mut row = vec![r.bits.to_string()];
            row.extend(
                r.ptq_per_tensor
                    .iter()
                    .chain(&r.ptq_per_channel)
                    .map(|&a| pct(a)),
            );
            for v in [r.qat, r.qat_fake_quant, r.qat_agreement] {
                row.push(v.map_or("–".into(), pct));
            }
            row
        })
        .collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let md = format!(
        "# Accuracy sweep, {} (float {}%)\n\nTest-set accuracy (%) of the integer engine, weights and \
         activations at the same bit width; PTQ columns per calibration method, QAT fine-tuned {} \
         epoch(s) from the float model ({}), its fake-quantized accuracy and the fraction of \
         predictions on which integer and fake-quant agree.\n\n{}",
        report.dataset,
        pct(report.float_accuracy),
        report.qat_epochs,
        if report.qat_per_channel {
            "per-channel weights"
        } else {
            "per-tensor weights"
        },
        markdown(&header_refs, &rows)
    );
    println!("\n{md}");
    let [json_path, md_path, svg_path] = dir.sweep_reports();
    write_json_atomic(report, &json_path)?;
    write_atomic(&md_path, md.as_bytes())?;
    let best = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let line = |name: &str, color, f: &dyn Fn(&SweepRow) -> Option<f64>| Series {
        name: name.into(),
        color,
        points: report
            .rows
            .iter()
            .filter_map(|r| f(r).map(|a| (f64::from(r.bits), 100.0 * a)))
            .collect(),
    };
    let mean_minmax = 1; // index of mean-minmax in CalibrationMethod::ALL
    let series = vec![
        line("PTQ per-tensor (mean-minmax)", "#1f77b4", &|r| {
            Some(r.ptq_per_tensor[mean_minmax])
        }),
        line("PTQ per-tensor (best method)", "#aec7e8", &|r| {
            Some(best(&r.ptq_per_tensor))
        }),
        line("PTQ per-channel (best method)", "#ff7f0e", &|r| {
            Some(best(&r.ptq_per_channel))
        }),
        line("QAT", "#2ca02c", &|r| r.qat),
        line("float", "#7f7f7f", &|_| Some(report.float_accuracy)),
    ];
    let svg = line_panels(
        &format!("Integer accuracy vs bit width, {}", report.dataset),
        "bits (weights = activations)",
        &[Panel {
            y_label: "test accuracy (%)".into(),
            series,
        }],
    );
    write_atomic(&svg_path, svg.as_bytes())?;
    println!("wrote:");
    for f in [&md_path, &json_path, &svg_path] {
        println!("  {}", display_path(f));
    }
    Ok(())
}
