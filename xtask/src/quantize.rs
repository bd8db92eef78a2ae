//! `cargo xtask quantize`: calibrate the float model, convert it to the integer engine's
//! model file, and compare float, simulated (tutorial) and integer accuracy on the test set.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burnq_calib::{Calibration, CalibrationMethod, CalibrationSettings, calibrate};
use burnq_data::{ImageSet, Split};
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::{evaluate, logits};
use burnq_model::{BackendChoice, NetConfig};
use burnq_qat::float_network;
use burnq_qat::simulated::simulated_predictions;
use burnq_quant::{
    ConvertOptions, FloatNetwork, LayerBits, Normalization, QuantModel, QuantScheme, bits_label,
    tutorial_layer_names,
};
use serde::Serialize;

use crate::common::{DataArgs, display_path};
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, layer_sqnr, run_integer};
use crate::table::markdown;

/// Flags of `cargo xtask quantize`.
#[derive(Debug, clap::Args)]
pub struct QuantizeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Bits of weights and activations (2..=8).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub bits: u8,
    /// Bits of the weights only (overrides --bits).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub weight_bits: Option<u8>,
    /// Bits of the activations only (overrides --bits).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub act_bits: Option<u8>,
    /// One weight scale and zero point per output channel.
    #[arg(long)]
    pub per_channel: bool,
    /// Each layer's own widths, over the model-wide ones above: `name=W,…` by layer (step)
    /// name, or one `W` per convolution/linear layer in order; `W` is `N` (weights and
    /// activations), `wNaM`, `wN` or `aM`, each 2..=8; `a` is the width of the layer's
    /// outputs. E.g. `conv1=w8a8,fc1=w2` or `8,w4a8,2,8`.
    #[arg(long)]
    pub bits_per_layer: Option<String>,
    /// Range estimate feeding quantization: minmax, mean-minmax (the tutorial's mean of batch
    /// min/max), ema, percentile (99.99) or mse (error-minimizing search).
    #[arg(long, default_value = "mean-minmax", value_parser = parse_method)]
    pub calibration: CalibrationMethod,
    /// Number of calibration images (the first N of the split).
    #[arg(long, default_value_t = 1000)]
    pub calib_samples: usize,
    /// Calibration batch size (the mean-of-batch estimate depends on it).
    #[arg(long, default_value_t = 64)]
    pub calib_batch: usize,
    /// Split the calibration images come from. The tutorial calibrated on its test loader;
    /// calibrating on training images keeps the test set unseen.
    #[arg(long, default_value = "train", value_parser = parse_split)]
    pub calib_split: Split,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// as trained by `cargo xtask train --arch`.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

pub fn parse_method(s: &str) -> Result<CalibrationMethod, String> {
    CalibrationMethod::from_name(s).ok_or_else(|| {
        format!("unknown calibration `{s}` (minmax, mean-minmax, ema, percentile or mse)")
    })
}

impl QuantizeArgs {
    /// The model-wide conversion options these flags ask for.
    pub fn options(&self) -> ConvertOptions {
        ConvertOptions {
            weight_bits: self.weight_bits.unwrap_or(self.bits),
            act_bits: self.act_bits.unwrap_or(self.bits),
            per_channel: self.per_channel,
        }
    }

    /// The options with `--bits-per-layer` applied to a network whose layers are `names`.
    pub fn scheme(&self, names: &[&str]) -> anyhow::Result<QuantScheme> {
        scheme(self.options(), self.bits_per_layer.as_deref(), names)
    }
}

/// `options` with the per-layer widths `bits_per_layer` (the `--bits-per-layer` text) for the
/// layers `names`.
pub fn scheme(
    options: ConvertOptions,
    bits_per_layer: Option<&str>,
    names: &[&str],
) -> anyhow::Result<QuantScheme> {
    match bits_per_layer {
        Some(spec) => QuantScheme::parse(options, spec, names).context("--bits-per-layer"),
        None => Ok(options.into()),
    }
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "test" => Ok(Split::Test),
        _ => Err(format!("unknown split `{s}` (train or test)")),
    }
}

