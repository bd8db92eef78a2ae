//! Model-file fixtures: a converted model of the tutorial architecture, the same model saved in
//! a fresh folder, a rewriter of saved files, and the check that a load error names the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burnq_quant::{
    ActivationRanges, Normalization, QuantError, QuantModel, QuantScheme, convert, load, save,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// [`random_network`](crate::random_network)`(1)` converted under `options` (options, a
/// width, or a [`burnq_quant::QuantScheme`] with per-layer widths), with fixed activation
/// ranges.
pub fn model(options: impl Into<QuantScheme>) -> QuantModel {
    let ranges = ActivationRanges {
        // The MNIST-normalized pixel range; conversion does not read it.
        input: (-0.43, 2.83),
        conv2_input: (0.0, 3.0),
        fc1_input: (0.0, 6.0),
        fc2_input: (0.0, 6.0),
        logits: (-10.0, 10.0),
    };
    convert(
        &crate::random_network(1),
        &ranges,
        Normalization::MNIST,
        options,
    )
    .unwrap()
}

/// A saved 8-bit model in a fresh folder (kept alive by the returned guard).
pub fn saved() -> (tempfile::TempDir, PathBuf, QuantModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let model = model(8);
    save(&model, &path).unwrap();
    (dir, path, model)
}

/// The error of loading `path`, which must fail with a message naming the file.
pub fn load_err(path: &Path) -> QuantError {
    let err = load(path).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "message does not name the file: {err}"
    );
    err
}

/// A model file's tensors: name, dtype, shape and data.
pub type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites a model file through `edit`, which sees the tensors and the metadata map.
pub fn rewrite(path: &Path, edit: impl FnOnce(&mut Tensors, &mut HashMap<String, String>)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = header.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| (name, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors, &mut metadata);
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap()));
    let out = safetensors::serialize(views, &Some(metadata)).unwrap();
    std::fs::write(path, out).unwrap();
}

/// Like [`rewrite`], then signs the result again (the `checksum` entry recomputed over the
/// tensor data in the metadata's layer order, plus the `meta` text from version 2 on), so that the loader's
/// checks behind the checksum can be reached.
pub fn rewrite_signed(path: &Path, edit: impl FnOnce(&mut Tensors, &mut HashMap<String, String>)) {
    use sha2::{Digest, Sha256};
    rewrite(path, |tensors, metadata| {
        edit(tensors, metadata);
        let mut hasher = Sha256::new();
        // Layer order as the metadata lists it (every version has `layers[].name`).
        let meta: serde_json::Value =
            serde_json::from_str(metadata.get("meta").map_or("{}", String::as_str))
                .unwrap_or_default();
        let layers: Vec<String> = meta["layers"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for layer in &layers {
            for part in ["weight", "bias"] {
                let name = format!("{layer}.{part}");
                if let Some((_, _, _, data)) = tensors.iter().find(|t| t.0 == name) {
                    hasher.update(data);
                }
            }
        }
        if metadata.get("version").map(String::as_str) != Some("1") {
            hasher.update(metadata["meta"].as_bytes());
        }
        let hex: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        metadata.insert("checksum".into(), hex);
    });
}
