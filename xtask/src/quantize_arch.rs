//! `cargo xtask quantize --arch NAME|FILE` for a described network (any preset but the
//! tutorial, or a user's file): calibrate every quantization point, convert with each
//! calibration method per tensor and per channel, compare float and integer accuracy on the
//! test set, save the chosen graph (model file version 4).

use anyhow::Context;
use burnq_arch::Architecture;
use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate_arch};
use burnq_model::BackendChoice;
use burnq_model::checkpoint::{load_arch_net, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate_with;
use burnq_model::training::Classifier;
use burnq_quant::graph::layer_names;
use burnq_quant::{ConvertOptions, QuantGraph, QuantScheme, bits_label, convert_graph};
use serde::Serialize;

use crate::common::display_path;
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, run_graph};
use crate::quantize::{QuantizeArgs, scheme_label};
use crate::table::markdown;

/// One integer variant's test-set results.
#[derive(Debug, Serialize)]
struct Variant {
    calibration: String,
    per_channel: bool,
    accuracy: f64,
    agreement_with_float: f64,
    saved: bool,
}

/// `quant/report.json` of a described network.
#[derive(Debug, Serialize)]
struct ArchReport {
    architecture: String,
    dataset: String,
    params: usize,
    macs_per_image: usize,
    /// The widest widths.
    weight_bits: u8,
    act_bits: u8,
    /// Each layer's widths, `name=w<W>a<A>,…` (of the saved graph).
    bits_per_layer: String,
    float_accuracy: f64,
    int_accuracy: f64,
    test_images: usize,
    calib_samples: usize,
    calib_split: String,
    int_model_bytes: u64,
    /// Bytes of all weight codes in the model file (packed below 8 bits).
    int_weight_bytes: usize,
    variants: Vec<Variant>,
}

pub fn run(args: &QuantizeArgs, arch: &Architecture) -> anyhow::Result<()> {
    let plan = arch.plan()?;
    let scheme = args.scheme(&layer_names(&plan))?;
    let options = scheme.defaults;
    let device = BackendChoice::Flex.device()?;
    let dir = ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?;
    let float_path = dir.float_model();
    let norm = args.data.dataset.normalization();
    let (_, model) = load_arch_net(&float_path, norm, &device)
        .with_context(|| format!("run `cargo xtask train --arch {}` first", arch.name))?;
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
    .plan_widths(&plan, &scheme);
    let calibration = calibrate_arch(&model, &arch.name, &calib_set, settings, &device)
        .with_context(|| format!("calibrating {}", display_path(&float_path)))?;
    let params = model.float_params()?;
    let batcher = ImageBatcher::new(norm);
    let (float_eval, float_pred) =
        evaluate_with(&|x| model.log_probs(x), &test_set, &batcher, 500, &device);
    let mut variants = Vec::new();
    let mut chosen: Option<QuantGraph> = None;
    for method in CalibrationMethod::ALL {
        let ranges = calibration.point_ranges(&plan, method)?;
        for per_channel in [false, true] {
            let variant = QuantScheme {
                defaults: ConvertOptions {
                    per_channel,
                    ..options
                },
                ..scheme.clone()
            };
            let label = scheme_label(&variant, &layer_names(&plan));
            let graph = convert_graph(arch, &params, &ranges, norm, variant)
                .with_context(|| format!("converting {} ({label})", arch.name))?;
            let out = run_graph(&graph, &test_set.pixels)?;
            let saved = method == args.calibration && per_channel == options.per_channel;
            variants.push(Variant {
                calibration: method.name().into(),
                per_channel,
                accuracy: agreement(&out.predictions, &test_set.labels),
                agreement_with_float: agreement(&out.predictions, &float_pred),
                saved,
            });
            if saved {
                chosen = Some(graph);
            }
        }
    }
    let graph = chosen.expect("the chosen method and granularity are among those evaluated");
    let quant_path = dir.quant_model();
    burnq_quant::save_graph(&graph, &quant_path)?;
    let calib_path = dir.calibration();
    write_json_atomic(&calibration, &calib_path)?;
    let saved = variants
        .iter()
        .find(|v| v.saved)
        .expect("one variant is saved");
    let report = ArchReport {
        architecture: arch.name.clone(),
        dataset: args.data.dataset.dir_name().into(),
        params: plan.params(),
        macs_per_image: plan.macs(),
        weight_bits: graph.options().weight_bits,
        act_bits: graph.options().act_bits,
        bits_per_layer: bits_label(graph.layers()),
        float_accuracy: float_eval.accuracy,
        int_accuracy: saved.accuracy,
        test_images: test_set.len(),
        calib_samples: args.calib_samples,
        calib_split: args.calib_split.name().into(),
        int_model_bytes: std::fs::metadata(&quant_path)?.len(),
        int_weight_bytes: graph.layers().iter().map(|l| l.stored_weight_bytes()).sum(),
        variants,
    };
    let report_path = dir.quantize_report();
    write_json_atomic(&report, &report_path)?;
    let label = scheme_label(
        &QuantScheme {
            defaults: ConvertOptions {
                per_channel: false,
                ..options
            },
            ..scheme
        },
        &layer_names(&plan),
    );
    print_summary(&report, &label);
    println!("wrote:");
    for p in [&quant_path, &calib_path, &report_path] {
        println!("  {}", display_path(p));
    }
    Ok(())
}

/// The comparison table; `label` names the widths.
fn print_summary(report: &ArchReport, label: &str) {
    let mut rows = vec![vec![
        "float (Burn, flex)".into(),
        format!("{:.2}%", 100.0 * report.float_accuracy),
        "100.00%".into(),
    ]];
    for v in &report.variants {
        let granularity = if v.per_channel {
            "per channel"
        } else {
            "per tensor"
        };
        let saved = if v.saved { " (saved)" } else { "" };
        rows.push(vec![
            format!("integer {label} {granularity}, {}{saved}", v.calibration),
            format!("{:.2}%", 100.0 * v.accuracy),
            format!("{:.2}%", 100.0 * v.agreement_with_float),
        ]);
    }
    println!(
        "\n{} on {}: {} parameters, {} MAC per image\n{}",
        report.architecture,
        report.dataset,
        report.params,
        report.macs_per_image,
        markdown(&["engine", "test accuracy", "agrees with float"], &rows)
    );
    println!(
        "{} test images; calibration over {} {} images; model file {} bytes, weights {} bytes",
        report.test_images,
        report.calib_samples,
        report.calib_split,
        report.int_model_bytes,
        report.int_weight_bytes
    );
}
