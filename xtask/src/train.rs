//! `cargo xtask train`: the tutorial's training run, written to `artifacts/<dataset>/float/`;
//! with `--arch NAME|FILE`, a described network (`burnq_arch`) trained with the same recipe
//! into `artifacts/<arch>/<dataset>/float/`, its description beside the model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use burnq_arch::Architecture;
use burnq_data::Split;
use burnq_model::checkpoint::{save_arch_net, save_model, write_json_atomic};
use burnq_model::training::{EpochRecord, TrainEvent, TrainingConfig, train, train_arch};
use burnq_model::{ArchNet, BURN_VERSION, BackendChoice, ModelError, NetConfig};
use serde::Serialize;

use crate::common::{DataArgs, Limits, display_path, progress_bar};
use crate::paths::ArtifactDir;
use crate::plot::{Panel, Series, line_panels};
use crate::table::markdown;

/// Flags of `cargo xtask train`; the defaults reproduce the tutorial.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Images per SGD step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// SGD momentum (dampening 0, as in PyTorch).
    #[arg(long, default_value_t = 0.5)]
    pub momentum: f64,
    /// Learning-rate factor per epoch: epoch e uses lr·lr_decay^(e−1) (1: constant, the
    /// tutorial's recipe).
    #[arg(long, default_value_t = 1.0)]
    pub lr_decay: f64,
    /// Seed of the initialization and of the shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Burn backend: flex (default CPU), ndarray (feature `ndarray`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "flex", value_parser = BackendChoice::parse)]
    pub backend: BackendChoice,
    #[command(flatten)]
    pub limits: Limits,
    /// Output folder (default artifacts/<dataset>, or artifacts/<arch>/<dataset> with --arch);
    /// the model goes to <out>/float/.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The network: a preset (tutorial, lenet5, mobile) or a .json/.toml description file.
    /// `tutorial` (the default) trains the tutorial's network exactly as without the flag.
    #[arg(long, default_value = "tutorial")]
    pub arch: String,
    /// Data-parallel shards per batch, one thread each, gradients summed in shard order
    /// (default: one per core; 1 = the whole batch in one pass). Results depend on the
    /// count, never on scheduling. Networks with batch norm or dropout always use 1.
    #[arg(long)]
    pub shards: Option<usize>,
}

/// `train.json`: what was trained, how, and how well.
#[derive(Debug, Serialize)]
struct TrainReport {
    /// The description's name; absent for the tutorial's network.
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<String>,
    dataset: String,
    backend: String,
    epochs: usize,
    seed: u64,
    batch_size: usize,
    /// Data-parallel shards each batch was cut into (1 for networks with batch norm or
    /// dropout, whatever was asked).
    shards: usize,
    lr: f64,
    momentum: f64,
    train_images: usize,
    test_images: usize,
    test_accuracy: f64,
    test_loss: f64,
    total_seconds: f64,
    burn_version: &'static str,
    history: Vec<EpochRecord>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    crate::allocator::keep_freed_memory();
    // The tutorial keeps its own network type (`Net`) and exactly its own behaviour.
    let arch = match args.arch.as_str() {
        "tutorial" => None,
        name => Some(Architecture::load(name)?),
    };
    let device = args.backend.device()?;
    let train_set = args
        .data
        .load_limited(Split::Train, args.limits.train_limit)?;
    let test_set = args
        .data
        .load_test_limited(args.limits.test_limit, "--test-limit")?;
    let dir = match &arch {
        None => ArtifactDir::new(args.out.as_deref(), args.data.dataset),
        Some(arch) => ArtifactDir::for_arch(args.out.as_deref(), args.data.dataset, &arch.name)?,
    };
    let config = TrainingConfig::new(NetConfig::new())
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_lr(args.lr)
        .with_momentum(args.momentum)
        .with_lr_decay(args.lr_decay)
        .with_seed(args.seed)
        .with_shards(args.shards.unwrap_or_else(default_shards));
    let model_path = dir.float_model();
    write_json_atomic(&config, &dir.float_config())?;
    let network = arch.as_ref().map_or_else(
        || "the tutorial's network".to_owned(),
        |a| {
            let plan = a.plan().expect("a loaded description plans");
            format!(
                "{} ({} parameters, {} MACs per image)",
                a.name,
                plan.params(),
                plan.macs()
            )
        },
    );
    eprintln!(
        "training {network} on {} ({} train / {} test images of {}), {} epochs",
        args.backend.name(),
        train_set.len(),
        test_set.len(),
        args.data.dataset,
        args.epochs
    );

