//! Which kernel implementations a test can run on this CPU.

use burnq_quant::kernels::KernelChoice;

/// Environment variable that turns a missing AVX2 from a skipped test into a failure.
const REQUIRE_AVX2: &str = "BURNQ_REQUIRE_AVX2";

/// `kernel` if this CPU runs it. Otherwise prints a loud `SKIPPED: no AVX2` line and returns
/// `None`, or fails if `BURNQ_REQUIRE_AVX2=1`.
pub fn available(kernel: KernelChoice) -> Option<KernelChoice> {
    if kernel.is_available() {
        return Some(kernel);
    }
    let required = std::env::var(REQUIRE_AVX2).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{REQUIRE_AVX2}=1, but this CPU cannot run the {kernel} kernel"
    );
    eprintln!("SKIPPED: no AVX2: the {kernel} kernel was not tested on this CPU");
    None
}

/// Every implementation this CPU runs, each missing one reported by [`available`].
pub fn all() -> Vec<KernelChoice> {
    KernelChoice::ALL
        .into_iter()
        .filter_map(available)
        .collect()
}
