//! `cargo xtask qat`: fine-tune the float model with quantization-aware training, export it
//! through the same converter to the integer engine's file format, and check that the
//! integer model predicts what the fake-quantized network predicted.

use std::path::{Path, PathBuf};

use anyhow::Context;

use burnq_calib::CalibrationMethod;
use burnq_data::Split;
use burnq_model::checkpoint::{load_model, save_model, write_json_atomic};
use burnq_model::training::EpochRecord;
use burnq_model::{BackendChoice, NetConfig};
use burnq_qat::{QatConfig, QatSettings, Quantizer, StepInit, run_qat_from};
use burnq_quant::graph::layer_names;
use burnq_quant::{ConvertOptions, LayerBits, tutorial_layer_names};
use serde::Serialize;

use crate::common::{DataArgs, Limits, display_path};
use crate::paths::ArtifactDir;
use crate::pipeline::agreement;
use crate::quantize::scheme;
use crate::table::markdown;
use crate::train::TrainProgress;

/// The library's defaults, which the flags below show and `sweep` uses as they are.
const DEFAULTS: QatConfig = QatConfig::DEFAULT;

/// Flags of `cargo xtask qat`.
#[derive(Debug, Clone, clap::Args)]
pub struct QatArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// How the grids are chosen: minmax (weights' min/max, EMA activation ranges), lsq
    /// (learned step sizes, Esser et al. 2019: ReLU outputs on unsigned grids, signed
    /// activations on symmetric ones) or lsq+ (LSQ+, Bhalgat et al. 2020: a learned offset,
    /// i.e. zero point, for activations without a ReLU fused; ReLU/ReLU6 outputs keep offset 0,
    /// zero point 0, so on the tutorial network lsq+ is lsq).
    #[arg(long, default_value = DEFAULTS.quantizer.name(), value_parser = parse_quantizer)]
    pub quantizer: Quantizer,
    /// Bits of the weight codes (2..=8).
    #[arg(long, default_value_t = DEFAULTS.weight_bits, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub weight_bits: u8,
    /// Bits of the activation codes (2..=8).
    #[arg(long, default_value_t = DEFAULTS.act_bits, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub act_bits: u8,
    /// One weight scale and zero point per output channel.
    #[arg(long)]
    pub per_channel: bool,
    /// Where learned weight step sizes start (lsq, lsq+): paper (Esser et al.: 2·mean|w|/√Q_P)
    /// or mse (the step of least squared quantization error of the starting weights).
    #[arg(long, default_value = DEFAULTS.step_init.name(), value_parser = parse_step_init)]
    pub step_init: StepInit,
    /// Each convolution/linear layer's own widths, over --weight-bits/--act-bits: as
    /// `quantize --bits-per-layer`, by layer name (the tutorial's conv1, conv2, fc1, fc2; a
    /// described network's step names, e.g. `stem=w8a8,b1_dw=w4`) or one width per layer in
    /// order (`8,w4a8,2,8`).
    #[arg(long)]
    pub bits_per_layer: Option<String>,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = DEFAULTS.epochs)]
    pub epochs: usize,
    /// SGD learning rate of the fine-tuning's first epoch.
    #[arg(long, default_value_t = DEFAULTS.lr)]
    pub lr: f64,
    /// Learning-rate factor per epoch.
    #[arg(long, default_value_t = DEFAULTS.lr_decay)]
    pub lr_decay: f64,
    /// SGD momentum (dampening 0).
    #[arg(long, default_value_t = DEFAULTS.momentum)]
    pub momentum: f64,
    /// Seed of the shuffling.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,
    /// EMA decay of the activation ranges.
    #[arg(long, default_value_t = DEFAULTS.ema_decay)]
    pub ema_decay: f32,
    /// Range estimate the activation ranges start from (see `quantize --calibration`); with
    /// `--ema-decay 1` they stay there.
    #[arg(long, default_value = DEFAULTS.range_init.name(), value_parser = crate::quantize::parse_method)]
    pub calibration: CalibrationMethod,
    /// Training steps before activations are quantized (ranges start from a calibration).
    #[arg(long, default_value_t = DEFAULTS.act_delay)]
    pub act_delay: usize,
    /// Weight α in [0, 1] of the distillation from the float model in the loss:
    /// (1 − α)·NLL + α·cross-entropy with the float model's probabilities (tutorial network).
    #[arg(long, default_value_t = DEFAULTS.distill, value_parser = parse_weight)]
    pub distill: f64,
    /// Progressive precision: fine-tune the float model of this earlier run's folder instead
    /// of the trained float model, e.g. `<out>/qat-lsq-w4a4-pc` (its `float/model.bpk`) before
    /// training the same network at w2a2. Activation ranges are calibrated and weight step
    /// sizes initialised on it; --distill still learns from the trained float model, and
    /// `float_accuracy` stays that model's. The run's folder gets `-from-<that folder's name>`.
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    #[command(flatten)]
    pub limits: Limits,
    /// Artifacts folder of the data set (default artifacts/<dataset>); the float model is read
    /// from <out>/float/, the result written to <out>/qat-w<W>a<A>[-pc]/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// trained with `cargo xtask train --arch`.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

