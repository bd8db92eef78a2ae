//! Saving and loading the model record (Burn's burnpack format, `.bpk`) and JSON side files.
//!
//! Burnpack writes through a scratch file and renames it into place, so an interrupted
//! save leaves the previous checkpoint intact; JSON files here are written the same way.

use std::path::Path;

use burn::prelude::*;
use serde::{Serialize, de::DeserializeOwned};

use crate::{ModelError, Net, NetConfig};

/// Saves `model` to `path` atomically.
pub fn save_model(model: &Net, path: &Path) -> Result<(), ModelError> {
    model.clone().save_file(path).map_err(|e| ModelError::Save {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Loads a model of architecture `config` from `path` onto `device`, refusing a missing,
/// corrupt or mismatched record and any non-finite parameter.
pub fn load_model(config: &NetConfig, path: &Path, device: &Device) -> Result<Net, ModelError> {
    let err = |message: String| ModelError::Load {
        path: path.to_owned(),
        message,
    };
    if !path.is_file() {
        return Err(err(
            "file not found (run `cargo xtask train` first, or pass the right --dataset/--out)"
                .into(),
        ));
    }
    let model = config
        .init(device)
        .try_load_file(path)
        .map_err(|e| err(e.to_string()))?;
    model.check_finite().map_err(err)?;
    Ok(model)
}

/// Writes `value` as pretty JSON to `path` through a temporary file and a rename.
pub fn write_json_atomic<T: Serialize>(value: &T, path: &Path) -> Result<(), ModelError> {
    let err = |message: String| ModelError::Json {
        path: path.to_owned(),
        message,
    };
    let text = serde_json::to_string_pretty(value).map_err(|e| err(e.to_string()))?;
    write_atomic(path, text.as_bytes()).map_err(|e| err(e.to_string()))
}

/// Reads a JSON file into `T`, naming the file in every error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let err = |message: String| ModelError::Json {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Writes `bytes` to `path` via `path.tmp` + rename, so readers never see a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}
