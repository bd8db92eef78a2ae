//! The integer network as an ONNX graph ([`to_onnx`]), operator by operator:
//!
//! ```text
//! pixels u8 [N,1,28,28]
//!  → conv1 QLinearConv (→ Clip) → MaxPool 2×2 → conv2 QLinearConv (→ Clip) → MaxPool 2×2
//!  → Reshape [N,800,1,1] → fc1 QLinearConv 1×1 (→ Clip)
//!  ├→ fc2 QLinearConv 1×1 (→ Clip) → Reshape [N,10]                       → logits_u8 u8
//!  └→ Reshape [N,500] → fc2 MatMulInteger → Add bias                       → fc2_acc   i32
//!                      → Cast f32 → Mul S_in·S_w[o]                        → logits    f32
//!                      → ArgMax                                            → class     i64
//! ```
//!
//! Each QLinearConv takes the layer's own `u8` weight codes, weight scales and zero points
//! (scalars, or one per output channel), its `i32` bias (scale `S_in·S_w[o]`, zero point 0)
//! and the input and output scales and zero points, so it computes the same accumulator as
//! burnq, `acc = bias + Σ (x − Z_in)(w − Z_w)`, and requantizes it to
//! `sat_u8(round(acc·S_in·S_w/S_out) + Z_out)`. The runtime does that last step in float
//! (ONNX defines it so), where burnq uses the fixed-point multiplier `m0·2^(shift−31)`: the
//! two may differ by one code where the product lands near a rounding tie. A Clip follows
//! wherever burnq's clamp `[act_min, act_max]` is narrower than `[0, 255]`: a folded ReLU with
//! a non-zero output zero point, or activations of fewer than 8 bits. Fully connected layers
//! are 1×1 convolutions over a `[N, features, 1, 1]` tensor (QLinearMatMul has no bias).
//!
//! The fc2 accumulators are also computed exactly (MatMulInteger is integer end to end), so
//! `fc2_acc` reproduces burnq's whenever fc2's input codes agree, and `class` is burnq's
//! prediction rule (largest real logit `S_in·S_w[o]·acc[o]`, lowest index on ties).

use burnq_quant::{
    ConvertOptions, LayerKind, Normalization, QuantLayer, QuantModel, QuantParams, bits_label,
};

use crate::onnx::{DataType, Dim, Model, Node, Tensor, ValueInfo};

/// Default-domain opset the graph uses (uint8 MaxPool and Clip need 12, ArgMax's tie rule 13).
pub const OPSET: i64 = 13;

/// Descriptive facts written into the model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// Data set the model was trained on, e.g. `"mnist"`.
    pub dataset: String,
    /// Where the integer model came from (for the record).
    pub source: String,
}

/// Graph under construction.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    pub(crate) nodes: Vec<Node>,
    pub(crate) initializers: Vec<Tensor>,
}

/// The geometry of a QLinearConv: weight dims `[out, in/group, kh, kw]`, kernel, strides,
/// pads `[top, left, bottom, right]`, group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ConvShape {
    pub(crate) w_dims: Vec<i64>,
    pub(crate) strides: [i64; 2],
    pub(crate) pads: [i64; 4],
    pub(crate) group: i64,
}

impl ConvShape {
    /// A tutorial layer's shape: a valid stride-1 convolution, or a 1×1 convolution over
    /// `[N, features, 1, 1]` for a fully connected layer.
    fn of(layer: &QuantLayer) -> Self {
        let out = layer.kind.out_channels() as i64;
        let w_dims = match layer.kind {
            LayerKind::Conv2d {
                in_channels,
                kernel,
                ..
            } => vec![out, in_channels as i64, kernel as i64, kernel as i64],
            LayerKind::Linear { in_features, .. } => vec![out, in_features as i64, 1, 1],
        };
        Self {
            w_dims,
            strides: [1, 1],
            pads: [0; 4],
            group: 1,
        }
    }
}

impl Builder {
    pub(crate) fn node(&mut self, node: Node) {
        self.nodes.push(node);
    }

    pub(crate) fn constant(&mut self, tensor: Tensor) {
        self.initializers.push(tensor);
    }

