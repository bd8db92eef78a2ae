//! The fast integer kernels: the same arithmetic as the [`reference`](crate::reference)
//! engine, bit for bit, as packed GEMMs. This module is the only place in the crate with
//! `unsafe` code (in `avx2`, for the SIMD intrinsics and their loads and stores).
//!
//! # Design
//! - Every layer is a GEMM `C[r][c] = bias + Σ_k A[r][k]·B[k][c]` on `i16` offsets `q − Z`
//!   (zero points subtracted once, when packing; see `pack`). The paper's expansion
//!   `Σ q_x·q_w − Z_w·Σ q_x − Z_in·Σ q_w + K·Z_in·Z_w` is not needed: widened to `i16`, the
//!   offsets multiply directly with `vpmaddwd`, which adds two `i16` products into an `i32`
//!   without saturating for offsets within ±255 (unlike `vpmaddubsw`, see `avx2`).
//! - Weights are packed once ([`PackedLayer`]); activations are packed per call into
//!   reusable scratch. Requantization is fused into the GEMM epilogue (linear layers) or into
//!   the 2×2 max-pool pass over one image's accumulators (convolutions).
//! - The implementation is chosen in one place, [`KernelChoice`]: detected once at run time,
//!   overridable with `BURNQ_KERNEL=generic|avx2`. The algorithms (`ops`) are written once
//!   over the `Isa` trait; `generic` implements it portably, `avx2` with intrinsics behind a
//!   token that proves the CPU has AVX2.
//!
//! # Exactness
//! The kernels add in wrapping `i32` where the reference sums in `i64` and checks the
//! narrowing; but a [`PackedLayer`] is built only for layers whose worst-case accumulator fits
//! `i32`, and the kernels accept only input codes `≤ qmax_in`, so no sum ever wraps and the
//! results agree. Requantization implements
//! [`Requant::apply`](crate::Requant::apply) exactly (see `requant`); max-pooling accumulators
//! before requantizing is exact because requantization is non-decreasing (`m0 ≥ 0`).

mod choice;
mod generic;
mod isa;
mod layer;
mod ops;
mod pack;
mod requant;

#[cfg(target_arch = "x86_64")]
mod avx2;

pub use choice::{KERNEL_ENV, KernelChoice};
pub use layer::PackedLayer;
pub use ops::{conv2d, conv2d_requant_pool, linear, linear_requant, max_pool_2x2, requantize};

pub(crate) use isa::Isa;
pub(crate) use ops::{LinearOut, conv_image, linear_rows, pool_requant_image};
pub(crate) use pack::Im2col;

/// Evaluates `$body` with `$isa` bound to the implementation of the [`KernelChoice`]
/// `$choice`, monomorphizing `$body` per implementation; returns an error from the enclosing
/// function if this CPU cannot run it.
macro_rules! with_isa {
    ($choice:expr, |$isa:ident| $body:expr) => {
        match $choice {
            $crate::kernels::KernelChoice::Generic => {
                let $isa = $crate::kernels::generic_isa();
                $body
            }
            $crate::kernels::KernelChoice::Avx2 => {
                let $isa = $crate::kernels::avx2_isa()?;
                $body
            }
        }
    };
}
pub(crate) use with_isa;

/// The portable implementation.
pub(crate) fn generic_isa() -> generic::Generic {
    generic::Generic
}

/// The AVX2 implementation, or an error if this CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_isa() -> Result<avx2::Avx2, crate::QuantError> {
    avx2::Avx2::new()
}

/// On targets other than x86-64, always the error that this CPU cannot run AVX2 (typed as the
/// portable implementation so that `with_isa!` compiles everywhere).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx2_isa() -> Result<generic::Generic, crate::QuantError> {
    KernelChoice::Avx2
        .check_available()
        .map(|()| generic::Generic)
}
