//! The model file: round trip, atomic save, dense sub-byte codes, reading version-1 and
//! version-2 files, and one test per way a
//! file can be wrong, each asserting the specific error variant and that the message names the
//! file.

use std::path::Path;

use burnq_quant::{
    ConvertOptions, IMAGE_PIXELS, QuantError, QuantGraph, QuantScheme, load, load_graph, save,
    save_graph,
};
use burnq_testkit::model_file::{Tensors, load_err, model, rewrite, rewrite_signed, saved};
use safetensors::{Dtype, SafeTensors};

/// Every combination of widths and granularity the round trip covers.
const OPTIONS: [ConvertOptions; 5] = [
    ConvertOptions::uniform(8),
    ConvertOptions::uniform(5),
    ConvertOptions::uniform(2),
    ConvertOptions {
        weight_bits: 4,
        act_bits: 8,
        per_channel: true,
    },
    ConvertOptions {
        weight_bits: 8,
        act_bits: 3,
        per_channel: true,
    },
];

fn images() -> Vec<u8> {
    (0..4 * IMAGE_PIXELS).map(|i| (i * 7 % 256) as u8).collect()
}

fn tensor<'a>(
    tensors: &'a mut Tensors,
    name: &str,
) -> &'a mut (String, Dtype, Vec<usize>, Vec<u8>) {
    tensors.iter_mut().find(|t| t.0 == name).unwrap()
}

#[test]
fn round_trip_keeps_model_and_outputs() {
    let images = images();
    for options in OPTIONS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = model(options);
        save(&model, &path).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, model);
        assert_eq!(loaded.options(), options);
        assert_eq!(
            loaded.forward_reference(&images, 4).unwrap(),
            model.forward_reference(&images, 4).unwrap()
        );
    }
}

/// Per-layer widths: each layer's weights are packed at its own width, the layers whose
/// weight width differs from the model's widest carry `weight_bits`, the file reads back as
/// the same model (tutorial format and graph format), and a uniform file has no per-layer
/// width at all (the layout of before).
#[test]
fn per_layer_widths_round_trip_packed_per_layer() {
    let names = ["conv1", "conv2", "fc1", "fc2"];
    let images = images();
    for spec in ["conv1=w8a8,conv2=w4a6,fc1=w2a3,fc2=w3a8", "2,w5a2,8,a4"] {
        let per_channel = ConvertOptions {
            per_channel: true,
            ..ConvertOptions::uniform(8)
        };
        let scheme = QuantScheme::parse(per_channel, spec, &names).unwrap();
        let model = model(scheme.clone());
        assert!(model.is_mixed());
        for layer in model.layers() {
            assert_eq!(
                layer.bits(),
                burnq_quant::LayerBits::of(scheme.layer(&layer.name))
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&model, &path).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, model);
        assert_eq!(
            loaded.forward_reference(&images, 4).unwrap(),
            model.forward_reference(&images, 4).unwrap()
        );
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta: serde_json::Value =
            serde_json::from_str(&header.metadata().as_ref().unwrap()["meta"]).unwrap();
        assert_eq!(meta["weight_bits"], model.weight_bits());
        for (layer, layer_meta) in model
            .layers()
            .iter()
            .zip(meta["layers"].as_array().unwrap())
        {
            let bits = layer.weight_bits;
            let view = st.tensor(&format!("{}.weight", layer.name)).unwrap();
            assert_eq!(view.data().len(), layer.stored_weight_bytes());
            let stored = if bits < 8 {
                assert_eq!(
                    view.shape(),
                    [(layer.weights.len() * usize::from(bits)).div_ceil(8)]
                );
                unpack_documented(view.data(), bits, layer.weights.len())
            } else {
                view.data().to_vec()
            };
            assert_eq!(stored, layer.weights, "{spec} {}", layer.name);
            let declared = &layer_meta["weight_bits"];
            if bits == model.weight_bits() {
                assert!(declared.is_null(), "{spec} {}", layer.name);
            } else {
                assert_eq!(declared, bits, "{spec} {}", layer.name);
            }
            assert_eq!(layer_meta["output"]["bits"], layer.output.bits());
        }
        let graph = QuantGraph::from_tutorial(&model).unwrap();
        assert!(graph.is_mixed());
        let graph_path = dir.path().join("g.safetensors");
        save_graph(&graph, &graph_path).unwrap();
        assert_eq!(load_graph(&graph_path).unwrap(), graph);
        assert_eq!(load_graph(&path).unwrap(), graph);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(&model(4), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header.metadata().as_ref().unwrap()["meta"]
            .matches("weight_bits")
            .count(),
        1
    );
}

/// A file whose model-level widths are not the widest of its layers is refused.
#[test]
fn declared_widths_must_be_the_widest() {
    let names = ["conv1", "conv2", "fc1", "fc2"];
    let scheme = QuantScheme::parse(ConvertOptions::uniform(8), "fc1=w4", &names).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(&model(scheme), &path).unwrap();
    rewrite_signed(&path, |_, metadata| {
        let meta = metadata.get_mut("meta").unwrap();
        *meta = meta.replacen("\"act_bits\":8", "\"act_bits\":6", 1);
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. }
            if source.to_string().contains("widest layer widths are w8a8")
    ));
}

