//! `cargo xtask bench`: every engine verified for accuracy on the full test set, then timed
//! on the same machine and data — batch-1 latency, batch-64 and full-test-set throughput —
//! and reported as a table, `artifacts/bench/report.{json,md}` and `throughput.svg`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use burnq_arch::write_atomic;
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::checkpoint::{load_model, write_json_atomic};
use burnq_model::predict::Predictor;
use burnq_model::{BackendChoice, NetConfig};
use burnq_quant::kernels::KernelChoice;
use burnq_quant::{Engine, QuantModel, Workspace};
use serde::Serialize;

use crate::common::{DataArgs, display_path};
use crate::machine::MachineInfo;
use crate::paths::ArtifactDir;
use crate::plot::bar_chart;
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
}

/// The predictions (and, for integer engines, fc2 accumulators) of one call.
type RunOutput = (Vec<u8>, Option<Vec<i32>>);

/// A function from `n × 784` raw pixels to [`RunOutput`].
type RunFn<'a> = Box<dyn FnMut(&[u8]) -> anyhow::Result<RunOutput> + 'a>;

/// One engine under test.
struct Candidate<'a> {
    name: String,
    threads: String,
    /// Images per call when running the whole test set.
    chunk: usize,
    /// A slow engine is timed on fewer images and calls.
    slow: bool,
    run: RunFn<'a>,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
struct Row {
    engine: String,
    threads: String,
    accuracy: f64,
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
    rows: Vec<Row>,
    notes: Vec<String>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let models = ArtifactDir::new(args.models.as_deref(), args.data.dataset);
    let float_path = models.float_model();
    let quant_path = models.quant_model();
    let quant = burnq_quant::load(&quant_path)
        .context("loading the integer model (`cargo xtask quantize` writes it)")?;
    let set = args.data.load_test()?;
    let norm = args.data.dataset.normalization();
    let flex = load_model(
        &NetConfig::new(),
        &float_path,
        &BackendChoice::Flex.device()?,
    )?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let kernel = KernelChoice::selected()?;
    let mut notes = Vec::new();

    let flex_predictor = Predictor::new(&flex, BackendChoice::Flex.device()?, norm);
    let q8 = flex_predictor.burn_q8_weights();
    let generic = Engine::with_kernel(&quant, KernelChoice::Generic)?;
    let fast = Engine::with_kernel(&quant, kernel)?;
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
    candidates.push(reference_candidate(&quant));
    if kernel != KernelChoice::Generic {
        candidates.push(engine_candidate(&generic, 1));
    }
    candidates.push(engine_candidate(&fast, 1));
    if threads > 1 {
        candidates.push(engine_candidate(&fast, threads));
    }

    let mut rows = Vec::new();
    let mut reference_acc: Option<Vec<i32>> = None;
    let bar = crate::common::progress_bar(
        candidates.len() as u64,
        "bench [{bar:30}] {pos}/{len} {msg}",
    );
    for mut c in candidates {
        bar.set_message(c.name.clone());
        let row = measure(&mut c, &set, &args, &mut reference_acc)?;
        bar.inc(1);
        rows.push(row);
    }
    bar.finish_and_clear();

    let macs = quant.macs_per_image();
    let base = rows[0].full_test_images_per_s;
    for r in &mut rows {
        r.speedup_vs_burn_f32 = r.full_test_images_per_s / base;
        r.gmac_per_s = r.full_test_images_per_s * macs as f64 / 1e9;
    }
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
        rows,
        notes,
    };
    write_outputs(&report, &args)
}

fn float_candidate<'a>(name: &str, p: &'a Predictor) -> Candidate<'a> {
    Candidate {
        name: name.into(),
        threads: "all (rayon)".into(),
        chunk: 1000,
        slow: false,
        run: Box::new(move |px| Ok((p.predict(px), None))),
    }
}

fn reference_candidate(model: &QuantModel) -> Candidate<'_> {
    Candidate {
        name: "integer scalar reference".into(),
        threads: "1".into(),
        chunk: 1000,
        slow: true,
        run: Box::new(move |px| {
            let out = model.forward_reference(px, px.len() / IMAGE_PIXELS)?;
            Ok((out.predictions.clone(), Some(out.fc2_acc)))
        }),
    }
}

fn engine_candidate(engine: &Engine, threads: usize) -> Candidate<'_> {
    let mut ws = Workspace::new();
    Candidate {
        name: format!("integer fast ({})", engine.kernel().name()),
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
            Ok((out.predictions.clone(), Some(out.fc2_acc)))
        }),
    }
}

/// Verifies `c` on the whole test set, then times it.
fn measure(
    c: &mut Candidate,
    set: &ImageSet,
    args: &BenchArgs,
    reference_acc: &mut Option<Vec<i32>>,
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
    let bit_exact = match (acc, reference_acc.as_ref()) {
        (Some(acc), None) => {
            *reference_acc = Some(acc);
            Some(true)
        }
        (Some(acc), Some(reference)) => Some(&acc == reference),
        (None, _) => None,
    };
    anyhow::ensure!(
        bit_exact != Some(false),
        "{} differs from the scalar reference",
        c.name
    );

    let (calls, b64_images, runs) = if c.slow {
        (args.latency_calls.min(200), 1280, 1)
    } else {
        (args.latency_calls, set.len(), args.runs.max(1))
    };
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls + 20 {
        let img = set.image(i % set.len());
        let start = Instant::now();
        (c.run)(img)?;
        if i >= 20 {
            latencies.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

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
        threads: c.threads.clone(),
        accuracy,
        bit_exact_with_reference: bit_exact,
        latency_p50_us: pct(0.5),
        latency_p90_us: pct(0.9),
        latency_p99_us: pct(0.99),
        batch64_images_per_s: median(b64),
        full_test_images_per_s: median(full),
        speedup_vs_burn_f32: 0.0,
        gmac_per_s: 0.0,
        batch64_images: b64_images,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
                    format!("{:.2}%", 100.0 * r.accuracy),
                    r.bit_exact_with_reference
                        .map_or("n/a".into(), |b| if b { "yes".into() } else { "NO".into() }),
                    format!("{:.0}", r.latency_p50_us),
                    format!("{:.0}", r.latency_p90_us),
                    format!("{:.0}", r.latency_p99_us),
                    format!("{:.0}", r.batch64_images_per_s),
                    format!("{:.0}", r.full_test_images_per_s),
                    format!("{:.2}", r.speedup_vs_burn_f32),
                    format!("{:.2}", r.gmac_per_s),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let m = &report.machine;
    let header = format!(
        "# burnq benchmark\n\n{} · {} logical cores · features {} · kernel {} · {} · Burn {} · {}\n\n\
         {} test images of {}, {} MACs/image, medians of {} runs (the scalar reference: batch-64 on \
         its first 1280 images, one full-set run, 200 latency calls).\n\
         Model files: float {} bytes, integer {} bytes; weights in memory: float {} bytes, integer {} bytes.\n\n",
        m.cpu,
        m.logical_cores,
        m.features.join(" "),
        report.kernel,
        m.rustc,
        m.burn,
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
    let md = format!("{header}{table}\n{notes}");
    println!("\n{md}");
    let [json_path, md_path, svg_path] = crate::paths::bench_reports(&out);
    write_json_atomic(report, &json_path)?;
    write_atomic(&md_path, md.as_bytes())?;
    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
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
