//! Runtime dispatch of the training's non-GEMM loops (pooling, im2col, col2im, the gradient
//! transposes) to the CPU's vectors.
//!
//! The crate compiles for baseline x86-64 (SSE2), so those loops never used AVX-512.
//! [`vectorized!`] compiles one portable loop body twice — as is and with AVX-512F enabled
//! (a thin wrapper, as in `burnq-quant`'s AVX2 kernel) — and runs the AVX-512 one where the
//! CPU has it ([`Level::detected`], detected once). The compiler may only vectorize what it
//! can prove equal to the scalar loop (no float reassociation without fast-math, no
//! contraction into FMA), so both compute bit-identical results; the tests check that on
//! several shapes.
//!
//! There is no AVX2 level: forced on a Zen 5 (AVX-512) it trained slower than the portable
//! loops (one epoch at one thread: 5,576–5,708 img/s against 5,748–5,773; AVX-512
//! 5,858–5,982), and no AVX2-only machine was at hand to show a gain.

use std::sync::OnceLock;

/// The instruction sets a [`vectorized!`] function is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The crate's own target (SSE2 on x86-64).
    Portable,
    /// AVX-512F (x86-64).
    Avx512,
}

impl Level {
    /// The widest level this CPU supports, detected on the first call.
    pub fn detected() -> Self {
        static DETECTED: OnceLock<Level> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Self::Avx512;
                }
            }
            Self::Portable
        })
    }

    /// `self`, lowered to what the CPU supports: the level a function run "at `self`" uses.
    pub fn available(self) -> Self {
        self.min(Self::detected())
    }
}

/// Defines `fn $name(args) -> R` (running at [`Level::detected`]) and `fn $at(level, args)
/// -> R` (running at `level.available()`), both computing `$body`.
///
/// The body is an `#[inline(always)]` function, so the `#[target_feature]` wrapper compiles
/// it (and the generic helpers and closures it inlines) again for AVX-512F. Loop bodies
/// passed as closures to non-inlined helpers would stay at the baseline: helpers here are
/// `#[inline(always)]` or macros.
macro_rules! vectorized {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident / $at:ident ($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            $at($crate::simd::Level::detected(), $($arg),*)
        }

        #[doc = concat!("[`", stringify!($name), "`] compiled for `level` (or the widest ")]
        #[doc = "level below it the CPU has): the same results at every level."]
        $vis fn $at(level: $crate::simd::Level, $($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn portable($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            fn avx512($($arg: $ty),*) -> $ret {
                portable($($arg),*)
            }

            match level.available() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `available` returns AVX-512F only where the CPU has it.
                $crate::simd::Level::Avx512 => unsafe { avx512($($arg),*) },
                _ => portable($($arg),*),
            }
        }
    };
}

pub(crate) use vectorized;
