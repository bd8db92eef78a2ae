//! Crash safety: `train` and `quantize` killed with SIGKILL at seeded random moments never
//! leave a broken artifact behind. Each command first runs to completion, so that valid
//! artifacts exist; then it is started again [`KILLS`] times and killed after a delay drawn
//! between 0.2 s and the length of the complete run (at most 5 s). After every kill, each
//! artifact a later command reads must still load — `float/model.bpk` through
//! [`load_model`], `float/config.json` and `float/train.json` as JSON, `float/training.svg`
//! whole; `quant/model.safetensors` through [`burnq_quant::load`], `calibration.json`
//! through [`Calibration::load`], `quant/report.json` as JSON — and any other file left in
//! the output folders must be a scratch file of an interrupted write (`*.tmp`, `.tmp*`),
//! which no reader opens. About half a minute in all.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use burnq_calib::Calibration;
use burnq_model::checkpoint::load_model;
use burnq_model::{Device, NetConfig};
use common::{command, json, text, xtask};

/// Interrupted runs per command.
const KILLS: usize = 6;
/// Seed of the kill delays.
const SEED: u64 = 0x5eed_c4a5;

/// Kill delays: xorshift64*, uniform in `[0.2 s, max)`.
struct Delays(u64);

impl Delays {
    fn next(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let unit = (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
        let min = 0.2;
        Duration::from_secs_f64(min + unit * (max.as_secs_f64() - min).max(0.0))
    }
}

/// Runs `xtask <args>` to completion and returns how long it took.
fn complete_run(args: &[&str]) -> Duration {
    let start = Instant::now();
    let out = xtask(args);
    assert!(out.status.success(), "{}", text(&out));
    start.elapsed()
}

/// Starts `xtask <args>`, sends SIGKILL after `delay` and waits for it; whether the signal
/// ended it (`false`: it had finished first).
fn killed_after(args: &[&str], delay: Duration) -> bool {
    let mut child = command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the xtask binary starts");
    std::thread::sleep(delay);
    // `kill` sends SIGKILL; it fails only when the process has already been reaped.
    let _ = child.kill();
    let status = child.wait().unwrap();
    match status.signal() {
        Some(9) => true,
        None if status.success() => false,
        _ => panic!("xtask {args:?} ended with {status}"),
    }
}

/// The names in `dir` that are not `artifacts`; each must be a scratch file of an atomic
/// write (`<name>.tmp` of `write_atomic`, `<name>.<pid>-<n>.tmp` of burnpack, `.tmp<random>`
/// of the model file's `save`), never another file a reader could take for an artifact.
fn scratch_files(dir: &Path, artifacts: &[&str]) -> Vec<String> {
    let mut scratch = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if artifacts.contains(&name.as_str()) || entry.file_type().unwrap().is_dir() {
            continue;
        }
        assert!(
            name.ends_with(".tmp") || name.starts_with(".tmp"),
            "{}: unexpected file {name}",
            dir.display()
        );
        scratch.push(name);
    }
    scratch
}

/// Every artifact of `train` loads; returns the scratch files left.
fn check_float(out: &Path) -> Vec<String> {
    let float = out.join("float");
    let path = float.join("model.bpk");
    load_model(&NetConfig::new(), &path, &Device::flex())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(json(&float.join("config.json")).is_object());
    let report = json(&float.join("train.json"));
    assert!(!report["history"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(float.join("training.svg")).unwrap();
    assert!(svg.trim_end().ends_with("</svg>"), "training.svg is cut");
    scratch_files(
        &float,
        &["model.bpk", "config.json", "train.json", "training.svg"],
    )
}

/// Every artifact of `quantize` loads; returns the scratch files left.
fn check_quant(out: &Path) -> Vec<String> {
    let quant = out.join("quant");
    let path = quant.join("model.safetensors");
    burnq_quant::load(&path).unwrap_or_else(|e| panic!("{e}"));
    Calibration::load(&out.join("calibration.json")).unwrap_or_else(|e| panic!("{e}"));
    assert!(json(&quant.join("report.json"))["int_accuracy"].is_number());
    let mut scratch = scratch_files(&quant, &["model.safetensors", "report.json"]);
    scratch.extend(scratch_files(out, &["calibration.json"]));
    scratch
}

/// Runs `args` to completion, checks, then kills [`KILLS`] runs and checks after each.
fn survive_kills(name: &str, args: &[&str], delays: &mut Delays, check: impl Fn() -> Vec<String>) {
    let full = complete_run(args);
    assert!(check().is_empty(), "a complete {name} left scratch files");
    let max = full.min(Duration::from_secs(5));
    let mut killed = 0;
    let mut scratch = Vec::new();
    for _ in 0..KILLS {
        let delay = delays.next(max);
        killed += usize::from(killed_after(args, delay));
        scratch = check();
        eprintln!(
            "{name}: killed after {:.2} s; artifacts load; scratch files: {scratch:?}",
            delay.as_secs_f64()
        );
    }
    eprintln!(
        "{name}: complete run {:.1} s; {killed} of {KILLS} runs killed, the others finished first; \
         scratch files left at the end: {scratch:?}",
        full.as_secs_f64()
    );
    assert!(
        killed > 0,
        "no {name} run was killed: the delays missed the run"
    );
}

#[test]
fn killed_runs_leave_loadable_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let mut delays = Delays(SEED);
    let train = [
        "train",
        "--epochs",
        "2",
        "--train-limit",
        "2560",
        "--test-limit",
        "200",
        "--offline",
        "--out",
        out,
    ];
    survive_kills("train", &train, &mut delays, || check_float(dir.path()));
    let quantize = [
        "quantize",
        "--calib-samples",
        "200",
        "--test-limit",
        "200",
        "--offline",
        "--out",
        out,
    ];
    survive_kills("quantize", &quantize, &mut delays, || {
        check_quant(dir.path())
    });
    // Killed quantize runs leave the float model as it was.
    check_float(dir.path());
}
