//! `cargo xtask eval`: evaluate a saved model on the test set; with `--quantized`, the
//! integer model, optionally dumping its inputs and outputs as NumPy files so that any other
//! implementation can be checked against burnq bit for bit.

use std::path::PathBuf;

use anyhow::Context;
use burnq_data::IMAGE_SIDE;
use burnq_model::checkpoint::load_model;
use burnq_model::data::ImageBatcher;
use burnq_model::{BackendChoice, NetConfig};

use crate::common::{DataArgs, display_path};
use crate::npy;
use crate::paths::ArtifactDir;
use crate::pipeline::{agreement, run_graph, run_integer};

/// Flags of `cargo xtask eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Evaluate the integer model (default: the float model).
    #[arg(long)]
    pub quantized: bool,
    /// Model file (default artifacts/<dataset>/quant/model.safetensors, or float/model.bpk).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Evaluate the first N test images only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --quantized: write input.npy (u8 N×1×28×28), fc2_acc.npy (i32 N×10),
    /// logits.npy (u8 N×10), pred.npy (i64 N) and labels.npy (i64 N) into DIR.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file,
    /// as trained by `cargo xtask train --arch`.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if args.arch != "tutorial" {
        return run_arch(args);
    }
    let dir = ArtifactDir::new(None, args.data.dataset);
    let set = args.data.load_test_limited(args.limit, "--limit")?;
    anyhow::ensure!(
        args.dump.is_none() || args.quantized,
        "--dump needs --quantized"
    );
    if !args.quantized {
        let path = args.model.unwrap_or_else(|| dir.float_model());
        let device = BackendChoice::Flex.device()?;
        let model = load_model(&NetConfig::new(), &path, &device)?;
        let batcher = ImageBatcher::new(args.data.dataset.normalization());
        let (r, _) = burnq_model::eval::evaluate(&model, &set, &batcher, 1000, &device);
        println!(
            "{}: float accuracy {:.2}% ({} images), loss {:.4}",
            display_path(&path),
            100.0 * r.accuracy,
            r.images,
            r.loss
        );
        return Ok(());
    }
    let path = args.model.unwrap_or_else(|| dir.quant_model());
    let model = burnq_quant::load(&path)?;
    let out = run_integer(&model, &set)?;
    let pred = &out.predictions;
    println!(
        "{}: integer accuracy {:.2}% ({} images, {}{})",
        display_path(&path),
        100.0 * agreement(pred, &set.labels),
        set.len(),
        burnq_quant::widths_label(model.options(), &model.layers().iter().collect::<Vec<_>>()),
        if model.per_channel() {
            " per-channel"
        } else {
            ""
        }
    );
    if let Some(dump) = args.dump {
        write_dump(&dump, &set, &out, 10)?;
    }
    Ok(())
}

/// Writes the inputs and outputs of an integer forward pass as NumPy files into `dump`.
fn write_dump(
    dump: &std::path::Path,
    set: &burnq_data::ImageSet,
    out: &burnq_quant::Output,
    classes: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dump).with_context(|| format!("creating {}", dump.display()))?;
    let n = set.len();
    let to_i64 = |v: &[u8]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    npy::write(
        &dump.join("input.npy"),
        &set.pixels,
        &[n, 1, IMAGE_SIDE, IMAGE_SIDE],
    )?;
    npy::write(&dump.join("fc2_acc.npy"), &out.fc2_acc, &[n, classes])?;
    npy::write(&dump.join("logits.npy"), &out.logits_u8, &[n, classes])?;
    npy::write(&dump.join("pred.npy"), &to_i64(&out.predictions), &[n])?;
    npy::write(&dump.join("labels.npy"), &to_i64(&set.labels), &[n])?;
    println!(
        "wrote input.npy, fc2_acc.npy, logits.npy, pred.npy, labels.npy to {}",
        dump.display()
    );
    Ok(())
}

/// `eval --arch NAME|FILE`: a described network's float model or integer graph.
fn run_arch(args: EvalArgs) -> anyhow::Result<()> {
    let arch = burnq_arch::Architecture::load(&args.arch)?;
    let dir = ArtifactDir::for_arch(None, args.data.dataset, &arch.name)?;
    let set = args.data.load_test_limited(args.limit, "--limit")?;
    anyhow::ensure!(
        args.dump.is_none() || args.quantized,
        "--dump needs --quantized"
    );
    if !args.quantized {
        let path = args.model.unwrap_or_else(|| dir.float_model());
        let device = BackendChoice::Flex.device()?;
        let norm = args.data.dataset.normalization();
        let (_, model) = burnq_model::checkpoint::load_arch_net(&path, norm, &device)?;
        let batcher = ImageBatcher::new(norm);
        let forward = |x| burnq_model::training::Classifier::log_probs(&model, x);
        let (r, _) = burnq_model::eval::evaluate_with(&forward, &set, &batcher, 500, &device);
        println!(
            "{} ({}): float accuracy {:.2}% ({} images), loss {:.4}",
            display_path(&path),
            arch.name,
            100.0 * r.accuracy,
            r.images,
            r.loss
        );
        return Ok(());
    }
    let path = args.model.unwrap_or_else(|| dir.quant_model());
    let graph = burnq_quant::load_graph(&path)?;
    anyhow::ensure!(
        graph.architecture().plan()? == arch.plan()?,
        "{} holds the {:?} network, not {:?}",
        display_path(&path),
        graph.architecture().name,
        arch.name
    );
    let out = run_graph(&graph, &set.pixels)?;
    let o = graph.options();
    println!(
        "{} ({}): integer accuracy {:.2}% ({} images, {}{})",
        display_path(&path),
        arch.name,
        100.0 * agreement(&out.predictions, &set.labels),
        set.len(),
        burnq_quant::widths_label(o, &graph.layers()),
        if o.per_channel { " per-channel" } else { "" }
    );
    if let Some(dump) = args.dump {
        write_dump(&dump, &set, &out, graph.plan().classes())?;
    }
    Ok(())
}
