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
use burnq_quant::{ConvertOptions, Engine, QuantModel, Workspace};
use serde::Serialize;

use crate::common::{DataArgs, display_path};
use crate::machine::MachineInfo;
use crate::paths::ArtifactDir;
use crate::peer::{self, Int8Candidate, PeerResults, PeerSetup};
use crate::plot::bar_chart;
use crate::quantize::{convert_with, parse_method};
use crate::table::markdown;

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

/// `w8a8` for 8-bit weights and activations.
fn width_label(model: &QuantModel) -> String {
    format!("w{}a{}", model.weight_bits(), model.act_bits())
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
    notes: Vec<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
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
    let mut candidates = vec![float_candidate("Burn f32 (flex)", &flex_predictor)];
    for (choice, predictor) in &extra_float {
        candidates.push(float_candidate(
            &format!("Burn f32 ({})", choice.name()),
            predictor,
        ));
    }
    candidates.push(float_candidate("Burn Q8S weights (Quantizer, flex)", &q8));
    candidates.push(reference_candidate(&quant, &main_width));
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
        notes,
    };
    write_outputs(&report, &args)
}

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

/// The ratios of this run: burnq's saved model against each ONNX Runtime row and the best,
/// each width against the saved model, at each thread count; batch-1 latency likewise.
fn ratios(rows: &[Row], main_width: &str, threads: usize) -> Vec<Ratio> {
    let mut out = Vec::new();
    let measured = |r: &&Row| r.full_test_images_per_s.is_finite();
    let label = |r: &Row| format!("{} ×{}", r.engine, r.threads);
    let mut push = |ratio: String, value: f64, num: &Row, den: &Row| {
        out.push(Ratio {
            ratio,
            value,
            numerator: label(num),
            denominator: label(den),
        })
    };
    // The headline: each side at its best thread count (a loaded machine may favour one).
    fn fastest(rows: Vec<&Row>) -> Option<&Row> {
        rows.into_iter().max_by(|a, b| {
            a.full_test_images_per_s
                .total_cmp(&b.full_test_images_per_s)
        })
    }
    fn quickest(rows: Vec<&Row>) -> Option<&Row> {
        rows.into_iter()
            .min_by(|a, b| a.latency_p50_us.total_cmp(&b.latency_p50_us))
    }
    let main_rows = || -> Vec<&Row> {
        rows.iter()
            .filter(measured)
            .filter(|r| is_fast_engine(r, main_width))
            .collect()
    };
    let ort_rows = || -> Vec<&Row> {
        rows.iter()
            .filter(measured)
            .filter(|r| r.family == "onnxruntime")
            .collect()
    };
    if let (Some(main), Some(ort)) = (fastest(main_rows()), fastest(ort_rows())) {
        push(
            format!(
                "burnq {main_width} / best ONNX Runtime, each at its best thread count, img/s full test set"
            ),
            main.full_test_images_per_s / ort.full_test_images_per_s,
            main,
            ort,
        );
    }
    if let (Some(main), Some(ort)) = (quickest(main_rows()), quickest(ort_rows())) {
        push(
            format!("best ONNX Runtime batch-1 p50 / burnq {main_width}'s, each at its best"),
            ort.latency_p50_us / main.latency_p50_us,
            ort,
            main,
        );
    }
    let mut counts = vec![threads];
    if threads > 1 {
        counts.push(1);
    }
    for t in counts {
        let t_label = t.to_string();
        let at_t = |r: &&Row| r.threads == t_label;
        let burnq = |w: &str| {
            rows.iter()
                .filter(measured)
                .filter(at_t)
                .find(|r| is_fast_engine(r, w))
        };
        let Some(main) = burnq(main_width) else {
            continue;
        };
        let ort: Vec<&Row> = rows
            .iter()
            .filter(measured)
            .filter(at_t)
            .filter(|r| r.family == "onnxruntime")
            .collect();
        if let Some(best) = ort.iter().max_by(|a, b| {
            a.full_test_images_per_s
                .total_cmp(&b.full_test_images_per_s)
        }) {
            push(
                format!(
                    "burnq {main_width} / best ONNX Runtime, img/s full test set, {t} thread(s)"
                ),
                main.full_test_images_per_s / best.full_test_images_per_s,
                main,
                best,
            );
        }
        for r in &ort {
            push(
                format!(
                    "burnq {main_width} / {}, img/s full test set, {t} thread(s)",
                    r.engine
                ),
                main.full_test_images_per_s / r.full_test_images_per_s,
                main,
                r,
            );
        }
        if let Some(best) = ort
            .iter()
            .min_by(|a, b| a.latency_p50_us.total_cmp(&b.latency_p50_us))
        {
            push(
                format!("best ONNX Runtime batch-1 p50 / burnq {main_width}'s, {t} thread(s)"),
                best.latency_p50_us / main.latency_p50_us,
                best,
                main,
            );
        }
        for r in rows.iter().filter(measured).filter(at_t) {
            if r.family == "burnq"
                && !std::ptr::eq(r, main)
                && burnq(r.width.as_deref().unwrap_or("")).is_some_and(|b| std::ptr::eq(b, r))
            {
                push(
                    format!(
                        "burnq {} / burnq {main_width}, img/s full test set, {t} thread(s)",
                        r.width.as_deref().unwrap_or("?")
                    ),
                    r.full_test_images_per_s / main.full_test_images_per_s,
                    r,
                    main,
                );
            }
        }
        if t == threads
            && let Some(burn) = rows.first().filter(measured)
        {
            push(
                format!("burnq {main_width} / {}, img/s full test set", burn.engine),
                main.full_test_images_per_s / burn.full_test_images_per_s,
                main,
                burn,
            );
        }
    }
    out
}

