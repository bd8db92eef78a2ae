//! Import of a PyTorch `state_dict` of the tutorial network, read with Burn's own PyTorch reader
//! (`burn::store::PytorchStore`, the `pytorch` feature of Burn).
//!
//! The file is what `torch.save(model.state_dict(), path)` writes (the zip format of PyTorch ≥ 1.6
//! or the legacy pickle format): exactly the eight tensors `conv1.weight` `[20, 1, 5, 5]`,
//! `conv1.bias` `[20]`, `conv2.weight` `[50, 20, 5, 5]`, `conv2.bias` `[50]`, `fc1.weight`
//! `[500, 800]`, `fc1.bias` `[500]`, `fc2.weight` `[10, 500]`, `fc2.bias` `[10]` (PyTorch
//! layouts: OIHW convolutions, `out × in` linear weights, which Burn's adapter transposes to its
//! `in × out`). Names and shapes are checked before anything is loaded, so a different network
//! is refused with the offending tensor named; NaN or infinite values are refused too.

use std::path::Path;

use burn::store::{ModuleSnapshot, ModuleStore, PytorchStore};

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

/// Reads the PyTorch `state_dict` at `path` into a new [`Net`] on `device`.
///
/// Errors ([`ModelError::Import`], naming the file): missing file, a file the reader cannot
/// parse (not a PyTorch file, truncated, corrupt), missing or unexpected tensors, a shape that
/// differs from [`pytorch_tensors`], a value Burn cannot apply, a NaN or infinite parameter.
pub fn import_pytorch(config: &NetConfig, path: &Path, device: &Device) -> Result<Net, ModelError> {
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
    let expected = pytorch_tensors(config);
    let missing: Vec<&str> = expected
        .iter()
        .filter(|(name, _)| !found.contains_key(*name))
        .map(|(name, _)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "missing tensors {} (expected the state_dict of the tutorial network: {})",
            missing.join(", "),
            expected
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let unexpected: Vec<&str> = found
        .keys()
        .filter(|k| !expected.iter().any(|(name, _)| name == k))
        .map(String::as_str)
        .collect();
    if !unexpected.is_empty() {
        return Err(err(format!(
            "unexpected tensors {} (not the tutorial network's state_dict)",
            unexpected.join(", ")
        )));
    }
    for (name, shape) in &expected {
        let actual = found[*name].shape.as_slice();
        if actual != shape.as_slice() {
            return Err(err(format!(
                "{name} has shape {actual:?}, expected {shape:?}"
            )));
        }
    }
    let mut model = config.init(device);
    model
        .load_from(&mut store)
        .map_err(|e| err(format!("cannot apply the tensors: {e}")))?;
    model.check_finite().map_err(err)?;
    Ok(model)
}
