//! Where the float model meets the integer engine: quantization-aware training and everything
//! else that needs both Burn and `burnq-quant`.
//!
//! - [`adapter`]: the Burn model's weights as the converter's [`burnq_quant::FloatNetwork`];
//! - [`qat`]: the fake-quantized forward pass (straight-through gradients) on the converter's
//!   own grids, with [`int_sim`]: the integer engine's requantization reproduced inside it,
//!   and [`exact`]: its accumulators computed in integer units; [`arch_qat`]: the same for
//!   described networks; [`lsq`]: learned step sizes and offsets (LSQ, LSQ+) for both;
//! - [`run`]: the library entry points, [`QatConfig`], [`run_qat`] and [`run_arch_qat`]:
//!   calibrate, fine-tune, convert, and check that the integer model predicts what the
//!   fake-quantized network did;
//! - [`simulated`]: the tutorial's float simulation of quantization, for comparison.
//!
//! Every integer parameter comes from `burnq-quant`'s one derivation
//! ([`burnq_quant::LayerQuantization`]); this crate derives none itself.

pub mod adapter;
pub mod arch_qat;
pub mod distill;
pub mod error;
pub mod exact;
pub mod int_sim;
pub mod lsq;
pub mod qat;
pub mod run;
pub mod simulated;

pub use adapter::float_network;
pub use arch_qat::ArchQat;
pub use distill::Distillation;
pub use error::QatError;
pub use lsq::StepInit;
pub use qat::{QatForward, QatSettings, Quantizer};
pub use run::{ArchQatOutcome, QatConfig, QatOutcome, run_arch_qat, run_qat, run_qat_from};