/// The codes of a version-3 weight tensor, read from the documented layout (written here
/// independently of the library's packing): `n` codes of `bits` bits, code `i` at bits
/// `i·bits ..` of the little-endian bit stream, least significant bit first.
fn unpack_documented(bytes: &[u8], bits: u8, n: usize) -> Vec<u8> {
    let bit = |k: usize| (bytes[k / 8] >> (k % 8)) & 1;
    (0..n)
        .map(|i| {
            (0..usize::from(bits)).fold(0u8, |code, j| code | (bit(i * usize::from(bits) + j) << j))
        })
        .collect()
}

/// Rewrites a saved version-3 file into the version-2 layout: one code per byte in a
/// `weight_shape` tensor at every width (`meta` is the same in both versions).
fn downgrade_to_v2(path: &Path, weight_bits: u8) {
    rewrite_signed(path, |tensors, m| {
        m.insert("version".into(), "2".into());
        let meta: serde_json::Value = serde_json::from_str(&m["meta"]).unwrap();
        for layer in meta["layers"].as_array().unwrap() {
            let name = format!("{}.weight", layer["name"].as_str().unwrap());
            let shape: Vec<usize> = layer["weight_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let tensor = tensors.iter_mut().find(|t| t.0 == name).unwrap();
            if weight_bits < 8 {
                tensor.3 = unpack_documented(&tensor.3, weight_bits, shape.iter().product());
            }
            tensor.2 = shape;
        }
    });
}

/// Rewrites a saved file into the layout the version-1 code wrote: one code per byte (as
/// version 2), `version` `"1"`, and a `meta` with one `bits` where version 2 has `weight_bits`,
/// `act_bits` and `per_channel` (every other key is the same in both versions).
fn downgrade_to_v1(path: &Path, bits: u8) {
    downgrade_to_v2(path, bits);
    rewrite_signed(path, |_, m| {
        m.insert("version".into(), "1".into());
        let meta = m.get_mut("meta").unwrap();
        let mut json: serde_json::Value = serde_json::from_str(meta).unwrap();
        let object = json.as_object_mut().unwrap();
        for key in ["weight_bits", "act_bits", "per_channel"] {
            object.remove(key).unwrap();
        }
        object.insert("bits".into(), bits.into());
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "bits",
                "input_normalization",
                "input_normalization_folded",
                "layers",
                "logits"
            ]
        );
        *meta = json.to_string();
    });
}

#[test]
fn version_2_files_still_load() {
    let images = images();
    for options in OPTIONS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.safetensors");
        let model = model(options);
        save(&model, &path).unwrap();
        downgrade_to_v2(&path, options.weight_bits);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, model, "{options:?}");
        assert_eq!(
            loaded.forward_reference(&images, 4).unwrap(),
            model.forward_reference(&images, 4).unwrap()
        );
    }
}

