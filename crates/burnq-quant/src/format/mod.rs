//! The model file: safetensors with tensors `conv1.weight` (u8, OIHW), `conv1.bias` (i32),
//! …, `fc2.weight` (u8, out × in), `fc2.bias` (i32), and a `__metadata__` string map:
//!
//! - `format` = `"burnq-int"`, `version` = `"3"` ([`FORMAT_VERSION`]);
//! - `meta`: a JSON object (unknown keys are errors) with
//!   - `weight_bits` (2..=8): bit width of the weight codes of every layer that does not give
//!     its own — the widest weight width of the model;
//!   - `act_bits` (2..=8): the widest output width of the layers (each layer's own is its
//!     `output.bits`; with one width for the whole model, every layer's output, the logits
//!     included);
//!   - `per_channel` (bool): whether each output channel has its own weight scale, zero point
//!     and multiplier; when `false` every layer's per-channel arrays repeat one value;
//!   - `layers`: conv1, conv2, fc1, fc2 in order, each with `name`, `kind` (`"conv2d"` or
//!     `"linear"`), `weight_shape`, `bias_shape`, `weight_bits` (only when the layer's weight
//!     width differs from the model's: per-layer widths), `input` and `output` (`scale`,
//!     `zero_point`, `bits`), `weight_scales`, `weight_zero_points`, `m0`, `shift` (one per
//!     output channel), `act_min`, `act_max`;
//!   - `logits`: the logit parameters (`scale`, `zero_point`, `bits`), equal to fc2's output;
//!   - `input_normalization_folded` (bool) and `input_normalization` (`{mean, std}`, present
//!     exactly when folded);
//! - `checksum`: lowercase hex SHA-256 of the tensor data in layer order, weight then bias,
//!   exactly as stored (little endian), followed by the UTF-8 bytes of `meta` exactly as
//!   stored — so a changed scale, zero point or multiplier is caught like a changed weight.
//!
//! A model of one width writes no per-layer `weight_bits`, so its file is what it was before
//! per-layer widths existed; a reader from before refuses a file with per-layer widths (an
//! unknown key, or a layer output narrower than `act_bits`), so the version stays `"3"`.
//!
//! Weight codes of fewer than 8 bits are stored densely (version 3), each layer at its own
//! weight width: `<layer>.weight` is then a 1-D u8 tensor of `⌈n·weight_bits/8⌉` bytes for the `n = Π weight_shape` codes, code `i` at
//! bits `i·b .. (i + 1)·b` of the little-endian bit stream, least significant bit first, the
//! padding bits of the last byte zero (`packing`); 8-bit codes keep the `weight_shape` tensor
//! of one code per byte. Everything else is as in version 2.
//!
//! Version `"2"` files (one code per byte at every width, otherwise identical) and version
//! `"1"` files are still read: their `meta` has one `bits` (both widths) instead of
//! `weight_bits`, `act_bits` and `per_channel`, and is read as per channel exactly when some
//! layer's per-channel arrays differ; their checksum covers the tensor data only. Other
//! versions are refused.
//!
//! [`save`] writes a temporary file in the destination folder and renames it, so the
//! destination is never half-written. [`load`] validates everything and names the file in
//! every error.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use sha2::{Digest, Sha256};

use crate::{MAX_BITS, MIN_BITS, Normalization, QuantError, QuantLayer, QuantModel};

mod graph;
mod meta;
mod packing;

pub use graph::{GRAPH_FORMAT_VERSION, load_graph, save_graph};
use meta::{LayerMeta, Meta, MetaV1, NormalizationMeta, ParamsMeta, build_layer};
pub use packing::packed_len;

/// The `format` metadata value.
pub const FORMAT_NAME: &str = "burnq-int";
/// The `version` metadata value written. [`load`] reads it and versions `"2"` and `"1"`.
pub const FORMAT_VERSION: &str = "3";

/// Writes `model` to `path` atomically (temporary file in the same folder, then rename).
pub fn save(model: &QuantModel, path: impl AsRef<Path>) -> Result<(), QuantError> {
    let path = path.as_ref();
    let layers: Vec<&QuantLayer> = model.layers().iter().collect();
    let data = layer_tensors(&layers);
    let meta_json = to_json(path, &Meta::new(model))?;
    write_signed(path, data, FORMAT_VERSION, meta_json)
}

/// One tensor to write: name, dtype, shape, little-endian bytes.
type TensorData = (String, Dtype, Vec<usize>, Vec<u8>);

