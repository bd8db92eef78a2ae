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
//! [`to_float_onnx`] writes the float network the integer model comes from (Conv, Relu, MaxPool,
//! Flatten, Gemm) with the same raw-pixel input: the peer that `cargo xtask bench` times ONNX
//! Runtime on, in f32 and quantized by ONNX Runtime itself.
//!
//! The protobuf encoding is written here ([`proto`], [`onnx`]): no protobuf compiler, no
//! dependency but `burnq-quant`. This crate knows nothing of Burn.

mod error;
mod export;
mod float;
mod graph;
pub mod onnx;
pub mod proto;

use std::path::Path;

pub use error::OnnxError;
pub use export::{ExportInfo, OPSET, to_onnx};
pub use float::to_float_onnx;
pub use graph::graph_to_onnx;

/// Writes `model` as an ONNX file at `path`, atomically (temporary file, then rename).
/// Returns the number of bytes written.
pub fn save(
    model: &burnq_quant::QuantModel,
    info: &ExportInfo,
    path: &Path,
) -> Result<u64, OnnxError> {
    write(&to_onnx(model, info), path)
}

/// Writes a network of any architecture (see [`graph_to_onnx`]) as an ONNX file at `path`,
/// atomically. Returns the number of bytes written.
pub fn save_graph(
    graph: &burnq_quant::QuantGraph,
    info: &ExportInfo,
    path: &Path,
) -> Result<u64, OnnxError> {
    write(&graph_to_onnx(graph, info), path)
}

/// Writes the float network (see [`to_float_onnx`]) as an ONNX file at `path`, atomically.
/// Returns the number of bytes written.
pub fn save_float(
    network: &burnq_quant::FloatNetwork,
    norm: burnq_quant::Normalization,
    info: &ExportInfo,
    path: &Path,
) -> Result<u64, OnnxError> {
    write(&to_float_onnx(network, norm, info), path)
}

/// Encodes `model` and writes it at `path`, atomically.
fn write(model: &onnx::Model, path: &Path) -> Result<u64, OnnxError> {
    let bytes = model.encode();
    burnq_arch::write_atomic(path, &bytes).map_err(|source| OnnxError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes.len() as u64)
}
