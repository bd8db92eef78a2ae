//! Import of a PyTorch `state_dict` of any described network ([`Architecture`]) into an
//! [`ArchNet`], parsed by Burn's PyTorch reader (`burn::store::PytorchStore`).
//!
//! # Key naming
//!
//! The file holds the `state_dict` of the `nn.Sequential` that mirrors the description layer
//! for layer ([`KeyNaming::Sequential`], the convention of
//! `tests/fixtures/pytorch_arch.py` and `examples/pytorch_import.md`):
//!
//! - top-level layer `i` of the description (0-based, counting **every** layer — relu, relu6,
//!   pools, flatten and dropout too — exactly as `nn.Sequential` numbers its modules) is
//!   module `i`;
//! - a `conv2d` or `linear` layer at `i` gives `{i}.weight` (and `{i}.bias` when it has a
//!   bias): convolutions OIHW `[out, in/groups, kh, kw]`, linear layers `[out, in]`, both
//!   PyTorch's own layouts;
//! - a `batch_norm` layer at `i` gives `{i}.weight` (γ), `{i}.bias` (β), `{i}.running_mean`,
//!   `{i}.running_var`; `{i}.num_batches_tracked` is ignored;
//! - a `residual` layer at `i` is a module whose body is `self.body = nn.Sequential(...)`
//!   (forward `x + self.body(x)`), so layer `j` of its body is `{i}.body.{j}`, recursively.
//!
//! The same tensors may instead be named after the plan's step names
//! ([`KeyNaming::StepName`], e.g. a `ModuleDict`): `{name}.weight`, `{name}.bias`, and the
//! batch norm following that layer as `{name}.bn.weight`, `{name}.bn.bias`,
//! `{name}.bn.running_mean`, `{name}.bn.running_var`. Whichever convention matches more of the
//! file's keys is used (the sequential one on a tie).
//!
//! As for the tutorial's import ([`crate::import`]), the tensors may sit under one prefix (a
//! checkpoint's `state_dict.`, `module.` of `nn.DataParallel`): entries outside it are ignored
//! and reported; float64, float16 and bfloat16 are converted to f32.
//!
//! The first layer's padding: burnq pads the first convolution's normalized input with
//! [`Normalization::padding_value`] instead of 0, so a PyTorch network whose float results
//! must match pads its input explicitly with that value (`F.pad(x, …, value=v)` before a
//! convolution without padding); the weights themselves are the same either way.
//!
//! # Errors
//!
//! A missing or unreadable file is [`ModelError::Import`]. A file that does not hold the
//! network is [`ModelError::ImportArch`], listing every [`ImportProblem`] by the file's key:
//! missing tensors, tensors the network does not have, wrong shapes, non-float dtypes, and
//! what [`FloatParams::check`] finds (NaN, ∞, negative variances) mapped back to the keys.

use std::collections::BTreeMap;
use std::path::Path;

use burn::store::{ModuleStore, PytorchStore};
use burn::tensor::{DType, TensorData};
use burnq_arch::arch::{BatchNormParams, FloatParams, Layer, Op, Plan, Step, StepParams};
use burnq_arch::{ArchError, Architecture, Normalization};

use crate::{ArchNet, Device, ModelError};

/// How the tensors of a `state_dict` are named (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNaming {
    /// `nn.Sequential` indices: `3.weight`, `4.running_var`, `5.body.0.weight`.
    Sequential,
    /// Step names: `c3.weight`, `c3.bn.running_var`.
    StepName,
}

/// Which parameter of a step a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The weights.
    Weight,
    /// The bias.
    Bias,
    /// Batch norm's γ.
    BnGamma,
    /// Batch norm's β.
    BnBeta,
    /// Batch norm's running mean.
    BnMean,
    /// Batch norm's running variance.
    BnVar,
}

impl Slot {
    /// The tensor's name in [`FloatParams::check`]'s messages, after the step name.
    fn params_name(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Bias => "bias",
            Self::BnGamma => "bn.gamma",
            Self::BnBeta => "bn.beta",
            Self::BnMean => "bn.mean",
            Self::BnVar => "bn.var",
        }
    }

    /// The key's suffix with [`KeyNaming::StepName`].
    fn step_name_suffix(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::Bias => "bias",
            Self::BnGamma => "bn.weight",
            Self::BnBeta => "bn.bias",
            Self::BnMean => "bn.running_mean",
            Self::BnVar => "bn.running_var",
        }
    }

    /// The key's suffix of a batch norm module (`weight`, `bias`, `running_…`).
    fn bn_suffix(self) -> &'static str {
        match self {
            Self::BnGamma | Self::Weight => "weight",
            Self::BnBeta | Self::Bias => "bias",
            Self::BnMean => "running_mean",
            Self::BnVar => "running_var",
        }
    }
}

