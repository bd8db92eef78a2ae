//! Integer-only inference for the MNIST tutorial network, after Jacob et al. 2018,
//! "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
//! Inference" (arXiv 1712.05877), with gemmlowp/TFLite rounding. This crate knows nothing of
//! Burn: it takes plain `f32` weights and calibrated ranges, and runs on `u8`/`i32` only.
//!
//! # Scheme
//!
//! Every tensor is quantized asymmetrically, `r = S·(q − Z)` ([`QuantParams`]), with `q` in
//! `[0, 2^bits − 1]` stored as `u8` (`bits` in 2..=8), `S` a positive `f32` and `Z` an integer
//! code, so real 0 is exact. Weights and activations have their own widths
//! ([`ConvertOptions`]): weight codes have `weight_bits` bits; the activations each layer
//! computes (conv1, conv2 and fc1 outputs, the logits) have `act_bits` bits — model-wide, or
//! each layer its own ([`QuantScheme`], per-layer widths; a [`QuantLayer`] carries its own,
//! and [`mixed`] chooses them under a size budget). Weights are
//! quantized per tensor (one `S_w`, `Z_w` per layer) or per output channel (`S_w[o]`, `Z_w[o]`
//! from channel `o`'s own range). A layer computes the `i32` accumulator
//! `acc[o] = q_b[o] + Σ_k (q_x[k] − Z_in)·(q_w[o,k] − Z_w[o])` (bias at scale `S_in·S_w[o]`,
//! zero point 0), then requantizes it ([`Requant`]):
//! `q_out = clamp(Z_out + MultiplyByQuantizedMultiplier(acc, m0[o], shift[o]), act_min, act_max)`
//! where `M[o] = S_in·S_w[o]/S_out ≈ m0[o]·2^(shift[o] − 31)`, `m0` in `[2^30, 2^31)`; ReLU is
//! the clamp's lower bound `act_min = Z_out`. Max-pooling runs on codes. The input
//! normalization is folded into conv1, so the raw pixel bytes are the quantized input
//! (`S = 1/255`, `Z = 0`, 8 bits whatever `act_bits` is).
//!
//! Offline: [`convert()`] (float → [`QuantModel`]), [`save`] / [`load`] (safetensors file),
//! and [`range`](mod@range) (clipping ranges for calibration: percentile and MSE search, SQNR).
//! Online: [`QuantModel::forward_reference`] runs the [`reference`](mod@reference) engine, the bit-exact
//! definition that any faster kernel must reproduce; [`Engine`] runs the same arithmetic with
//! the packed, SIMD [`kernels`] (portable, AVX2, AVX2 `vpmaddubsw` or AVX-512 VNNI, chosen by
//! [`kernels::KernelChoice`]), batch-parallel, and reproduces it bit for bit, for every bit
//! width and granularity. Any described network ([`QuantGraph`]) runs the same way
//! with [`GraphEngine`], equal bit for bit to [`QuantGraph::forward_reference`].
//!
//! # Rounding contract
//!
//! These rules are part of the output: changing one changes results.
//!
//! | Where | Rule | Hand-computed ties |
//! |---|---|---|
//! | [`QuantParams::quantize`], [`derive::quantize_bias`], [`QuantParams::from_range`]'s `Z` | nearest, ties away from zero, then clamp/saturate | `2.5 → 3`, `−2.5 → −3` |
//! | [`quantize_multiplier`] | `m0 = round(q·2^31)` ties away, `q` in `[0.5, 1)`; `2^31` → `2^30`, `shift + 1` | `1 − 2^−40 → (2^30, 1)` |
//! | [`saturating_rounding_doubling_high_mul`] `(a·b + nudge) / 2^31`, truncating | ties toward +∞ | `a·b = 2^30`: `0.5 → 1`; `−2^30`: `−0.5 → 0`; `3·2^30`: `1.5 → 2`; `−3·2^30`: `−1.5 → −1`; `(i32::MIN, i32::MIN) → i32::MAX` |
//! | [`rounding_divide_by_pot`] | ties away from zero | `(5, 1) → 3`, `(−5, 1) → −3`, `(3, 1) → 2`, `(−3, 1) → −2`, `(1, 1) → 1`, `(−1, 1) → −1` |
//! | [`multiply_by_quantized_multiplier`] | the two above in sequence (double rounding, as TFLite); `acc·2^left` saturates | `M = 0.25` (`m0 = 2^30`, `shift = −1`): `1 → 1` (not 0), `−1 → 0`; `M = 0.5`: `3 → 2`, `−3 → −1` |
//! | [`Requant`] offset | `y + Z_out` saturating, then clamp to `[act_min, act_max]` | — |
//! | [`reference::max_pool_2x2`] | exact (max commutes with the increasing map `q ↦ S·(q − Z)`) | — |
//! | [`graph::reference::conv2d`] padding | outside the image each tap reads the layer's padding code: the input zero point `Z_in` (real 0, so it adds nothing), or for a first layer with a folded normalization [`Normalization::padding_pixel`] `= round(255·mean)` (training pads with its normalized value, so float and integer agree) | MNIST: 33 |
//! | [`graph::reference::avg_pool`] (and global) | `Z + MBQM(Σ (q − Z), M)`, `M = 1/(kh·kw)` by [`quantize_multiplier`], then clamp `[0, qmax]`: the mean on the input's own grid with the double rounding above | 2×2 (`M = 0.25` exact): window sums `2 → 1`, `−2 → −1`, `6 → 2` (ties away from zero), `−1 → 0` |
//! | [`QuantAdd::apply`] (residual add, TFLite's quantized `Add`) | `a' = MBQM((q_a − Z_a)·2^20, S_a/(2·max S))`, `b'` likewise, `Z_o + MBQM(a' + b', 2·max S/(2^20·S_o))` saturating, clamp `[act_min, act_max]` | equal scales 0.5, `Z = 0`: `3 + 4 → 7` |
//! | [`reference::argmax`], [`reference::predict`] | lowest index on ties; `predict` compares `acc[o]·m0[o]·2^shift[o]` exactly (i128), so per-channel logits are compared in real units | `[3, 7, 7] → 1` |

