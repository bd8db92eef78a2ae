//! Typed errors of the calibration crate.

use std::path::PathBuf;

/// What can go wrong while calibrating or reading a calibration file.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    /// No sample to calibrate on.
    #[error("the calibration set is empty: ask for at least one sample (--calib-samples)")]
    Empty,
    /// The split holds fewer images than requested.
    #[error(
        "asked for {requested} calibration samples but the {split} split holds only {available}"
    )]
    NotEnoughSamples {
        requested: usize,
        available: usize,
        split: String,
    },
    /// An activation was NaN or infinite: the float model is broken.
    #[error(
        "activation `{tap}` holds NaN or infinite values: the float model is corrupt or diverged"
    )]
    NonFinite { tap: String },
    /// A range estimate could not be computed.
    #[error("range estimate of `{tap}` failed")]
    Range {
        tap: String,
        #[source]
        source: Box<burnq_quant::QuantError>,
    },
    /// A quantization point of the network was not calibrated.
    #[error(
        "the calibration of architecture {architecture:?} has no range for `{tap}`: calibrate this network again"
    )]
    MissingTap { tap: String, architecture: String },
    /// A batch size of zero.
    #[error("the calibration batch size must be at least 1")]
    ZeroBatch,
    /// The calibration file could not be read (run `cargo xtask quantize` to make it).
    #[error("{}: cannot read the calibration (run `cargo xtask quantize` to calibrate)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The calibration file is not the JSON of a calibration.
    #[error("{}: not a calibration file", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The calibration file is readable but inconsistent.
    #[error("{path}: invalid calibration: {message}")]
    Invalid { path: PathBuf, message: String },
}
