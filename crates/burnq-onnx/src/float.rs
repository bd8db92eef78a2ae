//! The float network as an ONNX graph ([`to_float_onnx`]): the peer burnq is measured
//! against (ONNX Runtime fp32, and ONNX Runtime's own int8 quantization of this graph).
//!
//! ```text
//! pixels u8 [N,1,28,28] → Cast f32
//!  → conv1 Conv (input normalization folded in) → Relu → MaxPool 2×2
//!  → conv2 Conv → Relu → MaxPool 2×2 → Flatten [N,800]
//!  → fc1 Gemm (transB) → Relu → fc2 Gemm (transB)                          → logits f32
//!                                                  → ArgMax                → class  i64
//! ```
//!
//! The input is the same as the integer graph's ([`crate::to_onnx`]): raw 8-bit pixels, so every
//! ONNX Runtime configuration and burnq read identical bytes. The training normalization
//! `x = (p/255 − mean)/std` is folded into conv1, which is exact in real arithmetic because conv1
//! has no padding: `W' = W/(255·std)`, `b' = b − (mean/std)·Σ W` per output channel. In `f32`
//! the folded graph differs from Burn's forward by rounding only (about 1e-5 of the logits'
//! magnitude); `cargo xtask export-onnx --float --verify` measures it. `logits` are fc2's outputs
//! before log-softmax (the class is the same).

use burnq_quant::{FloatLayer, FloatNetwork, LayerKind, Normalization};

use crate::export::{ExportInfo, OPSET};
use crate::onnx::{DataType, Dim, Model, Node, Tensor, ValueInfo};

/// conv1's weights and bias with the input normalization folded in (see the module docs),
/// computed in `f64`.
fn fold_normalization(conv1: &FloatLayer, norm: Normalization) -> (Vec<f32>, Vec<f32>) {
    let out = conv1.kind.out_channels();
    let fan_in = conv1.kind.fan_in();
    let (mean, std) = (f64::from(norm.mean), f64::from(norm.std));
    let weights = conv1
        .weights
        .iter()
        .map(|&w| (f64::from(w) / (255.0 * std)) as f32)
        .collect();
    let bias = (0..out)
        .map(|o| {
            let sum: f64 = conv1.weights[o * fan_in..(o + 1) * fan_in]
                .iter()
                .map(|&w| f64::from(w))
                .sum();
            (f64::from(conv1.bias[o]) - mean / std * sum) as f32
        })
        .collect();
    (weights, bias)
}

/// Appends a float layer: Conv (OIHW weights) or Gemm (`out × in` weights, `transB = 1`), with
/// its weight and bias initializers `{name}.weight`, `{name}.bias`. Returns its output's name.
fn layer(
    nodes: &mut Vec<Node>,
    initializers: &mut Vec<Tensor>,
    name: &str,
    kind: LayerKind,
    (weights, bias): (&[f32], &[f32]),
    input: &str,
) -> String {
    let out = kind.out_channels() as i64;
    let (w_name, b_name, output) = (
        format!("{name}.weight"),
        format!("{name}.bias"),
        format!("{name}.out"),
    );
    let node = match kind {
        LayerKind::Conv2d {
            in_channels,
            kernel,
            ..
        } => {
            let k = kernel as i64;
            initializers.push(Tensor::f32(
                &w_name,
                &[out, in_channels as i64, k, k],
                weights,
            ));
            Node::new("Conv", name, &[input, &w_name, &b_name], &[&output])
                .with_ints("kernel_shape", &[k, k])
        }
        LayerKind::Linear { in_features, .. } => {
            initializers.push(Tensor::f32(&w_name, &[out, in_features as i64], weights));
            Node::new("Gemm", name, &[input, &w_name, &b_name], &[&output]).with_int("transB", 1)
        }
    };
    initializers.push(Tensor::f32(&b_name, &[out], bias));
    nodes.push(node);
    output
}