#[test]
fn sub_byte_codes_are_stored_densely() {
    let size = |bits: u8| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        save(&model(bits), &path).unwrap();
        std::fs::metadata(&path).unwrap().len() as f64
    };
    let eight = size(8);
    // The targets: a 4-bit file at most 55 % of the 8-bit one, a 2-bit file at most 30 %.
    assert!(size(4) <= 0.55 * eight, "{} of {eight}", size(4));
    assert!(size(2) <= 0.30 * eight, "{} of {eight}", size(2));
    // The stored bytes are the documented layout of the model's codes.
    for options in OPTIONS {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let model = model(options);
        save(&model, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for layer in model.layers() {
            let view = st.tensor(&format!("{}.weight", layer.name)).unwrap();
            let stored = if options.weight_bits < 8 {
                assert_eq!(
                    view.shape(),
                    [(layer.weights.len() * usize::from(options.weight_bits)).div_ceil(8)]
                );
                unpack_documented(view.data(), options.weight_bits, layer.weights.len())
            } else {
                assert_eq!(view.shape(), layer.kind.weight_shape());
                view.data().to_vec()
            };
            assert_eq!(stored, layer.weights, "{options:?} {}", layer.name);
        }
    }
}

#[test]
fn packed_padding_and_length_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(&model(2), &path).unwrap();
    let original = std::fs::read(&path).unwrap();
    // fc2: 10 × 500 codes of 2 bits fill 1250 bytes exactly; conv1's 500 codes too. Cut a
    // byte: the declared shape no longer matches.
    rewrite_signed(&path, |tensors, _| {
        let fc2 = tensors.iter_mut().find(|t| t.0 == "fc2.weight").unwrap();
        fc2.3.pop();
        fc2.2 = vec![fc2.3.len()];
    });
    assert!(matches!(load_err(&path), QuantError::WrongShape { .. }));
    // A model whose last packed byte has padding: 3 bits × 500 codes = 1500 bits = 187.5
    // bytes; setting a padding bit is refused.
    std::fs::write(&path, &original).unwrap();
    save(&model(3), &path).unwrap();
    rewrite_signed(&path, |tensors, _| {
        let conv1 = tensors.iter_mut().find(|t| t.0 == "conv1.weight").unwrap();
        *conv1.3.last_mut().unwrap() |= 0x80;
    });
    assert!(
        matches!(load_err(&path), QuantError::BadMetadata { reason, .. } if reason.contains("padding"))
    );
}

#[test]
fn version_1_files_still_load() {
    let images = images();
    for bits in [8, 4] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.safetensors");
        let model = model(bits);
        save(&model, &path).unwrap();
        downgrade_to_v1(&path, bits);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.options(), ConvertOptions::uniform(bits));
        assert_eq!(loaded, model);
        assert_eq!(
            loaded.forward_reference(&images, 4).unwrap(),
            model.forward_reference(&images, 4).unwrap()
        );
    }
}

