//! ONNX Runtime inside `cargo xtask bench`: the same test images and thread counts as burnq,
//! through the Python runner of `burnq-onnxruntime`, on three graphs of the same model: the
//! float export (ORT fp32), ONNX Runtime's own `quantize_static` int8 of it (every sensible
//! configuration is tried, the fastest plausible one is kept: ORT int8) and burnq's integer
//! export. Without a usable Python the rows stay, empty, with a note.

use std::path::Path;

use burnq_data::ImageSet;
use burnq_onnxruntime::{Int8Config, ThreadTiming, TimeSpec, Timing};
use serde::Serialize;

/// What `bench` needs to time ONNX Runtime.
pub struct PeerSetup<'a> {
    /// Python interpreter with onnxruntime, onnx and numpy.
    pub python: &'a str,
    /// The float export (`burnq_onnx::to_float_onnx` of the float model).
    pub float_onnx: &'a Path,
    /// burnq's integer export of the benchmarked integer model.
    pub int_onnx: &'a Path,
    /// Folder for ONNX Runtime's int8 models.
    pub scratch: &'a Path,
    /// Raw pixels of the calibration images (the first N training images, as burnq's).
    pub calibration: &'a [u8],
    /// The test set.
    pub set: &'a ImageSet,
    /// All threads (the 1-thread session is always timed as well).
    pub threads: usize,
    /// Timed passes per throughput figure.
    pub runs: usize,
    /// Single-image calls per latency figure.
    pub latency_calls: usize,
}

/// One `quantize_static` configuration as tried: its accuracy and whole-set throughput on all
/// threads (one pass), or why it failed.
#[derive(Debug, Clone, Serialize)]
pub struct Int8Candidate {
    pub config: String,
    pub accuracy: Option<f64>,
    pub full_test_images_per_s: Option<f64>,
    pub error: Option<String>,
}

/// One measured ONNX Runtime graph.
pub struct PeerRun {
    /// Row label, e.g. `ORT fp32` or `ORT int8 (QOperator u8/s8 per-tensor)`.
    pub name: String,
    pub timing: Timing,
}

/// What ONNX Runtime gave, or why it did not.
pub struct PeerResults {
    /// Each graph timed, or the row name and the error that stopped it.
    pub runs: Vec<Result<PeerRun, (String, String)>>,
    pub int8_candidates: Vec<Int8Candidate>,
    pub int8_choice: Option<String>,
    pub versions: Option<String>,
}

/// Row names of the three graphs.
pub const FP32: &str = "ORT fp32";
pub const INT8: &str = "ORT int8";
pub const BURNQ_GRAPH: &str = "ORT on burnq's integer ONNX";

/// Whole-set batch size of ONNX Runtime's throughput figure (as the issue measured it).
const BATCH: usize = 1000;

/// Times the three graphs. Errors of ONNX Runtime become failed runs (rows with a note), never
/// an error of `bench`.
pub fn run_peer(s: &PeerSetup, progress: &dyn Fn(&str)) -> PeerResults {
    let mut thread_counts = vec![1];
    if s.threads > 1 {
        thread_counts.push(s.threads);
    }
    let spec = TimeSpec {
        threads: thread_counts,
        runs: s.runs,
        latency_calls: s.latency_calls,
        batch: BATCH,
    };
    let time = |model: &Path| burnq_onnxruntime::time(s.python, model, &s.set.pixels, &spec);
    let mut runs = Vec::new();
    let mut versions = None;
    let mut push = |name: String, result: Result<Timing, String>| {
        runs.push(match result {
            Ok(timing) => {
                versions.get_or_insert_with(|| timing.versions.clone());
                Ok(PeerRun { name, timing })
            }
            Err(e) => Err((name, e)),
        })
    };
    let time = |model: &Path| time(model).map_err(|e| e.to_string());
    progress(FP32);
    let fp32 = time(s.float_onnx);
    let fp32_error = fp32.as_ref().err().cloned();
    push(FP32.into(), fp32);

    // ONNX Runtime's own int8: each configuration once, quickly; the fastest whose accuracy is
    // within half a point of the best candidate's is timed in full.
    let mut candidates = Vec::new();
    let mut best: Option<(usize, f64)> = None;
    let quick = TimeSpec {
        threads: vec![s.threads],
        runs: 1,
        latency_calls: 0,
        batch: BATCH,
    };
    if fp32_error.is_none() {
        for (i, config) in Int8Config::CANDIDATES.iter().enumerate() {
            progress(&format!("{INT8} {}", config.name()));
            let path = int8_path(s.scratch, i);
            let result = burnq_onnxruntime::quantize_static(
                s.python,
                s.float_onnx,
                s.calibration,
                &path,
                *config,
            )
            .and_then(|_| burnq_onnxruntime::time(s.python, &path, &s.set.pixels, &quick));
            candidates.push(match result {
                Ok(t) => Int8Candidate {
                    config: config.name(),
                    accuracy: Some(accuracy(&t.classes, &s.set.labels)),
                    full_test_images_per_s: t.timings.first().map(|x| median(&x.full_images_per_s)),
                    error: None,
                },
                Err(e) => Int8Candidate {
                    config: config.name(),
                    accuracy: None,
                    full_test_images_per_s: None,
                    error: Some(e.to_string()),
                },
            });
        }
        let top = candidates
            .iter()
            .filter_map(|c| c.accuracy)
            .fold(0.0, f64::max);
        for (i, c) in candidates.iter().enumerate() {
            if let (Some(a), Some(rate)) = (c.accuracy, c.full_test_images_per_s)
                && a >= top - 0.005
                && best.is_none_or(|(_, r)| rate > r)
            {
                best = Some((i, rate));
            }
        }
    }
    let int8_choice = best.map(|(i, _)| Int8Config::CANDIDATES[i].name());
    match best {
        Some((i, _)) => {
            let name = format!("{INT8} ({})", Int8Config::CANDIDATES[i].name());
            progress(&name);
            push(name, time(&int8_path(s.scratch, i)));
        }
        None => push(
            INT8.into(),
            Err(candidates
                .iter()
                .find_map(|c| c.error.clone())
                .or_else(|| fp32_error.map(|e| format!("not run, as ORT fp32 failed: {e}")))
                .unwrap_or_else(|| "no configuration ran".into())),
        ),
    }
    progress(BURNQ_GRAPH);
    push(BURNQ_GRAPH.into(), time(s.int_onnx));
    PeerResults {
        runs,
        int8_candidates: candidates,
        int8_choice,
        versions,
    }
}

fn int8_path(scratch: &Path, i: usize) -> std::path::PathBuf {
    scratch.join(format!("ort-int8-{i}.onnx"))
}

/// Fraction of `classes` equal to `labels`.
pub fn accuracy(classes: &[i64], labels: &[u8]) -> f64 {
    let correct = classes
        .iter()
        .zip(labels)
        .filter(|(c, l)| **c == i64::from(**l))
        .count();
    correct as f64 / labels.len().max(1) as f64
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The timing of `threads` threads, if measured.
pub fn at(timing: &Timing, threads: usize) -> Option<&ThreadTiming> {
    timing.timings.iter().find(|t| t.threads == threads)
}
