//! The model file: safetensors with tensors `conv1.weight` (u8, OIHW), `conv1.bias` (i32),
//! …, `fc2.weight` (u8, out × in), `fc2.bias` (i32), and a `__metadata__` string map:
//!
//! - `format` = `"burnq-int"`, `version` = `"3"` ([`FORMAT_VERSION`]);
//! - `meta`: a JSON object (unknown keys are errors) with
//!   - `weight_bits` (2..=8): bit width of every weight code;
//!   - `act_bits` (2..=8): bit width of every layer's output, the logits included (so of every
//!     layer input but conv1's);
//!   - `per_channel` (bool): whether each output channel has its own weight scale, zero point
//!     and multiplier; when `false` every layer's per-channel arrays repeat one value;
//!   - `layers`: conv1, conv2, fc1, fc2 in order, each with `name`, `kind` (`"conv2d"` or
//!     `"linear"`), `weight_shape`, `bias_shape`, `input` and `output` (`scale`,
//!     `zero_point`, `bits`), `weight_scales`, `weight_zero_points`, `m0`, `shift` (one per
//!     output channel), `act_min`, `act_max`;
//!   - `logits`: the logit parameters (`scale`, `zero_point`, `bits`), equal to fc2's output;
//!   - `input_normalization_folded` (bool) and `input_normalization` (`{mean, std}`, present
//!     exactly when folded);
//! - `checksum`: lowercase hex SHA-256 of the tensor data in layer order, weight then bias,
//!   exactly as stored (little endian), followed by the UTF-8 bytes of `meta` exactly as
//!   stored — so a changed scale, zero point or multiplier is caught like a changed weight.
//!
//! Weight codes of fewer than 8 bits are stored densely (version 3): `<layer>.weight` is then a
//! 1-D u8 tensor of `⌈n·weight_bits/8⌉` bytes for the `n = Π weight_shape` codes, code `i` at
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

mod meta;
mod packing;

use meta::{Meta, MetaV1, ParamsMeta, build_layer};

/// The `format` metadata value.
pub const FORMAT_NAME: &str = "burnq-int";
/// The `version` metadata value written. [`load`] reads it and versions `"2"` and `"1"`.
pub const FORMAT_VERSION: &str = "3";