/// One row of the comparison: an engine and its test-set results.
#[derive(Debug, Serialize)]
struct EngineResult {
    engine: String,
    accuracy: f64,
    /// Fraction of test images on which the prediction equals the float model's.
    agreement_with_float: f64,
}

/// One quantized layer's parameters and how close its output stays to the float layer.
#[derive(Debug, Serialize)]
struct LayerReport {
    name: String,
    weight_bits: u8,
    act_bits: u8,
    /// Bytes of its weight codes in the model file (packed below 8 bits).
    weight_bytes: usize,
    input_scale: f32,
    input_zero_point: i32,
    output_scale: f32,
    output_zero_point: i32,
    /// Per output channel (all equal unless per-channel).
    weight_scales: Vec<f32>,
    weight_zero_points: Vec<i32>,
    m0: Vec<i32>,
    shift: Vec<i32>,
    /// SQNR (dB) of the layer's integer output against the float network (cumulative).
    sqnr_db: f64,
}

/// `quant/report.json`.
#[derive(Debug, Serialize)]
struct QuantizeReport {
    dataset: String,
    /// Bits of weights and activations (`weight_bits` when they differ).
    bits: u8,
    float_accuracy: f64,
    /// The tutorial's simulated scheme (null when it does not apply to these options).
    simulated_accuracy: Option<f64>,
    /// The saved integer model.
    int_accuracy: f64,
    /// Fraction of test images on which the saved integer model and the float model agree.
    agreement: f64,
    layers: Vec<LayerReport>,
    /// The widest widths.
    weight_bits: u8,
    act_bits: u8,
    /// Each layer's widths, `conv1=w8a8,…`.
    bits_per_layer: String,
    per_channel: bool,
    calibration: String,
    calib_split: String,
    calib_samples: usize,
    test_images: usize,
    float_model_bytes: u64,
    int_model_bytes: u64,
    /// Bytes of all weight codes in the model file (packed below 8 bits).
    int_weight_bytes: usize,
    /// Mean |dequantized u8 logit − float logit| over the test set, in logit units.
    logit_mean_abs_error: f64,
    results: Vec<EngineResult>,
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    if args.arch != "tutorial" {
        let arch = burnq_arch::Architecture::load(&args.arch)?;
        return crate::quantize_arch::run(&args, &arch);
    }
    let scheme = args.scheme(&tutorial_layer_names())?;
    let options = scheme.defaults;
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::new(args.out.as_deref(), args.data.dataset);
    let float_path = dir.float_model();
    let model = load_model(&NetConfig::new(), &float_path, &device)?;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let calib_set = args.data.load(args.calib_split)?;

    let settings = CalibrationSettings {
        samples: args.calib_samples,
        batch_size: args.calib_batch,
        method: args.calibration,
        ..Default::default()
    }
    .tutorial_widths(&scheme);
    let calibration = calibrate(&model, &calib_set, settings, &device)
        .with_context(|| format!("calibrating {}", display_path(&float_path)))?;
    let norm = args.data.dataset.normalization();
    let network = float_network(&model)?;

