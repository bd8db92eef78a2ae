//! Export of a burnq integer model ([`burnq_quant::QuantModel`]) to ONNX, the interchange
//! format of ONNX Runtime, TensorRT, OpenVINO, TVM and most other inference runtimes.
//!
//! The graph uses standard operators of the default domain at opset [`OPSET`]:
//! `QLinearConv` for every layer (fully connected layers as 1×1 convolutions), `MaxPool` and
//! `Clip` on `uint8`, `Reshape`, and `MatMulInteger`/`Add`/`Cast`/`Mul`/`ArgMax` for fc2's exact
//! accumulators, real logits and class (see [`to_onnx`] for the whole graph). It holds the very
//! codes burnq runs: `u8` weights, `i32` biases, scales and zero points. Runtimes requantize in
//! float where burnq uses fixed-point multipliers, so intermediate codes may differ by one
//! near rounding ties; `cargo xtask export-onnx --verify` measures the agreement.
//!
//! The protobuf encoding is written here ([`proto`], [`onnx`]): no protobuf compiler, no
//! dependency but `burnq-quant`. This crate knows nothing of Burn.

mod error;
mod export;
pub mod onnx;
pub mod proto;

use std::path::Path;

pub use error::OnnxError;
pub use export::{ExportInfo, OPSET, to_onnx};

/// Writes `model` as an ONNX file at `path`, atomically (temporary file, then rename).
/// Returns the number of bytes written.
pub fn save(
    model: &burnq_quant::QuantModel,
    info: &ExportInfo,
    path: &Path,
) -> Result<u64, OnnxError> {
    let bytes = to_onnx(model, info).encode();
    burnq_arch::write_atomic(path, &bytes).map_err(|source| OnnxError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes.len() as u64)
}
