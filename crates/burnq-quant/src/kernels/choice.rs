//! Which kernel implementation runs, decided in one place: [`KernelChoice`].
//!
//! The CPU is probed once per process (`is_x86_feature_detected!`, cached in a `OnceLock`);
//! the environment variable [`KERNEL_ENV`] (`generic`, `avx2`, `avx2-maddubs` or
//! `avx512-vnni`) overrides the automatic choice, also read once. Asking for a kernel this CPU
//! cannot run is an error, never undefined behaviour: the SIMD code is reachable only through
//! tokens that exist once the features have been detected.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::QuantError;

/// Environment variable that overrides the automatic kernel choice: a [`KernelChoice::name`].
pub const KERNEL_ENV: &str = "BURNQ_KERNEL";

/// An implementation of the integer kernels. Every choice computes the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelChoice {
    /// Portable Rust, for any target: the same packed layouts, scalar loops.
    Generic,
    /// x86-64 AVX2: a 6×16 `vpmaddwd` GEMM micro-kernel on `i16` offsets and SIMD
    /// requantization.
    Avx2,
    /// [`KernelChoice::Avx2`], but each layer whose proven operand bounds make `vpmaddubsw`
    /// exact (`2·qmax_in·max|q_w − c| ≤ 32767`, decided when packing) runs a `u8 × i8` GEMM
    /// with it, adding several products in `i16` at low bit widths, and each convolution on
    /// two-bit inputs whose table bounds allow it looks its products up (`vpshufb`), and each
    /// other short convolution whose whole reduction fits one `i16` sum runs directly on pairs of taps
    /// ([`super::direct`]); the others run the `i16` GEMM.
    Avx2Maddubs,
    /// x86-64 AVX-512 VNNI (with F, BW, VL): every layer runs a 10×16 `u8 × i8` GEMM with
    /// 512-bit `vpdpbusd`, exact at every width; the rest as [`KernelChoice::Avx2`].
    Avx512Vnni,
}

impl KernelChoice {
    /// Every implementation, portable first.
    pub const ALL: [Self; 4] = [
        Self::Generic,
        Self::Avx2,
        Self::Avx2Maddubs,
        Self::Avx512Vnni,
    ];

    /// The lowercase name, as [`KERNEL_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Generic => "generic",
            Self::Avx2 => "avx2",
            Self::Avx2Maddubs => "avx2-maddubs",
            Self::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Whether this CPU can run this implementation (detected once per process).
    pub fn is_available(self) -> bool {
        match self {
            Self::Generic => true,
            Self::Avx2 | Self::Avx2Maddubs => avx2_detected(),
            Self::Avx512Vnni => avx512_vnni_detected(),
        }
    }

    /// Errors unless this CPU can run this implementation.
    pub fn check_available(self) -> Result<(), QuantError> {
        if self.is_available() {
            Ok(())
        } else {
            Err(QuantError::InvalidValue {
                what: "kernel choice".into(),
                reason: format!("this CPU cannot run the {} kernel", self.name()),
            })
        }
    }

    /// The fastest implementation this CPU can run: the last of [`KernelChoice::ALL`] it runs.
    pub fn best_available() -> Self {
        Self::ALL
            .into_iter()
            .rfind(|k| k.is_available())
            .unwrap_or(Self::Generic)
    }

    /// The implementation for this process: the one [`KERNEL_ENV`] names if it is set (an
    /// error if it names an unknown or unavailable kernel), else [`KernelChoice::best_available`].
    /// The variable is read once; later changes are ignored.
    pub fn selected() -> Result<Self, QuantError> {
        static SELECTED: OnceLock<Result<KernelChoice, String>> = OnceLock::new();
        let selected = SELECTED.get_or_init(|| match std::env::var(KERNEL_ENV) {
            Err(std::env::VarError::NotPresent) => Ok(Self::best_available()),
            Err(e) => Err(e.to_string()),
            Ok(name) => name
                .parse::<Self>()
                .and_then(|k| k.check_available().map(|()| k))
                .map_err(|e| e.to_string()),
        });
        selected.clone().map_err(|reason| QuantError::InvalidValue {
            what: format!("environment variable {KERNEL_ENV}"),
            reason,
        })
    }
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelChoice {
    type Err = QuantError;

    /// Parses a [`KernelChoice::name`] (ASCII case-insensitive, surrounding spaces ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| QuantError::InvalidValue {
                what: "kernel name".into(),
                reason: format!(
                    "`{s}` is not one of {}",
                    Self::ALL.map(Self::name).join(", ")
                ),
            })
    }
}

/// Whether the CPU supports AVX2, probed once.
pub(crate) fn avx2_detected() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether the CPU supports AVX2 and AVX-512 F, BW, VL and VNNI, probed once.
pub(crate) fn avx512_vnni_detected() -> bool {
    static VNNI: OnceLock<bool> = OnceLock::new();
    *VNNI.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            has!("avx2")
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in KernelChoice::ALL {
            assert_eq!(k.name().parse::<KernelChoice>().unwrap(), k);
            assert_eq!(k.to_string(), k.name());
        }
        assert_eq!(
            " AVX2 ".parse::<KernelChoice>().unwrap(),
            KernelChoice::Avx2
        );
        assert_eq!(
            "AVX512-vnni".parse::<KernelChoice>().unwrap(),
            KernelChoice::Avx512Vnni
        );
        assert!(matches!(
            "avx512".parse::<KernelChoice>(),
            Err(QuantError::InvalidValue { .. })
        ));
    }

    #[test]
    fn availability_is_consistent() {
        assert!(KernelChoice::Generic.is_available());
        assert!(KernelChoice::best_available().is_available());
        for k in KernelChoice::ALL {
            assert_eq!(k.check_available().is_ok(), k.is_available());
        }
        assert_eq!(
            KernelChoice::Avx2Maddubs.is_available(),
            KernelChoice::Avx2.is_available()
        );
    }
}
