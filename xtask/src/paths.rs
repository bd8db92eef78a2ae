//! The one module that knows the artifact layout (described file by file in
//! `artifacts/README.md`): every command asks an [`ArtifactDir`] for its paths instead of
//! joining file names itself.
//!
//! ```text
//! artifacts/<dataset>/            ArtifactDir::of(dataset) (or --out)
//!   float/   model.bpk config.json train.json training.svg import.json
//!            model.onnx onnxruntime.json (export-onnx --float: onnx_beside, onnxruntime_report)
//!   quant/   model.safetensors report.json sensitivity.{json,md}
//!            model.onnx onnxruntime.json (onnx_beside, onnxruntime_report)
//!   calibration.json  sweep.{json,md,svg}  mixed.{json,md,svg}
//!   qat-[lsq-]w<W>a<A>[-pc]/      ArtifactDir::qat_run: float/ and quant/ as above, qat.json
//!   qat-[lsq-]mixed-w<W>a<A>.…[-pc]/  the same with per-layer widths (conv1.conv2.fc1.fc2)
//! artifacts/bench/                bench_dir(), bench_reports(): report.{json,md} throughput.svg
//! artifacts/pytorch-<dataset>/    ArtifactDir::imported(dataset): float/ as above
//! artifacts/<arch>/<dataset>/     ArtifactDir::for_arch(None, dataset, arch): a described network
//!   float/   model.bpk model.arch.json (float_arch) config.json train.json training.svg
//!            or, from `import --arch`: model.bpk model.arch.json import.json
//! artifacts/data/                 data_cache(): downloaded data sets
//! artifacts/serve/                screenshots of `serve`'s pages (written by xtask/tests/serve.rs)
//! ```
//!
//! [`ArtifactsRoot`] is the same layout under another folder (`serve --artifacts DIR`), and
//! finds the model folders that exist in it.

use std::path::{Path, PathBuf};

use burnq_data::DatasetKind;
use burnq_qat::{QatConfig, Quantizer};
use burnq_quant::LayerBits;

use crate::common::project_root;

/// `artifacts/`.
fn artifacts() -> PathBuf {
    project_root().join("artifacts")
}

/// Where downloaded data sets are cached: `artifacts/data/`.
pub fn data_cache() -> PathBuf {
    artifacts().join("data")
}

/// The benchmark's folder: `artifacts/bench/`.
pub fn bench_dir() -> PathBuf {
    ArtifactsRoot::new(None).bench_dir()
}

/// The benchmark's `report.json`, `report.md` and `throughput.svg` in its folder `dir`.
pub fn bench_reports(dir: &Path) -> [PathBuf; 3] {
    ["report.json", "report.md", "throughput.svg"].map(|f| dir.join(f))
}

/// An `artifacts/` folder: the project's own, or another with the same layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactsRoot {
    root: PathBuf,
}