/// One tensor a network's `state_dict` must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchTensor {
    /// The key in the file (without any prefix).
    pub key: String,
    /// The step ([`Step::name`]) it belongs to.
    pub step: String,
    /// Which of the step's parameters.
    pub slot: Slot,
    /// PyTorch shape.
    pub shape: Vec<usize>,
}

impl ArchTensor {
    /// The name [`FloatParams::check`] gives this tensor: `c3.weight`, `c3.bn.var`.
    pub fn params_name(&self) -> String {
        format!("{}.{}", self.step, self.slot.params_name())
    }
}

/// The tensors of `arch`'s `state_dict` with `naming`, in description order.
pub fn pytorch_arch_tensors(
    arch: &Architecture,
    naming: KeyNaming,
) -> Result<Vec<ArchTensor>, ArchError> {
    let plan = arch.plan()?;
    let steps: BTreeMap<&str, &Step> = plan
        .flat_steps()
        .into_iter()
        .map(|s| (s.path.as_str(), s))
        .collect();
    let mut out = Vec::new();
    walk(&arch.layers, "", "", &steps, naming, &mut out);
    Ok(out)
}

/// Appends the tensors of `layers` (keys under `key_prefix`, plan paths under `path_prefix`).
fn walk(
    layers: &[Layer],
    key_prefix: &str,
    path_prefix: &str,
    steps: &BTreeMap<&str, &Step>,
    naming: KeyNaming,
    out: &mut Vec<ArchTensor>,
) {
    // The convolution or linear step a batch norm belongs to.
    let mut last: Option<&Step> = None;
    for (i, layer) in layers.iter().enumerate() {
        let path = if path_prefix.is_empty() {
            (i + 1).to_string()
        } else {
            format!("{path_prefix}.{}", i + 1)
        };
        let module = format!("{key_prefix}{i}");
        let mut push = |step: &Step, slot: Slot, shape: Vec<usize>| {
            let key = match (naming, slot) {
                (KeyNaming::StepName, _) => format!("{}.{}", step.name, slot.step_name_suffix()),
                (KeyNaming::Sequential, Slot::Weight | Slot::Bias) => {
                    format!("{module}.{}", slot.params_name())
                }
                (KeyNaming::Sequential, _) => format!("{module}.{}", slot.bn_suffix()),
            };
            out.push(ArchTensor {
                key,
                step: step.name.clone(),
                slot,
                shape,
            });
        };
        match layer {
            Layer::Conv2d(_) | Layer::Linear(_) => {
                let step = steps[path.as_str()];
                let (weight, out_channels) = match &step.op {
                    Op::Conv2d(g) => (g.weight_shape().to_vec(), g.out_channels),
                    Op::Linear {
                        in_features,
                        out_features,
                    } => (vec![*out_features, *in_features], *out_features),
                    _ => unreachable!("a conv2d or linear layer plans to a conv or linear step"),
                };
                push(step, Slot::Weight, weight);
                if step.bias {
                    push(step, Slot::Bias, vec![out_channels]);
                }
                last = Some(step);
            }
            Layer::BatchNorm(_) => {
                let step = last.expect("a valid plan has a batch norm after a conv or linear");
                let channels = match &step.op {
                    Op::Conv2d(g) => g.out_channels,
                    Op::Linear { out_features, .. } => *out_features,
                    _ => unreachable!("batch norm follows a conv or linear step"),
                };
                for slot in [Slot::BnGamma, Slot::BnBeta, Slot::BnMean, Slot::BnVar] {
                    push(step, slot, vec![channels]);
                }
            }
            Layer::Residual(r) => {
                let body = format!("{module}.body.");
                walk(&r.layers, &body, &path, steps, naming, out);
            }
            _ => {}
        }
    }
}