    let batcher = ImageBatcher::new(norm);
    let (float_eval, float_pred) = evaluate(&model, &test_set, &batcher, 1000, &device);
    let float_logits = logits(&model, &test_set, &batcher, 1000, &device);
    let mut results = vec![EngineResult {
        engine: "float (Burn, flex)".into(),
        accuracy: float_eval.accuracy,
        agreement_with_float: 1.0,
    }];
    let label = scheme_label(&scheme, &tutorial_layer_names());
    if options.weight_bits == options.act_bits && !options.per_channel && scheme.layers.is_empty() {
        // The tutorial's scheme: float layers on fake-quantized tensors, mean of batch min/max.
        let simulated = simulated_predictions(
            &model,
            &test_set,
            &calibration.ranges(CalibrationMethod::MeanMinmax),
            options.act_bits,
            1000,
            &device,
        );
        results.push(engine_result(
            format!("simulated {label}, mean-minmax (tutorial)"),
            &simulated,
            &test_set,
            &float_pred,
        ));
    }
    let mut chosen = None;
    for method in CalibrationMethod::ALL {
        let quant = convert_with(&network, &calibration, method, norm, &scheme)?;
        let out = run_integer(&quant, &test_set)?;
        let marker = if method == args.calibration {
            " (saved)"
        } else {
            ""
        };
        results.push(engine_result(
            format!("integer {label}, {}{marker}", method.name()),
            &out.predictions,
            &test_set,
            &float_pred,
        ));
        if method == args.calibration {
            chosen = Some((quant, out.logits_u8));
        }
    }
    let (quant, logits_u8) = chosen.expect("the chosen method is one of those evaluated");
    let dequantized = quant.dequantize_logits(&logits_u8);
    let logit_mae = dequantized
        .iter()
        .zip(&float_logits)
        .map(|(a, b)| f64::from((a - b).abs()))
        .sum::<f64>()
        / dequantized.len().max(1) as f64;

    let quant_path = dir.quant_model();
    burnq_quant::save(&quant, &quant_path)?;
    let calib_path = dir.calibration();
    write_json_atomic(&calibration, &calib_path)?;
    let sqnr = layer_sqnr(&model, &quant, &test_set, 1000, &device)?;
    let layers = quant
        .layers()
        .iter()
        .zip(sqnr)
        .map(|(l, sqnr_db)| LayerReport {
            name: l.name.clone(),
            weight_bits: l.weight_bits,
            act_bits: l.output.bits(),
            weight_bytes: l.stored_weight_bytes(),
            input_scale: l.input.scale(),
            input_zero_point: l.input.zero_point(),
            output_scale: l.output.scale(),
            output_zero_point: l.output.zero_point(),
            weight_scales: l.weight_scales.clone(),
            weight_zero_points: l.weight_zero_points.clone(),
            m0: l.m0.clone(),
            shift: l.shift.clone(),
            sqnr_db,
        })
        .collect();
    let simulated_accuracy = results
        .iter()
        .find(|r| r.engine.starts_with("simulated"))
        .map(|r| r.accuracy);
    let saved = results
        .iter()
        .find(|r| r.engine.ends_with("(saved)"))
        .expect("the saved method has a row");
    let report = QuantizeReport {
        dataset: args.data.dataset.dir_name().into(),
        bits: quant.weight_bits(),
        float_accuracy: float_eval.accuracy,
        simulated_accuracy,
        int_accuracy: saved.accuracy,
        agreement: saved.agreement_with_float,
        layers,
        weight_bits: quant.weight_bits(),
        act_bits: quant.act_bits(),
        bits_per_layer: bits_label(quant.layers()),
        per_channel: options.per_channel,
        calibration: args.calibration.name().into(),
        calib_split: args.calib_split.name().into(),
        calib_samples: args.calib_samples,
        test_images: test_set.len(),
        float_model_bytes: file_size(&float_path)?,
        int_model_bytes: file_size(&quant_path)?,
        int_weight_bytes: quant.layers().iter().map(|l| l.stored_weight_bytes()).sum(),
        logit_mean_abs_error: logit_mae,
        results,
    };
    let report_path = dir.quantize_report();
    write_json_atomic(&report, &report_path)?;
    print_summary(&report, &[quant_path, calib_path, report_path]);
    Ok(())
}

/// `w8a8`, `w2a4-pc`, …: weight and activation bits, `-pc` for per-channel weights.
pub fn options_label(o: &ConvertOptions) -> String {
    let pc = if o.per_channel { "-pc" } else { "" };
    format!("w{}a{}{pc}", o.weight_bits, o.act_bits)
}

