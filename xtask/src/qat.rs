//! `cargo xtask qat`: fine-tune the float model with quantization-aware training, export it
//! through the same converter to the integer engine's file format, and check that the
//! integer model predicts what the fake-quantized network predicted.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate};
use burnq_data::Split;
use burnq_model::checkpoint::{load_model, save_model, write_json_atomic};
use burnq_model::qat::{QatForward, QatSettings};
use burnq_model::training::{EpochRecord, TrainingConfig, fit};
use burnq_model::{BackendChoice, NetConfig};
use burnq_quant::{ActivationRanges, ConvertOptions, InputNormalization};
use serde::Serialize;

use crate::common::{DataArgs, dataset_dir, display_path};
use crate::pipeline::{agreement, classes, float_network, run_integer};
use crate::table::markdown;
use crate::train::TrainProgress;

/// Flags of `cargo xtask qat`.
#[derive(Debug, Clone, clap::Args)]
pub struct QatArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Bits of the weight codes (2..=8).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub weight_bits: u8,
    /// Bits of the activation codes (2..=8).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub act_bits: u8,
    /// One weight scale and zero point per output channel.
    #[arg(long)]
    pub per_channel: bool,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// SGD learning rate of the fine-tuning's first epoch.
    #[arg(long, default_value_t = 0.002)]
    pub lr: f64,
    /// Learning-rate factor per epoch.
    #[arg(long, default_value_t = 0.5)]
    pub lr_decay: f64,
    /// SGD momentum (dampening 0).
    #[arg(long, default_value_t = 0.5)]
    pub momentum: f64,
    /// Seed of the shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// EMA decay of the activation ranges.
    #[arg(long, default_value_t = 0.99)]
    pub ema_decay: f32,
    /// Range estimate the activation ranges start from (see `quantize --calibration`); with
    /// `--ema-decay 1` they stay there.
    #[arg(long, default_value = "mean-minmax", value_parser = crate::quantize::parse_method)]
    pub calibration: CalibrationMethod,
    /// Training steps before activations are quantized (ranges start from a calibration).
    #[arg(long, default_value_t = 0)]
    pub act_delay: usize,
    /// Fine-tune on the first N training images only (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Artifacts folder of the data set (default artifacts/<dataset>); the float model is read
    /// from <out>/float/, the result written to <out>/qat-w<W>a<A>[-pc]/.
    #[arg(long)]
    pub out: Option<PathBuf>,
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
    pub float_accuracy: f64,
    /// Accuracy of the fake-quantized network after fine-tuning (ranges frozen).
    pub fake_quant_accuracy: f64,
    /// Accuracy of the exported integer model.
    pub integer_accuracy: f64,
    /// Fraction of test images where the integer and fake-quantized predictions agree.
    pub integer_vs_fake_quant_agreement: f64,
    /// Final EMA ranges of conv2's, fc1's and fc2's inputs and of the logits.
    pub ranges: [(f32, f32); 4],
    pub test_images: usize,
    pub history: Vec<EpochRecord>,
}

/// The folder name of a QAT result, e.g. `qat-w2a2` or `qat-w4a4-pc`.
pub fn run_name(weight_bits: u8, act_bits: u8, per_channel: bool) -> String {
    format!(
        "qat-w{weight_bits}a{act_bits}{}",
        if per_channel { "-pc" } else { "" }
    )
}

pub fn run(args: QatArgs) -> anyhow::Result<()> {
    let report = run_qat(&args, true)?;
    let rows = vec![
        vec![
            "float (start)".into(),
            format!("{:.2}%", 100.0 * report.float_accuracy),
        ],
        vec![
            "fake-quantized (QAT)".into(),
            format!("{:.2}%", 100.0 * report.fake_quant_accuracy),
        ],
        vec![
            "integer engine".into(),
            format!("{:.2}%", 100.0 * report.integer_accuracy),
        ],
    ];
    println!("\n{}", markdown(&["model", "test accuracy"], &rows));
    println!(
        "integer vs fake-quant predictions agree on {:.2}% of {} test images",
        100.0 * report.integer_vs_fake_quant_agreement,
        report.test_images
    );
    Ok(())
}

