//! Which kernel implementations a test can run on this CPU.

use burnq_quant::kernels::KernelChoice;

/// Environment variable that turns a missing AVX2 (the `avx2` and `avx2-maddubs` kernels) from
/// a skipped test into a failure.
const REQUIRE_AVX2: &str = "BURNQ_REQUIRE_AVX2";
/// Environment variable that turns a missing AVX-512 VNNI (the `avx512-vnni` kernel) from a
/// skipped test into a failure.
const REQUIRE_AVX512_VNNI: &str = "BURNQ_REQUIRE_AVX512_VNNI";

/// `kernel` if this CPU runs it. Otherwise prints a loud `SKIPPED: no <features>` line and
/// returns `None`, or fails if the kernel's `BURNQ_REQUIRE_…=1` is set.
pub fn available(kernel: KernelChoice) -> Option<KernelChoice> {
    if kernel.is_available() {
        return Some(kernel);
    }
    let (variable, features) = match kernel {
        KernelChoice::Avx512Vnni => (REQUIRE_AVX512_VNNI, "AVX-512 VNNI"),
        _ => (REQUIRE_AVX2, "AVX2"),
    };
    let required = std::env::var(variable).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{variable}=1, but this CPU cannot run the {kernel} kernel"
    );
    eprintln!("SKIPPED: no {features}: the {kernel} kernel was not tested on this CPU");
    None
}
/// Every implementation this CPU runs, each missing one reported by [`available`].
pub fn all() -> Vec<KernelChoice> {
    KernelChoice::ALL
        .into_iter()
        .filter_map(available)
        .collect()
}
