//! `cargo xtask import --pytorch FILE.pt`: a PyTorch `state_dict` of the tutorial network
//! becomes a float model in `<out>/float/`, where `cargo xtask quantize --out <out>` takes it
//! like a Burn-trained one.

use std::path::PathBuf;

use burnq_model::checkpoint::{save_model, write_json_atomic};
use burnq_model::data::ImageBatcher;
use burnq_model::eval::evaluate;
use burnq_model::import::{import_pytorch, pytorch_tensors};
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
    /// Output folder (default artifacts/pytorch-<dataset>); the model goes to <out>/float/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
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