    /// One scalar or one value per channel: a scalar when every channel agrees.
    fn per_channel<T: Copy + PartialEq>(values: &[T]) -> (Vec<i64>, Vec<T>) {
        if values.iter().all(|v| *v == values[0]) {
            (Vec::new(), vec![values[0]])
        } else {
            (vec![values.len() as i64], values.to_vec())
        }
    }

    /// The layer's constants (`{name}.x_scale` … `{name}.bias`) and a QLinearConv of
    /// `shape` reading `input` (NCHW; fully connected layers as 1×1 convolutions), followed by
    /// a Clip when the clamp is narrower than `[0, 255]`. Returns the name of the layer's
    /// output.
    pub(crate) fn quantized_layer(
        &mut self,
        layer: &QuantLayer,
        shape: &ConvShape,
        input: &str,
    ) -> String {
        let p = &layer.name;
        let out = layer.kind.out_channels() as i64;
        let w_dims = shape.w_dims.clone();
        let (scale_dims, w_scales) = Self::per_channel(&layer.weight_scales);
        let (zp_dims, w_zps) = Self::per_channel(&layer.weight_zero_points);
        let w_zps: Vec<u8> = w_zps.iter().map(|&z| code(z)).collect();
        for t in [
            Tensor::f32(&format!("{p}.x_scale"), &[], &[layer.input.scale()]),
            Tensor::u8(
                &format!("{p}.x_zero_point"),
                &[],
                &[code(layer.input.zero_point())],
            ),
            Tensor::u8(&format!("{p}.w"), &w_dims, &layer.weights),
            Tensor::f32(&format!("{p}.w_scale"), &scale_dims, &w_scales),
            Tensor::u8(&format!("{p}.w_zero_point"), &zp_dims, &w_zps),
            Tensor::f32(&format!("{p}.y_scale"), &[], &[layer.output.scale()]),
            Tensor::u8(
                &format!("{p}.y_zero_point"),
                &[],
                &[code(layer.output.zero_point())],
            ),
            Tensor::i32(&format!("{p}.bias"), &[out], &layer.bias),
        ] {
            self.constant(t);
        }
        let inputs = [
            "x_scale",
            "x_zero_point",
            "w",
            "w_scale",
            "w_zero_point",
            "y_scale",
        ]
        .into_iter()
        .chain(["y_zero_point", "bias"])
        .map(|s| format!("{p}.{s}"));
        let inputs: Vec<String> = std::iter::once(input.to_owned()).chain(inputs).collect();
        let conv_out = format!("{p}.requantized");
        let mut node = Node::new("QLinearConv", p, &[], &[&conv_out])
            .with_ints("kernel_shape", &shape.w_dims[2..]);
        if shape.strides != [1, 1] {
            node = node.with_ints("strides", &shape.strides);
        }
        if shape.pads != [0; 4] {
            node = node.with_ints("pads", &shape.pads);
        }
        if shape.group != 1 {
            node = node.with_int("group", shape.group);
        }
        self.node(Node { inputs, ..node });
        self.clip(p, &conv_out, layer.act_min, layer.act_max)
    }

    /// A Clip of `input` to `[min, max]` named after `p` when narrower than `[0, 255]`;
    /// returns the name of the result.
    pub(crate) fn clip(&mut self, p: &str, input: &str, min: u8, max: u8) -> String {
        if min == 0 && max == u8::MAX {
            return input.to_owned();
        }
        let clipped = format!("{p}.out");
        self.constant(Tensor::u8(&format!("{p}.clip_min"), &[], &[min]));
        self.constant(Tensor::u8(&format!("{p}.clip_max"), &[], &[max]));
        self.node(Node::new(
            "Clip",
            &format!("{p}.clip"),
            &[input, &format!("{p}.clip_min"), &format!("{p}.clip_max")],
            &[&clipped],
        ));
        clipped
    }

    pub(crate) fn max_pool(
        &mut self,
        name: &str,
        input: &str,
        kernel: [i64; 2],
        strides: [i64; 2],
    ) -> String {
        let out = format!("{name}.out");
        self.node(
            Node::new("MaxPool", name, &[input], &[&out])
                .with_ints("kernel_shape", &kernel)
                .with_ints("strides", &strides),
        );
        out
    }

    pub(crate) fn reshape(&mut self, name: &str, input: &str, shape: &[i64], out: &str) {
        let shape_name = format!("{name}.shape");
        self.constant(Tensor::i64(&shape_name, &[shape.len() as i64], shape));
        self.node(Node::new("Reshape", name, &[input, &shape_name], &[out]));
    }

