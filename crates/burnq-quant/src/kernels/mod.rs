//! The fast integer kernels: the same arithmetic as the [`reference`](crate::reference)
//! engine, bit for bit, as packed GEMMs. This module is the only place in the crate with
//! `unsafe` code (in `avx2`, `maddubs`, `direct_avx2` and `vnni`, for the SIMD intrinsics and
//! their loads and stores, and in `limits`, whose timed loops are inline assembly).
//!
//! # Design
//! - Every layer is a GEMM `C[r][c] = bias + Σ_k A[r][k]·B[k][c]`, in one of the forms below
//!   (`pack`, `lut`, `direct`), all packed once per layer by [`PackedLayer::new`]:
//!   - **`i16`**: offsets `q − Z` on both sides (zero points subtracted once, when packing),
//!     multiplied with `vpmaddwd`, which adds two `i16` products into an `i32` without
//!     saturating for offsets within ±255. Exact for every layer.
//!   - **bytes** (`bytes`): the input codes as `u8` and the weights as `i8` around a centre per
//!     channel, with the paper's correction terms folded into the bias and, where a centre is
//!     not the zero point, a rank-one term from the input's code sums. Run with `vpdpbusd`
//!     (`vnni`, exact for every layer) or `vpmaddubsw` (`maddubs`, only for the layers whose
//!     operand bounds, computed when packing, exclude `i16` saturation).
//!
//!   - **tables** (`lut`): for a convolution on two-bit inputs, each pair of products of the
//!     byte form is looked up (`vpshufb`) in a sixteen-entry table per output channel, built
//!     when packing; run by `maddubs` where its bounds allow.
//!   - **direct** (`direct`): for a convolution whose whole reduction fits one `i16` sum (a
//!     first layer on 8-bit pixels with 2- or 3-bit weights), the byte form's products taken
//!     in pairs of taps read straight from the image, summed in `i16` to the end; run by
//!     `maddubs` for short reductions where no table form exists.
//!
//!   Which form a layer runs is decided per layer by the kernel ([`KernelChoice`]) and the
//!   layer's bounds: a layer the byte GEMM cannot run exactly falls back to the `i16` GEMM.
//! - Weights are packed once ([`PackedLayer`]); activations are packed per call into
//!   reusable scratch. Requantization is fused into the GEMM epilogue (linear layers) or into
//!   the 2×2 max-pool pass over one image's accumulators (convolutions).
//! - The implementation is chosen in one place, [`KernelChoice`]: detected once at run time,
//!   overridable with `BURNQ_KERNEL=generic|avx2|avx2-maddubs|avx512-vnni`. The algorithms
//!   (`ops`) are written once over the `Isa` trait (and its byte GEMM, `ByteIsa`); `generic`
//!   implements it portably, `avx2`, `maddubs` and `vnni` with intrinsics behind tokens that
//!   prove the CPU features.
//!
//! # Exactness
//! The kernels add in wrapping `i32` where the reference sums in `i64` and checks the
//! narrowing; but a [`PackedLayer`] is built only for layers whose worst-case accumulator fits
//! `i32`, and the kernels accept only input codes `≤ qmax_in`, so no sum ever wraps and the
//! results agree. Requantization implements
//! [`Requant::apply`](crate::Requant::apply) exactly (see `requant`); max-pooling accumulators
//! before requantizing is exact because requantization is non-decreasing (`m0 ≥ 0`).

mod bytes;
mod choice;
mod direct;
mod generic;
mod isa;
mod layer;
pub mod limits;
mod lut;
mod ops;
mod pack;
mod requant;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod direct_avx2;
#[cfg(target_arch = "x86_64")]
mod maddubs;
#[cfg(target_arch = "x86_64")]
mod vnni;

pub use choice::{KERNEL_ENV, KernelChoice};
pub use layer::{GemmForm, PackedLayer};
pub use ops::{conv2d, conv2d_requant_pool, linear, linear_requant, max_pool_2x2, requantize};

pub(crate) use isa::Isa;
pub(crate) use ops::{LinearOut, Scratch, conv_pool_image, grow, linear_rows};
pub(crate) use pack::Im2col;
pub(crate) use requant::LayerRequant;

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
            $crate::kernels::KernelChoice::Avx2Maddubs => {
                let $isa = $crate::kernels::maddubs_isa()?;
                $body
            }
            $crate::kernels::KernelChoice::Avx512Vnni => {
                let $isa = $crate::kernels::vnni_isa()?;
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

/// The AVX2 implementation with the `vpmaddubsw` byte GEMM, or an error if this CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
pub(crate) fn maddubs_isa() -> Result<avx2::Avx2<maddubs::Maddubs>, crate::QuantError> {
    Ok(avx2::Avx2::new()?.with_bytes(maddubs::Maddubs::new()?))
}

/// The AVX2 implementation with the AVX-512 VNNI byte GEMM, or an error if this CPU lacks one
/// of the features.
#[cfg(target_arch = "x86_64")]
pub(crate) fn vnni_isa() -> Result<avx2::Avx2<vnni::Vnni512>, crate::QuantError> {
    Ok(avx2::Avx2::new()?.with_bytes(vnni::Vnni512::new()?))
}

/// On targets other than x86-64, always the error that this CPU cannot run `kernel` (typed as
/// the portable implementation so that `with_isa!` compiles everywhere).
#[cfg(not(target_arch = "x86_64"))]
fn unavailable(kernel: KernelChoice) -> Result<generic::Generic, crate::QuantError> {
    kernel.check_available().map(|()| generic::Generic)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn avx2_isa() -> Result<generic::Generic, crate::QuantError> {
    unavailable(KernelChoice::Avx2)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn maddubs_isa() -> Result<generic::Generic, crate::QuantError> {
    unavailable(KernelChoice::Avx2Maddubs)
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn vnni_isa() -> Result<generic::Generic, crate::QuantError> {
    unavailable(KernelChoice::Avx512Vnni)
}
