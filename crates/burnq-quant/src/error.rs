//! The crate's single error type, [`QuantError`].
//!
//! Every fallible operation returns it: invalid quantization parameters, shapes that do not
//! fit the network, accumulators that could overflow `i32`, and every problem with a model
//! file. File variants carry the path of the file so that a message alone locates the fault.

use std::path::PathBuf;

/// Everything that can go wrong while quantizing, validating, running, saving or loading.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// A bit width outside the supported `2..=8`.
    #[error("invalid bit width {bits}: supported widths are 2..=8")]
    InvalidBits {
        /// The rejected width.
        bits: u8,
    },

    /// Per-layer widths ([`crate::QuantScheme`]) that cannot be applied: malformed text, a
    /// width outside `2..=8`, an unknown or repeated layer name.
    #[error("invalid per-layer widths {spec:?}: {reason}")]
    InvalidBitsPerLayer {
        /// The widths as given.
        spec: String,
        /// What is wrong with them.
        reason: String,
    },

    /// A real range that is not finite or has `min > max`.
    #[error("invalid range [{min}, {max}]: {reason}")]
    InvalidRange {
        /// Lower end as given.
        min: f32,
        /// Upper end as given.
        max: f32,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A scale that is not a finite, normal, positive `f32`.
    #[error("invalid scale {scale}: a scale must be finite and > 0")]
    InvalidScale {
        /// The rejected scale.
        scale: f32,
    },

    /// A zero point outside the quantized range `[0, qmax]`.
    #[error("zero point {zero_point} outside [0, {qmax}]")]
    InvalidZeroPoint {
        /// The rejected zero point.
        zero_point: i32,
        /// `2^bits − 1` for the tensor's bit width.
        qmax: i32,
    },

    /// A real multiplier that cannot be represented as `(m0, shift)`.
    #[error("invalid real multiplier {multiplier}: {reason}")]
    InvalidMultiplier {
        /// The rejected multiplier.
        multiplier: f64,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A length that does not match the shape it should have.
    #[error("shape mismatch in {what}: expected {expected} elements, found {found}")]
    ShapeMismatch {
        /// Which tensor or argument, e.g. `"conv1 weights"`.
        what: String,
        /// Expected number of elements.
        expected: usize,
        /// Number of elements found.
        found: usize,
    },

    /// An input normalization that cannot be folded (non-finite mean, std not > 0).
    #[error(transparent)]
    InvalidNormalization(#[from] burnq_arch::InvalidNormalization),

    /// An input code above the largest code of the input's bit width.
    #[error("{what}: code {code} exceeds {qmax}, the largest {bits}-bit code")]
    CodeAboveQmax {
        /// Which input, e.g. `"input images"` or `"conv2 input"`.
        what: String,
        /// The offending code.
        code: u8,
        /// `2^bits − 1`.
        qmax: i32,
        /// The input's bit width.
        bits: u8,
    },

    /// A NaN or an infinity among float values that must be finite (weights, calibration
    /// values).
    #[error("{what}: non-finite value {value} at index {index}")]
    NonFinite {
        /// Which values, e.g. `"fc1 float weights"`.
        what: String,
        /// Position of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },

    /// An image smaller than the convolution kernel.
    #[error("{layer} input: {height}×{width} image too small for a {kernel}×{kernel} kernel")]
    ImageTooSmall {
        /// Layer name.
        layer: String,
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
        /// Kernel side.
        kernel: usize,
    },

    /// A layer handed to an operation of another kind (a linear layer to `conv2d`, …).
    #[error("{layer}: a {kind:?} layer passed to {op}")]
    WrongLayerKind {
        /// Layer name.
        layer: String,
        /// The layer's geometry.
        kind: crate::LayerKind,
        /// The operation, e.g. `"conv2d"`.
        op: &'static str,
    },

    /// A value outside its allowed range, or parts of a model that do not fit together.
    #[error("invalid value in {what}: {reason}")]
    InvalidValue {
        /// Which tensor, parameter or layer.
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A layer whose worst-case accumulator `|bias| + Σ_k max|q_x − z_in|·|q_w − z_w|` exceeds
    /// `i32::MAX`, so the `i32` accumulator could overflow.
    #[error(
        "layer {layer}, output channel {channel}: worst-case accumulator magnitude {magnitude} exceeds i32::MAX"
    )]
    AccumulatorOverflow {
        /// Layer name.
        layer: String,
        /// Output channel whose bound is exceeded.
        channel: usize,
        /// The worst-case magnitude (or, at run time, the magnitude reached).
        magnitude: i64,
    },

    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The file is not a well-formed safetensors file (e.g. truncated).
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: safetensors::SafeTensorError,
    },

    /// A required `__metadata__` entry is absent.
    #[error("{}: missing metadata entry `{key}`", path.display())]
    MissingMetadata {
        /// The file.
        path: PathBuf,
        /// The absent key.
        key: &'static str,
    },

    /// The `format` metadata entry is not `burnq-int`.
    #[error("{}: format is `{found}`, expected `burnq-int`", path.display())]
    WrongFormat {
        /// The file.
        path: PathBuf,
        /// The format name found.
        found: String,
    },

    /// The `version` metadata entry names a version this crate cannot read.
    #[error("{}: unsupported format version `{found}` (supported: 1, 2, 3)", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: String,
    },

    /// The `meta` JSON document is malformed or inconsistent with the tensors.
    #[error("{}: bad metadata: {reason}", path.display())]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A required tensor is absent.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The absent tensor's name.
        tensor: String,
    },

    /// A tensor has the wrong element type.
    #[error("{}: tensor `{tensor}` has dtype {found}, expected {expected}", path.display())]
    WrongDtype {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The required dtype.
        expected: String,
        /// The dtype found.
        found: String,
    },

    /// A tensor has the wrong shape.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    WrongShape {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The required shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },

    /// The SHA-256 of the tensor data differs from the `checksum` metadata entry.
    #[error("{}: checksum mismatch: metadata says {expected}, data hashes to {actual}", path.display())]
    ChecksumMismatch {
        /// The file.
        path: PathBuf,
        /// Checksum recorded in the file.
        expected: String,
        /// Checksum of the data actually present.
        actual: String,
    },

    /// The file parses, but the model it describes fails validation.
    #[error("{}: invalid model: {source}", path.display())]
    InvalidModel {
        /// The file.
        path: PathBuf,
        /// The validation error.
        source: Box<QuantError>,
    },
}