/// `qat.json` of a described network.
#[derive(Debug, Serialize)]
pub struct ArchQatReport {
    pub architecture: String,
    pub dataset: String,
    pub quantizer: Quantizer,
    pub weight_bits: u8,
    pub act_bits: u8,
    /// The exported graph's widths, `name=w<W>a<A>,…` by layer.
    pub bits_per_layer: String,
    pub per_channel: bool,
    /// Where learned weight step sizes started.
    pub step_init: StepInit,
    pub epochs: usize,
    pub lr: f64,
    pub lr_decay: f64,
    pub range_init: String,
    /// The earlier run whose model this one started from (`--init-from`), if any.
    pub init_from: Option<String>,
    #[serde(flatten)]
    pub accuracies: QatAccuracies,
    /// The range each quantization point's final output grid covers (learned grids with
    /// lsq/lsq+, EMA ranges otherwise).
    pub ranges: std::collections::BTreeMap<String, (f32, f32)>,
    /// Size of the exported model file, and of its weight codes in it.
    pub int_model_bytes: u64,
    pub int_weight_bytes: usize,
    pub history: Vec<EpochRecord>,
}

/// Where a QAT run starts: the trained float model's folder, and the earlier run whose model
/// it fine-tunes instead (`--init-from`), if any.
#[derive(Debug, Clone, Copy)]
pub struct QatStart<'a> {
    /// Artifacts folder of the data set (`--out`), default `artifacts/<dataset>`.
    pub out: Option<&'a Path>,
    /// The earlier run's folder (progressive precision).
    pub init_from: Option<&'a Path>,
}

impl QatStart<'_> {
    /// This run's folder inside `dir`: [`ArtifactDir::qat_run`], with `-from-<name>` when it
    /// starts from the earlier run `<name>`.
    fn run_dir(&self, dir: &ArtifactDir, config: &QatConfig) -> anyhow::Result<ArtifactDir> {
        let run = dir.qat_run(config);
        let Some(init) = self.init_from else {
            return Ok(run);
        };
        let name = init
            .file_name()
            .with_context(|| format!("--init-from {} names no folder", init.display()))?;
        Ok(run.with_suffix(&format!("-from-{}", name.to_string_lossy())))
    }

    /// The model file of the earlier run, if any.
    fn init_model(&self) -> Option<PathBuf> {
        self.init_from.map(|d| ArtifactDir::at(d).float_model())
    }
}

