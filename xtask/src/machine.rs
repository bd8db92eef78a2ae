//! What a benchmark ran on: CPU, features, threads, toolchain, date.

use serde::Serialize;

/// The machine and build a report was measured with.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cpu: String,
    pub features: Vec<&'static str>,
    pub logical_cores: usize,
    pub rustc: String,
    pub burn: &'static str,
    pub date_utc: String,
}

impl MachineInfo {
    /// Reads the machine's description (best effort: unknown fields say "unknown").
    pub fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        Self {
            cpu,
            features: cpu_features(),
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            rustc: command_line("rustc", &["--version"]),
            burn: burnq_model::BURN_VERSION,
            date_utc: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        }
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(target_arch = "x86_64")]
fn cpu_features() -> Vec<&'static str> {
    let mut f = Vec::new();
    if is_x86_feature_detected!("sse4.1") {
        f.push("sse4.1");
    }
    if is_x86_feature_detected!("avx2") {
        f.push("avx2");
    }
    if is_x86_feature_detected!("fma") {
        f.push("fma");
    }
    if is_x86_feature_detected!("avx512f") {
        f.push("avx512f");
    }
    if is_x86_feature_detected!("avx512vnni") {
        f.push("avx512vnni");
    }
    f
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_features() -> Vec<&'static str> {
    Vec::new()
}