    let progress = TrainProgress::new(args.epochs);
    let mut on_event = |event| progress.on_event(event);
    let start = Instant::now();
    let n_train = train_set.len();
    let history = match &arch {
        None => {
            let mut on_epoch =
                |model: &burnq_model::Net, _: &EpochRecord| save_model(model, &model_path);
            let (_, history) = train(
                &config,
                Arc::new(train_set),
                &test_set,
                &device,
                &mut on_event,
                &mut on_epoch,
            )?;
            history
        }
        Some(arch) => {
            let plan = arch.plan()?;
            let mut on_epoch = |model: &ArchNet, _: &EpochRecord| -> Result<(), ModelError> {
                save_arch_net(model, arch, &model_path)
            };
            let (_, history) = train_arch(
                &config,
                &plan,
                Arc::new(train_set),
                &test_set,
                &device,
                &mut on_event,
                &mut on_epoch,
            )?;
            history
        }
    };
    progress.finish();
    let last = history.last().context("no epoch was run (--epochs 0?)")?;
    let report = TrainReport {
        arch: arch.as_ref().map(|a| a.name.clone()),
        dataset: args.data.dataset.dir_name().into(),
        backend: args.backend.name().into(),
        epochs: args.epochs,
        seed: args.seed,
        batch_size: args.batch_size,
        shards: last.shards,
        lr: args.lr,
        momentum: args.momentum,
        train_images: n_train,
        test_images: test_set.len(),
        test_accuracy: last.test.accuracy,
        test_loss: last.test.loss,
        total_seconds: start.elapsed().as_secs_f64(),
        burn_version: BURN_VERSION,
        history: history.clone(),
    };
    write_json_atomic(&report, &dir.train_report())?;
    let svg = training_plot(&report);
    burnq_arch::write_atomic(&dir.training_plot(), svg.as_bytes())
        .context("writing training.svg")?;
    print_summary(&report, &dir);
    Ok(())
}

/// One data-parallel shard per core the machine offers.
fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A progress bar over the batches of each epoch, and one line per finished epoch.
pub struct TrainProgress {
    bar: indicatif::ProgressBar,
    epochs: usize,
}

impl TrainProgress {
    /// A progress display for `epochs` epochs.
    pub fn new(epochs: usize) -> Self {
        Self {
            bar: progress_bar(0, "epoch {prefix} [{bar:30}] {pos}/{len} {msg}"),
            epochs,
        }
    }

    /// Shows one training event.
    pub fn on_event(&self, event: TrainEvent) {
        let bar = &self.bar;
        match event {
            TrainEvent::EpochStart { epoch, batches } => {
                bar.reset();
                bar.set_length(batches as u64);
                bar.set_prefix(format!("{epoch}/{}", self.epochs));
            }
            TrainEvent::Batch {
                loss,
                images_per_second,
                ..
            } => {
                bar.inc(1);
                bar.set_message(format!("loss {loss:.4}  {images_per_second:.0} img/s"));
            }
            TrainEvent::EpochEnd(r) => {
                let line = format!(
                    "epoch {}: train loss {:.4}, test loss {:.4}, test accuracy {}/{} ({:.2}%), {:.1} s, {:.0} img/s",
                    r.epoch,
                    r.train_loss,
                    r.test.loss,
                    (r.test.accuracy * r.test.images as f64).round(),
                    r.test.images,
                    100.0 * r.test.accuracy,
                    r.train_seconds,
                    r.train_images_per_second
                );
                // A hidden bar (no terminal) would swallow the line: print it plainly then.
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn training_plot(report: &TrainReport) -> String {
    let pts = |f: &dyn Fn(&EpochRecord) -> f64| {
        report
            .history
            .iter()
            .map(|r| (r.epoch as f64, f(r)))
            .collect()
    };
    line_panels(
        &format!(
            "{} on {} ({} backend)",
            report
                .arch
                .as_ref()
                .map_or_else(|| "Training".to_owned(), |a| format!("Training {a}")),
            report.dataset,
            report.backend
        ),
        "epoch",
        &[
            Panel {
                y_label: "loss (NLL)".into(),
                series: vec![
                    Series {
                        name: "train".into(),
                        color: "#1f77b4",
                        points: pts(&|r| r.train_loss),
                    },
                    Series {
                        name: "test".into(),
                        color: "#d62728",
                        points: pts(&|r| r.test.loss),
                    },
                ],
            },
            Panel {
                y_label: "test accuracy (%)".into(),
                series: vec![Series {
                    name: "test accuracy".into(),
                    color: "#2ca02c",
                    points: pts(&|r| 100.0 * r.test.accuracy),
                }],
            },
        ],
    )
}

fn print_summary(report: &TrainReport, dir: &ArtifactDir) {
    let rows: Vec<Vec<String>> = report
        .history
        .iter()
        .map(|r| {
            vec![
                r.epoch.to_string(),
                format!("{:.4}", r.train_loss),
                format!("{:.4}", r.test.loss),
                format!("{:.2}%", 100.0 * r.test.accuracy),
                format!("{:.1}", r.train_seconds),
                format!("{:.0}", r.train_images_per_second),
            ]
        })
        .collect();
    println!(
        "\n{}",
        markdown(
            &[
                "epoch",
                "train loss",
                "test loss",
                "test acc",
                "seconds",
                "img/s"
            ],
            &rows
        )
    );
    println!(
        "{}{} on {}: test accuracy {:.2}% after {} epochs ({:.0} s in all, {} data-parallel \
         shard{} per batch)",
        report
            .arch
            .as_ref()
            .map_or_else(String::new, |a| format!("{a}, ")),
        report.dataset,
        report.backend,
        100.0 * report.test_accuracy,
        report.epochs,
        report.total_seconds,
        report.shards,
        if report.shards == 1 { "" } else { "s" }
    );
    println!("wrote:");
    let arch_file = report.arch.as_ref().map(|_| dir.float_arch());
    for f in [
        dir.float_model(),
        dir.float_config(),
        dir.train_report(),
        dir.training_plot(),
    ]
    .into_iter()
    .chain(arch_file)
    {
        println!("  {}", display_path(&f));
    }
}
