//! Import of a PyTorch `state_dict` of the tutorial network, parsed by Burn's own PyTorch reader
//! (`burn::store::PytorchStore`, the `pytorch` feature of Burn).
//!
//! The file is what `torch.save` writes (the zip format of PyTorch ≥ 1.6 or the legacy pickle
//! format) holding the eight tensors `conv1.weight` `[20, 1, 5, 5]`, `conv1.bias` `[20]`,
//! `conv2.weight` `[50, 20, 5, 5]`, `conv2.bias` `[50]`, `fc1.weight` `[500, 800]`, `fc1.bias`
//! `[500]`, `fc2.weight` `[10, 500]`, `fc2.bias` `[10]` in PyTorch layouts (OIHW convolutions,
//! `out × in` linear weights, transposed here to Burn's `in × out`).
//!
//! Common wrappings are recognised: the tensors may sit under one prefix, e.g. a training
//! checkpoint's `state_dict.` or `model_state_dict.`, or `module.` from `nn.DataParallel`. The
//! prefix is the one under which all eight names exist; entries outside it (optimizer state,
//! epoch counters) are ignored and reported, entries inside it that the network lacks are an
//! error. Tensors may be float64, float32, float16 or bfloat16: they are converted to f32.
//! Names, shapes and dtypes are checked before anything is built, NaN/∞ after.

use std::path::Path;

use burn::module::Param;
use burn::store::{ModuleStore, PytorchStore};
use burn::tensor::{DType, Tensor, TensorData};

use crate::{Device, ModelError, Net, NetConfig};

/// The tensors of `config`'s network in a PyTorch `state_dict`, with their PyTorch shapes.
pub fn pytorch_tensors(config: &NetConfig) -> Vec<(&'static str, Vec<usize>)> {
    let c1 = config.conv1_channels;
    let c2 = config.conv2_channels;
    // 28 → conv 5 → 24 → pool → 12 → conv 5 → 8 → pool → 4.
    let flat = c2 * 4 * 4;
    vec![
        ("conv1.weight", vec![c1, 1, 5, 5]),
        ("conv1.bias", vec![c1]),
        ("conv2.weight", vec![c2, c1, 5, 5]),
        ("conv2.bias", vec![c2]),
        ("fc1.weight", vec![config.hidden, flat]),
        ("fc1.bias", vec![config.hidden]),
        ("fc2.weight", vec![config.classes, config.hidden]),
        ("fc2.bias", vec![config.classes]),
    ]
}

/// A network read from a PyTorch file, and how it was found there.
#[derive(Debug)]
pub struct Imported {
    /// The network.
    pub net: Net,
    /// The prefix of the eight tensors' keys (`""` for a plain `state_dict`).
    pub prefix: String,
    /// Element type of the file's tensors (converted to f32), e.g. `"F32"`.
    pub dtype: String,
    /// Keys outside the prefix, ignored.
    pub ignored: Vec<String>,
}

/// The prefix under which every name of `expected` is a key: `""` if the file has them at the
/// top level, else the part before `conv1.weight` of a key ending in `.conv1.weight`.
fn find_prefix<'a>(keys: &[&'a str], expected: &[&str]) -> Option<&'a str> {
    let first = expected[0];
    keys.iter()
        .filter_map(|k| k.strip_suffix(first))
        .filter(|p| p.is_empty() || p.ends_with('.'))
        .find(|p| {
            expected
                .iter()
                .all(|name| keys.contains(&format!("{p}{name}").as_str()))
        })
}