#[test]
fn version_1_files_with_differing_channels_are_per_channel() {
    // Per-channel 8-bit layers, written in the version-1 layout (which allowed them).
    let model = model(ConvertOptions {
        per_channel: true,
        ..ConvertOptions::uniform(8)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.safetensors");
    save(&model, &path).unwrap();
    downgrade_to_v1(&path, 8);
    let loaded = load(&path).unwrap();
    assert!(loaded.per_channel());
    assert_eq!(loaded, model);
    assert_eq!(
        loaded.forward_reference(&images(), 4).unwrap(),
        model.forward_reference(&images(), 4).unwrap()
    );
}

#[test]
fn version_1_meta_keys_are_strict() {
    // A version-1 file must not carry the version-2 keys, nor lack `bits`.
    let (_dir, path, _) = saved();
    let original = std::fs::read(&path).unwrap();
    rewrite_signed(&path, |_, m| {
        m.insert("version".into(), "1".into());
    });
    assert!(matches!(load_err(&path), QuantError::BadMetadata { .. }));
    std::fs::write(&path, &original).unwrap();
    downgrade_to_v1(&path, 8);
    rewrite_signed(&path, |_, m| {
        m.insert("version".into(), "2".into());
    });
    assert!(matches!(load_err(&path), QuantError::BadMetadata { .. }));
}

#[test]
fn per_tensor_file_with_differing_channels_is_invalid() {
    let model = model(ConvertOptions {
        per_channel: true,
        ..ConvertOptions::uniform(8)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    save(&model, &path).unwrap();
    rewrite_signed(&path, |_, m| {
        let meta = m.get_mut("meta").unwrap();
        *meta = meta.replace("\"per_channel\":true", "\"per_channel\":false");
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. } if matches!(*source, QuantError::InvalidValue { ref what, .. } if what.contains("weight parameters"))
    ));
}

#[test]
fn weight_codes_must_fit_the_declared_width() {
    // Declaring 4-bit weights for a file of 8-bit weights: codes above 15 are refused.
    let (_dir, path, _) = saved();
    // (Version 2 stores one code per byte at every width, so the codes can be read.)
    rewrite_signed(&path, |_, m| {
        m.insert("version".into(), "2".into());
        let meta = m.get_mut("meta").unwrap();
        *meta = meta.replace("\"weight_bits\":8", "\"weight_bits\":4");
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. } if matches!(*source, QuantError::InvalidValue { .. })
    ));
}

#[test]
fn save_is_atomic_and_overwrites() {
    let (dir, path, model) = saved();
    save(&model, &path).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
    // A missing folder is created; a folder that cannot be (its parent is a file) is an I/O
    // error naming the file.
    let nested = dir.path().join("absent").join("m.safetensors");
    save(&model, &nested).unwrap();
    assert_eq!(load(&nested).unwrap(), model);
    let under_a_file = path.join("m.safetensors");
    assert!(matches!(
        save(&model, &under_a_file),
        Err(QuantError::Io { path, .. }) if path == under_a_file
    ));
}

#[test]
fn metadata_is_documented_json() {
    let (_dir, path, model) = saved();
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    assert_eq!(metadata["format"], "burnq-int");
    assert_eq!(metadata["version"], "3");
    assert_eq!(metadata["version"], burnq_quant::format::FORMAT_VERSION);
    assert_eq!(metadata["checksum"].len(), 64);
    let meta: serde_json::Value = serde_json::from_str(&metadata["meta"]).unwrap();
    assert_eq!(meta["weight_bits"], 8);
    assert_eq!(meta["act_bits"], 8);
    assert_eq!(meta["per_channel"], false);
    assert!(meta.get("bits").is_none());
    assert_eq!(meta["input_normalization_folded"], true);
    assert_eq!(meta["layers"][1]["name"], "conv2");
    assert_eq!(
        meta["layers"][1]["weight_shape"],
        serde_json::json!([50, 20, 5, 5])
    );
    assert_eq!(meta["layers"][3]["kind"], "linear");
    let z = model.logit_params().zero_point();
    assert_eq!(meta["logits"]["zero_point"], z);
}

#[test]
fn nonexistent_file_is_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.safetensors");
    match load_err(&path) {
        QuantError::Io { path: p, source } => {
            assert_eq!(p, path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn truncated_file_is_parse_error() {
    let (_dir, path, _) = saved();
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 100, 4, 0] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        assert!(
            matches!(load_err(&path), QuantError::Safetensors { .. }),
            "truncated to {keep}"
        );
    }
}

#[test]
fn flipped_tensor_bit_is_checksum_error() {
    let (_dir, path, _) = saved();
    let mut bytes = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    for offset in [8 + header_len, bytes.len() - 1, bytes.len() - 20_000] {
        bytes[offset] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_err(&path),
            QuantError::ChecksumMismatch { .. }
        ));
        bytes[offset] ^= 0x10;
    }
    std::fs::write(&path, &bytes).unwrap();
    assert!(load(&path).is_ok());
}

#[test]
fn wrong_format_name() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |_, m| {
        m.insert("format".into(), "gguf".into());
    });
    assert!(matches!(load_err(&path), QuantError::WrongFormat { found, .. } if found == "gguf"));
}

