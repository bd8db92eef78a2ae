//! `cargo xtask bench`: every engine verified for accuracy on the full test set, then timed
//! on the same machine and data — batch-1 latency, batch-64 and full-test-set throughput —
//! and reported as a table, `artifacts/bench/report.{json,md}` and `throughput.svg`.
//!
//! The engines: Burn f32 and Burn's Q8 weights, burnq's scalar reference, burnq's fast engine
//! for the saved integer model and for each extra width (`--widths`, quantized in memory from
//! the float model as `sweep` does), and ONNX Runtime in the same run on the same images and
//! thread counts (see [`crate::peer`]): fp32 (the float export), its own int8 (`quantize_static`
//! of the float export) and burnq's integer export. The all-threads rows' batch-1 latency is the
//! faster of one thread and all threads (both measured; `latency_threads` says which). The
//! report ends with the ratios of that run (burnq against the best ONNX Runtime row, each width
//! against the saved model's).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burnq_arch::write_atomic;
use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate};
use burnq_data::{IMAGE_PIXELS, ImageSet, Split};
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::predict::Predictor;
use burnq_model::{BackendChoice, NetConfig};
use burnq_onnx::ExportInfo;
use burnq_qat::float_network;
use burnq_quant::kernels::KernelChoice;
use burnq_quant::kernels::limits::MachineLimits;
use burnq_quant::{ConvertOptions, Engine, QuantModel, Workspace};
use serde::Serialize;

use crate::common::{DataArgs, display_path};
use crate::machine::MachineInfo;
use crate::paths::ArtifactDir;
use crate::peer::{self, Int8Candidate, PeerResults, PeerSetup};
use crate::plot::bar_chart;
use crate::quantize::{convert_with, parse_method};
use crate::table::markdown;

mod arch;
mod layers;
mod measure;
mod ratios;
mod report;

use measure::{Latency, engine_candidate, float_candidate, measure, reference_candidate};
use ratios::ratios;
use report::write_outputs;

/// Flags of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Threads of the parallel integer engine (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed repetitions of each throughput measurement (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Single-image calls per latency measurement (fewer for the slow scalar reference).
    #[arg(long, default_value_t = 2000)]
    pub latency_calls: usize,
    /// Also time the float model on burn-wgpu (needs the `wgpu` cargo feature).
    #[arg(long)]
    pub wgpu: bool,
    /// Artifacts folder of the data set whose models are benchmarked (default artifacts/<dataset>).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// Report folder (default artifacts/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Extra widths of burnq's engine, `w<W>a<A>` comma-separated, quantized in memory from the
    /// float model (the saved integer model is always benchmarked; `--widths none` adds none).
    #[arg(long, value_delimiter = ',', default_value = "w7a7,w6a8,w4a4,w2a2", value_parser = parse_width)]
    pub widths: Vec<Option<(u8, u8)>>,
    /// Calibration estimate of the extra widths (their ranges are calibrated at their own
    /// activation width).
    #[arg(long, default_value = "mse", value_parser = parse_method)]
    pub widths_calibration: CalibrationMethod,
    /// Calibration images (the first N training images) of the extra widths and of ONNX
    /// Runtime's int8 quantization, as `quantize` uses.
    #[arg(long, default_value_t = 1000)]
    pub calib_samples: usize,
    /// Python interpreter for the ONNX Runtime rows (with onnxruntime, onnx, numpy).
    #[arg(long, env = "BURNQ_PYTHON", default_value = "python3")]
    pub python: String,
    /// Leave ONNX Runtime out (its rows then say so).
    #[arg(long)]
    pub no_onnxruntime: bool,
    /// Benchmark on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// trained and quantized with `--arch` (report in artifacts/bench/<arch>/).
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

/// `w<W>a<A>` (2..=8 each), or `none`.
fn parse_width(s: &str) -> Result<Option<(u8, u8)>, String> {
    if s == "none" {
        return Ok(None);
    }
    let err = || format!("`{s}`: a width is w<W>a<A>, e.g. w4a4 or w6a8, with W and A in 2..=8");
    let (w, a) = s
        .strip_prefix('w')
        .and_then(|r| r.split_once('a'))
        .ok_or_else(err)?;
    let (w, a): (u8, u8) = (w.parse().map_err(|_| err())?, a.parse().map_err(|_| err())?);
    if !(2..=8).contains(&w) || !(2..=8).contains(&a) {
        return Err(err());
    }
    Ok(Some((w, a)))
}