/// Runs QAT as `config` says on the described network `arch` trained on `data`'s data set (in
/// `start.out`, default `artifacts/<arch>/<dataset>`; fine-tuning `start.init_from`'s model
/// when given) and writes its artifacts; `verbose` shows progress and paths.
pub fn run_arch_qat_command(
    config: &QatConfig,
    arch: &burnq_arch::Architecture,
    data: &DataArgs,
    test_limit: Option<usize>,
    start: QatStart<'_>,
    verbose: bool,
) -> anyhow::Result<ArchQatReport> {
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::for_arch(start.out, data.dataset, &arch.name)?;
    let norm = data.dataset.normalization();
    let (_, float) = burnq_model::checkpoint::load_arch_net(&dir.float_model(), norm, &device)?;
    let init = match start.init_model() {
        Some(path) => Some(
            burnq_model::checkpoint::load_arch_net(&path, norm, &device)
                .with_context(|| format!("--init-from: {}", display_path(&path)))?
                .1,
        ),
        None => None,
    };
    let train_set = data.load(Split::Train)?;
    let test_set = data.load_test_limited(test_limit, "--test-limit")?;
    let out = start.run_dir(&dir, config)?;
    let model_path = out.float_model();
    let progress = TrainProgress::new(config.epochs);
    let outcome = burnq_qat::run_arch_qat(
        config,
        arch,
        init.as_ref().unwrap_or(&float),
        train_set,
        &test_set,
        &device,
        &mut |e| {
            if verbose {
                progress.on_event(e);
            }
        },
        &mut |m, _| burnq_model::checkpoint::save_arch_net(m, arch, &model_path),
    )?;
    progress.finish();
    let quant_path = out.quant_model();
    burnq_quant::save_graph(&outcome.quant, &quant_path)?;
    let batcher = burnq_model::data::ImageBatcher::new(norm);
    let forward = |x| burnq_model::training::Classifier::log_probs(&float, x);
    let (float_eval, _) =
        burnq_model::eval::evaluate_with(&forward, &test_set, &batcher, 500, &device);
    let report = ArchQatReport {
        architecture: arch.name.clone(),
        dataset: data.dataset.dir_name().into(),
        quantizer: config.quantizer,
        weight_bits: config.weight_bits,
        act_bits: config.act_bits,
        bits_per_layer: burnq_quant::bits_label(outcome.quant.layers()),
        per_channel: config.per_channel,
        step_init: config.step_init,
        epochs: config.epochs,
        lr: config.lr,
        lr_decay: config.lr_decay,
        range_init: config.range_init.name().into(),
        init_from: start.init_from.map(display_path),
        accuracies: QatAccuracies::new(
            float_eval.accuracy,
            outcome.fake_quant.accuracy,
            &outcome.integer_predictions,
            &outcome.fake_quant_predictions,
            &test_set.labels,
        ),
        ranges: outcome.forward.output_ranges(),
        int_model_bytes: std::fs::metadata(&quant_path)?.len(),
        int_weight_bytes: weight_bytes(outcome.quant.layers()),
        history: outcome.history,
    };
    write_report(&report, &out, verbose)?;
    Ok(report)
}

/// Bytes of the weight codes of `layers` in a model file (packed below 8 bits).
fn weight_bytes<'a>(layers: impl IntoIterator<Item = &'a burnq_quant::QuantLayer>) -> usize {
    layers.into_iter().map(|l| l.stored_weight_bytes()).sum()
}

/// `qat.json`.
#[derive(Debug, Serialize)]
pub struct QatReport {
    pub dataset: String,
    pub settings: QatSettings,
    pub epochs: usize,
    pub lr: f64,
    pub lr_decay: f64,
    /// Range estimate the activation ranges started from.
    pub range_init: String,
    /// Weight of the distillation from the float model (0: none).
    pub distill: f64,
    /// The earlier run whose model this one started from (`--init-from`), if any.
    pub init_from: Option<String>,
    #[serde(flatten)]
    pub accuracies: QatAccuracies,
    /// The range each layer's final output grid covers (conv1, conv2, fc1: the learned grids
    /// with lsq/lsq+, EMA ranges otherwise; fc2: the logits' EMA range).
    pub ranges: [(f32, f32); 4],
    /// The exported model's widths, `conv1=w<W>a<A>,…`.
    pub bits_per_layer: String,
    /// Size of the exported model file, and of its weight codes in it.
    pub int_model_bytes: u64,
    pub int_weight_bytes: usize,
    pub history: Vec<EpochRecord>,
}