/// The float ONNX graph of `network` trained with input normalization `norm` (see the module
/// documentation): input `pixels` (raw `u8`, `[N, 1, 28, 28]`), outputs `logits` (`f32`,
/// `[N, 10]`) and `class` (`i64`, `[N]`).
pub fn to_float_onnx(network: &FloatNetwork, norm: Normalization, info: &ExportInfo) -> Model {
    let [conv1, conv2, fc1, fc2] = network.layers();
    let mut nodes = Vec::new();
    let mut init = Vec::new();
    nodes.push(Node::new("Cast", "cast", &["pixels"], &["pixels.f32"]).with_int("to", 1));
    let (w1, b1) = fold_normalization(conv1, norm);
    let mut x = layer(
        &mut nodes,
        &mut init,
        "conv1",
        conv1.kind,
        (&w1, &b1),
        "pixels.f32",
    );
    for (i, (name, l)) in [("conv2", conv2), ("fc1", fc1), ("fc2", fc2)]
        .into_iter()
        .enumerate()
    {
        // After conv1 and conv2: ReLU and 2×2 max-pool; after fc1: ReLU.
        let relu = format!("{x}.relu");
        nodes.push(Node::new("Relu", &format!("{x}.relu"), &[&x], &[&relu]));
        x = relu;
        if i < 2 {
            let pooled = format!("pool{}.out", i + 1);
            nodes.push(
                Node::new("MaxPool", &format!("pool{}", i + 1), &[&x], &[&pooled])
                    .with_ints("kernel_shape", &[2, 2])
                    .with_ints("strides", &[2, 2]),
            );
            x = pooled;
        }
        if i == 1 {
            nodes
                .push(Node::new("Flatten", "flatten", &[&x], &["flatten.out"]).with_int("axis", 1));
            x = "flatten.out".into();
        }
        x = layer(
            &mut nodes,
            &mut init,
            name,
            l.kind,
            (&l.weights, &l.bias),
            &x,
        );
    }
    // fc2's output is the graph output `logits`.
    let last = nodes.last_mut().expect("fc2 was just added");
    last.outputs = vec!["logits".into()];
    nodes.push(
        Node::new("ArgMax", "predict", &["logits"], &["class"])
            .with_int("axis", 1)
            .with_int("keepdims", 0),
    );
    let batch = || Dim::Named("batch".into());
    let classes = fc2.kind.out_channels() as i64;
    Model {
        graph_name: format!("burnq_{}_float", info.dataset.replace('-', "_")),
        opset: OPSET,
        nodes,
        initializers: init,
        inputs: vec![ValueInfo {
            name: "pixels".into(),
            data_type: DataType::Uint8,
            dims: vec![batch(), Dim::Fixed(1), Dim::Fixed(28), Dim::Fixed(28)],
            doc: format!(
                "raw 8-bit pixels (0 = black background, 255 = white ink), 28×28, as in the MNIST \
                 files; the normalization (mean {}, std {}) is folded into conv1",
                norm.mean, norm.std
            ),
        }],
        outputs: vec![
            ValueInfo {
                name: "logits".into(),
                data_type: DataType::Float,
                dims: vec![batch(), Dim::Fixed(classes)],
                doc: "fc2's outputs (before log-softmax)".into(),
            },
            ValueInfo {
                name: "class".into(),
                data_type: DataType::Int64,
                dims: vec![batch()],
                doc: "predicted class: argmax of logits, lowest index on ties".into(),
            },
        ],
        doc: "The PyTorch MNIST tutorial network trained by burnq (Burn), in f32.".into(),
        metadata: vec![
            ("format".to_owned(), "burnq-onnx-float".to_owned()),
            ("dataset".to_owned(), info.dataset.clone()),
            ("source".to_owned(), info.source.clone()),
            ("normalization_mean".into(), norm.mean.to_string()),
            ("normalization_std".into(), norm.std.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_the_normalization_into_conv1_is_exact_in_real_arithmetic() {
        let kind = LayerKind::Conv2d {
            in_channels: 1,
            out_channels: 2,
            kernel: 2,
        };
        let conv1 = FloatLayer {
            kind,
            weights: vec![0.5, -1.0, 2.0, 0.25, 1.0, 1.0, -1.0, 0.0],
            bias: vec![0.1, -0.2],
        };
        let norm = Normalization {
            mean: 0.1307,
            std: 0.3081,
        };
        let (w, b) = fold_normalization(&conv1, norm);
        let pixels = [0u8, 17, 200, 255];
        for o in 0..2 {
            let direct: f64 = f64::from(conv1.bias[o])
                + (0..4)
                    .map(|i| f64::from(conv1.weights[o * 4 + i]) * f64::from(norm.apply(pixels[i])))
                    .sum::<f64>();
            let folded: f64 = f64::from(b[o])
                + (0..4)
                    .map(|i| f64::from(w[o * 4 + i]) * f64::from(pixels[i]))
                    .sum::<f64>();
            assert!((direct - folded).abs() < 1e-5, "{o}: {direct} vs {folded}");
        }
    }
}
