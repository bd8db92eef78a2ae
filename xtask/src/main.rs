//! `cargo xtask`: burnq's command line. It orchestrates the library crates and writes
//! reports; the math lives in `burnq-model`, `burnq-calib` and `burnq-quant`.

mod allocator;
mod bench;
mod common;
mod eval;
mod export_onnx;
mod import;
mod machine;
mod mixed;
mod npy;
mod paths;
mod peer;
mod pipeline;
mod plot;
mod predict;
mod qat;
mod quantize;
mod quantize_arch;
mod sensitivity;
mod serve;
mod sweep;
mod table;
mod train;

use clap::{Parser, Subcommand};

/// burnq: train the tutorial MNIST network with Burn, calibrate it, and run it with
/// integer-only arithmetic (u8 weights and activations, i32 accumulators).
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train the float model (the tutorial's recipe by default) into artifacts/<dataset>/float/.
    Train(train::TrainArgs),
    /// Calibrate the float model, convert it to integers, and compare float and integer accuracy.
    Quantize(quantize::QuantizeArgs),
    /// Quantization-aware fine-tuning of the float model, exported to the integer engine.
    Qat(qat::QatArgs),
    /// Per-layer SQNR and accuracy with one layer quantized at a time.
    Sensitivity(sensitivity::SensitivityArgs),
    /// Integer accuracy for each bit width × {PTQ per tensor, PTQ per channel, QAT}.
    Sweep(sweep::SweepArgs),
    /// Mixed precision: per-layer widths chosen under weight-size budgets, fine-tuned, and the
    /// accuracy-vs-size Pareto front beside the uniform widths.
    Mixed(mixed::MixedArgs),
    /// Evaluate a saved float or (--quantized) integer model; --dump writes NumPy files.
    Eval(eval::EvalArgs),
    /// Classify PGM/PNG pictures of digits with the integer model (and --float for comparison).
    Predict(predict::PredictArgs),
    /// Import a PyTorch state_dict of the network (or with --arch, of a described network's
    /// nn.Sequential) as a float model (artifacts/pytorch-<dataset>/, artifacts/<arch>/<dataset>/).
    Import(import::ImportArgs),
    /// Write the integer model as an ONNX graph (QLinearConv…); --verify runs it with ONNX Runtime.
    ExportOnnx(export_onnx::ExportOnnxArgs),
    /// A local web server: a drawing pad answered by the integer and float models, a report
    /// page per data set, and a JSON API (/api/predict, /api/models, /healthz).
    Serve(serve::ServeArgs),
    /// Verify, then time every engine (Burn float and Q8, burnq per width, ONNX Runtime) on the test set.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(args) => train::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Qat(args) => qat::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Mixed(args) => mixed::run(args),
        Command::Sensitivity(args) => sensitivity::run(args),
        Command::Import(args) => import::run(args),
        Command::ExportOnnx(args) => export_onnx::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