/// What a QAT run scores on the test set (the same keys in every `qat.json`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QatAccuracies {
    /// The float model it started from.
    pub float_accuracy: f64,
    /// The fake-quantized network after fine-tuning (ranges frozen).
    pub fake_quant_accuracy: f64,
    /// The exported integer model.
    pub integer_accuracy: f64,
    /// Fraction of test images where the integer and fake-quantized predictions agree.
    pub integer_vs_fake_quant_agreement: f64,
    pub test_images: usize,
}

impl QatAccuracies {
    fn new(float: f64, fake_quant: f64, integer: &[u8], fake: &[u8], labels: &[u8]) -> Self {
        Self {
            float_accuracy: float,
            fake_quant_accuracy: fake_quant,
            integer_accuracy: agreement(integer, labels),
            integer_vs_fake_quant_agreement: agreement(integer, fake),
            test_images: labels.len(),
        }
    }

    fn print(&self) {
        let rows = vec![
            vec!["float (start)".into(), pct(self.float_accuracy)],
            vec!["fake-quantized (QAT)".into(), pct(self.fake_quant_accuracy)],
            vec!["integer engine".into(), pct(self.integer_accuracy)],
        ];
        println!("\n{}", markdown(&["model", "test accuracy"], &rows));
        println!(
            "integer vs fake-quant predictions agree on {:.2}% of {} test images",
            100.0 * self.integer_vs_fake_quant_agreement,
            self.test_images
        );
    }
}

fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// Writes `report` as the run's `qat.json` and, when `verbose`, lists the run's files.
fn write_report(report: &impl Serialize, out: &ArtifactDir, verbose: bool) -> anyhow::Result<()> {
    let report_path = out.qat_report();
    write_json_atomic(report, &report_path)?;
    if verbose {
        println!("wrote:");
        for p in [&out.float_model(), &out.quant_model(), &report_path] {
            println!("  {}", display_path(p));
        }
    }
    Ok(())
}

pub fn run(args: QatArgs) -> anyhow::Result<()> {
    let test_limit = args.limits.test_limit;
    let start = QatStart {
        out: args.out.as_deref(),
        init_from: args.init_from.as_deref(),
    };
    // `--arch NAME|FILE`: a described network (`burnq_qat::run_arch_qat`).
    let accuracies = match args.arch.as_str() {
        "tutorial" => {
            let config = args.config(&tutorial_layer_names())?;
            run_qat_command(&config, &args.data, test_limit, start, true)?.accuracies
        }
        name => {
            let arch = burnq_arch::Architecture::load(name)?;
            let config = args.config(&layer_names(&arch.plan()?))?;
            run_arch_qat_command(&config, &arch, &args.data, test_limit, start, true)?.accuracies
        }
    };
    accuracies.print();
    Ok(())
}

fn parse_weight(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(w) if (0.0..=1.0).contains(&w) => Ok(w),
        _ => Err(format!("`{text}` is not a weight in [0, 1]")),
    }
}

fn parse_step_init(name: &str) -> Result<StepInit, String> {
    StepInit::ALL
        .into_iter()
        .find(|s| s.name() == name)
        .ok_or_else(|| format!("unknown step-size initialisation `{name}` (paper, mse)"))
}

pub fn parse_quantizer(name: &str) -> Result<Quantizer, String> {
    Quantizer::ALL
        .into_iter()
        .find(|q| q.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = Quantizer::ALL.iter().map(|q| q.name()).collect();
            format!("unknown quantizer `{name}` ({})", names.join(", "))
        })
}