/// Writes `model` to `path` atomically (temporary file in the same folder, then rename).
pub fn save(model: &QuantModel, path: impl AsRef<Path>) -> Result<(), QuantError> {
    let path = path.as_ref();
    let io = |source| QuantError::Io {
        path: path.to_owned(),
        source,
    };
    let bits = model.weight_bits();
    let data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = model
        .layers()
        .iter()
        .flat_map(|l| {
            let bias = l.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let (shape, weights) = if bits < 8 {
                let packed = packing::pack(&l.weights, bits);
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
        .collect();
    let meta_json =
        serde_json::to_string(&Meta::new(model)).map_err(|e| QuantError::BadMetadata {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let signature = checksum(
        data.iter()
            .map(|t| t.3.as_slice())
            .chain([meta_json.as_bytes()]),
    );
    let metadata = HashMap::from([
        ("format".to_owned(), FORMAT_NAME.to_owned()),
        ("version".to_owned(), FORMAT_VERSION.to_owned()),
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
    burnq_arch::write_atomic(path, &file_bytes).map_err(io)
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

/// Reads and fully validates a model file of version 2 or 1: safetensors structure, format
/// name, version, metadata, tensor dtypes and shapes, checksum, parameter ranges (against the
/// declared bit widths and granularity) and the accumulator bound.
pub fn load(path: impl AsRef<Path>) -> Result<QuantModel, QuantError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| QuantError::Io {
        path: path.to_owned(),
        source,
    })?;
    let parse = |source| QuantError::Safetensors {
        path: path.to_owned(),
        source,
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(parse)?;
    let tensors = SafeTensors::deserialize(&bytes).map_err(parse)?;
    let entries = header.metadata().clone().unwrap_or_default();
    let entry = |key: &'static str| {
        entries.get(key).ok_or_else(|| QuantError::MissingMetadata {
            path: path.to_owned(),
            key,
        })
    };
    let format = entry("format")?;
    if format != FORMAT_NAME {
        return Err(QuantError::WrongFormat {
            path: path.to_owned(),
            found: format.clone(),
        });
    }
    let version = entry("version")?;
    let bad = |reason: String| QuantError::BadMetadata {
        path: path.to_owned(),
        reason,
    };
    let meta_json = entry("meta")?;
    let meta = match version.as_str() {
        FORMAT_VERSION | "2" => serde_json::from_str::<Meta>(meta_json),
        "1" => serde_json::from_str::<MetaV1>(meta_json).map(MetaV1::upgrade),
        _ => {
            return Err(QuantError::UnsupportedVersion {
                path: path.to_owned(),
                found: version.clone(),
            });
        }
    }
    .map_err(|e| bad(e.to_string()))?;
    let expected_checksum = entry("checksum")?;
    let expected_names = 2 * meta.layers.len();
    if tensors.len() != expected_names {
        return Err(bad(format!(
            "{} tensors in the file, the metadata describes {expected_names}",
            tensors.len()
        )));
    }
    let bits = meta.options().weight_bits;
    // Packed only at a valid sub-byte width; any other width is refused by validation below.
    let packed = version == FORMAT_VERSION && (MIN_BITS..MAX_BITS).contains(&bits);
    let mut raw = Vec::with_capacity(meta.layers.len());
    for l in &meta.layers {
        let n: usize = l.weight_shape.iter().product();
        let shape = if packed {
            vec![packing::packed_len(n, bits)]
        } else {
            l.weight_shape.clone()
        };
        let weight = tensor(
            path,
            &tensors,
            &format!("{}.weight", l.name),
            Dtype::U8,
            &shape,
        )?;
        let bias = tensor(
            path,
            &tensors,
            &format!("{}.bias", l.name),
            Dtype::I32,
            &l.bias_shape,
        )?;
        raw.push((weight, bias));
    }
    // Version 2 also signs the metadata; version 1 signed the tensors only.
    let signed_meta: &[u8] = if version == "1" {
        &[]
    } else {
        meta_json.as_bytes()
    };
    let actual = checksum(raw.iter().flat_map(|(w, b)| [*w, *b]).chain([signed_meta]));
    if &actual != expected_checksum {
        return Err(QuantError::ChecksumMismatch {
            path: path.to_owned(),
            expected: expected_checksum.clone(),
            actual,
        });
    }
    let invalid = |source| QuantError::InvalidModel {
        path: path.to_owned(),
        source: Box::new(source),
    };
    let mut layers = Vec::with_capacity(meta.layers.len());
    for (l, (w, b)) in meta.layers.iter().zip(&raw) {
        let codes = if packed {
            let n = l.weight_shape.iter().product();
            packing::unpack(w, bits, n)
                .map_err(|reason| bad(format!("{}.weight: {reason}", l.name)))?
        } else {
            w.to_vec()
        };
        layers.push(build_layer(l, &codes, b).map_err(invalid)?);
    }
    let layers: [QuantLayer; 4] = layers
        .try_into()
        .map_err(|v: Vec<_>| bad(format!("{} layers, expected 4", v.len())))?;
    let normalization = match (meta.input_normalization_folded, meta.input_normalization) {
        (true, Some(n)) => Some(Normalization {
            mean: n.mean,
            std: n.std,
        }),
        (false, None) => None,
        (folded, _) => {
            return Err(bad(format!(
                "input_normalization_folded is {folded} but input_normalization is {}",
                if folded { "absent" } else { "present" }
            )));
        }
    };
    let model = QuantModel::new(meta.options(), layers, normalization).map_err(invalid)?;
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
