//! Whether ONNX Runtime can run here, for the tests that need it (burnq-onnx's and xtask's).
//! It comes from PyPI (`pip install onnxruntime onnx numpy`); `BURNQ_PYTHON` names the
//! interpreter (default `python3`).

use std::process::Command;

/// The Python interpreter the tests use.
pub fn python() -> String {
    std::env::var("BURNQ_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Whether ONNX Runtime can run; without it the calling test is skipped, unless
/// `BURNQ_REQUIRE_ONNXRUNTIME=1` (set by `.ci/run`), which turns its absence into a failure.
pub fn onnxruntime_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import onnxruntime, onnx, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("BURNQ_REQUIRE_ONNXRUNTIME").is_ok_and(|v| v == "1");
    assert!(
        ok || !required,
        "BURNQ_REQUIRE_ONNXRUNTIME=1 but `{} -c 'import onnxruntime, onnx, numpy'` fails",
        python()
    );
    if !ok {
        eprintln!("skipped: ONNX Runtime is not installed (pip install onnxruntime onnx numpy)");
    }
    ok
}
