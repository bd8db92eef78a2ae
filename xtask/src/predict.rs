//! `cargo xtask predict IMAGE…`: classify pictures (PGM or PNG, any size; made MNIST-like as
//! `burnq_data::digit` documents) with the integer model, and optionally the float model.

use std::path::PathBuf;

use anyhow::Context;
use burnq_data::digit::load_digit;
use burnq_model::checkpoint::{load_arch_net, load_model};
use burnq_model::data::ImageBatcher;
use burnq_model::predict::Predictor;
use burnq_model::{BackendChoice, NetConfig};

use crate::common::DataArgs;
use crate::paths::ArtifactDir;
use crate::pipeline::run_graph;
use crate::table::markdown;

/// Flags of `cargo xtask predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Pictures to classify (PGM P2/P5 or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Integer model file of any version (default artifacts/<dataset>/quant/model.safetensors).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also run the float model (artifacts/<dataset>/float/model.bpk) for comparison.
    #[arg(long)]
    pub float: bool,
    /// The network whose artifacts folder holds the models (a preset or a description file,
    /// as trained by `cargo xtask train --arch`).
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let arch = burnq_arch::Architecture::load(&args.arch)?;
    let dir = ArtifactDir::for_arch(None, args.data.dataset, &arch.name)?;
    let path = args.model.clone().unwrap_or_else(|| dir.quant_model());
    // Every model file reads as a graph (tutorial files as the tutorial preset).
    let graph = burnq_quant::load_graph(&path)
        .context("loading the integer model (`cargo xtask quantize` writes it)")?;
    anyhow::ensure!(
        graph.plan().classes() == 10,
        "{}: {} classes, but the data sets have 10",
        path.display(),
        graph.plan().classes()
    );
    let mut pixels = Vec::new();
    for image in &args.images {
        pixels.extend(load_digit(image)?);
    }
    let out = run_graph(&graph, &pixels)?;
    let probs = graph.class_probabilities(&out.logits_u8);
    let norm = args.data.dataset.normalization();
    let float = match (args.float, arch.name == "tutorial") {
        (false, _) => None,
        (true, true) => {
            let device = BackendChoice::Flex.device()?;
            let net = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
            Some(Predictor::new(&net, device, norm).probabilities(&pixels))
        }
        (true, false) => {
            let device = BackendChoice::Flex.device()?;
            let (_, net) = load_arch_net(&dir.float_model(), norm, &device)?;
            let images = ImageBatcher::new(norm).images(&pixels, &device);
            let probs = burnq_model::training::Classifier::log_probs(&net, images).exp();
            Some(burnq_model::export::to_vec(probs))
        }
    };
    let names = args.data.dataset.class_names();
    let mut rows = Vec::new();
    for (i, image) in args.images.iter().enumerate() {
        let p = &probs[i * 10..(i + 1) * 10];
        let class = usize::from(out.predictions[i]);
        let mut row = vec![
            image.display().to_string(),
            names[class].to_string(),
            format!("{:.3}", p[class]),
            p.iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
        ];
        if let Some(f) = &float {
            let f = &f[i * 10..(i + 1) * 10];
            let best = (0..10).fold(0, |b, c| if f[c] > f[b] { c } else { b });
            row.push(format!("{} ({:.3})", names[best], f[best]));
        }
        rows.push(row);
    }
    let mut headers = vec![
        "image",
        "integer prediction",
        "probability",
        "probabilities 0..9",
    ];
    if float.is_some() {
        headers.push("float prediction");
    }
    println!("{}", markdown(&headers, &rows));
    Ok(())
}