/// `w8a8` for 8-bit weights and activations; each layer's widths for a mixed model.
fn width_label(model: &QuantModel) -> String {
    let layers: Vec<_> = model.layers().iter().collect();
    burnq_quant::widths_label(model.options(), &layers)
}

/// The predictions (and, for integer engines, fc2 accumulators) of one call.
type RunOutput = (Vec<u8>, Option<Vec<i32>>);

/// A function from `n × 784` raw pixels to [`RunOutput`].
type RunFn<'a> = Box<dyn FnMut(&[u8]) -> anyhow::Result<RunOutput> + 'a>;

/// One engine under test.
struct Candidate<'a> {
    name: String,
    family: &'static str,
    /// The integer model's widths (the key of its scalar reference's accumulators).
    width: Option<String>,
    threads: String,
    /// Images per call when running the whole test set.
    chunk: usize,
    /// A slow engine is timed on fewer images and calls.
    slow: bool,
    run: RunFn<'a>,
    /// Another way to run single images (one thread), timed too: the faster gives the latency.
    single: Option<RunFn<'a>>,
}

/// One row of the report. Figures not measured (an engine that could not run) are NaN in
/// memory, null in the JSON and `—` in the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    engine: String,
    /// `burn`, `burnq` or `onnxruntime`.
    family: &'static str,
    /// burnq's widths, e.g. `w8a8`.
    width: Option<String>,
    threads: String,
    /// Threads of the latency figures: the row's own, or 1 where that was faster.
    latency_threads: String,
    accuracy: f64,
    /// Fraction of test images on which the prediction equals Burn f32's.
    agreement_with_burn_f32: f64,
    /// For integer engines: fc2 accumulators identical to the scalar reference on every test image.
    bit_exact_with_reference: Option<bool>,
    latency_p50_us: f64,
    latency_p90_us: f64,
    latency_p99_us: f64,
    batch64_images_per_s: f64,
    full_test_images_per_s: f64,
    speedup_vs_burn_f32: f64,
    gmac_per_s: f64,
    /// Images used for the batch-64 measurement (all, or a subset for the slow reference).
    batch64_images: usize,
    /// Why the row has no figures, or what to know about them.
    note: Option<String>,
    #[serde(skip)]
    predictions: Vec<u8>,
}