/// `<name>.weight` and `<name>.bias` of each layer in order; weight codes of a layer with
/// fewer than 8 weight bits packed densely at its width (a 1-D tensor), 8-bit codes with the
/// layer's weight shape.
fn layer_tensors(layers: &[&QuantLayer]) -> Vec<TensorData> {
    layers
        .iter()
        .flat_map(|l| {
            let bias = l.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let (shape, weights) = if l.weight_bits < 8 {
                let packed = packing::pack(&l.weights, l.weight_bits);
                (vec![packed.len()], packed)
            } else {
                (l.kind.weight_shape(), l.weights.clone())
            };
            [
                (format!("{}.weight", l.name), Dtype::U8, shape, weights),
                (
                    format!("{}.bias", l.name),
                    Dtype::I32,
                    vec![l.bias.len()],
                    bias,
                ),
            ]
        })
        .collect()
}

fn to_json(path: &Path, meta: &impl serde::Serialize) -> Result<String, QuantError> {
    serde_json::to_string(meta).map_err(|e| QuantError::BadMetadata {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `data` with the metadata `format`, `version`, `meta` and the `checksum` over the
/// tensors then `meta`, atomically.
fn write_signed(
    path: &Path,
    data: Vec<TensorData>,
    version: &str,
    meta_json: String,
) -> Result<(), QuantError> {
    let signature = checksum(
        data.iter()
            .map(|t| t.3.as_slice())
            .chain([meta_json.as_bytes()]),
    );
    let metadata = HashMap::from([
        ("format".to_owned(), FORMAT_NAME.to_owned()),
        ("version".to_owned(), version.to_owned()),
        ("meta".to_owned(), meta_json),
        ("checksum".to_owned(), signature),
    ]);
    let file_bytes = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|views| safetensors::serialize(views, &Some(metadata)))
        .map_err(|source| QuantError::Safetensors {
            path: path.to_owned(),
            source,
        })?;
    burnq_arch::write_atomic(path, &file_bytes).map_err(|source| QuantError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Lowercase hex SHA-256 of the concatenated `parts`.
fn checksum<'a>(parts: impl Iterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A model file's safetensors structure and its metadata entries, format name checked.
struct Opened<'a> {
    tensors: SafeTensors<'a>,
    version: String,
    meta_json: String,
    checksum: String,
}

fn read(path: &Path) -> Result<Vec<u8>, QuantError> {
    std::fs::read(path).map_err(|source| QuantError::Io {
        path: path.to_owned(),
        source,
    })
}

fn open<'a>(path: &Path, bytes: &'a [u8]) -> Result<Opened<'a>, QuantError> {
    let parse = |source| QuantError::Safetensors {
        path: path.to_owned(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(parse)?;
    let tensors = SafeTensors::deserialize(bytes).map_err(parse)?;
    let entries = header.metadata().clone().unwrap_or_default();
    let entry = |key: &'static str| {
        entries
            .get(key)
            .cloned()
            .ok_or_else(|| QuantError::MissingMetadata {
                path: path.to_owned(),
                key,
            })
    };
    let format = entry("format")?;
    if format != FORMAT_NAME {
        return Err(QuantError::WrongFormat {
            path: path.to_owned(),
            found: format,
        });
    }
    Ok(Opened {
        tensors,
        version: entry("version")?,
        meta_json: entry("meta")?,
        checksum: entry("checksum")?,
    })
}

fn bad_metadata(path: &Path, reason: String) -> QuantError {
    QuantError::BadMetadata {
        path: path.to_owned(),
        reason,
    }
}

/// The layers `metas` describes, from the file's tensors: exactly their `2·n` tensors with
/// the declared dtypes and shapes, the checksum over them and `signed_meta`, then each
/// [`QuantLayer`] built (values are validated by the model's constructor). Each layer's
/// weight width is its own or `weight_bits`; with `packed` (versions 3 and 4), the weights
/// of a layer of a valid sub-byte width are packed at that width.
fn read_layers(
    path: &Path,
    file: &Opened<'_>,
    metas: &[LayerMeta],
    weight_bits: u8,
    packed: bool,
    signed_meta: &[u8],
) -> Result<Vec<QuantLayer>, QuantError> {
    // Packed only at a valid sub-byte width; any other width is refused by validation.
    let packed_bits = |l: &LayerMeta| {
        let bits = l.weight_bits(weight_bits);
        (packed && (MIN_BITS..MAX_BITS).contains(&bits)).then_some(bits)
    };
    let expected_names = 2 * metas.len();
    if file.tensors.len() != expected_names {
        return Err(bad_metadata(
            path,
            format!(
                "{} tensors in the file, the metadata describes {expected_names}",
                file.tensors.len()
            ),
        ));
    }
    let mut raw = Vec::with_capacity(metas.len());
    for l in metas {
        let n: usize = l.weight_shape.iter().product();
        let shape = match packed_bits(l) {
            Some(bits) => vec![packing::packed_len(n, bits)],
            None => l.weight_shape.clone(),
        };
        let weight = tensor(
            path,
            &file.tensors,
            &format!("{}.weight", l.name),
            Dtype::U8,
            &shape,
        )?;
        let bias = tensor(
            path,
            &file.tensors,
            &format!("{}.bias", l.name),
            Dtype::I32,
            &l.bias_shape,
        )?;
        raw.push((weight, bias));
    }
    let actual = checksum(raw.iter().flat_map(|(w, b)| [*w, *b]).chain([signed_meta]));
    if actual != file.checksum {
        return Err(QuantError::ChecksumMismatch {
            path: path.to_owned(),
            expected: file.checksum.clone(),
            actual,
        });
    }
    let invalid = |source| QuantError::InvalidModel {
        path: path.to_owned(),
        source: Box::new(source),
    };
    metas
        .iter()
        .zip(&raw)
        .map(|(l, (w, b))| {
            let codes = match packed_bits(l) {
                Some(bits) => {
                    let n = l.weight_shape.iter().product();
                    packing::unpack(w, bits, n).map_err(|reason| {
                        bad_metadata(path, format!("{}.weight: {reason}", l.name))
                    })?
                }
                None => w.to_vec(),
            };
            build_layer(l, l.weight_bits(weight_bits), &codes, b).map_err(invalid)
        })
        .collect()
}

/// The folded normalization a file declares, `folded` and the values agreeing.
fn normalization(
    path: &Path,
    folded: bool,
    values: Option<NormalizationMeta>,
) -> Result<Option<Normalization>, QuantError> {
    match (folded, values) {
        (true, Some(n)) => Ok(Some(Normalization {
            mean: n.mean,
            std: n.std,
        })),
        (false, None) => Ok(None),
        (folded, _) => Err(bad_metadata(
            path,
            format!(
                "input_normalization_folded is {folded} but input_normalization is {}",
                if folded { "absent" } else { "present" }
            ),
        )),
    }
}

/// Reads and fully validates a tutorial model file of version 3, 2 or 1: safetensors
/// structure, format name, version, metadata, tensor dtypes and shapes, checksum, parameter
/// ranges (against the declared bit widths and granularity) and the accumulator bound. A
/// version-4 file (any architecture) is read by [`load_graph`].
pub fn load(path: impl AsRef<Path>) -> Result<QuantModel, QuantError> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let file = open(path, &bytes)?;
    load_tutorial(path, &file)
}

fn load_tutorial(path: &Path, file: &Opened<'_>) -> Result<QuantModel, QuantError> {
    let bad = |reason: String| bad_metadata(path, reason);
    let version = file.version.as_str();
    let meta = match version {
        FORMAT_VERSION | "2" => serde_json::from_str::<Meta>(&file.meta_json),
        "1" => serde_json::from_str::<MetaV1>(&file.meta_json).map(MetaV1::upgrade),
        GRAPH_FORMAT_VERSION => {
            return Err(bad(
                "a version-4 file holds a network of any architecture: read it with load_graph"
                    .into(),
            ));
        }
        _ => {
            return Err(QuantError::UnsupportedVersion {
                path: path.to_owned(),
                found: version.to_owned(),
            });
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    // Version 2 and later also sign the metadata; version 1 signed the tensors only.
    let signed_meta: &[u8] = if version == "1" {
        &[]
    } else {
        file.meta_json.as_bytes()
    };
    let layers = read_layers(
        path,
        file,
        &meta.layers,
        meta.weight_bits,
        version == FORMAT_VERSION,
        signed_meta,
    )?;
    let layers: [QuantLayer; 4] = layers
        .try_into()
        .map_err(|v: Vec<_>| bad(format!("{} layers, expected 4", v.len())))?;
    let norm = normalization(
        path,
        meta.input_normalization_folded,
        meta.input_normalization,
    )?;
    let model = QuantModel::new(meta.options(), layers, norm).map_err(|source| {
        QuantError::InvalidModel {
            path: path.to_owned(),
            source: Box::new(source),
        }
    })?;
    if ParamsMeta::from(model.logit_params()) != meta.logits {
        return Err(bad(format!(
            "logit parameters {:?} differ from fc2's output parameters",
            meta.logits
        )));
    }
    Ok(model)
}

/// The bytes of tensor `name`, checked to have `dtype` and `shape`.
fn tensor<'a>(
    path: &Path,
    tensors: &SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
) -> Result<&'a [u8], QuantError> {
    let view = tensors
        .tensor(name)
        .map_err(|_| QuantError::MissingTensor {
            path: path.to_owned(),
            tensor: name.to_owned(),
        })?;
    if view.dtype() != dtype {
        return Err(QuantError::WrongDtype {
            path: path.to_owned(),
            tensor: name.to_owned(),
            expected: format!("{dtype:?}"),
            found: format!("{:?}", view.dtype()),
        });
    }
    if view.shape() != shape {
        return Err(QuantError::WrongShape {
            path: path.to_owned(),
            tensor: name.to_owned(),
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    Ok(view.data())
}
