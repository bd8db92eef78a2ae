//! Typed errors of the QAT crate: each keeps the error it comes from.

/// What can go wrong while adapting, calibrating, fine-tuning or converting a model.
#[derive(Debug, thiserror::Error)]
pub enum QatError {
    /// Training, evaluation or a model file failed.
    #[error(transparent)]
    Model(#[from] burnq_model::ModelError),
    /// The calibration that starts the activation ranges failed.
    #[error("calibrating the activation ranges")]
    Calibration(#[source] burnq_calib::CalibError),
    /// Conversion to the integer model, or the integer run, failed.
    #[error("exporting the QAT model to integers")]
    Quant(#[source] burnq_quant::QuantError),
    /// The Burn model's layers do not match the integer network's architecture.
    #[error("layer {index} is `{found}`, expected `{expected}`")]
    LayerOrder {
        /// Position in forward order.
        index: usize,
        /// The layer found there.
        found: &'static str,
        /// The layer the architecture has there.
        expected: &'static str,
    },
    /// The request is outside what QAT supports for this network.
    #[error("{0}")]
    Unsupported(String),
    /// A described network's description or parameters are invalid.
    #[error("the described network")]
    Arch(#[source] burnq_arch::ArchError),
    /// A quantization point has no learned grid to export (its step size is no longer a
    /// positive normal `f32`: training diverged).
    #[error(
        "quantization point `{0}` has no learned grid (its step size is not a positive normal f32)"
    )]
    NoGrid(String),
    /// A quantization point's integer parameters cannot be derived during QAT (its grid or
    /// requantization multiplier is out of range: training diverged).
    #[error("quantization point `{point}`: its integer parameters")]
    Point {
        /// The point's step name.
        point: String,
        /// Why the converter's derivation refused it (boxed: it is large, and this error
        /// travels through every QAT step's `Result`).
        #[source]
        source: Box<burnq_quant::QuantError>,
    },
    /// The float weights do not form a valid float network for the converter.
    #[error("the float model's weights")]
    Weights(#[source] burnq_quant::QuantError),
}
