//! The exported graph's structure, without a runtime: operators in order, the very weight codes
//! of the model (fc2's transposed for MatMulInteger), scalar parameters for per-tensor weights,
//! and a Clip exactly where burnq's clamp is narrower than `[0, 255]`.

use burnq_onnx::onnx::{DataType, Model, Tensor};
use burnq_onnx::{ExportInfo, to_onnx};
use burnq_quant::{ConvertOptions, QuantModel, QuantScheme};
use burnq_testkit::golden;

fn export(model: &QuantModel) -> Model {
    let info = ExportInfo {
        dataset: "mnist".into(),
        source: "golden".into(),
    };
    to_onnx(model, &info)
}

fn initializer<'a>(graph: &'a Model, name: &str) -> &'a Tensor {
    graph
        .initializers
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"))
}

#[test]
fn the_graph_holds_the_models_codes_in_standard_operators() {
    let model = golden::model();
    let graph = export(&model);
    let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op_type).collect();
    assert_eq!(
        ops,
        [
            "QLinearConv",
            "MaxPool",
            "QLinearConv",
            "MaxPool",
            "Reshape",
            "QLinearConv",
            "QLinearConv",
            "Reshape",
            "Reshape",
            "MatMulInteger",
            "Add",
            "Cast",
            "Mul",
            "ArgMax"
        ]
    );
    for layer in model.layers() {
        let w = initializer(&graph, &format!("{}.w", layer.name));
        assert_eq!(w.data_type, DataType::Uint8);
        assert_eq!(w.raw, layer.weights, "{} weights", layer.name);
        assert_eq!(
            w.dims.len(),
            4,
            "{}: fully connected layers are 1×1 convolutions",
            layer.name
        );
        let bias = initializer(&graph, &format!("{}.bias", layer.name));
        let expected: Vec<u8> = layer.bias.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(bias.raw, expected);
        // Per-tensor parameters are scalars.
        assert!(
            initializer(&graph, &format!("{}.w_scale", layer.name))
                .dims
                .is_empty()
        );
        let zp = initializer(&graph, &format!("{}.w_zero_point", layer.name));
        assert_eq!(zp.raw, [layer.weight_zero_points[0] as u8]);
        let y_scale = initializer(&graph, &format!("{}.y_scale", layer.name));
        assert_eq!(y_scale.raw, layer.output.scale().to_le_bytes());
    }
    let fc2 = &model.layers()[3];
    let transposed = initializer(&graph, "fc2.w_t");
    assert_eq!(transposed.dims, [500, 10]);
    for o in 0..10 {
        for i in 0..500 {
            assert_eq!(transposed.raw[i * 10 + o], fc2.weights[o * 500 + i]);
        }
    }
    let outputs: Vec<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits_u8", "fc2_acc", "logits", "class"]);
    assert!(graph.metadata.contains(&("act_bits".into(), "8".into())));
}

#[test]
fn a_clamp_narrower_than_u8_becomes_a_clip() {
    let model = golden::model();
    let mut layers = model.layers().clone();
    layers[0].act_max = 200;
    let narrowed =
        QuantModel::new(model.options(), layers, model.input_normalization()).expect("valid");
    let graph = export(&narrowed);
    let clips: Vec<_> = graph.nodes.iter().filter(|n| n.op_type == "Clip").collect();
    assert_eq!(clips.len(), 1);
    assert_eq!(
        clips[0].inputs,
        ["conv1.requantized", "conv1.clip_min", "conv1.clip_max"]
    );
    assert_eq!(initializer(&graph, "conv1.clip_max").raw, [200]);
    let pool = graph.nodes.iter().find(|n| n.name == "pool1").unwrap();
    assert_eq!(pool.inputs, ["conv1.out"]);
}