impl ArtifactsRoot {
    /// `dir` when given, else the project's `artifacts/`.
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            root: dir.map(Path::to_path_buf).unwrap_or_else(artifacts),
        }
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<dataset>/`: the float model trained on `dataset` and what is derived from it.
    pub fn dataset(&self, dataset: DatasetKind) -> ArtifactDir {
        ArtifactDir {
            root: self.root.join(dataset.dir_name()),
        }
    }

    /// `pytorch-<dataset>/`: a model imported from PyTorch.
    pub fn imported(&self, dataset: DatasetKind) -> ArtifactDir {
        ArtifactDir {
            root: self.root.join(format!("pytorch-{}", dataset.dir_name())),
        }
    }

    /// `<arch>/<dataset>/`: a network trained from the description named `arch` (not the
    /// tutorial's, whose folder is [`ArtifactsRoot::dataset`]).
    pub fn arch(&self, arch: &str, dataset: DatasetKind) -> ArtifactDir {
        ArtifactDir {
            root: self.root.join(arch).join(dataset.dir_name()),
        }
    }

    /// `bench/`: the benchmark's reports.
    pub fn bench_dir(&self) -> PathBuf {
        self.root.join("bench")
    }

    /// Every folder of a model of `dataset` that holds a float or an integer model:
    /// `<dataset>/`, `pytorch-<dataset>/` and the QAT runs inside each, with an id (the
    /// folder relative to this root, `/`-separated, e.g. `mnist/qat-w4a4-pc`).
    pub fn model_dirs(&self, dataset: DatasetKind) -> Vec<(String, ArtifactDir)> {
        let mut found = Vec::new();
        for top in [self.dataset(dataset), self.imported(dataset)] {
            let runs = top.qat_runs();
            for dir in std::iter::once(top).chain(runs) {
                if dir.float_model().is_file() || dir.quant_model().is_file() {
                    let id = dir
                        .root
                        .strip_prefix(&self.root)
                        .unwrap_or(&dir.root)
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    found.push((id, dir));
                }
            }
        }
        found
    }
}

/// The artifacts of one float model and what is derived from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactDir {
    root: PathBuf,
}

impl ArtifactDir {
    /// The folder `root` itself (e.g. an earlier QAT run's).
    pub fn at(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// `out` when given (a `--out` flag), else `artifacts/<dataset>/`.
    pub fn new(out: Option<&Path>, dataset: DatasetKind) -> Self {
        match out {
            Some(out) => Self::at(out),
            None => ArtifactsRoot::new(None).dataset(dataset),
        }
    }

    /// `out` when given, else `artifacts/pytorch-<dataset>/`: a model imported from PyTorch.
    pub fn imported(out: Option<&Path>, dataset: DatasetKind) -> Self {
        match out {
            Some(out) => Self {
                root: out.to_path_buf(),
            },
            None => ArtifactsRoot::new(None).imported(dataset),
        }
    }

    /// The folder of a network trained from the description named `arch`: `out` when given,
    /// else `artifacts/<dataset>/` for the tutorial (exactly [`ArtifactDir::new`]) and
    /// `artifacts/<arch>/<dataset>/` for any other. The name must be a plain folder name
    /// (letters, digits, `-`, `_`, `.`, not starting with `.`) that is not one of the
    /// top-level folders of `artifacts/` (a data set, `data`, `bench`, `serve`, `pytorch-*`).
    pub fn for_arch(out: Option<&Path>, dataset: DatasetKind, arch: &str) -> anyhow::Result<Self> {
        if arch == "tutorial" || out.is_some() {
            return Ok(Self::new(out, dataset));
        }
        let plain = !arch.is_empty()
            && !arch.starts_with('.')
            && arch
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let reserved = DatasetKind::from_name(arch).is_some()
            || matches!(arch, "data" | "bench" | "serve" | "README.md")
            || arch.starts_with("pytorch-");
        anyhow::ensure!(
            plain && !reserved,
            "architecture name {arch:?} cannot name an artifact folder (use letters, digits, -, _ \
             and not a data set, data, bench, serve or pytorch-*), or pass --out"
        );
        Ok(ArtifactsRoot::new(None).arch(arch, dataset))
    }

    /// A QAT run's own folder inside this one: `qat-w2a2`, `qat-w4a4-pc`, with learned
    /// step sizes `qat-lsq-w2a2-pc` (LSQ+: `qat-lsqplus-w2a2-pc`), and with per-layer widths the layers' in order,
    /// `qat-mixed-w8a8.w4a8.w2a8.w8a8[-pc]`.
    pub fn qat_run(&self, config: &QatConfig) -> Self {
        let pc = if config.per_channel { "-pc" } else { "" };
        let quantizer = match config.quantizer {
            Quantizer::Minmax => "",
            Quantizer::Lsq => "lsq-",
            Quantizer::LsqPlus => "lsqplus-",
        };
        let widths = match &config.bits_per_layer {
            Some(bits) => {
                let bits: Vec<String> = bits.iter().map(LayerBits::to_string).collect();
                format!("mixed-{}", bits.join("."))
            }
            None => format!("w{}a{}", config.weight_bits, config.act_bits),
        };
        let kd = if config.distill > 0.0 { "-kd" } else { "" };
        Self {
            root: self.root.join(format!("qat-{quantizer}{widths}{pc}{kd}")),
        }
    }

    /// This folder with `suffix` appended to its name (`qat-lsq-w2a2-pc` →
    /// `qat-lsq-w2a2-pc-from-qat-lsq-w4a4-pc`).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        let mut name = self.root.as_os_str().to_owned();
        name.push(suffix);
        Self {
            root: PathBuf::from(name),
        }
    }

    /// The QAT runs inside this folder (`qat-[lsq-]w<W>a<A>[-pc][-kd]/`), sorted by name.
    pub fn qat_runs(&self) -> Vec<Self> {
        let mut runs: Vec<Self> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("qat-") && e.path().is_dir())
            .map(|e| Self { root: e.path() })
            .collect();
        runs.sort_by(|a, b| a.root.cmp(&b.root));
        runs
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `float/`: the float model and its training records.
    pub fn float_dir(&self) -> PathBuf {
        self.root.join("float")
    }

    /// `float/model.bpk`: the trained float model.
    pub fn float_model(&self) -> PathBuf {
        self.float_dir().join("model.bpk")
    }

    /// `float/model.arch.json`: the description of a described network's model, beside it
    /// (`burnq_model::checkpoint::arch_beside`).
    pub fn float_arch(&self) -> PathBuf {
        burnq_model::checkpoint::arch_beside(&self.float_model())
    }

    /// `float/config.json`: the training configuration.
    pub fn float_config(&self) -> PathBuf {
        self.float_dir().join("config.json")
    }

    /// `float/train.json`: the training report.
    pub fn train_report(&self) -> PathBuf {
        self.float_dir().join("train.json")
    }

    /// `float/training.svg`: the training curves.
    pub fn training_plot(&self) -> PathBuf {
        self.float_dir().join("training.svg")
    }

    /// `float/import.json`: what a PyTorch import read.
    pub fn import_report(&self) -> PathBuf {
        self.float_dir().join("import.json")
    }

    /// `quant/`: the integer model and its reports.
    pub fn quant_dir(&self) -> PathBuf {
        self.root.join("quant")
    }

    /// `quant/model.safetensors`: the integer model.
    pub fn quant_model(&self) -> PathBuf {
        self.quant_dir().join("model.safetensors")
    }

    /// `quant/report.json`: the `quantize` command's comparison.
    pub fn quantize_report(&self) -> PathBuf {
        self.quant_dir().join("report.json")
    }

    /// `quant/sensitivity.json` and `quant/sensitivity.md`.
    pub fn sensitivity_reports(&self) -> (PathBuf, PathBuf) {
        let dir = self.quant_dir();
        (dir.join("sensitivity.json"), dir.join("sensitivity.md"))
    }

    /// `calibration.json`: the activation ranges.
    pub fn calibration(&self) -> PathBuf {
        self.root.join("calibration.json")
    }

    /// `mixed.json`, `mixed.md`, `mixed.svg`: `cargo xtask mixed`'s report.
    pub fn mixed_reports(&self) -> [PathBuf; 3] {
        ["mixed.json", "mixed.md", "mixed.svg"].map(|f| self.root.join(f))
    }

    /// `qat.json`: a QAT run's report (in the folder of [`ArtifactDir::qat_run`]).
    pub fn qat_report(&self) -> PathBuf {
        self.root.join("qat.json")
    }

    /// `sweep.json`, `sweep.md`, `sweep.svg`.
    pub fn sweep_reports(&self) -> [PathBuf; 3] {
        ["json", "md", "svg"].map(|ext| self.root.join(format!("sweep.{ext}")))
    }
}

/// The ONNX export of an integer model file: beside it, `model.onnx` for `model.safetensors`.
pub fn onnx_beside(model: &Path) -> PathBuf {
    model.with_extension("onnx")
}

/// `onnxruntime.json` beside an ONNX file: the comparison with ONNX Runtime.
pub fn onnxruntime_report(onnx: &Path) -> PathBuf {
    onnx.with_file_name("onnxruntime.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_folders_are_found_with_their_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let root = ArtifactsRoot::new(Some(tmp.path()));
        let mnist = root.dataset(DatasetKind::Mnist);
        let mut config = QatConfig {
            weight_bits: 4,
            act_bits: 4,
            per_channel: true,
            ..QatConfig::default()
        };
        let qat = mnist.qat_run(&config);
        config.quantizer = Quantizer::Lsq;
        let lsq = mnist.qat_run(&config);
        let imported = root.imported(DatasetKind::Mnist);
        for file in [
            mnist.quant_model(),
            qat.float_model(),
            lsq.quant_model(),
            imported.float_model(),
        ] {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, b"").unwrap();
        }
        std::fs::create_dir_all(mnist.root().join("qat-w2a2/float")).unwrap();
        let ids: Vec<String> = root
            .model_dirs(DatasetKind::Mnist)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            ids,
            [
                "mnist",
                "mnist/qat-lsq-w4a4-pc",
                "mnist/qat-w4a4-pc",
                "pytorch-mnist"
            ]
        );
        assert!(root.model_dirs(DatasetKind::FashionMnist).is_empty());
        assert_eq!(
            bench_reports(&root.bench_dir())[2],
            tmp.path().join("bench/throughput.svg")
        );
    }

    #[test]
    fn layout_matches_the_artifacts_readme() {
        let dir = ArtifactDir::new(Some(Path::new("/a")), DatasetKind::Mnist);
        assert_eq!(dir.float_model(), Path::new("/a/float/model.bpk"));
        assert_eq!(dir.quant_model(), Path::new("/a/quant/model.safetensors"));
        assert_eq!(dir.calibration(), Path::new("/a/calibration.json"));
        let mut config = QatConfig {
            weight_bits: 2,
            act_bits: 4,
            per_channel: true,
            ..QatConfig::default()
        };
        let qat = dir.qat_run(&config);
        assert_eq!(qat.qat_report(), Path::new("/a/qat-w2a4-pc/qat.json"));
        config.quantizer = Quantizer::Lsq;
        assert_eq!(dir.qat_run(&config).root(), Path::new("/a/qat-lsq-w2a4-pc"));
        config.distill = 0.5;
        assert_eq!(
            dir.qat_run(&config).root(),
            Path::new("/a/qat-lsq-w2a4-pc-kd")
        );
        assert_eq!(
            qat.float_model(),
            Path::new("/a/qat-w2a4-pc/float/model.bpk")
        );
        assert_eq!(
            onnxruntime_report(&onnx_beside(&dir.quant_model())),
            Path::new("/a/quant/onnxruntime.json")
        );
        assert_eq!(
            onnxruntime_report(&onnx_beside(&dir.float_model())),
            Path::new("/a/float/onnxruntime.json")
        );
        let readme = std::fs::read_to_string(project_root().join("artifacts/README.md")).unwrap();
        for f in [
            "float/model.bpk",
            "float/config.json",
            "float/train.json",
            "calibration.json",
            "quant/model.safetensors",
            "quant/report.json",
            "quant/model.onnx",
            "quant/onnxruntime.json",
            "float/model.onnx",
            "float/onnxruntime.json",
            "qat.json",
            "sweep.",
            "bench/report.",
        ] {
            assert!(
                readme.contains(f),
                "artifacts/README.md does not describe {f}"
            );
        }
        assert!(
            ArtifactDir::new(None, DatasetKind::FashionMnist)
                .root()
                .ends_with("artifacts/fashion-mnist")
        );
    }

    #[test]
    fn described_networks_get_their_own_folder_and_the_tutorial_keeps_its_own() {
        let mnist = DatasetKind::Mnist;
        assert_eq!(
            ArtifactDir::for_arch(None, mnist, "tutorial").unwrap(),
            ArtifactDir::new(None, mnist)
        );
        let lenet = ArtifactDir::for_arch(None, DatasetKind::FashionMnist, "lenet5").unwrap();
        assert!(lenet.root().ends_with("artifacts/lenet5/fashion-mnist"));
        assert!(
            lenet
                .float_arch()
                .ends_with("lenet5/fashion-mnist/float/model.arch.json")
        );
        let out = ArtifactDir::for_arch(Some(Path::new("/o")), mnist, "mobile").unwrap();
        assert_eq!(out.float_model(), Path::new("/o/float/model.bpk"));
        for bad in [
            "mnist",
            "bench",
            "data",
            "pytorch-mnist",
            "../x",
            "a/b",
            ".hidden",
            "",
        ] {
            assert!(ArtifactDir::for_arch(None, mnist, bad).is_err(), "{bad}");
        }
    }
}