impl QatArgs {
    /// The library configuration these flags ask for, for a network whose convolution and
    /// linear layers are `names` (in execution order). Errors on a malformed
    /// `--bits-per-layer`, naming the entry (an unknown layer with the known names).
    pub fn config(&self, names: &[&str]) -> anyhow::Result<QatConfig> {
        let options = ConvertOptions {
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            per_channel: self.per_channel,
        };
        let bits_per_layer = match &self.bits_per_layer {
            Some(spec) => {
                let scheme = scheme(options, Some(spec), names)?;
                Some(
                    names
                        .iter()
                        .map(|n| LayerBits::of(scheme.layer(n)))
                        .collect(),
                )
            }
            None => None,
        };
        Ok(QatConfig {
            quantizer: self.quantizer,
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            bits_per_layer,
            per_channel: self.per_channel,
            step_init: self.step_init,
            epochs: self.epochs,
            lr: self.lr,
            lr_decay: self.lr_decay,
            momentum: self.momentum,
            seed: self.seed,
            ema_decay: self.ema_decay,
            act_delay: self.act_delay,
            range_init: self.calibration,
            train_limit: self.limits.train_limit,
            distill: self.distill,
        })
    }
}

/// Runs QAT as `config` says on the float model of `data`'s data set (in `start.out`, default
/// `artifacts/<dataset>`; fine-tuning `start.init_from`'s model when given) and writes its
/// artifacts; `verbose` shows progress and paths.
pub fn run_qat_command(
    config: &QatConfig,
    data: &DataArgs,
    test_limit: Option<usize>,
    start: QatStart<'_>,
    verbose: bool,
) -> anyhow::Result<QatReport> {
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::new(start.out, data.dataset);
    let float = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
    let init = match start.init_model() {
        Some(path) => Some(
            load_model(&NetConfig::new(), &path, &device)
                .with_context(|| format!("--init-from: {}", display_path(&path)))?,
        ),
        None => None,
    };
    let train_set = data.load(Split::Train)?;
    let test_set = data.load_test_limited(test_limit, "--test-limit")?;
    let out = start.run_dir(&dir, config)?;
    let model_path = out.float_model();
    let progress = TrainProgress::new(config.epochs);
    let mut on_event = |e| {
        if verbose {
            progress.on_event(e);
        }
    };
    let outcome = run_qat_from(
        config,
        &float,
        init.as_ref().unwrap_or(&float),
        train_set,
        &test_set,
        &device,
        &mut on_event,
        &mut |m, _| save_model(m, &model_path),
    )?;
    progress.finish();

    let quant_path = out.quant_model();
    burnq_quant::save(&outcome.quant, &quant_path)?;
    let norm = data.dataset.normalization();
    let (float_eval, _) = burnq_model::eval::evaluate(
        &float,
        &test_set,
        &burnq_model::data::ImageBatcher::new(norm),
        1000,
        &device,
    );
    let report = QatReport {
        dataset: data.dataset.dir_name().into(),
        settings: outcome.forward.settings(),
        epochs: config.epochs,
        lr: config.lr,
        lr_decay: config.lr_decay,
        range_init: config.range_init.name().into(),
        distill: config.distill,
        init_from: start.init_from.map(display_path),
        accuracies: QatAccuracies::new(
            float_eval.accuracy,
            outcome.fake_quant.accuracy,
            &outcome.integer_predictions,
            &outcome.fake_quant_predictions,
            &test_set.labels,
        ),
        ranges: outcome.forward.output_ranges(),
        bits_per_layer: burnq_quant::bits_label(outcome.quant.layers()),
        int_model_bytes: std::fs::metadata(&quant_path)?.len(),
        int_weight_bytes: weight_bytes(outcome.quant.layers()),
        history: outcome.history,
    };
    write_report(&report, &out, verbose)?;
    Ok(report)
}