/// `w<W>a<A>[-pc]` ([`options_label`]) for a scheme without per-layer widths, else every
/// layer's `name=w<W>a<A>` of `names`, comma-separated, then `-pc` for per-channel weights.
pub fn scheme_label(scheme: &QuantScheme, names: &[&str]) -> String {
    if scheme.layers.is_empty() {
        return options_label(&scheme.defaults);
    }
    let layers: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", LayerBits::of(scheme.layer(n))))
        .collect();
    let pc = if scheme.defaults.per_channel {
        "-pc"
    } else {
        ""
    };
    format!("{}{pc}", layers.join(","))
}

/// Converts `network` with the activation ranges `method` estimated in `calibration`.
pub fn convert_with(
    network: &FloatNetwork,
    calibration: &Calibration,
    method: CalibrationMethod,
    norm: Normalization,
    scheme: impl Into<QuantScheme>,
) -> anyhow::Result<QuantModel> {
    let scheme = scheme.into();
    burnq_quant::convert(network, &calibration.ranges(method), norm, scheme.clone()).with_context(
        || {
            format!(
                "converting to integers ({})",
                scheme_label(&scheme, &tutorial_layer_names())
            )
        },
    )
}

fn engine_result(engine: String, pred: &[u8], set: &ImageSet, float_pred: &[u8]) -> EngineResult {
    EngineResult {
        engine,
        accuracy: agreement(pred, &set.labels),
        agreement_with_float: agreement(pred, float_pred),
    }
}

fn file_size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len())
}

fn print_summary(report: &QuantizeReport, written: &[PathBuf]) {
    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.engine.clone(),
                format!("{:.2}%", 100.0 * r.accuracy),
                format!("{:.2}%", 100.0 * r.agreement_with_float),
            ]
        })
        .collect();
    println!(
        "\n{}",
        markdown(&["engine", "test accuracy", "agrees with float"], &rows)
    );
    let layer_rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .map(|l| {
            let range = |v: &[i32]| {
                let (lo, hi) = (v.iter().min(), v.iter().max());
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo != hi => format!("{lo}..{hi}"),
                    (Some(lo), _) => lo.to_string(),
                    _ => String::new(),
                }
            };
            let s_w = &l.weight_scales;
            let s_w = if s_w.iter().all(|&s| s == s_w[0]) {
                format!("{:.3e}", s_w[0])
            } else {
                format!(
                    "{:.2e}..{:.2e}",
                    s_w.iter().copied().fold(f32::MAX, f32::min),
                    s_w.iter().copied().fold(0.0, f32::max)
                )
            };
            vec![
                l.name.clone(),
                format!("{:.3e} / {}", l.input_scale, l.input_zero_point),
                format!("{s_w} / {}", range(&l.weight_zero_points)),
                format!("{:.3e} / {}", l.output_scale, l.output_zero_point),
                range(&l.m0),
                range(&l.shift),
                format!("{:.1}", l.sqnr_db),
            ]
        })
        .collect();
    println!(
        "{}",
        markdown(
            &[
                "layer",
                "S_in / Z_in",
                "S_w / Z_w",
                "S_out / Z_out",
                "M0",
                "shift",
                "SQNR dB"
            ],
            &layer_rows
        )
    );
    println!(
        "{} test images; calibration: {} over {} {} images (saved model uses {}); \
         model file {} bytes, weights {} bytes (float record {} bytes, {:.1}x smaller); \
         mean |logit error| {:.4}; widths {}",
        report.test_images,
        report.calibration,
        report.calib_samples,
        report.calib_split,
        report.calibration,
        report.int_model_bytes,
        report.int_weight_bytes,
        report.float_model_bytes,
        report.float_model_bytes as f64 / report.int_model_bytes.max(1) as f64,
        report.logit_mean_abs_error,
        report.bits_per_layer
    );
    println!("wrote:");
    for p in written {
        println!("  {}", display_path(p));
    }
}