    /// The last layer's exact accumulators (output `fc2_acc`, named after the tutorial's last
    /// layer) from its `[N, in, 1, 1]` input codes, the real logits they represent (`logits`)
    /// and the predicted class (`class`).
    pub(crate) fn exact_logits(&mut self, fc2: &QuantLayer, fc1_out: &str) {
        let p = &fc2.name;
        let name = |s: &str| format!("{p}.{s}");
        let (inputs, outputs) = match fc2.kind {
            LayerKind::Linear {
                in_features,
                out_features,
            } => (in_features, out_features),
            LayerKind::Conv2d { .. } => unreachable!("the last layer is a linear layer"),
        };
        self.reshape(
            &name("flatten"),
            fc1_out,
            &[-1, inputs as i64],
            &name("input"),
        );
        // MatMulInteger wants B as [in, out]: the transpose of burnq's out × in codes.
        let mut transposed = vec![0u8; fc2.weights.len()];
        for (o, row) in fc2.weights.chunks_exact(inputs).enumerate() {
            for (i, &w) in row.iter().enumerate() {
                transposed[i * outputs + o] = w;
            }
        }
        self.constant(Tensor::u8(
            &name("w_t"),
            &[inputs as i64, outputs as i64],
            &transposed,
        ));
        self.node(Node::new(
            "MatMulInteger",
            &name("matmul"),
            &[
                &name("input"),
                &name("w_t"),
                &name("x_zero_point"),
                &name("w_zero_point"),
            ],
            &[&name("products")],
        ));
        self.node(Node::new(
            "Add",
            &name("add_bias"),
            &[&name("products"), &name("bias")],
            &["fc2_acc"],
        ));
        self.node(
            Node::new("Cast", &name("cast"), &["fc2_acc"], &[&name("acc_f32")]).with_int("to", 1),
        );
        let s_in = f64::from(fc2.input.scale());
        let acc_scales: Vec<f32> = fc2
            .weight_scales
            .iter()
            .map(|&s| (s_in * f64::from(s)) as f32)
            .collect();
        self.constant(Tensor::f32(
            &name("acc_scale"),
            &[outputs as i64],
            &acc_scales,
        ));
        self.node(Node::new(
            "Mul",
            &name("dequantize"),
            &[&name("acc_f32"), &name("acc_scale")],
            &["logits"],
        ));
        self.node(
            Node::new("ArgMax", "predict", &["logits"], &["class"])
                .with_int("axis", 1)
                .with_int("keepdims", 0),
        );
    }
}

/// A zero point or clamp code as the `u8` ONNX stores (validated models keep them in 0..=255).
pub(crate) fn code(value: i32) -> u8 {
    u8::try_from(value).expect("a validated model's codes fit in u8")
}

/// The ONNX graph of `model` (see the module documentation for its operators and outputs).
pub fn to_onnx(model: &QuantModel, info: &ExportInfo) -> Model {
    let [conv1, conv2, fc1, fc2] = model.layers();
    let mut g = Builder::default();
    let x = g.quantized_layer(conv1, &ConvShape::of(conv1), "pixels");
    let x = g.max_pool("pool1", &x, [2, 2], [2, 2]);
    let x = g.quantized_layer(conv2, &ConvShape::of(conv2), &x);
    let x = g.max_pool("pool2", &x, [2, 2], [2, 2]);
    let features = fc1.kind.fan_in() as i64;
    g.reshape("flatten", &x, &[-1, features, 1, 1], "fc1.input");
    let fc1_out = g.quantized_layer(fc1, &ConvShape::of(fc1), "fc1.input");
    let logits_nchw = g.quantized_layer(fc2, &ConvShape::of(fc2), &fc1_out);
    let classes = fc2.kind.out_channels() as i64;
    g.reshape("logits.flatten", &logits_nchw, &[-1, classes], "logits_u8");
    g.exact_logits(fc2, &fc1_out);

    let facts = Facts {
        options: model.options(),
        bits_per_layer: bits_label(model.layers()),
        input: model.input_params(),
        logit: model.logit_params(),
        normalization: model.input_normalization(),
        classes: fc2.kind.out_channels(),
        input_shape: [1, 28, 28],
        description: "The PyTorch MNIST tutorial network".into(),
    };
    assemble(g, info, &facts)
}

