//! Errors of an ONNX Runtime run.

use std::path::PathBuf;
use std::process::ExitStatus;

/// What can go wrong when running an ONNX model with ONNX Runtime. Every message names the
/// model and ends with what the runner needs: Python 3 with
/// `pip install onnxruntime onnx numpy`.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The interpreter could not be started (no such program).
    #[error(
        "ONNX Runtime could not run {}: cannot start `{python}`: {source} (it needs Python 3 with `pip install onnxruntime onnx numpy`)",
        model.display()
    )]
    Start {
        /// The ONNX file.
        model: PathBuf,
        /// The interpreter.
        python: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The interpreter failed: a missing package, or ONNX Runtime refused or could not run
    /// the model.
    #[error(
        "ONNX Runtime could not run {}: `{python}` failed ({status}): {message} (it needs Python 3 with `pip install onnxruntime onnx numpy`)",
        model.display()
    )]
    Failed {
        /// The ONNX file.
        model: PathBuf,
        /// The interpreter.
        python: String,
        /// Its exit status.
        status: ExitStatus,
        /// The last line it wrote to standard error (`no message` if none).
        message: String,
    },
    /// The files exchanged with the interpreter (in a temporary folder) could not be written
    /// or read.
    #[error(
        "ONNX Runtime could not run {}: {source} (it needs Python 3 with `pip install onnxruntime onnx numpy`)",
        model.display()
    )]
    Io {
        /// The ONNX file.
        model: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An output file of the run has the wrong length.
    #[error(
        "ONNX Runtime could not run {}: {file}: {len} bytes, expected {expected} (it needs Python 3 with `pip install onnxruntime onnx numpy`)",
        model.display()
    )]
    Output {
        /// The ONNX file.
        model: PathBuf,
        /// The output file's name.
        file: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The length expected.
        expected: usize,
    },
}