/// One way a `state_dict` does not hold the network, named by the file's key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportProblem {
    /// The network has this tensor, the file does not.
    #[error("{key}: missing (expected shape {expected:?})")]
    Missing { key: String, expected: Vec<usize> },
    /// The file has a tensor the network does not.
    #[error("{key}: unexpected (not a tensor of the network)")]
    Unexpected { key: String },
    /// The tensor's shape differs from the network's.
    #[error("{key}: shape {found:?}, expected {expected:?}")]
    Shape {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The tensor is not floating point.
    #[error("{key}: dtype {dtype}, expected a floating-point tensor")]
    DType { key: String, dtype: String },
    /// A value [`FloatParams::check`] refuses (NaN, ∞, a negative variance).
    #[error("{key}: {problem}")]
    Value { key: String, problem: String },
}

impl ImportProblem {
    /// The file's key the problem is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Missing { key, .. }
            | Self::Unexpected { key }
            | Self::Shape { key, .. }
            | Self::DType { key, .. }
            | Self::Value { key, .. } => key,
        }
    }
}

/// A described network read from a PyTorch file, and how it was found there.
#[derive(Debug)]
pub struct ImportedArch {
    /// The network.
    pub net: ArchNet,
    /// Its float parameters by step name.
    pub params: FloatParams,
    /// The key convention the file uses.
    pub naming: KeyNaming,
    /// The prefix of the tensors' keys (`""` for a plain `state_dict`).
    pub prefix: String,
    /// Element type of the file's tensors (converted to f32), e.g. `"F32"`.
    pub dtype: String,
    /// Keys outside the prefix, and `num_batches_tracked` counters: ignored.
    pub ignored: Vec<String>,
    /// The tensors read, with their keys and shapes.
    pub tensors: Vec<ArchTensor>,
}

/// The convention and prefix under which most of the expected keys exist.
fn best_match(
    keys: &[&str],
    conventions: &[(KeyNaming, Vec<ArchTensor>)],
) -> (usize, String, usize) {
    let mut best = (0, String::new(), 0);
    for (c, (_, expected)) in conventions.iter().enumerate() {
        let Some(first) = expected.first() else {
            continue;
        };
        let mut prefixes: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.strip_suffix(first.key.as_str()))
            .filter(|p| p.is_empty() || p.ends_with('.'))
            .collect();
        prefixes.push("");
        for prefix in prefixes {
            let hits = expected
                .iter()
                .filter(|t| keys.contains(&format!("{prefix}{}", t.key).as_str()))
                .count();
            if hits > best.2 {
                best = (c, prefix.to_owned(), hits);
            }
        }
    }
    best
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
}

