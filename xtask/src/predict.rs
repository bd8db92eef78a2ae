//! `cargo xtask predict IMAGE…`: classify pictures (PGM or PNG, any size; made MNIST-like as
//! `burnq_data::digit` documents) with the integer model, and optionally the float model.

use std::path::PathBuf;

use anyhow::Context;
use burnq_data::digit::load_digit;
use burnq_model::checkpoint::load_model;
use burnq_model::predict::Predictor;
use burnq_model::{BackendChoice, NetConfig};

use crate::common::DataArgs;
use crate::paths::ArtifactDir;
use crate::pipeline::run_integer_pixels;
use crate::table::markdown;

/// Flags of `cargo xtask predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// Pictures to classify (PGM P2/P5 or PNG).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Integer model file (default artifacts/<dataset>/quant/model.safetensors).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also run the float model (artifacts/<dataset>/float/model.bpk) for comparison.
    #[arg(long)]
    pub float: bool,
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let dir = ArtifactDir::new(None, args.data.dataset);
    let path = args.model.clone().unwrap_or_else(|| dir.quant_model());
    let model = burnq_quant::load(&path)
        .context("loading the integer model (`cargo xtask quantize` writes it)")?;
    let mut pixels = Vec::new();
    for image in &args.images {
        pixels.extend(load_digit(image)?);
    }
    let out = run_integer_pixels(&model, &pixels)?;
    let probs = model.class_probabilities(&out.logits_u8);
    let float = if args.float {
        let device = BackendChoice::Flex.device()?;
        let net = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
        Some(Predictor::new(&net, device, args.data.dataset.normalization()).probabilities(&pixels))
    } else {
        None
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
