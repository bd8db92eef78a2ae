//! Running the `xtask` binary from the integration tests: a command with the test data
//! folder in `BURNQ_DATA_DIR`, its output as text, and JSON artifacts read back. Each test
//! crate uses a different part of it, hence `allow(dead_code)`.

#![allow(dead_code)]

pub mod http;

use std::path::Path;
use std::process::{Command, Output};

/// `xtask <args>` with `BURNQ_DATA_DIR` set to the test data folder.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env("BURNQ_DATA_DIR", burnq_data::locate::test_data_dir());
    cmd
}

/// Runs `xtask <args>` to completion.
pub fn xtask(args: &[&str]) -> Output {
    command(args).output().expect("the xtask binary runs")
}

/// Runs `xtask <args>` to completion and asserts that it succeeded (its output in the message).
pub fn xtask_ok(args: &[&str]) -> Output {
    let out = xtask(args);
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// Standard output then standard error, as text.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A JSON file, parsed; panics naming the file.
pub fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