/// Per-layer widths: each layer's weight codes as they are, a Clip after exactly the layers
/// whose outputs are narrower than 8 bits (their clamp `[Z or 0, 2^A − 1]`), and the widths
/// in the metadata.
#[test]
fn per_layer_widths_clip_each_narrow_layer() {
    let names = ["conv1", "conv2", "fc1", "fc2"];
    let scheme = QuantScheme::parse(
        ConvertOptions::uniform(8),
        "conv1=w8a4,conv2=w2a8,fc1=w4a3",
        &names,
    )
    .unwrap();
    let model = burnq_testkit::model_file::model(scheme);
    let graph = export(&model);
    let clipped: Vec<&str> = graph
        .nodes
        .iter()
        .filter(|n| n.op_type == "Clip")
        .map(|n| n.name.as_str())
        .collect();
    let narrow: Vec<String> = model
        .layers()
        .iter()
        .filter(|l| l.output.bits() < 8 || l.act_min > 0)
        .map(|l| l.name.clone())
        .collect();
    assert_eq!(clipped.len(), narrow.len(), "{clipped:?} vs {narrow:?}");
    for layer in model.layers() {
        assert_eq!(
            initializer(&graph, &format!("{}.w", layer.name)).raw,
            layer.weights
        );
        if layer.output.bits() < 8 {
            let max = initializer(&graph, &format!("{}.clip_max", layer.name));
            assert_eq!(max.raw, [layer.act_max], "{}", layer.name);
            assert_eq!(i32::from(layer.act_max), layer.output.qmax());
        }
    }
    assert!(graph.metadata.contains(&(
        "bits_per_layer".into(),
        "conv1=w8a4,conv2=w2a8,fc1=w4a3,fc2=w8a8".into()
    )));
}

#[test]
fn the_encoding_starts_with_the_model_header_and_holds_every_weight() {
    let model = golden::model();
    let bytes = export(&model).encode();
    // ModelProto field 1 (ir_version) = 8: key 0x08, value 0x08.
    assert_eq!(bytes[..2], [0x08, 0x08]);
    // Each layer's weights appear verbatim (raw_data) in the file.
    for layer in model.layers() {
        assert!(
            bytes
                .windows(layer.weights.len())
                .any(|w| w == layer.weights.as_slice()),
            "{} weights not found in the encoding",
            layer.name
        );
    }
}

#[test]
fn the_float_graph_holds_the_float_weights_with_conv1_folded() {
    let network = burnq_testkit::random_network(7);
    let norm = burnq_quant::Normalization::MNIST;
    let info = ExportInfo {
        dataset: "mnist".into(),
        source: "random".into(),
    };
    let graph = burnq_onnx::to_float_onnx(&network, norm, &info);
    let ops: Vec<&str> = graph.nodes.iter().map(|n| n.op_type).collect();
    assert_eq!(
        ops,
        [
            "Cast", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm",
            "Relu", "Gemm", "ArgMax"
        ]
    );
    let f32s = |name: &str| -> Vec<f32> {
        let t = initializer(&graph, name);
        assert_eq!(t.data_type, DataType::Float, "{name}");
        t.raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let [conv1, conv2, fc1, fc2] = network.layers();
    // Layers after conv1 carry their weights unchanged (Gemm with transB: out × in).
    for (name, layer) in [("conv2", conv2), ("fc1", fc1), ("fc2", fc2)] {
        assert_eq!(f32s(&format!("{name}.weight")), layer.weights, "{name}");
        assert_eq!(f32s(&format!("{name}.bias")), layer.bias, "{name}");
    }
    assert_eq!(initializer(&graph, "fc1.weight").dims, [500, 800]);
    // conv1 reads raw pixels: W/(255·std), b − (mean/std)·ΣW.
    let w = f32s("conv1.weight");
    for (folded, original) in w.iter().zip(&conv1.weights) {
        assert!((folded * 255.0 * norm.std - original).abs() < 1e-6);
    }
    let b = f32s("conv1.bias");
    let sum: f32 = conv1.weights[..25].iter().sum();
    assert!((b[0] - (conv1.bias[0] - norm.mean / norm.std * sum)).abs() < 1e-5);
    assert_eq!(graph.inputs[0].data_type, DataType::Uint8);
    let outputs: Vec<&str> = graph.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(outputs, ["logits", "class"]);
    assert_eq!(graph.nodes[10].outputs, ["logits"]);
}
