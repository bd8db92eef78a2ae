//! The network as data: an [`Architecture`] (a serde type, read from JSON or TOML) is an
//! input shape and a sequence of [`Layer`]s; [`Architecture::plan`] infers every shape and
//! validates the whole description into a [`Plan`], with an [`ArchError`] that names the
//! layer and the mismatch. Presets ([`Architecture::preset`]) are TOML files compiled in.

mod layer;
mod params;
mod plan;
mod presets;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use layer::{BatchNorm, Conv2d, Dropout, Layer, Linear, Pool, Residual, Size2};
pub use params::{BatchNormParams, FloatParams, StepParams};
pub use plan::{Activation, ConvGeometry, Op, Plan, PoolGeometry, Shape, Step};
pub use presets::PRESETS;

/// The input of a network: one image of `channels × height × width` pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputShape {
    /// Channels (1 for MNIST).
    pub channels: usize,
    /// Rows (28 for MNIST).
    pub height: usize,
    /// Columns (28 for MNIST).
    pub width: usize,
}

impl Default for InputShape {
    /// MNIST's 1×28×28.
    fn default() -> Self {
        Self {
            channels: 1,
            height: 28,
            width: 28,
        }
    }
}

/// A network description: its name, input and layers. Build one from a file
/// ([`Architecture::load`]) or a preset, then [`Architecture::plan`] it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Name, used in reports and artifact folders.
    pub name: String,
    /// Input shape; default 1×28×28.
    #[serde(default)]
    pub input: InputShape,
    /// The layers, in order.
    pub layers: Vec<Layer>,
}

/// Why a description could not be read or is not a valid network.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// A layer does not fit its input or is malformed.
    #[error("layer {path} ({kind}): {problem}")]
    Layer {
        /// 1-based position, `5.2` inside a residual block.
        path: String,
        /// The layer's kind as written in files.
        kind: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The description as a whole is not a network burnq runs.
    #[error("architecture {name:?}: {problem}")]
    Network {
        /// The description's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// Float parameters that do not match the network, every problem by tensor name.
    #[error("parameters do not match the network: {}", problems.join("; "))]
    Params {
        /// One line per missing, extra, mis-shaped or non-finite tensor.
        problems: Vec<String>,
    },
    /// A description file could not be read.
    #[error("reading architecture file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON description does not parse.
    #[error("architecture file {}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error (line and column).
        source: serde_json::Error,
    },
    /// A TOML description does not parse.
    #[error("architecture file {}: {source}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's error (line, column and the offending text).
        source: Box<toml::de::Error>,
    },
    /// Neither a preset nor a `.json`/`.toml` file.
    #[error(
        "unknown architecture {name:?}: not a preset ({}) nor a .json or .toml file",
        PRESETS.join(", ")
    )]
    Unknown {
        /// What was asked for.
        name: String,
    },
}

impl Architecture {
    /// A preset by name ([`PRESETS`]): `tutorial`, `lenet5`, `mobile`.
    pub fn preset(name: &str) -> Option<Self> {
        presets::source(name).map(|text| {
            Self::from_toml(text, Path::new(name)).expect("presets are valid TOML descriptions")
        })
    }

    /// A preset's name, or else a `.json` / `.toml` file's path; the description is also
    /// validated ([`Architecture::plan`]).
    pub fn load(name_or_path: &str) -> Result<Self, ArchError> {
        let arch = if let Some(arch) = Self::preset(name_or_path) {
            arch
        } else {
            let path = Path::new(name_or_path);
            let parse = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => Self::from_json,
                Some("toml") => Self::from_toml,
                _ => {
                    return Err(ArchError::Unknown {
                        name: name_or_path.into(),
                    });
                }
            };
            let text = std::fs::read_to_string(path).map_err(|source| ArchError::Read {
                path: path.into(),
                source,
            })?;
            parse(&text, path)?
        };
        arch.plan()?;
        Ok(arch)
    }

    /// Parses a JSON description (`path` only names it in errors).
    pub fn from_json(text: &str, path: &Path) -> Result<Self, ArchError> {
        serde_json::from_str(text).map_err(|source| ArchError::Json {
            path: path.into(),
            source,
        })
    }

    /// Parses a TOML description (`path` only names it in errors).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ArchError> {
        toml::from_str(text).map_err(|source| ArchError::Toml {
            path: path.into(),
            source: Box::new(source),
        })
    }

    /// The description as pretty JSON (the form a model file carries).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a description always serializes")
    }

    /// Infers every shape and validates the description: each layer against its input
    /// ([`ArchError::Layer`]), then the network: at least one layer, unique layer names, and
    /// a last step that is a linear layer without activation producing at least 2 logits.
    pub fn plan(&self) -> Result<Plan, ArchError> {
        let network = |problem: String| ArchError::Network {
            name: self.name.clone(),
            problem,
        };
        let InputShape {
            channels,
            height,
            width,
        } = self.input;
        if channels == 0 || height == 0 || width == 0 {
            return Err(network(format!(
                "input {channels}×{height}×{width} has an empty side"
            )));
        }
        let input = Shape::Image {
            channels,
            height,
            width,
        };
        let steps = plan::lower("", &self.layers, input)?;
        let plan = Plan { input, steps };
        let last = plan
            .steps
            .iter()
            .rev()
            .find(|s| !matches!(s.op, Op::Dropout(_)));
        match last {
            None => return Err(network("has no layers".into())),
            Some(step) if !matches!(step.op, Op::Linear { .. }) => {
                return Err(network(format!(
                    "the last layer ({}, layer {}) must be a linear layer producing the class logits",
                    step.name, step.path
                )));
            }
            Some(step) if step.activation != Activation::None || step.batch_norm.is_some() => {
                return Err(network(format!(
                    "the last layer ({}) produces the logits: no batch norm or activation after it",
                    step.name
                )));
            }
            Some(step) if step.output.len() < 2 => {
                return Err(network(format!(
                    "the last layer ({}) has {} output; a classifier needs at least 2",
                    step.name,
                    step.output.len()
                )));
            }
            Some(_) => {}
        }
        let mut names = std::collections::HashSet::new();
        for step in plan.flat_steps() {
            if !names.insert(step.name.as_str()) {
                return Err(network(format!(
                    "two layers are named {:?} (the second at {})",
                    step.name, step.path
                )));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