/// Runs QAT as `args` say and writes its artifacts; `verbose` shows progress and paths.
pub fn run_qat(args: &QatArgs, verbose: bool) -> anyhow::Result<QatReport> {
    let device = BackendChoice::Flex.device()?;
    let dir = dataset_dir(args.out.as_deref(), args.data.dataset);
    let float = load_model(
        &NetConfig::new(),
        &dir.join("float").join("model.bpk"),
        &device,
    )?;
    let mut train_set = args.data.load(Split::Train)?;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let calibration = calibrate(
        &float,
        &train_set,
        CalibrationSettings {
            method: args.calibration,
            ..Default::default()
        },
        &device,
    )?;
    // Calibrated on the full split (1000 images) before the optional training limit applies.
    if let Some(n) = args.train_limit {
        train_set.truncate(n);
    }
    let r = |name: &str| {
        calibration
            .tap(name)
            .map(|s| s.range(args.calibration))
            .context("calibration lacks a tap")
    };
    let settings = QatSettings {
        weight_bits: u32::from(args.weight_bits),
        act_bits: u32::from(args.act_bits),
        per_channel: args.per_channel,
        ema_decay: args.ema_decay,
        act_delay: args.act_delay,
        input_mean: args.data.dataset.normalization().mean,
        input_std: args.data.dataset.normalization().std,
    };
    let mut mode = QatForward::with_ranges(
        settings,
        [r("conv2_in")?, r("fc1_in")?, r("fc2_in")?, r("logits")?],
    );
    let out = dir.join(run_name(args.weight_bits, args.act_bits, args.per_channel));
    std::fs::create_dir_all(out.join("float"))?;
    let model_path = out.join("float").join("model.bpk");
    let config = TrainingConfig::new(NetConfig::new())
        .with_epochs(args.epochs)
        .with_lr(args.lr)
        .with_lr_decay(args.lr_decay)
        .with_momentum(args.momentum)
        .with_seed(args.seed);
    let progress = TrainProgress::new(args.epochs);
    let mut on_event = |e| {
        if verbose {
            progress.on_event(e);
        }
    };
    let start = float.fresh_copy(&NetConfig::new(), &device.clone().autodiff());
    let (trained, history) = fit(
        &config,
        start,
        &mut mode,
        Arc::new(train_set),
        &test_set,
        &device,
        &mut on_event,
        &mut |m, _| save_model(m, &model_path),
    )?;
    progress.finish();

    let ranges = mode.ranges();
    let norm = args.data.dataset.normalization();
    let quant = burnq_quant::convert(
        &float_network(&trained)?,
        &ActivationRanges {
            conv2_input: ranges[0],
            fc1_input: ranges[1],
            fc2_input: ranges[2],
            logits: ranges[3],
        },
        InputNormalization {
            mean: norm.mean,
            std: norm.std,
        },
        ConvertOptions {
            weight_bits: args.weight_bits,
            act_bits: args.act_bits,
            per_channel: args.per_channel,
        },
    )
    .context("exporting the QAT model to integers")?;
    let quant_path = out.join("quant").join("model.safetensors");
    std::fs::create_dir_all(out.join("quant"))?;
    burnq_quant::save(&quant, &quant_path)?;

    let (fake, fake_pred) = mode.evaluate(&trained, &test_set, 1000, &device);
    let int_pred = classes(&run_integer(&quant, &test_set)?);
    let (float_eval, _) = burnq_model::eval::evaluate(
        &float,
        &test_set,
        &burnq_model::data::ImageBatcher::new(norm),
        1000,
        &device,
    );
    let report = QatReport {
        dataset: args.data.dataset.dir_name().into(),
        settings,
        epochs: args.epochs,
        lr: args.lr,
        lr_decay: args.lr_decay,
        range_init: args.calibration.name().into(),
        float_accuracy: float_eval.accuracy,
        fake_quant_accuracy: fake.accuracy,
        integer_accuracy: agreement(&int_pred, &test_set.labels),
        integer_vs_fake_quant_agreement: agreement(&int_pred, &fake_pred),
        ranges,
        test_images: test_set.len(),
        history,
    };
    let report_path = out.join("qat.json");
    write_json_atomic(&report, &report_path)?;
    if verbose {
        println!("wrote:");
        for p in [&model_path, &quant_path, &report_path] {
            println!("  {}", display_path(p));
        }
    }
    Ok(report)
}