/// What the model's inputs, outputs, metadata and doc string say.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    /// The widest widths and the granularity.
    pub(crate) options: ConvertOptions,
    /// Each layer's widths, `name=w<W>a<A>,…` ([`bits_label`]).
    pub(crate) bits_per_layer: String,
    pub(crate) input: QuantParams,
    pub(crate) logit: QuantParams,
    pub(crate) normalization: Option<Normalization>,
    pub(crate) classes: usize,
    pub(crate) input_shape: [usize; 3],
    pub(crate) description: String,
}

/// The model of graph `g`: input `pixels`, outputs `logits_u8`, `fc2_acc`, `logits`, `class`.
pub(crate) fn assemble(g: Builder, info: &ExportInfo, facts: &Facts) -> Model {
    let classes = facts.classes as i64;
    let input = facts.input;
    let logit = facts.logit;
    let options = facts.options;
    let batch = || Dim::Named("batch".into());
    let pixels_doc = match facts.normalization {
        Some(n) => format!(
            "raw 8-bit pixels (0 = black background, 255 = white ink), 28×28, as in the MNIST \
             files; the normalization (mean {}, std {}) is folded into the first layer",
            n.mean, n.std
        ),
        None => format!(
            "input codes, real value {}·(q − {})",
            input.scale(),
            input.zero_point()
        ),
    };
    let outputs = vec![
        ValueInfo {
            name: "logits_u8".into(),
            data_type: DataType::Uint8,
            dims: vec![batch(), Dim::Fixed(classes)],
            doc: format!(
                "the last layer requantized with the logit parameters: real logit {}·(q − {})",
                logit.scale(),
                logit.zero_point()
            ),
        },
        ValueInfo {
            name: "fc2_acc".into(),
            data_type: DataType::Int32,
            dims: vec![batch(), Dim::Fixed(classes)],
            doc: "the last layer's accumulators, bias included (exact integers, scale S_in·S_w[o])"
                .into(),
        },
        ValueInfo {
            name: "logits".into(),
            data_type: DataType::Float,
            dims: vec![batch(), Dim::Fixed(classes)],
            doc: "real logits S_in·S_w[o]·fc2_acc[o] (before log-softmax)".into(),
        },
        ValueInfo {
            name: "class".into(),
            data_type: DataType::Int64,
            dims: vec![batch()],
            doc: "predicted class: argmax of logits, lowest index on ties".into(),
        },
    ];
    let mut metadata = vec![
        ("format".to_owned(), "burnq-onnx".to_owned()),
        ("dataset".to_owned(), info.dataset.clone()),
        ("source".to_owned(), info.source.clone()),
        ("weight_bits".to_owned(), options.weight_bits.to_string()),
        ("act_bits".to_owned(), options.act_bits.to_string()),
        ("per_channel".to_owned(), options.per_channel.to_string()),
        ("bits_per_layer".to_owned(), facts.bits_per_layer.clone()),
        ("input_scale".to_owned(), input.scale().to_string()),
        (
            "input_zero_point".to_owned(),
            input.zero_point().to_string(),
        ),
        ("logit_scale".to_owned(), logit.scale().to_string()),
        (
            "logit_zero_point".to_owned(),
            logit.zero_point().to_string(),
        ),
    ];
    if let Some(n) = facts.normalization {
        metadata.push(("normalization_mean".into(), n.mean.to_string()));
        metadata.push(("normalization_std".into(), n.std.to_string()));
    }
    Model {
        graph_name: format!("burnq_{}_int", info.dataset.replace('-', "_")),
        opset: OPSET,
        nodes: g.nodes,
        initializers: g.initializers,
        inputs: vec![ValueInfo {
            name: "pixels".into(),
            data_type: DataType::Uint8,
            dims: std::iter::once(batch())
                .chain(facts.input_shape.iter().map(|&d| Dim::Fixed(d as i64)))
                .collect(),
            doc: pixels_doc,
        }],
        outputs,
        doc: format!(
            "{} quantized by burnq (Jacob et al. 2018): \
             weights and activations of at most {} and {} bits ({}), {} weight parameters.",
            facts.description,
            options.weight_bits,
            options.act_bits,
            facts.bits_per_layer,
            if options.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            }
        ),
        metadata,
    }
}