/// Whether `r` is burnq's fast engine (not the scalar reference, not the forced generic kernel
/// of the saved model) at width `width`.
fn is_fast_engine(r: &Row, width: &str) -> bool {
    r.family == "burnq"
        && r.width.as_deref() == Some(width)
        && !r.engine.contains("reference")
        && !r.engine.contains("(generic)")
}

/// Latency percentiles of single-image calls, in µs (NaN when none were made).
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if samples.is_empty() {
                f64::NAN
            } else {
                samples[((samples.len() - 1) as f64 * p).round() as usize]
            }
        };
        Self {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
        }
    }
}

fn float_candidate<'a>(name: &str, p: &'a Predictor) -> Candidate<'a> {
    Candidate {
        name: name.into(),
        family: "burn",
        width: None,
        threads: "all (rayon)".into(),
        chunk: 1000,
        slow: false,
        run: Box::new(move |px| Ok((p.predict(px), None))),
        single: None,
    }
}

fn reference_candidate<'a>(model: &'a QuantModel, width: &str) -> Candidate<'a> {
    Candidate {
        name: format!("burnq {width} scalar reference"),
        family: "burnq",
        width: Some(width.into()),
        threads: "1".into(),
        chunk: 1000,
        slow: true,
        run: Box::new(move |px| {
            let out = model.forward_reference(px, px.len() / IMAGE_PIXELS)?;
            Ok((out.predictions, Some(out.fc2_acc)))
        }),
        single: None,
    }
}

/// The fast engine on `threads` threads; with more than one, single images are also timed
/// on one thread (the faster gives the latency figures).
fn engine_candidate<'a>(engine: &'a Engine, width: &str, threads: usize) -> Candidate<'a> {
    let mut ws = Workspace::new();
    let mut single_ws = Workspace::new();
    let outputs = |out: burnq_quant::Output| (out.predictions, Some(out.fc2_acc));
    Candidate {
        name: format!("burnq {width} ({})", engine.kernel().name()),
        family: "burnq",
        width: Some(width.into()),
        threads: threads.to_string(),
        chunk: usize::MAX,
        slow: false,
        run: Box::new(move |px| {
            let n = px.len() / IMAGE_PIXELS;
            let out = if threads == 1 {
                engine.forward(&mut ws, px, n)?
            } else {
                engine.forward_parallel(px, n, threads)?
            };
            Ok(outputs(out))
        }),
        single: (threads > 1).then(|| -> RunFn<'a> {
            Box::new(move |px| {
                let n = px.len() / IMAGE_PIXELS;
                Ok(outputs(engine.forward(&mut single_ws, px, n)?))
            })
        }),
    }
}

