//! Saving and loading the model record (Burn's burnpack format, `.bpk`) and JSON side files.
//!
//! Every file is written with burnq's one atomic write ([`burnq_arch::write_atomic`]: a
//! temporary file, synced, renamed into place), so an interrupted save leaves the previous
//! checkpoint intact, and the next successful save removes the temporary file it left.

use std::path::Path;

use burn::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

use burnq_arch::write_atomic;

use crate::error::FileError;
use crate::{ModelError, Net, NetConfig};

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
