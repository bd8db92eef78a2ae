//! The instruction-throughput limits the GEMM forms are measured against, timed on this machine:
//! how many of a form's multiply instructions one core issues per nanosecond, and the clock.
//! `cargo xtask bench` prints each layer's GMAC/s as a share of its form's limit.
//!
//! # Method
//! Each instruction runs in a loop of [`CHAINS`] independent copies (distinct destinations; for
//! the accumulating `vpdpbusd`, [`CHAINS`] separate accumulators, more than its latency ×
//! throughput), sized to about 4 ms and timed three times, the fastest kept: its rate
//! `r` (instructions per ns, one core) times the products `p` one instruction multiplies and
//! adds is the ceiling `r·p` GMAC/s that no GEMM built on it can pass on one core. The clock
//! is a chain of dependent register-to-register 64-bit `add`s, one cycle each (a register
//! operand, not an immediate: recent Intel cores fold small add-immediates at rename):
//! `adds / ns = GHz` (the clock while one core runs scalar code; CPUs that lower it for 512-bit
//! work make `vpdpbusd`'s per-cycle rate read low); `r / GHz` is the instruction's issue rate
//! per cycle. The figures are only meaningful on an otherwise idle machine.

use std::time::Instant;

use super::{GemmForm, KernelChoice};

/// Independent instructions per loop iteration.
pub const CHAINS: usize = 12;

/// `vpmaddwd` on 256 bits: 16 `i16 × i16` products added in pairs into `i32` (the `i16` form).
pub const VPMADDWD: &str = "vpmaddwd ymm";
/// `vpmaddubsw` on 256 bits: 32 `u8 × i8` products added in pairs into `i16` (the byte and
/// direct forms of `avx2-maddubs`).
pub const VPMADDUBSW: &str = "vpmaddubsw ymm";
/// `vpshufb` on 256 bits: 32 table look-ups, each the sum of two products (the table form).
pub const VPSHUFB: &str = "vpshufb ymm";
/// `vpdpbusd` on 512 bits: 64 `u8 × i8` products added in fours into `i32` (the byte form of
/// `avx512-vnni`).
pub const VPDPBUSD: &str = "vpdpbusd zmm";

/// An instruction, the products one of it multiplies and adds, and its timed loop
/// (`CHAINS·n` instructions for `n`).
type Timer = (&'static str, u32, fn(u64));

impl GemmForm {
    /// The multiply instruction that bounds this form on `kernel` (one of the constants of
    /// this module), or `None` for the portable kernel.
    pub fn instruction(self, kernel: KernelChoice) -> Option<&'static str> {
        match (kernel, self) {
            (KernelChoice::Generic, _) => None,
            (_, Self::I16) => Some(VPMADDWD),
            (KernelChoice::Avx512Vnni, Self::Bytes) => Some(VPDPBUSD),
            (_, Self::Bytes | Self::Direct) => Some(VPMADDUBSW),
            (_, Self::Tables) => Some(VPSHUFB),
        }
    }
}

/// One instruction's measured issue rate on one core.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstructionLimit {
    /// The instruction and its operand width, e.g. `vpmaddwd ymm`.
    pub instruction: &'static str,
    /// Products one instruction multiplies and adds.
    pub products: u32,
    /// Instructions issued per nanosecond by one core.
    pub per_ns: f64,
    /// Instructions per cycle at the measured clock.
    pub per_cycle: f64,
    /// The ceiling of a GEMM on it, `per_ns · products`: GMAC/s on one core.
    pub gmacs: f64,
}

/// The clock and the limits of every instruction this CPU has, measured now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MachineLimits {
    /// Dependent `add`s per nanosecond: the clock in GHz while one core is busy.
    pub clock_ghz: f64,
    /// Each multiply instruction this CPU has, in the order `vpmaddwd`, `vpmaddubsw`,
    /// `vpshufb`, then `vpdpbusd` where VNNI exists.
    pub instructions: Vec<InstructionLimit>,
}

impl MachineLimits {
    /// Measures the clock and each instruction the CPU has (about 0.1 s); `None` off x86-64
    /// or without AVX2.
    pub fn measure() -> Option<Self> {
        let timers = x86::timers()?;
        let clock_ghz = rate(x86::dependent_adds);
        let instructions = timers
            .into_iter()
            .map(|(instruction, products, timer)| {
                let per_ns = rate(timer);
                InstructionLimit {
                    instruction,
                    products,
                    per_ns,
                    per_cycle: per_ns / clock_ghz,
                    gmacs: per_ns * f64::from(products),
                }
            })
            .collect();
        Some(Self {
            clock_ghz,
            instructions,
        })
    }

    /// The limit of `instruction`, if it was measured.
    pub fn of(&self, instruction: &str) -> Option<&InstructionLimit> {
        self.instructions
            .iter()
            .find(|l| l.instruction == instruction)
    }
}