/// Single-image latencies (µs) of `run` over `calls` calls after 20 untimed ones.
fn latencies(run: &mut RunFn, set: &ImageSet, calls: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(calls);
    for i in 0..calls + 20 {
        let img = set.image(i % set.len());
        let start = Instant::now();
        run(img)?;
        if i >= 20 {
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}

/// Verifies `c` on the whole test set, then times it. `references` holds the scalar
/// reference's fc2 accumulators per width (the first row of a width without one sets it).
fn measure(
    c: &mut Candidate,
    set: &ImageSet,
    args: &BenchArgs,
    references: &mut HashMap<String, Vec<i32>>,
) -> anyhow::Result<Row> {
    let whole_set = |c: &mut Candidate| -> anyhow::Result<(f64, RunOutput)> {
        let start = Instant::now();
        let (mut pred, mut acc) = (Vec::new(), None::<Vec<i32>>);
        for chunk in set
            .pixels
            .chunks(c.chunk.saturating_mul(IMAGE_PIXELS).max(IMAGE_PIXELS))
        {
            let (p, a) = (c.run)(chunk)?;
            pred.extend(p);
            if let Some(a) = a {
                acc.get_or_insert_with(Vec::new).extend(a);
            }
        }
        Ok((
            set.len() as f64 / start.elapsed().as_secs_f64(),
            (pred, acc),
        ))
    };
    // Verify before timing.
    let (first_rate, (pred, acc)) = whole_set(c)?;
    let correct = pred.iter().zip(&set.labels).filter(|(p, l)| p == l).count();
    let accuracy = correct as f64 / set.len() as f64;
    let key = c.width.clone().unwrap_or_default();
    let bit_exact = match (acc, references.get(&key)) {
        (Some(acc), None) => {
            references.insert(key, acc);
            Some(true)
        }
        // The reference may cover only the first images.
        (Some(acc), Some(reference)) => {
            let k = reference.len().min(acc.len());
            Some(acc[..k] == reference[..k])
        }
        (None, _) => None,
    };
    anyhow::ensure!(
        bit_exact != Some(false),
        "{} differs from the scalar reference",
        c.name
    );

    let (calls, b64_images, runs) = if c.slow {
        (args.latency_calls.min(200), 1280.min(set.len()), 1)
    } else {
        (args.latency_calls, set.len(), args.runs.max(1))
    };
    let mut latency = Latency::of(latencies(&mut c.run, set, calls)?);
    let mut latency_threads = c.threads.clone();
    if let Some(single) = c.single.as_mut() {
        let one = Latency::of(latencies(single, set, calls)?);
        if one.p50 < latency.p50 {
            latency = one;
            latency_threads = "1".into();
        }
    }

    let mut b64 = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for chunk in set.pixels[..b64_images * IMAGE_PIXELS].chunks(64 * IMAGE_PIXELS) {
            (c.run)(chunk)?;
        }
        b64.push(b64_images as f64 / start.elapsed().as_secs_f64());
    }
    let mut full = vec![first_rate];
    for _ in 1..runs {
        full.push(whole_set(c)?.0);
    }
    Ok(Row {
        engine: c.name.clone(),
        family: c.family,
        width: c.width.clone(),
        threads: c.threads.clone(),
        latency_threads,
        accuracy,
        agreement_with_burn_f32: f64::NAN,
        bit_exact_with_reference: bit_exact,
        latency_p50_us: latency.p50,
        latency_p90_us: latency.p90,
        latency_p99_us: latency.p99,
        batch64_images_per_s: median(b64),
        full_test_images_per_s: median(full),
        speedup_vs_burn_f32: 0.0,
        gmac_per_s: 0.0,
        batch64_images: b64_images,
        note: None,
        predictions: pred,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `value` formatted as `format` does, or `—` when it was not measured.
fn fmt(value: f64, format: impl Fn(f64) -> String) -> String {
    if value.is_finite() {
        format(value)
    } else {
        "—".into()
    }
}

fn write_outputs(report: &Report, args: &BenchArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(crate::paths::bench_dir);
    std::fs::create_dir_all(&out)?;
    let table = markdown(
        &[
            "engine",
            "threads",
            "accuracy",
            "bit-exact",
            "lat. threads",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "img/s b64",
            "img/s full",
            "× Burn f32",
            "GMAC/s",
        ],
        &report
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.engine.clone(),
                    r.threads.clone(),
                    fmt(r.accuracy, |a| format!("{:.2}%", 100.0 * a)),
                    r.bit_exact_with_reference
                        .map_or("n/a".into(), |b| if b { "yes".into() } else { "NO".into() }),
                    r.latency_threads.clone(),
                    fmt(r.latency_p50_us, |v| format!("{v:.0}")),
                    fmt(r.latency_p90_us, |v| format!("{v:.0}")),
                    fmt(r.latency_p99_us, |v| format!("{v:.0}")),
                    fmt(r.batch64_images_per_s, |v| format!("{v:.0}")),
                    fmt(r.full_test_images_per_s, |v| format!("{v:.0}")),
                    fmt(r.speedup_vs_burn_f32, |v| format!("{v:.2}")),
                    fmt(r.gmac_per_s, |v| format!("{v:.2}")),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let ratios = markdown(
        &["ratio (this run)", "value", "numerator", "denominator"],
        &report
            .ratios
            .iter()
            .map(|r| {
                vec![
                    r.ratio.clone(),
                    format!("{:.2}×", r.value),
                    r.numerator.clone(),
                    r.denominator.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let candidates = if report.onnxruntime_int8_candidates.is_empty() {
        String::new()
    } else {
        let rows: Vec<Vec<String>> = report
            .onnxruntime_int8_candidates
            .iter()
            .map(|c| {
                let chosen = report.onnxruntime_int8_choice.as_deref() == Some(c.config.as_str());
                vec![
                    format!("{}{}", c.config, if chosen { " (timed)" } else { "" }),
                    c.accuracy
                        .map_or("—".into(), |a| format!("{:.2}%", 100.0 * a)),
                    c.full_test_images_per_s
                        .map_or("—".into(), |v| format!("{v:.0}")),
                    c.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        format!(
            "\nONNX Runtime's quantize_static configurations (one pass, {} threads):\n\n{}",
            report.threads,
            markdown(&["configuration", "accuracy", "img/s full", "error"], &rows)
        )
    };
    let m = &report.machine;
    let header = format!(
        "# burnq benchmark\n\n{} · {} logical cores · features {} · kernel {} · {} · Burn {}{} · {}\n\n\
         {} test images of {}, {} MACs/image, medians of {} runs (the scalar reference: batch-64 on \
         its first 1280 images, one full-set run, 200 latency calls).\n\
         Model files: float {} bytes, integer {} bytes; weights in memory: float {} bytes, integer {} bytes.\n\n",
        m.cpu,
        m.logical_cores,
        m.features.join(" "),
        report.kernel,
        m.rustc,
        m.burn,
        report
            .onnxruntime
            .as_ref()
            .map_or(String::new(), |v| format!(" · {v}")),
        m.date_utc,
        report.test_images,
        report.dataset,
        report.macs_per_image,
        report.runs,
        report.float_model_bytes,
        report.int_model_bytes,
        report.float_weight_bytes,
        report.int_weight_bytes,
    );
    let notes: String = report.notes.iter().map(|n| format!("- {n}\n")).collect();
    let md = format!("{header}{table}\n{ratios}{candidates}\n{notes}");
    println!("\n{md}");
    let [json_path, md_path, svg_path] = crate::paths::bench_reports(&out);
    write_json_atomic(report, &json_path)?;
    write_atomic(&md_path, md.as_bytes())?;
    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter(|r| r.full_test_images_per_s.is_finite())
        .map(|r| {
            (
                format!("{} ×{}", r.engine, r.threads),
                r.full_test_images_per_s,
            )
        })
        .collect();
    let svg = bar_chart(
        &format!("Throughput on the {} test set ({})", report.dataset, m.cpu),
        "img/s",
        &bars,
    );
    write_atomic(&svg_path, svg.as_bytes())?;
    println!("wrote:");
    for f in [json_path, md_path, svg_path] {
        println!("  {}", display_path(&f));
    }
    Ok(())
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
