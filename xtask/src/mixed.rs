//! `cargo xtask mixed --budget-kb N[,N…]`: mixed precision for the tutorial network. Measures
//! each layer's sensitivity to each candidate weight width, chooses per budget the widths of
//! least summed sensitivity whose weights fit ([`burnq_quant::mixed`]), fine-tunes each choice
//! with QAT (`qat --bits-per-layer`), fine-tunes the uniform widths the same way, and reports
//! accuracy against weight bytes with the Pareto front (table, JSON, SVG).
//!
//! Sensitivity of layer `l` at `w` weight bits, on the first `--sensitivity-images` training
//! images (the test set stays out of the choice): the accuracy with only `l` quantized
//! (its weights at `w` bits and its output at `--act-bits`, the rest float), and the SQNR of
//! its weights at `w` bits. Cost = the accuracy drop against the float model (0 if none) plus
//! `10⁻³ ·` the weights' noise-to-signal ratio `10^(−SQNR/10)`, which orders widths whose
//! measured drops tie.

use std::path::PathBuf;

use anyhow::Context;
use burnq_arch::write_atomic;
use burnq_calib::{CalibrationSettings, calibrate};
use burnq_data::Split;
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate;
use burnq_model::{BackendChoice, NetConfig};
use burnq_qat::{QatConfig, QatForward, Quantizer, float_network};
use burnq_quant::derive::weight_params;
use burnq_quant::format::packed_len;
use burnq_quant::mixed::{Candidate, choose, pareto};
use burnq_quant::{LayerBits, range::sqnr_db, tutorial_layer_names};
use serde::Serialize;

use crate::common::{DataArgs, Limits, display_path, ensure_images};
use crate::paths::ArtifactDir;
use crate::plot::{Panel, Series, line_panels};
use crate::qat::{QatReport, run_qat_command};
use crate::table::markdown;

/// Flags of `cargo xtask mixed`.
#[derive(Debug, clap::Args)]
pub struct MixedArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Budgets for the weight codes in the model file, in kB (1000 bytes): one mixed model
    /// per budget, e.g. `110` or `60,110,220`. The tutorial's 8-bit weights take 430.5 kB.
    #[arg(long, value_delimiter = ',', required = true)]
    pub budget_kb: Vec<f64>,
    /// Candidate weight widths of every layer (2..=8).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,6,8",
          value_parser = clap::value_parser!(u8).range(2..=8))]
    pub widths: Vec<u8>,
    /// Activation width of every layer (2..=8); the budget is on weights, so the search
    /// leaves activations at this width.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(2..=8))]
    pub act_bits: u8,
    /// Uniform weight widths fine-tuned the same way, beside the mixed models (`none` for
    /// none).
    #[arg(long, value_delimiter = ',', default_value = "8,4,2", value_parser = parse_uniform)]
    pub uniform: Vec<Option<u8>>,
    /// One weight scale and zero point per output channel.
    #[arg(long)]
    pub per_channel: bool,
    /// How QAT chooses the grids: minmax, lsq or lsq+.
    #[arg(long, default_value = "lsq", value_parser = crate::qat::parse_quantizer)]
    pub quantizer: Quantizer,
    /// QAT epochs of every model.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Training images the sensitivities are measured on (the first N of the training split).
    #[arg(long, default_value_t = 5000)]
    pub sensitivity_images: usize,
    #[command(flatten)]
    pub limits: Limits,
    /// Artifacts folder of the data set (default artifacts/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `none`, or a width 2..=8.
fn parse_uniform(s: &str) -> Result<Option<u8>, String> {
    match s {
        "none" => Ok(None),
        _ => match s.parse::<u8>() {
            Ok(bits @ 2..=8) => Ok(Some(bits)),
            _ => Err(format!("`{s}` is not a width 2..=8 nor `none`")),
        },
    }
}