#[test]
fn wrong_version() {
    let (_dir, path, _) = saved();
    for version in ["5", "0", "", "2.0"] {
        rewrite_signed(&path, |_, m| {
            m.insert("version".into(), version.into());
        });
        assert!(
            matches!(load_err(&path), QuantError::UnsupportedVersion { found, .. } if found == version)
        );
    }
    // Version 4 holds any architecture: `load` (the tutorial model) points to `load_graph`.
    rewrite_signed(&path, |_, m| {
        m.insert("version".into(), "4".into());
    });
    assert!(
        matches!(load_err(&path), QuantError::BadMetadata { reason, .. } if reason.contains("load_graph"))
    );
}

#[test]
fn missing_metadata_entry() {
    let (_dir, path, _) = saved();
    rewrite(&path, |_, m| {
        m.remove("checksum");
    });
    assert!(matches!(
        load_err(&path),
        QuantError::MissingMetadata {
            key: "checksum",
            ..
        }
    ));
}

#[test]
fn malformed_meta_json() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |_, m| {
        let meta = m.get_mut("meta").unwrap();
        *meta = meta.replace("\"act_bits\":8", "\"act_bits\":\"eight\"");
    });
    assert!(matches!(load_err(&path), QuantError::BadMetadata { .. }));
}

#[test]
fn wrong_dtype() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |t, _| {
        let bias = tensor(t, "conv2.bias");
        bias.1 = Dtype::U32;
    });
    assert!(matches!(
        load_err(&path),
        QuantError::WrongDtype { tensor, .. } if tensor == "conv2.bias"
    ));
}

#[test]
fn wrong_shape() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |t, _| {
        tensor(t, "conv1.weight").2 = vec![20, 25];
    });
    match load_err(&path) {
        QuantError::WrongShape {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "conv1.weight");
            assert_eq!((expected, found), (vec![20, 1, 5, 5], vec![20, 25]));
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
}

#[test]
fn missing_tensor() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |t, _| tensor(t, "fc1.bias").0 = "fc1.b".into());
    assert!(matches!(
        load_err(&path),
        QuantError::MissingTensor { tensor, .. } if tensor == "fc1.bias"
    ));
}

#[test]
fn out_of_range_values_are_invalid_model() {
    let (_dir, path, _) = saved();
    let original = std::fs::read(&path).unwrap();
    rewrite_signed(&path, |_, m| {
        let meta = m.get_mut("meta").unwrap();
        let mut json: serde_json::Value = serde_json::from_str(meta).unwrap();
        json["layers"][2]["weight_zero_points"][7] = 256.into();
        *meta = json.to_string();
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. } if matches!(*source, QuantError::InvalidValue { .. })
    ));

    std::fs::write(&path, &original).unwrap();
    rewrite_signed(&path, |_, m| {
        let meta = m.get_mut("meta").unwrap();
        let mut json: serde_json::Value = serde_json::from_str(meta).unwrap();
        json["layers"][0]["output"]["scale"] = (-1.0).into();
        *meta = json.to_string();
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. } if matches!(*source, QuantError::InvalidScale { .. })
    ));
}

#[test]
fn overflowing_bias_is_refused_at_load() {
    let (_dir, path, _) = saved();
    rewrite_signed(&path, |t, _| {
        tensor(t, "fc2.bias").3[..4].copy_from_slice(&i32::MAX.to_le_bytes());
    });
    assert!(matches!(
        load_err(&path),
        QuantError::InvalidModel { source, .. }
            if matches!(*source, QuantError::AccumulatorOverflow { ref layer, channel: 0, .. } if layer == "fc2")
    ));
}
