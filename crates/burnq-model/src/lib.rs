//! The float world of burnq: the tutorial's MNIST network in Burn 0.22.
//!
//! - [`arch_net`]: any sequential CNN built from a `burnq_arch` description ([`ArchNet`]);
//! - [`model`]: the network ([`Net`]), its forward pass, and the per-layer taps the
//!   calibration crate observes;
//! - [`data`]: Burn [`Dataset`](burn::data::dataset::Dataset) and batcher over the raw
//!   `u8` images of `burnq-data`, with the normalization in one place;
//! - [`train_conv`]: the convolution used while training on flex, a custom autodiff operation
//!   whose forward pass and gradients are GEMMs ([`conv_gemm`] holds their arithmetic),
//!   [`train_pool`]: max pooling (fused with the ReLU before it) as another, and [`conv_pool`]:
//!   the two (convolution, ReLU, pooling) as one;
//! - [`sgd`]: SGD with momentum as one pass per parameter, Burn's update bit for bit;
//! - [`training`]: the tutorial's SGD loop, deterministic for a given seed and backend;
//! - [`eval`]: test loss and accuracy;
//! - [`export`]: weights and biases as plain `f32` arrays (the integer engine never sees Burn);
//! - [`backend`]: the run-time choice of device (flex, ndarray, wgpu);
//! - [`predict`]: a float model ready to run on raw pixels (also with Burn's own 8-bit weights);
//! - [`checkpoint`]: atomic save and checked load of the model record;
//! - [`import`]: a PyTorch `state_dict` of the network, read with Burn's PyTorch reader;
//! - [`import_arch`]: a PyTorch `state_dict` of any described network (`nn.Sequential` keys).
//!
//! Quantization-aware training and the tutorial's simulated quantization live in `burnq-qat`:
//! this crate knows nothing of the integer engine.
//!
//! Backends are chosen at run time through Burn's `Device`; ndarray and wgpu are cargo
//! features of this crate because each costs many minutes of compile time.

pub mod arch_net;
pub mod backend;
pub mod checkpoint;
pub mod conv_gemm;
pub mod conv_pool;
pub mod data;
pub mod error;
pub mod eval;
pub mod export;
pub mod import;
pub mod import_arch;
pub mod model;
pub mod predict;
pub mod sgd;
pub mod simd;
pub mod train_conv;
pub mod train_pool;
pub mod training;

pub use arch_net::{ArchNet, ArchTaps};
pub use backend::BackendChoice;
/// Burn's run-time device, re-exported so callers can hold one without depending on Burn.
pub use burn::tensor::Device;
pub use error::ModelError;
pub use model::{Net, NetConfig, Taps};

/// The Burn release this crate is built against (recorded in artifacts).
pub const BURN_VERSION: &str = "0.22.0";