/// Reads the PyTorch file at `path` into a new [`Net`] on `device`.
///
/// Errors ([`ModelError::Import`], naming the file): missing file, a file the reader cannot
/// parse (not a PyTorch file, truncated, corrupt), missing tensors, tensors under the prefix
/// that the network does not have, a shape that differs from [`pytorch_tensors`], a dtype that
/// is not floating point, a NaN or infinite parameter.
pub fn import_pytorch(
    config: &NetConfig,
    path: &Path,
    device: &Device,
) -> Result<Imported, ModelError> {
    let err = |message: String| ModelError::Import {
        path: path.to_owned(),
        message,
    };
    if !path.is_file() {
        return Err(err("file not found".into()));
    }
    let mut store = PytorchStore::from_file(path);
    let found = store
        .get_all_tensors()
        .map_err(|e| err(format!("not a readable PyTorch file: {e}")))?;
    let keys: Vec<&str> = found.keys().map(String::as_str).collect();
    let expected = pytorch_tensors(config);
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();
    let Some(prefix) = find_prefix(&keys, &names) else {
        let missing: Vec<&str> = names
            .iter()
            .filter(|n| !keys.iter().any(|k| k.ends_with(*n)))
            .copied()
            .collect();
        return Err(err(format!(
            "missing tensors {} (expected the state_dict of the tutorial network: {}; found {})",
            if missing.is_empty() {
                "under one common prefix".to_owned()
            } else {
                missing.join(", ")
            },
            names.join(", "),
            if keys.is_empty() {
                "no tensors".to_owned()
            } else {
                keys.join(", ")
            }
        )));
    };
    let unexpected: Vec<&str> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|rest| !names.contains(rest))
        .collect();
    if !unexpected.is_empty() {
        return Err(err(format!(
            "unexpected tensors {} (not the tutorial network's state_dict)",
            unexpected.join(", ")
        )));
    }
    let mut dtype = None;
    let mut values = Vec::new();
    for (name, shape) in &expected {
        let tensor = &found[&format!("{prefix}{name}")];
        let actual = tensor.shape.as_slice();
        if actual != shape.as_slice() {
            return Err(err(format!(
                "{name} has shape {actual:?}, expected {shape:?}"
            )));
        }
        if !matches!(
            tensor.dtype,
            DType::F64 | DType::F32 | DType::F16 | DType::BF16
        ) {
            return Err(err(format!(
                "{name} has dtype {:?}, expected a floating-point tensor",
                tensor.dtype
            )));
        }
        dtype.get_or_insert(tensor.dtype);
        let data = tensor
            .to_bytes()
            .map_err(|e| err(format!("cannot read {name}: {e}")))
            .and_then(|bytes| {
                TensorData::try_from_bytes(bytes, actual.to_vec(), tensor.dtype)
                    .map_err(|e| err(format!("{name}: {e:?}")))
            })?;
        values.push(data.convert::<f32>());
    }
    let net = build(config, values, device);
    net.check_finite()
        .map_err(|layer| err(format!("{layer} holds a NaN or infinite value")))?;
    Ok(Imported {
        net,
        prefix: prefix.to_owned(),
        dtype: format!("{:?}", dtype.unwrap_or(DType::F32)),
        ignored: keys
            .iter()
            .filter(|k| !k.starts_with(prefix))
            .map(|k| (*k).to_owned())
            .collect(),
    })
}

/// The network with `values` (f32, in [`pytorch_tensors`] order and PyTorch layouts) as its
/// parameters; linear weights are transposed to Burn's `in × out`.
fn build(config: &NetConfig, values: Vec<TensorData>, device: &Device) -> Net {
    let mut v = values.into_iter();
    let mut next = || v.next().expect("one value per expected tensor");
    let conv_weight = |d| Param::from_tensor(Tensor::<4>::from_data(d, device));
    let vector = |d| Some(Param::from_tensor(Tensor::<1>::from_data(d, device)));
    let linear_weight = |d| Param::from_tensor(Tensor::<2>::from_data(d, device).transpose());
    let mut net = config.init(device);
    net.conv1.weight = conv_weight(next());
    net.conv1.bias = vector(next());
    net.conv2.weight = conv_weight(next());
    net.conv2.bias = vector(next());
    net.fc1.weight = linear_weight(next());
    net.fc1.bias = vector(next());
    net.fc2.weight = linear_weight(next());
    net.fc2.bias = vector(next());
    net
}
