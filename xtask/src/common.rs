//! Flags and paths shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burnq_data::{DataLocator, DatasetKind, ImageSet, Split};

/// Where the data comes from and which data set.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// Data set: mnist or fashion-mnist.
    #[arg(long, default_value = "mnist", value_parser = parse_dataset)]
    pub dataset: DatasetKind,
    /// Folder holding mnist/ and fashion-mnist/ (else $BURNQ_DATA_DIR, then artifacts/data/, then a download).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download missing data files.
    #[arg(long)]
    pub offline: bool,
}

/// A `--dataset` value: `mnist` or `fashion-mnist`.
pub fn parse_dataset(s: &str) -> Result<DatasetKind, String> {
    DatasetKind::from_name(s)
        .ok_or_else(|| format!("unknown data set `{s}` (mnist or fashion-mnist)"))
}

impl DataArgs {
    /// The locator for these flags, caching downloads under `artifacts/data/`.
    pub fn locator(&self) -> DataLocator {
        DataLocator::new(
            self.data_dir.clone(),
            crate::paths::data_cache(),
            !self.offline,
        )
    }

    /// Loads one split of the chosen data set.
    pub fn load(&self, split: Split) -> anyhow::Result<ImageSet> {
        ImageSet::load(&self.locator(), self.dataset, split)
            .with_context(|| format!("loading the {} {} split", self.dataset, split.name()))
    }

    /// Loads one split, keeping only its first `limit` images when a limit is given.
    pub fn load_limited(&self, split: Split, limit: Option<usize>) -> anyhow::Result<ImageSet> {
        let mut set = self.load(split)?;
        if let Some(n) = limit {
            set.truncate(n);
        }
        Ok(set)
    }

    /// Loads the test split, which every command evaluates on: a split without images is an
    /// error (an accuracy over no image would read as 0 %).
    pub fn load_test(&self) -> anyhow::Result<ImageSet> {
        let set = self.load(Split::Test)?;
        anyhow::ensure!(
            !set.is_empty(),
            "the {} test split holds no image: there is nothing to evaluate",
            self.dataset
        );
        Ok(set)
    }

    /// Like [`load_test`](Self::load_test), keeping only the first `limit` images when the
    /// flag `flag` (e.g. `--test-limit`) gives a limit; a limit of 0 is an error naming it.
    pub fn load_test_limited(&self, limit: Option<usize>, flag: &str) -> anyhow::Result<ImageSet> {
        ensure_images(limit.unwrap_or(1), flag)?;
        let mut set = self.load_test()?;
        if let Some(n) = limit {
            set.truncate(n);
        }
        Ok(set)
    }
}

/// An evaluation over `images` images, as the flag `flag` asks: none is an error naming the
/// flag, as an empty training set is.
pub fn ensure_images(images: usize, flag: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        images > 0,
        "{flag} 0 leaves no test image to evaluate: ask for at least one"
    );
    Ok(())
}

/// `--train-limit` and `--test-limit`: quick runs on the first images of each split.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Limits {
    /// Train (or fine-tune) on the first N training images only (quick runs).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    pub test_limit: Option<usize>,
}

/// The workspace root (the parent of `xtask/`).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// A path relative to the project root when it lies inside it (for messages).
pub fn display_path(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .expect("progress template is valid")
            .progress_chars("=> "),
    );
    bar
}
