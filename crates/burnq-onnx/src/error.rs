//! Errors of the ONNX export.

use std::path::PathBuf;

/// What can go wrong when writing an ONNX file.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be written.
    #[error("cannot write ONNX model {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime could not run the model.
    #[error(
        "ONNX Runtime could not run {}: {reason} (it needs Python 3 with `pip install onnxruntime onnx numpy`)",
        model.display()
    )]
    Runtime {
        /// The ONNX file.
        model: PathBuf,
        /// What failed.
        reason: String,
    },
}
