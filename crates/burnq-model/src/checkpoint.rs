//! Saving and loading the model record (Burn's burnpack format, `.bpk`) and JSON side files.
//!
//! Every file is written with burnq's one atomic write ([`burnq_arch::write_atomic`]: a
//! temporary file, synced, renamed into place), so an interrupted save leaves the previous
//! checkpoint intact, and the next successful save removes the temporary file it left.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

use burnq_arch::{ArchError, Architecture, Normalization, write_atomic};

use crate::error::FileError;
use crate::{ArchNet, ModelError, Net, NetConfig};

/// Saves `model` to `path` atomically, as a burnpack record.
pub fn save_model(model: &Net, path: &Path) -> Result<(), ModelError> {
    let err = |source: FileError| ModelError::Save {
        path: path.to_owned(),
        source,
    };
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| err(e.into()))?;
    write_atomic(path, &bytes).map_err(|e| err(e.into()))
}

/// Loads a model of architecture `config` from `path` onto `device`, refusing a missing,
/// corrupt or mismatched record and any non-finite parameter.
pub fn load_model(config: &NetConfig, path: &Path, device: &Device) -> Result<Net, ModelError> {
    if !path.is_file() {
        return Err(ModelError::NotFound {
            path: path.to_owned(),
        });
    }
    let model = config
        .init(device)
        .try_load_file(path)
        .map_err(|source| ModelError::Load {
            path: path.to_owned(),
            source,
        })?;
    model
        .check_finite()
        .map_err(|layer| ModelError::NonFinite {
            path: path.to_owned(),
            layer,
        })?;
    Ok(model)
}

/// The description beside a described network's record: `model.bpk` → `model.arch.json`.
pub fn arch_beside(model: &Path) -> PathBuf {
    model.with_extension("arch.json")
}

/// Saves a described network: its record to `path` (burnpack, atomically) and `arch`'s JSON
/// ([`Architecture::to_json`]) to [`arch_beside`]`(path)`, so that [`load_arch_net`] can
/// rebuild it. `arch` must plan to the network's plan ([`ModelError::Arch`] otherwise).
pub fn save_arch_net(model: &ArchNet, arch: &Architecture, path: &Path) -> Result<(), ModelError> {
    let arch_path = arch_beside(path);
    let arch_err = |source: ArchError| ModelError::Arch {
        path: arch_path.clone(),
        source,
    };
    if arch.plan().map_err(arch_err)? != model.plan {
        return Err(arch_err(ArchError::Network {
            name: arch.name.clone(),
            problem: "is not the description the model was built from".into(),
        }));
    }
    let err = |source: FileError| ModelError::Save {
        path: path.to_owned(),
        source,
    };
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| err(e.into()))?;
    write_atomic(&arch_path, arch.to_json().as_bytes()).map_err(|e| ModelError::Save {
        path: arch_path.clone(),
        source: e.into(),
    })?;
    write_atomic(path, &bytes).map_err(|e| err(e.into()))
}

/// Loads a described network saved by [`save_arch_net`] onto `device`: the description from
/// [`arch_beside`]`(path)`, then the record from `path`. A missing file is
/// [`ModelError::NotFound`], an unreadable or invalid description [`ModelError::Arch`], a
/// corrupt record or one that does not match the description [`ModelError::Load`], a
/// non-finite parameter [`ModelError::Arch`] naming the tensor. `normalization` is the one
/// the network was trained with (its first layer's padding value).
pub fn load_arch_net(
    path: &Path,
    normalization: Normalization,
    device: &Device,
) -> Result<(Architecture, ArchNet), ModelError> {
    let arch_path = arch_beside(path);
    for file in [path, arch_path.as_path()] {
        if !file.is_file() {
            return Err(ModelError::NotFound {
                path: file.to_owned(),
            });
        }
    }
    let arch_err = |source: ArchError| ModelError::Arch {
        path: arch_path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&arch_path).map_err(|source| {
        arch_err(ArchError::Read {
            path: arch_path.clone(),
            source,
        })
    })?;
    let arch = Architecture::from_json(&text, &arch_path).map_err(arch_err)?;
    let plan = arch.plan().map_err(arch_err)?;
    let model = ArchNet::init(&plan, normalization, device)
        .try_load_file(path)
        .map_err(|source| ModelError::Load {
            path: path.to_owned(),
            source,
        })?;
    model.float_params().map_err(|source| ModelError::Arch {
        path: path.to_owned(),
        source,
    })?;
    Ok((arch, model))
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename.
pub fn write_json_atomic<T: Serialize>(value: &T, path: &Path) -> Result<(), ModelError> {
    let err = |source: FileError| ModelError::Json {
        path: path.to_owned(),
        source,
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| err(e.into()))?;
    write_atomic(path, text.as_bytes()).map_err(|e| err(e.into()))
}

/// Reads a JSON file into `T`, naming the file in every error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let err = |source: FileError| ModelError::Json {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.into()))?;
    serde_json::from_str(&text).map_err(|e| err(e.into()))
}