pub mod convert;
mod cost;
pub mod derive;
mod engine;
mod error;
pub mod fixedpoint;
mod float;
pub mod format;
pub mod graph;
pub mod kernels;
mod layer;
pub mod mixed;
mod model;
mod params;
pub mod range;
pub mod reference;
mod requant;
mod sensitivity;
#[cfg(test)]
mod test_support;
mod widths;

pub use burnq_arch::Normalization;
pub use burnq_arch::arch::Activation;
pub use convert::{ConvertOptions, LayerGrids, convert, convert_with_grids};
pub use cost::macs_per_image;
pub use derive::LayerQuantization;
pub use engine::{Engine, Workspace};
pub use error::QuantError;
pub use fixedpoint::{
    multiply_by_quantized_multiplier, quantize_multiplier, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};
pub use float::{ActivationRanges, FloatLayer, FloatNetwork};
pub use format::{load, load_graph, save, save_graph};
pub use graph::{
    GraphEngine, GraphTaps, GraphWorkspace, PointRanges, QuantAdd, QuantGraph, QuantOp,
    convert_graph, convert_graph_with_grids,
};
pub use layer::{LayerKind, QuantLayer};
pub use model::{
    ARCHITECTURE, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES, Output, QuantModel, Taps,
    tutorial_layer_names,
};
pub use params::{MAX_BITS, MIN_BITS, QuantParams, qmax};
pub use requant::Requant;
pub use sensitivity::{graph_sqnr_db, layer_sqnr_db};
pub use widths::{LayerBits, QuantScheme, bits_label, widths_label};
