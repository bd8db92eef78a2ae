//! Typed errors of the model crate.

use std::path::PathBuf;

/// Why a file could not be read or written: the operating system's error, or the encoder's
/// or parser's.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The JSON could not be encoded or parsed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Burn could not encode the record.
    #[error(transparent)]
    Record(#[from] burn::store::RecordError),
}

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
    /// The model record could not be encoded or written.
    #[error("cannot save model to {}", path.display())]
    Save {
        path: PathBuf,
        #[source]
        source: FileError,
    },
    /// There is no model file at `path`.
    #[error(
        "cannot load model from {}: file not found (run `cargo xtask train` first, or pass the right --dataset/--out)",
        path.display()
    )]
    NotFound { path: PathBuf },
    /// The model record is corrupt, or does not match the network.
    #[error("cannot load model from {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: burn::store::RecordError,
    },
    /// The model record holds a NaN or an infinity.
    #[error("cannot load model from {}: {layer} holds a NaN or infinite value", path.display())]
    NonFinite { path: PathBuf, layer: &'static str },
    /// A network description (a model's architecture file) cannot be read, is not a valid
    /// network, or does not describe the model it is saved or loaded with.
    #[error("network description {}", path.display())]
    Arch {
        path: PathBuf,
        #[source]
        source: burnq_arch::ArchError,
    },
    /// A PyTorch file could not be imported.
    #[error("cannot import PyTorch model {path}: {message}")]
    Import { path: PathBuf, message: String },
    /// A PyTorch file that does not hold a described network's tensors: every missing,
    /// unexpected, mis-shaped, non-float or non-finite tensor, by the file's key.
    #[error(
        "cannot import PyTorch model {} as {arch}: {}",
        path.display(),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    ImportArch {
        path: PathBuf,
        arch: String,
        problems: Vec<crate::import_arch::ImportProblem>,
    },
    /// A JSON side file could not be read, parsed, encoded or written.
    #[error("{}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: FileError,
    },
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