/// One layer at one candidate width.
#[derive(Debug, Serialize)]
struct Sensitivity {
    layer: &'static str,
    weight_bits: u8,
    weight_bytes: usize,
    /// Accuracy on the sensitivity images with only this layer quantized.
    accuracy_only_this_layer: f64,
    /// SQNR (dB) of the layer's weights at this width.
    weight_sqnr_db: f64,
    /// The search's cost (module docs).
    cost: f64,
}

/// One fine-tuned model: a budget's choice or a uniform width.
#[derive(Debug, Serialize)]
struct Point {
    /// `mixed` or `uniform`.
    kind: &'static str,
    /// The budget (bytes) a mixed model was chosen for.
    budget_bytes: Option<usize>,
    /// The search's summed cost (mixed models).
    predicted_cost: Option<f64>,
    bits_per_layer: String,
    accuracy: f64,
    fake_quant_accuracy: f64,
    integer_vs_fake_quant_agreement: f64,
    model_bytes: u64,
    weight_bytes: usize,
    /// `weight_bytes` over the weights' bytes at 8 bits.
    weight_fraction_of_8bit: f64,
    /// Whether no other point is at most as large and more accurate.
    on_front: bool,
}

/// `mixed.json`.
#[derive(Debug, Serialize)]
struct MixedReport {
    dataset: String,
    float_accuracy: f64,
    quantizer: String,
    per_channel: bool,
    act_bits: u8,
    epochs: usize,
    sensitivity_images: usize,
    test_images: usize,
    weight_bytes_8bit: usize,
    sensitivities: Vec<Sensitivity>,
    points: Vec<Point>,
}

