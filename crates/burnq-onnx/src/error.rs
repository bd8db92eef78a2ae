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
}