/// Reads the PyTorch file at `path` as `arch`'s network (see the [module docs](self) for the
/// key naming) into a new [`ArchNet`] on `device`; `normalization` is the input normalization
/// the network was trained with (the first layer's padding value).
pub fn import_pytorch_arch(
    arch: &Architecture,
    path: &Path,
    normalization: Normalization,
    device: &Device,
) -> Result<ImportedArch, ModelError> {
    let err = |message: String| ModelError::Import {
        path: path.to_owned(),
        message,
    };
    let refuse = |problems: Vec<ImportProblem>| ModelError::ImportArch {
        path: path.to_owned(),
        arch: arch.name.clone(),
        problems,
    };
    let arch_err = |source: ArchError| ModelError::Arch {
        path: path.to_owned(),
        source,
    };
    let plan: Plan = arch.plan().map_err(arch_err)?;
    if !path.is_file() {
        return Err(err("file not found".into()));
    }
    // The keys exactly as in the file: Burn's reader would otherwise renumber nn.Sequential
    // indices to be contiguous (3.weight → 1.weight when 1 and 2 are a relu and a pool).
    let mut store = PytorchStore::from_file(path).map_indices_contiguous(false);
    let found = store
        .get_all_tensors()
        .map_err(|e| err(format!("not a readable PyTorch file: {e}")))?;
    let keys: Vec<&str> = found.keys().map(String::as_str).collect();
    let mut conventions = Vec::new();
    for naming in [KeyNaming::Sequential, KeyNaming::StepName] {
        conventions.push((
            naming,
            pytorch_arch_tensors(arch, naming).map_err(arch_err)?,
        ));
    }
    let (c, prefix, _) = best_match(&keys, &conventions);
    let (naming, expected) = conventions.swap_remove(c);

    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    for key in &keys {
        match key.strip_prefix(prefix.as_str()) {
            None => ignored.push((*key).to_owned()),
            Some(rest)
                if rest == "num_batches_tracked" || rest.ends_with(".num_batches_tracked") =>
            {
                ignored.push((*key).to_owned())
            }
            Some(rest) if !expected.iter().any(|t| t.key == rest) => {
                problems.push(ImportProblem::Unexpected {
                    key: (*key).to_owned(),
                })
            }
            Some(_) => {}
        }
    }
    let mut dtype = None;
    let mut values: Vec<Option<Vec<f32>>> = Vec::new();
    for t in &expected {
        let key = format!("{prefix}{}", t.key);
        let Some(tensor) = found.get(&key) else {
            problems.push(ImportProblem::Missing {
                key,
                expected: t.shape.clone(),
            });
            values.push(None);
            continue;
        };
        let shape = tensor.shape.as_slice().to_vec();
        if shape != t.shape {
            problems.push(ImportProblem::Shape {
                key,
                found: shape,
                expected: t.shape.clone(),
            });
            values.push(None);
            continue;
        }
        if !is_float(tensor.dtype) {
            problems.push(ImportProblem::DType {
                key,
                dtype: format!("{:?}", tensor.dtype),
            });
            values.push(None);
            continue;
        }
        dtype.get_or_insert(tensor.dtype);
        let data = tensor
            .to_bytes()
            .map_err(|e| err(format!("cannot read {key}: {e}")))
            .and_then(|bytes| {
                TensorData::try_from_bytes(bytes, shape, tensor.dtype)
                    .map_err(|e| err(format!("{key}: {e:?}")))
            })?;
        let v = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| err(format!("{key}: {e:?}")))?;
        values.push(Some(v));
    }
    problems.sort_by(|a, b| a.key().cmp(b.key()));
    if !problems.is_empty() {
        return Err(refuse(problems));
    }

    let params = float_params(&expected, values);
    params.check(&plan).map_err(|e| match e {
        ArchError::Params { problems } => refuse(
            problems
                .iter()
                .map(|p| value_problem(p, &expected, &prefix))
                .collect(),
        ),
        other => arch_err(other),
    })?;
    let net =
        ArchNet::from_float_params(&plan, &params, normalization, device).map_err(arch_err)?;
    Ok(ImportedArch {
        net,
        params,
        naming,
        prefix,
        dtype: format!("{:?}", dtype.unwrap_or(DType::F32)),
        ignored,
        tensors: expected,
    })
}

/// [`FloatParams`] from every expected tensor's values (all present and of the right shape).
fn float_params(expected: &[ArchTensor], values: Vec<Option<Vec<f32>>>) -> FloatParams {
    let mut params = FloatParams::default();
    for (t, v) in expected.iter().zip(values) {
        let v = v.expect("every tensor was read");
        let p = params
            .layers
            .entry(t.step.clone())
            .or_insert_with(|| StepParams {
                weight: Vec::new(),
                bias: None,
                batch_norm: None,
            });
        let bn = || BatchNormParams {
            gamma: Vec::new(),
            beta: Vec::new(),
            mean: Vec::new(),
            var: Vec::new(),
        };
        match t.slot {
            Slot::Weight => p.weight = v,
            Slot::Bias => p.bias = Some(v),
            Slot::BnGamma => p.batch_norm.get_or_insert_with(bn).gamma = v,
            Slot::BnBeta => p.batch_norm.get_or_insert_with(bn).beta = v,
            Slot::BnMean => p.batch_norm.get_or_insert_with(bn).mean = v,
            Slot::BnVar => p.batch_norm.get_or_insert_with(bn).var = v,
        }
    }
    params
}

/// A [`FloatParams::check`] line (`c3.bn.var: value 2 is negative`) with the tensor named by
/// the file's key (`4.running_var`).
fn value_problem(line: &str, expected: &[ArchTensor], prefix: &str) -> ImportProblem {
    let (name, problem) = line.split_once(": ").unwrap_or((line, ""));
    let key = expected
        .iter()
        .find(|t| t.params_name() == name)
        .or_else(|| expected.iter().find(|t| t.step == name))
        .map_or_else(|| name.to_owned(), |t| format!("{prefix}{}", t.key));
    ImportProblem::Value {
        key,
        problem: problem.to_owned(),
    }
}
