//! Typed errors of the model crate.

use std::path::PathBuf;

/// What can go wrong while choosing a device, training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A backend this build was compiled without.
    #[error(
        "backend `{backend}` is not compiled in: run `cargo run -p xtask --features {feature} -- <command> --backend {backend}`"
    )]
    BackendNotCompiled {
        backend: &'static str,
        feature: &'static str,
    },
    /// Unknown backend name.
    #[error("unknown backend `{0}` (expected flex, ndarray or wgpu)")]
    UnknownBackend(String),
    /// The model record could not be written.
    #[error("cannot save model to {path}: {message}")]
    Save { path: PathBuf, message: String },
    /// The model record is missing, corrupt, or does not match the network.
    #[error("cannot load model from {path}: {message}")]
    Load { path: PathBuf, message: String },
    /// A PyTorch file could not be imported.
    #[error("cannot import PyTorch model {path}: {message}")]
    Import { path: PathBuf, message: String },
    /// A JSON side file could not be read or written.
    #[error("{path}: {message}")]
    Json { path: PathBuf, message: String },
    /// Input sizes the network cannot take.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Training diverged (loss became NaN or infinite).
    #[error("training diverged at epoch {epoch}, batch {batch}: loss is {loss}")]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
    },
    /// A data loader item failed.
    #[error("data loader: {0}")]
    Data(String),
}