/// One ratio of the run, e.g. burnq w8a8 over the best ONNX Runtime row.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    ratio: String,
    value: f64,
    numerator: String,
    denominator: String,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: MachineInfo,
    kernel: String,
    dataset: String,
    test_images: usize,
    runs: usize,
    macs_per_image: u64,
    float_model_bytes: u64,
    int_model_bytes: u64,
    float_weight_bytes: u64,
    int_weight_bytes: u64,
    /// All threads of the run (the rows' thread counts are 1 and this).
    threads: usize,
    rows: Vec<Row>,
    ratios: Vec<Ratio>,
    /// ONNX Runtime's version (null when it did not run).
    onnxruntime: Option<String>,
    /// Every `quantize_static` configuration tried, and the one timed as ORT int8.
    onnxruntime_int8_candidates: Vec<Int8Candidate>,
    onnxruntime_int8_choice: Option<String>,
    /// The fast engine's time per layer and stage of each width, one thread (tutorial network
    /// only; empty for `--arch`).
    layers: Vec<layers::LayerTime>,
    /// The multiply instructions' issue limits on one core and the clock, measured in this run
    /// (null off x86-64, without AVX2, or with the portable kernel).
    instruction_limits: Option<MachineLimits>,
    notes: Vec<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.arch != "tutorial" {
        let arch = burnq_arch::Architecture::load(&args.arch)?;
        return arch::run_arch(args, &arch);
    }
    let models = ArtifactDir::new(args.models.as_deref(), args.data.dataset);
    let float_path = models.float_model();
    let quant_path = models.quant_model();
    let quant = burnq_quant::load(&quant_path)
        .context("loading the integer model (`cargo xtask quantize` writes it)")?;
    let set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let norm = args.data.dataset.normalization();
    let device = BackendChoice::Flex.device()?;
    let flex = load_model(&NetConfig::new(), &float_path, &device)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let kernel = KernelChoice::selected()?;
    let mut notes = Vec::new();

    // The saved integer model, then each extra width quantized in memory.
    let widths: Vec<(u8, u8)> = args.widths.iter().flatten().copied().collect();
    let main_width = width_label(&quant);
    let calibration_set = if widths.is_empty() && args.no_onnxruntime {
        None
    } else {
        let mut train = args.data.load(Split::Train)?;
        anyhow::ensure!(
            args.calib_samples > 0 && train.len() >= args.calib_samples,
            "--calib-samples {}: the training split has {} images",
            args.calib_samples,
            train.len()
        );
        train.truncate(args.calib_samples);
        Some(train)
    };
    let mut width_models = vec![(main_width.clone(), quant.clone())];
    if let Some(train) = &calibration_set {
        let network = float_network(&flex)?;
        let mut calibrations = HashMap::new();
        for &(w, a) in &widths {
            let label = format!("w{w}a{a}");
            if width_models.iter().any(|(l, _)| *l == label) {
                continue;
            }
            let calibration = match calibrations.entry(a) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let settings = CalibrationSettings {
                        samples: train.len(),
                        act_bits: a,
                        ..Default::default()
                    };
                    e.insert(calibrate(&flex, train, settings, &device)?)
                }
            };
            let options = ConvertOptions {
                weight_bits: w,
                act_bits: a,
                per_channel: quant.per_channel(),
            };
            let model = convert_with(
                &network,
                calibration,
                args.widths_calibration,
                norm,
                options,
            )?;
            width_models.push((label, model));
        }
        if width_models.len() > 1 {
            notes.push(format!(
                "widths other than the saved model's {main_width}: post-training quantization in \
                 memory ({} ranges over the first {} training images, {}), as `sweep` does; \
                 their accumulators are checked against the scalar reference on the first {} test \
                 images",
                args.widths_calibration.name(),
                train.len(),
                if quant.per_channel() {
                    "per-channel weights"
                } else {
                    "per-tensor weights"
                },
                REFERENCE_IMAGES.min(set.len())
            ));
        }
    }

    let flex_predictor = Predictor::new(&flex, device.clone(), norm);
    let q8 = flex_predictor.burn_q8_weights();
    let generic = Engine::with_kernel(&quant, KernelChoice::Generic)?;
    let engines: Vec<(String, Engine)> = width_models
        .iter()
        .map(|(label, m)| Ok((label.clone(), Engine::with_kernel(m, kernel)?)))
        .collect::<anyhow::Result<_>>()?;
    let mut extra_float = Vec::new();
    for (choice, wanted) in [
        (BackendChoice::Ndarray, true),
        (BackendChoice::Wgpu, args.wgpu),
    ] {
        if !wanted {
            continue;
        }
        match choice.device() {
            Ok(device) => extra_float.push((choice, Predictor::new(&flex, device, norm))),
            Err(_) => notes.push(format!(
                "{0} row skipped: not compiled in (run `cargo run -p xtask --features {0} -- bench`)",
                choice.name()
            )),
        }
    }
    let reference = |px: &[u8], n| quant.forward_reference(px, n);
    let mut candidates = vec![float_candidate("Burn f32 (flex)", &flex_predictor)];
    for (choice, predictor) in &extra_float {
        candidates.push(float_candidate(
            &format!("Burn f32 ({})", choice.name()),
            predictor,
        ));
    }
    candidates.push(float_candidate("Burn Q8S weights (Quantizer, flex)", &q8));
    candidates.push(reference_candidate(&reference, &main_width));
    if kernel != KernelChoice::Generic {
        candidates.push(engine_candidate(&generic, &main_width, 1));
    }
    for (label, engine) in &engines {
        candidates.push(engine_candidate(engine, label, 1));
        if threads > 1 {
            candidates.push(engine_candidate(engine, label, threads));
        }
    }

    // The scalar reference's fc2 accumulators per width: the saved model's from its own row
    // (every test image), the other widths' on the first images.
    let mut references: HashMap<String, Vec<i32>> = HashMap::new();
    for (label, model) in width_models.iter().skip(1) {
        let k = REFERENCE_IMAGES.min(set.len());
        let out = model.forward_reference(&set.pixels[..k * IMAGE_PIXELS], k)?;
        references.insert(label.clone(), out.fc2_acc);
    }
    let mut rows = Vec::new();
    let bar = crate::common::progress_bar(
        candidates.len() as u64 + 3,
        "bench [{bar:30}] {pos}/{len} {msg}",
    );
    for mut c in candidates {
        bar.set_message(c.name.clone());
        let row = measure(&mut c, &set, &args, &mut references)?;
        bar.inc(1);
        rows.push(row);
    }

    let (peer_results, scratch) = if args.no_onnxruntime {
        notes.push("ONNX Runtime rows skipped (--no-onnxruntime)".into());
        (None, None)
    } else {
        let scratch = tempfile::tempdir().context("creating a folder for the ONNX exports")?;
        let float_onnx = scratch.path().join("float.onnx");
        let int_onnx = scratch.path().join("int.onnx");
        let info = ExportInfo {
            dataset: args.data.dataset.dir_name().into(),
            source: display_path(&float_path),
        };
        crate::export_onnx::save_float_onnx(&flex, norm, &info, &float_onnx)?;
        burnq_onnx::save(&quant, &info, &int_onnx)?;
        let setup = PeerSetup {
            python: &args.python,
            float_onnx: &float_onnx,
            int_onnx: &int_onnx,
            scratch: scratch.path(),
            calibration: &calibration_set
                .as_ref()
                .expect("loaded when ONNX Runtime runs")
                .pixels,
            set: &set,
            threads,
            runs: args.runs.max(1),
            latency_calls: args.latency_calls,
        };
        let results = peer::run_peer(&setup, &|name| {
            bar.set_message(name.to_owned());
            if !name.contains('(') {
                bar.inc(1);
            }
        });
        (Some(results), Some(scratch))
    };
    drop(scratch);
    bar.finish_and_clear();
    if let Some(results) = &peer_results {
        rows.extend(peer_rows(results, &set, threads, &mut notes));
    }

    let macs = quant.macs_per_image();
    let base = rows[0].full_test_images_per_s;
    let burn_predictions = rows[0].predictions.clone();
    for r in &mut rows {
        r.speedup_vs_burn_f32 = r.full_test_images_per_s / base;
        r.gmac_per_s = r.full_test_images_per_s * macs as f64 / 1e9;
        r.agreement_with_burn_f32 = if r.predictions.is_empty() {
            f64::NAN
        } else {
            crate::pipeline::agreement(&r.predictions, &burn_predictions)
        };
    }
    if threads > 1 {
        notes.push(format!(
            "batch-1 latency of the {threads}-thread rows: the faster of 1 and {threads} threads, \
             both measured (column \"lat. threads\")"
        ));
    }
    let ratios = ratios(&rows, &main_width, threads);
    let instruction_limits = MachineLimits::measure().filter(|_| kernel != KernelChoice::Generic);
    let mut layer_rows = Vec::new();
    for (label, model) in &width_models {
        layer_rows.extend(layers::layer_times(
            label,
            model,
            kernel,
            &set.pixels,
            LAYER_RUNS,
            instruction_limits.as_ref(),
        )?);
    }
    let (onnxruntime, onnxruntime_int8_candidates, onnxruntime_int8_choice) = match peer_results {
        Some(r) => (r.versions, r.int8_candidates, r.int8_choice),
        None => (None, Vec::new(), None),
    };
    let report = Report {
        machine: MachineInfo::detect(),
        kernel: kernel.name().into(),
        dataset: args.data.dataset.dir_name().into(),
        test_images: set.len(),
        runs: args.runs,
        macs_per_image: macs,
        float_model_bytes: std::fs::metadata(&float_path)?.len(),
        int_model_bytes: std::fs::metadata(&quant_path)?.len(),
        float_weight_bytes: 4 * quant.parameter_count() as u64,
        int_weight_bytes: quant.weight_bytes() as u64,
        threads,
        rows,
        ratios,
        onnxruntime,
        onnxruntime_int8_candidates,
        onnxruntime_int8_choice,
        layers: layer_rows,
        instruction_limits,
        notes,
    };
    write_outputs(&report, &args)
}

