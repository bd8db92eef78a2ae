//! The models `serve` answers with: every model folder under the artifacts folder
//! ([`ArtifactsRoot::model_dirs`]), its integer model packed for the engine and its float
//! model ready on the CPU backend, loaded once at start.

use std::sync::Mutex;
use std::time::Instant;

use burnq_data::{DatasetKind, IMAGE_PIXELS};
use burnq_model::checkpoint::load_model;
use burnq_model::predict::Predictor;
use burnq_model::{BackendChoice, NetConfig};
use burnq_quant::{Engine, QuantModel, Workspace};
use serde_json::{Value, json};

use crate::paths::{ArtifactDir, ArtifactsRoot};

/// An integer model and its engine.
#[derive(Debug)]
pub struct IntModel {
    pub model: QuantModel,
    pub engine: Engine,
}

/// One model folder: its integer and float models, or why each is missing.
#[derive(Debug)]
pub struct ServedModel {
    /// The folder relative to the artifacts folder, e.g. `mnist` or `mnist/qat-w4a4-pc`.
    pub id: String,
    pub dataset: DatasetKind,
    pub dir: ArtifactDir,
    pub int: Result<IntModel, String>,
    /// Burn's model behind a lock: one forward pass at a time.
    pub float: Result<Mutex<Predictor>, String>,
}

/// One model's answer for one image.
#[derive(Debug, Clone)]
pub struct Answer {
    pub class: usize,
    pub probabilities: Vec<f32>,
    /// The integer model's u8 logits (empty for the float model).
    pub logits_u8: Vec<u8>,
    pub latency_us: f64,
}

impl ServedModel {
    fn load(id: String, dataset: DatasetKind, dir: ArtifactDir) -> Self {
        let make = if id.contains("qat-") {
            "cargo xtask qat"
        } else {
            "cargo xtask quantize"
        };
        let int = if dir.quant_model().is_file() {
            burnq_quant::load(dir.quant_model())
                .map_err(|e| e.to_string())
                .and_then(|model| {
                    let engine = Engine::new(&model).map_err(|e| e.to_string())?;
                    Ok(IntModel { model, engine })
                })
        } else {
            Err(format!("no integer model (`{make}` makes it)"))
        };
        let float = if dir.float_model().is_file() {
            BackendChoice::Flex
                .device()
                .and_then(|device| {
                    let net = load_model(&NetConfig::new(), &dir.float_model(), &device)?;
                    Ok(Predictor::new(&net, device, dataset.normalization()))
                })
                .map(Mutex::new)
                .map_err(|e| e.to_string())
        } else {
            Err("no float model (`cargo xtask train` makes it)".to_string())
        };
        Self {
            id,
            dataset,
            dir,
            int,
            float,
        }
    }

    /// E.g. `integer w8a8 per-tensor + float` or `integer w4a4 per-channel, QAT + float`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Ok(int) = &self.int {
            let m = &int.model;
            parts.push(format!(
                "integer {} {}{}{}",
                burnq_quant::widths_label(m.options(), &m.layers().iter().collect::<Vec<_>>()),
                if m.per_channel() {
                    "per-channel"
                } else {
                    "per-tensor"
                },
                if self.id.contains("qat-") {
                    ", QAT"
                } else {
                    ""
                },
                if self.id.starts_with("pytorch-") {
                    ", from PyTorch"
                } else {
                    ""
                },
            ));
        }
        if self.float.is_ok() {
            parts.push("float".into());
        }
        if parts.is_empty() {
            "nothing loadable".into()
        } else {
            parts.join(" + ")
        }
    }

    /// The model as `/api/models` lists it.
    pub fn info(&self) -> Value {
        let int = self.int.as_ref().map(|i| &i.model);
        json!({
            "id": self.id,
            "dataset": self.dataset.dir_name(),
            "description": self.describe(),
            "integer": int.is_ok(),
            "integer_error": int.as_ref().err(),
            "float": self.float.is_ok(),
            "float_error": self.float.as_ref().err(),
            "weight_bits": int.as_ref().ok().map(|m| m.weight_bits()),
            "act_bits": int.as_ref().ok().map(|m| m.act_bits()),
            "per_channel": int.as_ref().ok().map(|m| m.per_channel()),
            "qat": self.id.contains("qat-"),
            "classes": self.dataset.class_names(),
        })
    }

    /// The integer engine's answer for one 28×28 image (784 raw bytes).
    pub fn integer(&self, pixels: &[u8]) -> Result<Answer, String> {
        let int = self.int.as_ref().map_err(Clone::clone)?;
        let start = Instant::now();
        let out = int
            .engine
            .forward(&mut Workspace::new(), pixels, pixels.len() / IMAGE_PIXELS)
            .map_err(|e| e.to_string())?;
        let latency_us = start.elapsed().as_secs_f64() * 1e6;
        Ok(Answer {
            class: usize::from(out.predictions[0]),
            probabilities: int.model.class_probabilities(&out.logits_u8),
            logits_u8: out.logits_u8,
            latency_us,
        })
    }

    /// The float model's answer for one 28×28 image.
    pub fn float(&self, pixels: &[u8]) -> Result<Answer, String> {
        let float = self.float.as_ref().map_err(Clone::clone)?;
        let predictor = float.lock().unwrap_or_else(|e| e.into_inner());
        let start = Instant::now();
        let probabilities = predictor.probabilities(pixels);
        let latency_us = start.elapsed().as_secs_f64() * 1e6;
        let class = (0..probabilities.len()).fold(0, |best, c| {
            if probabilities[c] > probabilities[best] {
                c
            } else {
                best
            }
        });
        Ok(Answer {
            class,
            probabilities,
            logits_u8: Vec::new(),
            latency_us,
        })
    }
}

/// Every model found, in the order of [`ArtifactsRoot::model_dirs`] per data set.
#[derive(Debug)]
pub struct ModelSet {
    pub models: Vec<ServedModel>,
}

impl ModelSet {
    /// Loads every model folder of `datasets` under `root`.
    pub fn discover(root: &ArtifactsRoot, datasets: &[DatasetKind]) -> Self {
        let models = datasets
            .iter()
            .flat_map(|&d| {
                root.model_dirs(d)
                    .into_iter()
                    .map(move |(id, dir)| ServedModel::load(id, d, dir))
            })
            .collect();
        Self { models }
    }

    /// The model of folder `id`.
    pub fn get(&self, id: &str) -> Option<&ServedModel> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The first model with an integer model, else the first model.
    pub fn default_model(&self) -> Option<&ServedModel> {
        self.models
            .iter()
            .find(|m| m.int.is_ok())
            .or(self.models.first())
    }

    /// `id (description)` for each model, for the start line.
    pub fn summary(&self) -> Vec<String> {
        self.models
            .iter()
            .map(|m| format!("{} ({})", m.id, m.describe()))
            .collect()
    }
}
