//! ONNX Runtime as the peer `cargo xtask bench` measures burnq against: timing any of the
//! exported graphs (the float one, burnq's integer one, ONNX Runtime's own int8 quantization of
//! the float one) on the same images and thread counts as burnq ([`time`]), and that int8
//! quantization itself ([`quantize_static`]). The Python side is `peer.py`.

use std::ffi::OsStr;
use std::path::Path;

use burnq_quant::IMAGE_PIXELS;
use serde::Deserialize;

use crate::{Outputs, RuntimeError, invoke, stage};

/// The Python side: `quantize` and `time` modes.
const SCRIPT: &str = include_str!("peer.py");

/// How to time a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSpec {
    /// Intra-op thread counts, one session each (e.g. `[1, 2]`).
    pub threads: Vec<usize>,
    /// Timed passes of the batch-64 and whole-set measurements.
    pub runs: usize,
    /// Single-image calls of the latency measurement (after 20 untimed ones).
    pub latency_calls: usize,
    /// Images per call of the whole-set measurement.
    pub batch: usize,
}

/// Raw figures of one thread count.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ThreadTiming {
    /// `intra_op_num_threads`.
    pub threads: usize,
    /// Images per second of each whole-set pass (the first also gave the predictions).
    pub full_images_per_s: Vec<f64>,
    /// Images per second of each batch-64 pass.
    pub batch64_images_per_s: Vec<f64>,
    /// Microseconds of each single-image call.
    pub latency_us: Vec<f64>,
}

/// What [`time`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// e.g. `"onnxruntime 1.32.0"`.
    pub versions: String,
    /// The `class` output of every image (first thread count's whole-set pass).
    pub classes: Vec<i64>,
    /// One entry per thread count, in the order asked.
    pub timings: Vec<ThreadTiming>,
}

#[derive(Deserialize)]
struct Report {
    versions: String,
    timings: Vec<ThreadTiming>,
}

/// Runs the ONNX model at `model` (input `pixels` u8 `[N,1,28,28]`, output `class` i64 `[N]`)
/// with ONNX Runtime on `n × 784` raw pixels and times it as `spec` asks.
pub fn time(
    python: &str,
    model: &Path,
    pixels: &[u8],
    spec: &TimeSpec,
) -> Result<Timing, RuntimeError> {
    let n = pixels.len() / IMAGE_PIXELS;
    let (dir, pixels_path) = stage(model, "pixels.bin", pixels)?;
    let threads: Vec<String> = spec.threads.iter().map(ToString::to_string).collect();
    let numbers = [
        n.to_string(),
        threads.join(","),
        spec.runs.max(1).to_string(),
        spec.latency_calls.to_string(),
        spec.batch.max(1).to_string(),
    ];
    let args: Vec<&OsStr> = [
        OsStr::new("time"),
        model.as_os_str(),
        pixels_path.as_os_str(),
        numbers[0].as_ref(),
        dir.path().as_os_str(),
    ]
    .into_iter()
    .chain(numbers[1..].iter().map(AsRef::as_ref))
    .collect();
    let stdout = invoke(python, model, SCRIPT, args)?;
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty());
    let report: Report =
        serde_json::from_str(last.unwrap_or("")).map_err(|source| RuntimeError::Report {
            model: model.to_owned(),
            source,
        })?;
    let classes = Outputs { dir, model }.classes(n)?;
    Ok(Timing {
        versions: report.versions,
        classes,
        timings: report.timings,
    })
}

/// ONNX Runtime's two ways of writing a quantized graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Format {
    /// Quantized operators (`QLinearConv`, `QLinearMatMul`, …).
    QOperator,
    /// Float operators between `QuantizeLinear`/`DequantizeLinear` pairs, fused by the runtime.
    Qdq,
}

/// One configuration of ONNX Runtime's `quantize_static` (activations are always `u8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int8Config {
    /// Graph format.
    pub format: Int8Format,
    /// One weight scale per output channel.
    pub per_channel: bool,
    /// Signed (`s8`) or unsigned (`u8`) weights.
    pub signed_weights: bool,
}

impl Int8Config {
    /// The configurations worth trying on a CPU: QOperator and QDQ, per tensor and per channel,
    /// u8 activations with s8 weights (ONNX Runtime's default), and QOperator u8/u8 (which its
    /// documentation suggests on AVX2 machines without VNNI, where u8×s8 may saturate).
    pub const CANDIDATES: [Self; 5] = [
        Self::new(Int8Format::QOperator, false, true),
        Self::new(Int8Format::QOperator, true, true),
        Self::new(Int8Format::Qdq, false, true),
        Self::new(Int8Format::Qdq, true, true),
        Self::new(Int8Format::QOperator, false, false),
    ];

    const fn new(format: Int8Format, per_channel: bool, signed_weights: bool) -> Self {
        Self {
            format,
            per_channel,
            signed_weights,
        }
    }

    /// e.g. `"QOperator u8/s8 per-channel"`.
    pub fn name(&self) -> String {
        format!(
            "{} u8/{} {}",
            match self.format {
                Int8Format::QOperator => "QOperator",
                Int8Format::Qdq => "QDQ",
            },
            if self.signed_weights { "s8" } else { "u8" },
            if self.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        )
    }
}

/// ONNX Runtime's `quantize_static` of the float export at `float_model`, calibrated (MinMax)
/// on `n × 784` raw `calibration` pixels, written to `out`. Returns the runtime's version.
pub fn quantize_static(
    python: &str,
    float_model: &Path,
    calibration: &[u8],
    out: &Path,
    config: Int8Config,
) -> Result<String, RuntimeError> {
    let (_dir, calib_path) = stage(float_model, "calibration.bin", calibration)?;
    let n = (calibration.len() / IMAGE_PIXELS).to_string();
    let args: [&OsStr; 8] = [
        "quantize".as_ref(),
        float_model.as_os_str(),
        calib_path.as_os_str(),
        n.as_ref(),
        out.as_os_str(),
        match config.format {
            Int8Format::QOperator => "qoperator",
            Int8Format::Qdq => "qdq",
        }
        .as_ref(),
        if config.per_channel { "1" } else { "0" }.as_ref(),
        if config.signed_weights { "s8" } else { "u8" }.as_ref(),
    ];
    Ok(invoke(python, float_model, SCRIPT, args)?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_a_start_error_for_both_modes() {
        let model = Path::new("float.onnx");
        let spec = TimeSpec {
            threads: vec![1],
            runs: 1,
            latency_calls: 1,
            batch: 1,
        };
        let err = time("burnq-no-such-python", model, &[0; IMAGE_PIXELS], &spec).unwrap_err();
        assert!(matches!(err, RuntimeError::Start { .. }), "{err:?}");
        let err = quantize_static(
            "burnq-no-such-python",
            model,
            &[0; IMAGE_PIXELS],
            Path::new("int8.onnx"),
            Int8Config::CANDIDATES[0],
        )
        .unwrap_err();
        assert!(err.to_string().contains("float.onnx"), "{err}");
    }

    #[test]
    fn candidate_names_are_distinct() {
        let mut names: Vec<String> = Int8Config::CANDIDATES.iter().map(|c| c.name()).collect();
        assert_eq!(names[1], "QOperator u8/s8 per-channel");
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Int8Config::CANDIDATES.len());
    }
}