pub fn run(args: MixedArgs) -> anyhow::Result<()> {
    ensure_images(args.sensitivity_images, "--sensitivity-images")?;
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::new(args.out.as_deref(), args.data.dataset);
    let model = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
    let norm = args.data.dataset.normalization();
    let mut held = args.data.load(Split::Train)?;
    let calibration = calibrate(&model, &held, CalibrationSettings::default(), &device)
        .context("calibrating the starting ranges")?;
    held.truncate(args.sensitivity_images);
    let batcher = ImageBatcher::new(norm);
    let (float_held, _) = evaluate(&model, &held, &batcher, 1000, &device);
    let network = float_network(&model)?;
    let names = tutorial_layer_names();
    let config = |bits_per_layer, weight_bits| QatConfig {
        quantizer: args.quantizer,
        weight_bits,
        act_bits: args.act_bits,
        bits_per_layer,
        per_channel: args.per_channel,
        epochs: args.epochs,
        train_limit: args.limits.train_limit,
        ..QatConfig::DEFAULT
    };

    let mut sensitivities = Vec::new();
    let mut candidates = Vec::new();
    for (index, (name, layer)) in names.iter().zip(network.layers()).enumerate() {
        let mut layer_candidates = Vec::new();
        for &bits in &args.widths {
            let uniform = LayerBits {
                weight_bits: bits,
                act_bits: args.act_bits,
            };
            // Min/max grids: the sensitivity is the quantization noise before any training.
            let settings = QatConfig {
                quantizer: Quantizer::Minmax,
                ..config(Some(vec![uniform; 4]), bits)
            }
            .settings(norm)?;
            let only = QatForward::with_ranges(settings, &calibration.ranges(calibration.method))
                .only_layer(index);
            let (eval, _) = only.evaluate(&model, &held, 1000, &device);
            let out = layer.kind.out_channels();
            let grids = weight_params(&layer.weights, out, bits, args.per_channel)?;
            let fan_in = layer.kind.fan_in();
            let dequantized: Vec<f32> = layer
                .weights
                .iter()
                .enumerate()
                .map(|(i, &w)| grids[i / fan_in].dequantize(grids[i / fan_in].quantize(w)))
                .collect();
            let weight_sqnr_db = sqnr_db(&layer.weights, &dequantized);
            let drop = (float_held.accuracy - eval.accuracy).max(0.0);
            let cost = drop + 1e-3 * 10f64.powf(-weight_sqnr_db / 10.0);
            let weight_bytes = packed_len(layer.weights.len(), bits);
            layer_candidates.push(Candidate {
                bytes: weight_bytes,
                cost,
            });
            sensitivities.push(Sensitivity {
                layer: name,
                weight_bits: bits,
                weight_bytes,
                accuracy_only_this_layer: eval.accuracy,
                weight_sqnr_db,
                cost,
            });
        }
        candidates.push(layer_candidates);
    }

    let test_set = args
        .data
        .load_test_limited(args.limits.test_limit, "--test-limit")?;
    let mut points = Vec::new();
    let point = |kind, budget_bytes, predicted_cost, report: QatReport| Point {
        kind,
        budget_bytes,
        predicted_cost,
        bits_per_layer: report.bits_per_layer,
        accuracy: report.accuracies.integer_accuracy,
        fake_quant_accuracy: report.accuracies.fake_quant_accuracy,
        integer_vs_fake_quant_agreement: report.accuracies.integer_vs_fake_quant_agreement,
        model_bytes: report.int_model_bytes,
        weight_bytes: report.int_weight_bytes,
        weight_fraction_of_8bit: 0.0,
        on_front: false,
    };
    for &kb in &args.budget_kb {
        let budget = (kb * 1000.0).floor() as usize;
        let choice = choose(&candidates, budget).with_context(|| {
            format!("no choice of --widths fits a budget of {kb} kB of weights")
        })?;
        let bits: [LayerBits; 4] = std::array::from_fn(|l| LayerBits {
            weight_bits: args.widths[choice.picks[l]],
            act_bits: args.act_bits,
        });
        println!(
            "budget {kb} kB: {} ({} weight bytes, predicted cost {:.4}); fine-tuning",
            bits.map(|b| b.to_string()).join(", "),
            choice.bytes,
            choice.cost
        );
        let widest = bits.iter().map(|b| b.weight_bits).max().unwrap_or(8);
        let report = run_qat_command(
            &config(Some(bits.to_vec()), widest),
            &args.data,
            args.limits.test_limit,
            crate::qat::QatStart {
                out: args.out.as_deref(),
                init_from: None,
            },
            false,
        )?;
        anyhow::ensure!(
            report.int_weight_bytes <= budget,
            "the exported model's weights take {} bytes, over the budget of {budget}",
            report.int_weight_bytes
        );
        points.push(point("mixed", Some(budget), Some(choice.cost), report));
    }
    for bits in args.uniform.iter().flatten() {
        println!("uniform w{bits}a{}: fine-tuning", args.act_bits);
        let report = run_qat_command(
            &config(None, *bits),
            &args.data,
            args.limits.test_limit,
            crate::qat::QatStart {
                out: args.out.as_deref(),
                init_from: None,
            },
            false,
        )?;
        points.push(point("uniform", None, None, report));
    }
    let weight_bytes_8bit: usize = network.layers().iter().map(|l| l.weights.len()).sum();
    let sizes: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.weight_bytes as f64, p.accuracy))
        .collect();
    for i in pareto(&sizes) {
        points[i].on_front = true;
    }
    for p in &mut points {
        p.weight_fraction_of_8bit = p.weight_bytes as f64 / weight_bytes_8bit as f64;
    }
    let (float_eval, _) = evaluate(&model, &test_set, &batcher, 1000, &device);
    let report = MixedReport {
        dataset: args.data.dataset.dir_name().into(),
        float_accuracy: float_eval.accuracy,
        quantizer: args.quantizer.name().into(),
        per_channel: args.per_channel,
        act_bits: args.act_bits,
        epochs: args.epochs,
        sensitivity_images: held.len(),
        test_images: test_set.len(),
        weight_bytes_8bit,
        sensitivities,
        points,
    };
    write_reports(&report, &dir)
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// `mixed.{json,md,svg}`.
fn write_reports(report: &MixedReport, dir: &ArtifactDir) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = report
        .points
        .iter()
        .map(|p| {
            vec![
                p.kind.into(),
                p.budget_bytes.map_or("–".into(), |b| b.to_string()),
                p.bits_per_layer.clone(),
                pct(p.accuracy),
                pct(p.fake_quant_accuracy),
                pct(p.integer_vs_fake_quant_agreement),
                p.weight_bytes.to_string(),
                format!("{:.1}", 100.0 * p.weight_fraction_of_8bit),
                p.model_bytes.to_string(),
                if p.on_front { "yes" } else { "" }.into(),
            ]
        })
        .collect();
    let sensitivity_rows: Vec<Vec<String>> = report
        .sensitivities
        .iter()
        .map(|s| {
            vec![
                s.layer.into(),
                s.weight_bits.to_string(),
                s.weight_bytes.to_string(),
                pct(s.accuracy_only_this_layer),
                format!("{:.1}", s.weight_sqnr_db),
                format!("{:.5}", s.cost),
            ]
        })
        .collect();
    let md = format!(
        "# Mixed precision, {} (float {} %)\n\nTest-set accuracy (%) of the integer engine after {} \
         epoch(s) of {} QAT ({}), activations {} bits; weight bytes as stored (packed), and as % of \
         the {} bytes of 8-bit weights; `front`: on the Pareto front of accuracy against weight \
         bytes.\n\n{}\n\nSensitivity on {} training images (accuracy with only that layer \
         quantized; SQNR of its weights):\n\n{}",
        report.dataset,
        pct(report.float_accuracy),
        report.epochs,
        report.quantizer,
        if report.per_channel {
            "per-channel weights"
        } else {
            "per-tensor weights"
        },
        report.act_bits,
        report.weight_bytes_8bit,
        markdown(
            &[
                "model",
                "budget B",
                "widths",
                "accuracy",
                "fake-quant",
                "agree",
                "weight B",
                "% of 8-bit",
                "file B",
                "front"
            ],
            &rows
        ),
        report.sensitivity_images,
        markdown(
            &[
                "layer",
                "weight bits",
                "weight B",
                "accuracy only it",
                "weight SQNR dB",
                "cost"
            ],
            &sensitivity_rows
        )
    );
    println!("\n{md}");
    let [json_path, md_path, svg_path] = dir.mixed_reports();
    write_json_atomic(report, &json_path)?;
    write_atomic(&md_path, md.as_bytes())?;
    let kb = |p: &Point| p.weight_bytes as f64 / 1000.0;
    let mut by_size: Vec<&Point> = report.points.iter().collect();
    by_size.sort_by_key(|p| p.weight_bytes);
    let series = |name: &str, color, keep: &dyn Fn(&Point) -> bool| Series {
        name: name.into(),
        color,
        points: by_size
            .iter()
            .filter(|p| keep(p))
            .map(|p| (kb(p), 100.0 * p.accuracy))
            .collect(),
    };
    let (lo, hi) = by_size.iter().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
        (lo.min(kb(p)), hi.max(kb(p)))
    });
    let float = Series {
        name: "float".into(),
        color: "#7f7f7f",
        points: vec![
            (lo, 100.0 * report.float_accuracy),
            (hi, 100.0 * report.float_accuracy),
        ],
    };
    let svg = line_panels(
        &format!("Accuracy vs weight bytes, {}", report.dataset),
        "weight codes in the model file (kB)",
        &[Panel {
            y_label: "test accuracy (%)".into(),
            series: vec![
                series("uniform widths", "#1f77b4", &|p| p.kind == "uniform"),
                series("mixed (budgeted)", "#ff7f0e", &|p| p.kind == "mixed"),
                series("Pareto front", "#2ca02c", &|p| p.on_front),
                float,
            ],
        }],
    );
    write_atomic(&svg_path, svg.as_bytes())?;
    println!("wrote:");
    for f in [&md_path, &json_path, &svg_path] {
        println!("  {}", display_path(f));
    }
    Ok(())
}
