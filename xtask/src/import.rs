//! `cargo xtask import --pytorch FILE.pt`: a PyTorch `state_dict` of the tutorial network
//! becomes a float model in `<out>/float/`, where `cargo xtask quantize --out <out>` takes it
//! like a Burn-trained one.
//!
//! With `--arch NAME|FILE` (other than `tutorial`) the file is the `state_dict` of the
//! described network's `nn.Sequential` (keys by layer index, see `burnq_model::import_arch`
//! and `examples/pytorch_import.md`); the network goes to the description's folder,
//! `artifacts/<arch>/<dataset>/float/` (or `<out>/float/`), as `model.bpk` + `model.arch.json`
//! + `import.json`, where `cargo xtask quantize --arch NAME` takes it like a Burn-trained one.

use std::path::PathBuf;

use burnq_arch::Architecture;
use burnq_model::checkpoint::{save_arch_net, save_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::{evaluate, evaluate_with};
use burnq_model::import::{import_pytorch, pytorch_tensors};
use burnq_model::import_arch::{KeyNaming, import_pytorch_arch};
use burnq_model::training::Classifier;
use burnq_model::{BURN_VERSION, BackendChoice, NetConfig};
use serde::Serialize;

use crate::common::{DataArgs, display_path};
use crate::paths::ArtifactDir;
use crate::table::markdown;

/// Flags of `cargo xtask import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// PyTorch file with the network's state_dict (`torch.save(model.state_dict(), FILE)`), possibly
    /// inside a checkpoint (`state_dict.`, `model_state_dict.`, `module.` prefixes are found).
    #[arg(long)]
    pub pytorch: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Output folder (default artifacts/pytorch-<dataset>, or artifacts/<arch>/<dataset> with
    /// --arch); the model goes to <out>/float/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network: `tutorial` (the default: the tutorial network's state_dict, exactly as
    /// without the flag), a preset (lenet5, mobile) or a .json/.toml description file, whose
    /// nn.Sequential state_dict the file holds (`{i}.weight` for layer i, counting every layer;
    /// `{i}.body.{j}.…` inside a residual block).
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

/// `float/import.json` of a described network.
#[derive(Debug, Serialize)]
struct ArchImportReport {
    architecture: String,
    dataset: String,
    source: String,
    source_bytes: u64,
    /// `sequential` (`3.weight`) or `step-name` (`c3.weight`).
    key_naming: &'static str,
    /// Prefix of the tensors' keys in the file (`""` for a plain state_dict).
    key_prefix: String,
    /// Element type in the file (converted to f32).
    source_dtype: String,
    /// Entries outside the prefix and batch norms' `num_batches_tracked`, ignored.
    ignored: Vec<String>,
    /// Each tensor read: its key (without the prefix), the step it belongs to, its shape.
    tensors: Vec<(String, String, Vec<usize>)>,
    params: usize,
    test_images: usize,
    test_accuracy: f64,
    test_loss: f64,
    burn_version: &'static str,
}

/// `float/import.json`: where the model came from and how well it does.
#[derive(Debug, Serialize)]
struct ImportReport {
    dataset: String,
    source: String,
    source_bytes: u64,
    /// Prefix of the tensors' keys in the file (`""` for a plain state_dict).
    key_prefix: String,
    /// Element type in the file (converted to f32).
    source_dtype: String,
    /// Entries of the file outside the prefix, ignored.
    ignored: Vec<String>,
    tensors: Vec<(&'static str, Vec<usize>)>,
    test_images: usize,
    test_accuracy: f64,
    test_loss: f64,
    burn_version: &'static str,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    if args.arch != "tutorial" {
        let arch = Architecture::load(&args.arch)?;
        return run_arch(&args, &arch);
    }
    let device = BackendChoice::Flex.device()?;
    let config = NetConfig::new();
    let imported = import_pytorch(&config, &args.pytorch, &device)?;
    let model = imported.net;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let batcher = ImageBatcher::new(args.data.dataset.normalization());
    let (result, _) = evaluate(&model, &test_set, &batcher, 1000, &device);

    let dir = ArtifactDir::imported(args.out.as_deref(), args.data.dataset);
    let model_path = dir.float_model();
    save_model(&model, &model_path)?;
    write_json_atomic(&config, &dir.float_config())?;
    let report = ImportReport {
        dataset: args.data.dataset.dir_name().into(),
        source: args.pytorch.display().to_string(),
        source_bytes: std::fs::metadata(&args.pytorch).map_or(0, |m| m.len()),
        key_prefix: imported.prefix,
        source_dtype: imported.dtype,
        ignored: imported.ignored,
        tensors: pytorch_tensors(&config),
        test_images: result.images,
        test_accuracy: result.accuracy,
        test_loss: result.loss,
        burn_version: BURN_VERSION,
    };
    write_json_atomic(&report, &dir.import_report())?;

    println!(
        "{}",
        markdown(
            &[
                "PyTorch file",
                "tensors",
                "dtype",
                "ignored entries",
                "test images",
                "float accuracy",
                "test loss"
            ],
            &[vec![
                report.source.clone(),
                match report.key_prefix.as_str() {
                    "" => format!("{} (top level)", report.tensors.len()),
                    prefix => format!("{} under `{prefix}`", report.tensors.len()),
                },
                report.source_dtype.clone(),
                report.ignored.len().to_string(),
                report.test_images.to_string(),
                format!("{:.2}%", 100.0 * report.test_accuracy),
                format!("{:.4}", report.test_loss),
            ]],
        )
    );
    println!(
        "wrote {} (+ config.json, import.json); next: cargo xtask quantize --dataset {} --out {}",
        display_path(&model_path),
        args.data.dataset.dir_name(),
        display_path(dir.root())
    );
    Ok(())
}

/// `import --arch`: a described network's state_dict into the description's folder.
fn run_arch(args: &ImportArgs, arch: &Architecture) -> anyhow::Result<()> {
    let device = BackendChoice::Flex.device()?;
    let plan = arch.plan()?;
    let norm = args.data.dataset.normalization();
    let dir = ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?;
    let imported = import_pytorch_arch(arch, &args.pytorch, norm, &device)?;
    let net = &imported.net;
    let test_set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let batcher = ImageBatcher::new(norm);
    let (result, _) = evaluate_with(&|x| net.log_probs(x), &test_set, &batcher, 1000, &device);

    let model_path = dir.float_model();
    save_arch_net(net, arch, &model_path)?;
    // A previous training run's records in the folder describe a model that is gone.
    for stale in [dir.train_report(), dir.training_plot(), dir.float_config()] {
        if stale.is_file() {
            std::fs::remove_file(&stale)?;
        }
    }
    let report = ArchImportReport {
        architecture: arch.name.clone(),
        dataset: args.data.dataset.dir_name().into(),
        source: args.pytorch.display().to_string(),
        source_bytes: std::fs::metadata(&args.pytorch).map_or(0, |m| m.len()),
        key_naming: match imported.naming {
            KeyNaming::Sequential => "sequential",
            KeyNaming::StepName => "step-name",
        },
        key_prefix: imported.prefix.clone(),
        source_dtype: imported.dtype.clone(),
        ignored: imported.ignored.clone(),
        tensors: imported
            .tensors
            .iter()
            .map(|t| (t.key.clone(), t.step.clone(), t.shape.clone()))
            .collect(),
        params: plan.params(),
        test_images: result.images,
        test_accuracy: result.accuracy,
        test_loss: result.loss,
        burn_version: BURN_VERSION,
    };
    write_json_atomic(&report, &dir.import_report())?;

    println!(
        "{}",
        markdown(
            &[
                "PyTorch file",
                "network",
                "tensors",
                "dtype",
                "ignored entries",
                "test images",
                "float accuracy",
                "test loss"
            ],
            &[vec![
                report.source.clone(),
                format!("{} ({} parameters)", report.architecture, report.params),
                match report.key_prefix.as_str() {
                    "" => format!("{} ({} keys)", report.tensors.len(), report.key_naming),
                    prefix => format!(
                        "{} ({} keys) under `{prefix}`",
                        report.tensors.len(),
                        report.key_naming
                    ),
                },
                report.source_dtype.clone(),
                report.ignored.len().to_string(),
                report.test_images.to_string(),
                format!("{:.2}%", 100.0 * report.test_accuracy),
                format!("{:.4}", report.test_loss),
            ]],
        )
    );
    let out = if args.out.is_some() {
        format!(" --out {}", display_path(dir.root()))
    } else {
        String::new()
    };
    println!(
        "wrote {} (+ model.arch.json, import.json); next: cargo xtask quantize --arch {} --dataset {}{out}",
        display_path(&model_path),
        args.arch,
        args.data.dataset.dir_name(),
    );
    Ok(())
}
