//! Running a model exported by `burnq-onnx` with ONNX Runtime (through its Python package, the
//! reference distribution: `pip install onnxruntime onnx numpy`) and measuring how far its
//! outputs are from burnq's integer engine.
//!
//! This is the one place burnq starts a Python interpreter. It serves `cargo xtask export-onnx
//! --verify` and the tests that run the exported graph (burnq-onnx's and xtask's), so it is a
//! crate of its own: the exporter library stays free of subprocesses, and the command and the
//! tests share one runner. Like `burnq-onnx`, it knows nothing of Burn.

mod error;

use std::path::Path;
use std::process::Command;

use burnq_quant::{IMAGE_PIXELS, NUM_CLASSES, Output};

pub use error::RuntimeError;

/// The Python side: checks the model with the ONNX checker and runs it on the CPU.
const SCRIPT: &str = include_str!("onnxruntime.py");

/// ONNX Runtime's outputs for `n` images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOutput {
    /// `logits_u8`, `[n, 10]`.
    pub logits_u8: Vec<u8>,
    /// `fc2_acc`, `[n, 10]`.
    pub fc2_acc: Vec<i32>,
    /// `class`, `[n]`.
    pub classes: Vec<i64>,
    /// Versions reported by the runtime, e.g. `"onnxruntime 1.32.0, onnx 1.23.2"`.
    pub versions: String,
}

/// Runs the ONNX model at `model` on `n × 784` raw pixels with ONNX Runtime, using
/// `python` (e.g. `"python3"`) with the `onnxruntime`, `onnx` and `numpy` packages.
pub fn run(python: &str, model: &Path, pixels: &[u8]) -> Result<RuntimeOutput, RuntimeError> {
    let n = pixels.len() / IMAGE_PIXELS;
    let io = |source| RuntimeError::Io {
        model: model.to_owned(),
        source,
    };
    let dir = tempfile::tempdir().map_err(io)?;
    let pixels_path = dir.path().join("pixels.bin");
    std::fs::write(&pixels_path, pixels).map_err(io)?;
    let output = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(model)
        .arg(&pixels_path)
        .arg(n.to_string())
        .arg(dir.path())
        .output()
        .map_err(|source| RuntimeError::Start {
            model: model.to_owned(),
            python: python.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        return Err(RuntimeError::Failed {
            model: model.to_owned(),
            python: python.to_owned(),
            status: output.status,
            message: last.unwrap_or("no message").to_owned(),
        });
    }
    let read = |name: &'static str, width: usize, len: usize| -> Result<Vec<u8>, RuntimeError> {
        let bytes = std::fs::read(dir.path().join(name)).map_err(io)?;
        if bytes.len() != len * width {
            return Err(RuntimeError::Output {
                model: model.to_owned(),
                file: name,
                len: bytes.len(),
                expected: len * width,
            });
        }
        Ok(bytes)
    };
    let logits_u8 = read("logits_u8.bin", 1, n * NUM_CLASSES)?;
    let fc2_acc = read("fc2_acc.bin", 4, n * NUM_CLASSES)?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let classes = read("class.bin", 8, n)?
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok(RuntimeOutput {
        logits_u8,
        fc2_acc,
        classes,
        versions: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    })
}

/// How closely a runtime reproduces burnq on the same images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agreement {
    /// Images compared.
    pub images: usize,
    /// burnq's accuracy against the labels.
    pub burnq_accuracy: f64,
    /// The runtime's accuracy against the labels.
    pub runtime_accuracy: f64,
    /// Fraction of images with the same predicted class.
    pub classes: f64,
    /// Fraction of images whose 10 `u8` logits are all equal.
    pub logits_u8_rows: f64,
    /// Fraction of `u8` logits that are equal.
    pub logits_u8_values: f64,
    /// Largest `|Δ|` between `u8` logits, in codes.
    pub logits_u8_max_diff: u8,
    /// Fraction of images whose 10 fc2 accumulators are all equal.
    pub fc2_acc_rows: f64,
}

/// Compares burnq's `output` with the runtime's on images labelled `labels`.
pub fn compare(output: &Output, runtime: &RuntimeOutput, labels: &[u8]) -> Agreement {
    let n = labels.len();
    let fraction = |count: usize, of: usize| count as f64 / of.max(1) as f64;
    let correct = |classes: &mut dyn Iterator<Item = i64>| {
        classes
            .zip(labels)
            .filter(|(c, l)| *c == i64::from(**l))
            .count()
    };
    let burnq_classes = || output.predictions.iter().map(|&c| i64::from(c));
    let rows_equal = |a: &[u8], b: &[u8]| {
        a.chunks_exact(NUM_CLASSES)
            .zip(b.chunks_exact(NUM_CLASSES))
            .filter(|(x, y)| x == y)
            .count()
    };
    let acc_rows = output
        .fc2_acc
        .chunks_exact(NUM_CLASSES)
        .zip(runtime.fc2_acc.chunks_exact(NUM_CLASSES))
        .filter(|(x, y)| x == y)
        .count();
    let pairs = || output.logits_u8.iter().zip(&runtime.logits_u8);
    Agreement {
        images: n,
        burnq_accuracy: fraction(correct(&mut burnq_classes()), n),
        runtime_accuracy: fraction(correct(&mut runtime.classes.iter().copied()), n),
        classes: fraction(
            burnq_classes()
                .zip(&runtime.classes)
                .filter(|(a, b)| a == *b)
                .count(),
            n,
        ),
        logits_u8_rows: fraction(rows_equal(&output.logits_u8, &runtime.logits_u8), n),
        logits_u8_values: fraction(pairs().filter(|(a, b)| a == b).count(), n * NUM_CLASSES),
        logits_u8_max_diff: pairs().map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0),
        fc2_acc_rows: fraction(acc_rows, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_a_start_error_naming_the_model() {
        let model = Path::new("some/dir/model.onnx");
        let err = run("burnq-no-such-python", model, &[0; IMAGE_PIXELS]).unwrap_err();
        assert!(matches!(err, RuntimeError::Start { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("model.onnx")
                && message.contains("burnq-no-such-python")
                && message.contains("pip install onnxruntime"),
            "{message}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_failing_interpreter_is_a_failed_error() {
        // `false` ignores its arguments and exits with status 1, printing nothing.
        let err = run("false", Path::new("model.onnx"), &[0; IMAGE_PIXELS]).unwrap_err();
        assert!(matches!(err, RuntimeError::Failed { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("`false` failed") && message.contains("no message"),
            "{message}"
        );
    }
}