/// Calls per stage in the per-layer breakdown (the median is reported).
const LAYER_RUNS: usize = 21;

/// Test images on which the extra widths' accumulators are checked against the scalar
/// reference (which is slow).
const REFERENCE_IMAGES: usize = 500;

/// The report's rows of ONNX Runtime: each graph at 1 and all threads, or one row with a note
/// when it could not run.
fn peer_rows(
    results: &PeerResults,
    set: &ImageSet,
    threads: usize,
    notes: &mut Vec<String>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for run in &results.runs {
        match run {
            Ok(run) => {
                let predictions: Vec<u8> = run.timing.classes.iter().map(|&c| c as u8).collect();
                let one = peer::at(&run.timing, 1);
                let mut counts = vec![1];
                if threads > 1 {
                    counts.push(threads);
                }
                for t in counts {
                    let Some(own) = peer::at(&run.timing, t) else {
                        continue;
                    };
                    let (own_lat, one_lat) = (
                        Latency::of(own.latency_us.clone()),
                        one.map(|o| Latency::of(o.latency_us.clone())),
                    );
                    let (latency, latency_threads) = match one_lat {
                        Some(one) if t > 1 && one.p50 < own_lat.p50 => (one, 1),
                        _ => (own_lat, t),
                    };
                    rows.push(Row {
                        engine: run.name.clone(),
                        family: "onnxruntime",
                        width: None,
                        threads: t.to_string(),
                        latency_threads: latency_threads.to_string(),
                        accuracy: peer::accuracy(&run.timing.classes, &set.labels),
                        agreement_with_burn_f32: f64::NAN,
                        bit_exact_with_reference: None,
                        latency_p50_us: latency.p50,
                        latency_p90_us: latency.p90,
                        latency_p99_us: latency.p99,
                        batch64_images_per_s: peer::median(&own.batch64_images_per_s),
                        full_test_images_per_s: peer::median(&own.full_images_per_s),
                        speedup_vs_burn_f32: 0.0,
                        gmac_per_s: 0.0,
                        batch64_images: set.len(),
                        note: None,
                        predictions: predictions.clone(),
                    });
                }
            }
            Err((name, error)) => {
                notes.push(format!("{name}: not measured: {error}"));
                rows.push(Row {
                    engine: name.clone(),
                    family: "onnxruntime",
                    width: None,
                    threads: "—".into(),
                    latency_threads: "—".into(),
                    accuracy: f64::NAN,
                    agreement_with_burn_f32: f64::NAN,
                    bit_exact_with_reference: None,
                    latency_p50_us: f64::NAN,
                    latency_p90_us: f64::NAN,
                    latency_p99_us: f64::NAN,
                    batch64_images_per_s: f64::NAN,
                    full_test_images_per_s: f64::NAN,
                    speedup_vs_burn_f32: 0.0,
                    gmac_per_s: 0.0,
                    batch64_images: 0,
                    note: Some(format!("not measured: {error}")),
                    predictions: Vec::new(),
                });
            }
        }
    }
    if let Some(choice) = &results.int8_choice {
        notes.push(format!(
            "ORT int8: ONNX Runtime's quantize_static of the float export (MinMax calibration on \
             the same training images as burnq's), the fastest of {} configurations within 0.5 \
             points of the most accurate: {choice}",
            results.int8_candidates.len()
        ));
    }
    notes.push(
        "ONNX Runtime: one session per thread count (intra_op_num_threads, inter-op 1, all graph \
         optimizations), the same u8 pixels as burnq, whole test set in batches of 1000, \
         `class` output only, through its Python API (a few µs of call overhead in the latency \
         figures); medians of --runs passes like burnq's rows"
            .into(),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_parse_as_w_then_a() {
        assert_eq!(parse_width("w6a8"), Ok(Some((6, 8))));
        assert_eq!(parse_width("w2a2"), Ok(Some((2, 2))));
        assert_eq!(parse_width("none"), Ok(None));
        for bad in ["w9a8", "w1a1", "8a8", "w8", "w8a", "wxa4", ""] {
            let err = parse_width(bad).unwrap_err();
            assert!(err.contains("w<W>a<A>"), "{bad}: {err}");
        }
    }
}