/// Operations per nanosecond of `run(n)`, which performs `CHAINS·n` of them: the fastest of
/// three timings of a loop sized to about 4 ms.
fn rate(run: fn(u64)) -> f64 {
    let seconds = |n: u64| {
        let start = Instant::now();
        run(n);
        start.elapsed().as_secs_f64()
    };
    let probe = 20_000;
    let n = ((4e-3 / seconds(probe).max(1e-9)) * probe as f64).clamp(1e4, 1e9) as u64;
    let best = (0..3).map(|_| seconds(n)).fold(f64::INFINITY, f64::min);
    (CHAINS as u64 * n) as f64 / (best * 1e9)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The timed loops: register-only instructions, nothing read from or written to memory.

    use std::arch::asm;

    use super::{Timer, VPDPBUSD, VPMADDUBSW, VPMADDWD, VPSHUFB};
    use crate::kernels::choice::{avx2_detected, avx512_vnni_detected};

    /// Each instruction this CPU has, with its loop.
    pub(super) fn timers() -> Option<Vec<Timer>> {
        if !avx2_detected() {
            return None;
        }
        let mut timers: Vec<Timer> = vec![
            (VPMADDWD, 16, vpmaddwd),
            (VPMADDUBSW, 32, vpmaddubsw),
            (VPSHUFB, 64, vpshufb),
        ];
        if avx512_vnni_detected() {
            timers.push((VPDPBUSD, 64, vpdpbusd));
        }
        Some(timers)
    }

    /// `12·n` dependent register `add`s.
    pub(super) fn dependent_adds(n: u64) {
        // SAFETY: integer instructions on registers only (nomem, nostack); `n ≥ 1` (the loop
        // counts down to zero).
        unsafe {
            asm!(
                "2:",
                "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) 0u64 => _,
                one = in(reg) 1u64,
                n = inout(reg) n.max(1) => _,
                options(nomem, nostack),
            );
        }
    }

    /// `fn $name(n)`: `n` iterations of `$op $dst, $a, $b` for each of twelve destinations
    /// (independent results; for an accumulating `$op`, twelve accumulators).
    macro_rules! timed_loop {
        ($name:ident, $op:literal, $a:literal, $b:literal, [$($dst:tt),+]) => {
            fn $name(n: u64) {
                // SAFETY: `timers`, the only code that hands this loop out, detected the
                // instruction's features; register-only instructions (nomem, nostack), every
                // written register declared clobbered; `n ≥ 1`.
                unsafe {
                    asm!(
                        "2:",
                        $(concat!($op, " ", $dst, ", ", $a, ", ", $b),)+
                        "dec {n}",
                        "jnz 2b",
                        // Clean upper halves for the SSE code that follows.
                        "vzeroupper",
                        n = inout(reg) n.max(1) => _,
                        $(out($dst) _,)+
                        options(nomem, nostack),
                    );
                }
            }
        };
    }

    /// [`timed_loop`] on 256-bit registers.
    macro_rules! ymm_loop {
        ($name:ident, $op:literal) => {
            timed_loop!(
                $name,
                $op,
                "ymm14",
                "ymm15",
                [
                    "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7", "ymm8", "ymm9",
                    "ymm10", "ymm11"
                ]
            );
        };
    }

    ymm_loop!(vpmaddwd, "vpmaddwd");
    ymm_loop!(vpmaddubsw, "vpmaddubsw");
    ymm_loop!(vpshufb, "vpshufb");
    timed_loop!(
        vpdpbusd,
        "vpdpbusd",
        "zmm14",
        "zmm15",
        [
            "zmm0", "zmm1", "zmm2", "zmm3", "zmm4", "zmm5", "zmm6", "zmm7", "zmm8", "zmm9",
            "zmm10", "zmm11"
        ]
    );
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    //! No x86 instructions to time on this target.

    pub(super) fn timers() -> Option<Vec<super::Timer>> {
        None
    }

    pub(super) fn dependent_adds(_: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_is_bounded_by_the_instruction_it_runs() {
        use KernelChoice::*;
        for form in [
            GemmForm::I16,
            GemmForm::Bytes,
            GemmForm::Tables,
            GemmForm::Direct,
        ] {
            assert_eq!(form.instruction(Generic), None);
        }
        assert_eq!(GemmForm::I16.instruction(Avx2), Some(VPMADDWD));
        assert_eq!(GemmForm::I16.instruction(Avx512Vnni), Some(VPMADDWD));
        assert_eq!(GemmForm::Bytes.instruction(Avx2Maddubs), Some(VPMADDUBSW));
        assert_eq!(GemmForm::Direct.instruction(Avx2Maddubs), Some(VPMADDUBSW));
        assert_eq!(GemmForm::Tables.instruction(Avx2Maddubs), Some(VPSHUFB));
        assert_eq!(GemmForm::Bytes.instruction(Avx512Vnni), Some(VPDPBUSD));
    }

    /// Where AVX2 exists every limit is measured, consistently: positive finite rates, the
    /// ceiling `rate × products`, and per-cycle rates a core can issue (between 1/8 and 8).
    #[test]
    fn limits_are_measured_for_every_instruction_the_cpu_has() {
        let Some(limits) = MachineLimits::measure() else {
            assert!(!crate::kernels::KernelChoice::Avx2.is_available());
            return;
        };
        assert!(limits.clock_ghz.is_finite() && limits.clock_ghz > 0.1);
        let names: Vec<_> = limits.instructions.iter().map(|l| l.instruction).collect();
        assert_eq!(&names[..3], [VPMADDWD, VPMADDUBSW, VPSHUFB]);
        assert_eq!(
            limits.of(VPDPBUSD).is_some(),
            KernelChoice::Avx512Vnni.is_available()
        );
        for l in &limits.instructions {
            assert!(l.per_ns.is_finite() && l.per_ns > 0.0, "{l:?}");
            assert_eq!(l.gmacs, l.per_ns * f64::from(l.products), "{l:?}");
            assert!((0.125..8.0).contains(&l.per_cycle), "{l:?}");
        }
    }
}
