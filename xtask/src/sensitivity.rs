//! `cargo xtask sensitivity`: which layer costs accuracy. For each quantized layer, the SQNR
//! of its (dequantized) integer output against the float network, and the test accuracy when
//! only that layer is quantized (fake quantization of its weights and output, at the saved
//! model's bit widths) while the rest stays float.

use std::path::PathBuf;

use anyhow::Context;
use burnq_arch::write_atomic;
use burnq_calib::Calibration;
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate;
use burnq_model::{BackendChoice, NetConfig};
use burnq_qat::{QatForward, QatSettings, Quantizer};
use serde::Serialize;

use crate::common::{DataArgs, display_path, ensure_images};
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, layer_sqnr, run_integer};
use crate::table::markdown;

/// Flags of `cargo xtask sensitivity`.
#[derive(Debug, clap::Args)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Test images used for the SQNR (accuracies use the whole test set).
    #[arg(long, default_value_t = 1000)]
    pub sqnr_images: usize,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// trained and quantized with `--arch` (per-point SQNR only; see `run_arch`).
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

#[derive(Debug, Serialize)]
struct LayerSensitivity {
    layer: &'static str,
    /// SQNR (dB) of the layer's integer output, errors of earlier layers included.
    sqnr_db: f64,
    /// Test accuracy with only this layer quantized.
    accuracy_only_this_layer: f64,
}

#[derive(Debug, Serialize)]
struct SensitivityReport {
    dataset: String,
    weight_bits: u8,
    act_bits: u8,
    per_channel: bool,
    calibration: String,
    float_accuracy: f64,
    integer_accuracy: f64,
    layers: Vec<LayerSensitivity>,
}

pub fn run(args: SensitivityArgs) -> anyhow::Result<()> {
    ensure_images(args.sqnr_images, "--sqnr-images")?;
    if args.arch != "tutorial" {
        let arch = burnq_arch::Architecture::load(&args.arch)?;
        return run_arch(&args, &arch);
    }
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::new(args.out.as_deref(), args.data.dataset);
    let model = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
    let quant = burnq_quant::load(dir.quant_model())
        .context("loading the integer model (`cargo xtask quantize` writes it)")?;
    let calibration = Calibration::load(&dir.calibration())?;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let batcher = ImageBatcher::new(args.data.dataset.normalization());
    let (float_eval, _) = evaluate(&model, &test_set, &batcher, 1000, &device);
    let integer_accuracy = agreement(
        &run_integer(&quant, &test_set)?.predictions,
        &test_set.labels,
    );

    let sqnr = layer_sqnr(&model, &quant, &test_set, args.sqnr_images, &device)?;

    let ranges = calibration.ranges(calibration.method);
    let settings = QatSettings {
        quantizer: Quantizer::Minmax,
        weight_bits: quant.weight_bits(),
        act_bits: quant.act_bits(),
        bits_per_layer: Some(quant.layers().clone().map(|l| l.bits())),
        per_channel: quant.per_channel(),
        step_init: Default::default(),
        ema_decay: 0.0,
        act_delay: 0,
        normalization: args.data.dataset.normalization(),
    };
    let mut layers = Vec::new();
    for (i, name) in ["conv1", "conv2", "fc1", "fc2"].into_iter().enumerate() {
        let only = QatForward::with_ranges(settings, &ranges).only_layer(i);
        let (eval, _) = only.evaluate(&model, &test_set, 1000, &device);
        layers.push(LayerSensitivity {
            layer: name,
            sqnr_db: sqnr[i],
            accuracy_only_this_layer: eval.accuracy,
        });
    }
    let report = SensitivityReport {
        dataset: args.data.dataset.dir_name().into(),
        weight_bits: quant.weight_bits(),
        act_bits: quant.act_bits(),
        per_channel: quant.per_channel(),
        calibration: calibration.method.name().into(),
        float_accuracy: float_eval.accuracy,
        integer_accuracy,
        layers,
    };
    let rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .map(|l| {
            vec![
                l.layer.into(),
                format!("{:.1}", l.sqnr_db),
                format!("{:.2}%", 100.0 * l.accuracy_only_this_layer),
                format!(
                    "{:+.2}",
                    100.0 * (l.accuracy_only_this_layer - report.float_accuracy)
                ),
            ]
        })
        .collect();
    let md = format!(
        "# Sensitivity, {} w{}a{}{} ({} calibration)\n\nFloat {:.2}%, integer {:.2}% on the test set. \
         SQNR over {} test images (cumulative: each layer's figure includes the noise of the layers \
         before it); accuracy with only that layer fake-quantized (its weights and output).\n\n{}",
        report.dataset,
        report.weight_bits,
        report.act_bits,
        if report.per_channel {
            " per-channel"
        } else {
            ""
        },
        report.calibration,
        100.0 * report.float_accuracy,
        100.0 * report.integer_accuracy,
        args.sqnr_images.min(test_set.len()),
        markdown(
            &[
                "layer",
                "SQNR dB",
                "accuracy, only this layer",
                "Δ vs float (points)"
            ],
            &rows
        )
    );
    write_reports(&dir, &report, &md)
}

/// `sensitivity --arch`: the SQNR of every quantization point of a described network's saved
/// integer graph against its float network (`burnq_quant::graph_sqnr_db`). The accuracy with
/// one layer quantized at a time is not measured for described networks.
fn run_arch(args: &SensitivityArgs, arch: &burnq_arch::Architecture) -> anyhow::Result<()> {
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?;
    let norm = args.data.dataset.normalization();
    let (_, model) = burnq_model::checkpoint::load_arch_net(&dir.float_model(), norm, &device)?;
    let graph = burnq_quant::load_graph(dir.quant_model())
        .context("loading the integer model (`cargo xtask quantize --arch` writes it)")?;
    let mut set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    set.truncate(args.sqnr_images);
    let taps = graph.forward_reference_taps(&set.pixels, set.len())?;
    let float = model.forward_taps(ImageBatcher::new(norm).images(&set.pixels, &device));
    let float: Vec<(String, Vec<f32>)> = float
        .points
        .iter()
        .map(|(name, value)| (name.clone(), value.to_vec()))
        .collect();
    let sqnr = burnq_quant::graph_sqnr_db(&graph, &taps, &float);
    let o = graph.options();
    let rows: Vec<Vec<String>> = sqnr
        .iter()
        .map(|(name, db)| vec![name.clone(), format!("{db:.1}")])
        .collect();
    let md = format!(
        "# Sensitivity, {} on {} {}{}\n\nSQNR of each quantization point over {} test images \
         (cumulative: each figure includes the noise of the points before it).\n\n{}",
        arch.name,
        args.data.dataset.dir_name(),
        burnq_quant::widths_label(o, &graph.layers()),
        if o.per_channel { " per-channel" } else { "" },
        set.len(),
        markdown(&["point", "SQNR dB"], &rows)
    );
    write_reports(&dir, &sqnr, &md)
}

/// Prints the table `md`, then writes it and `report` as `sensitivity.{md,json}` in `dir`.
fn write_reports(
    dir: &ArtifactDir,
    report: &impl serde::Serialize,
    md: &str,
) -> anyhow::Result<()> {
    println!("\n{md}");
    let (json, md_path) = dir.sensitivity_reports();
    write_json_atomic(report, &json)?;
    write_atomic(&md_path, md.as_bytes())?;
    println!(
        "wrote:\n  {}\n  {}",
        display_path(&json),
        display_path(&md_path)
    );
    Ok(())
}
