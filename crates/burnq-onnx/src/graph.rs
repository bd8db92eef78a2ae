//! A network of any architecture ([`QuantGraph`]) as an ONNX graph ([`graph_to_onnx`]), one
//! exporter per operation, standard-domain operators only:
//!
//! | burnq step | ONNX |
//! |---|---|
//! | conv2d (any stride, padding, groups) | `QLinearConv` with `strides`, `pads`, `group`; a `Pad` (constant = the padding code) first where the code is not the input zero point (a first layer with a folded normalization) |
//! | linear | `Reshape` to `[N, F, 1, 1]` at the flatten, then a 1×1 `QLinearConv` |
//! | ReLU / ReLU6 / sub-byte clamp | `Clip` on `uint8` where the clamp is narrower than `[0, 255]` |
//! | max pool | `MaxPool` on `uint8` |
//! | average / global average pool | `DequantizeLinear` → `AveragePool` / `GlobalAveragePool` → `QuantizeLinear` (QDQ) |
//! | residual add | `DequantizeLinear` ×2 → `Add` → `QuantizeLinear` (QDQ), then `Clip` |
//! | last linear layer | also `MatMulInteger` + `Add` (exact `fc2_acc`), `Cast`, `Mul` (`logits`), `ArgMax` (`class`) |
//!
//! The pools and the add use QDQ rather than `com.microsoft`'s `QLinearAveragePool`,
//! `QLinearGlobalAveragePool` and `QLinearAdd`: QDQ is in the default domain, so any ONNX
//! runtime loads the file, and ONNX Runtime fuses such patterns into its quantized kernels
//! itself. Like `QLinearConv`, they compute in float where burnq uses fixed-point
//! multipliers, so codes may differ by one near rounding ties (and `QuantizeLinear` rounds
//! ties to even where burnq rounds them away from zero).

use burnq_arch::arch::{ConvGeometry, Op, PoolGeometry, Step};
use burnq_quant::{QuantGraph, QuantOp, QuantParams, bits_label};

use crate::export::{Builder, ConvShape, ExportInfo, Facts, assemble, code};
use crate::onnx::{Model, Node, Tensor};

/// The ONNX graph of `graph` (see the module documentation).
pub fn graph_to_onnx(graph: &QuantGraph, info: &ExportInfo) -> Model {
    let plan = graph.plan();
    let mut g = Builder::default();
    let mut walk = Walk { g: &mut g };
    let last = plan
        .steps
        .iter()
        .rposition(|s| matches!(s.op, Op::Linear { .. }))
        .expect("a validated plan ends with a linear layer");
    let (x, _) = walk.steps(
        &plan.steps[..last],
        &graph.ops()[..last],
        "pixels",
        graph.input_params(),
    );
    let QuantOp::Linear(logit_layer) = &graph.ops()[last] else {
        unreachable!("the step is linear")
    };
    let shape = linear_shape(logit_layer.kind.fan_in(), logit_layer.kind.out_channels());
    let logits_nchw = g.quantized_layer(logit_layer, &shape, &x);
    let classes = plan.classes();
    g.reshape(
        "logits.flatten",
        &logits_nchw,
        &[-1, classes as i64],
        "logits_u8",
    );
    g.exact_logits(logit_layer, &x);
    let [c, h, w] = match plan.input {
        burnq_arch::arch::Shape::Image {
            channels,
            height,
            width,
        } => [channels, height, width],
        burnq_arch::arch::Shape::Features(n) => [n, 1, 1],
    };
    let facts = Facts {
        options: graph.options(),
        bits_per_layer: bits_label(graph.layers()),
        input: graph.input_params(),
        logit: logit_layer.output,
        normalization: graph.input_normalization(),
        classes,
        input_shape: [c, h, w],
        description: format!("The {} network", graph.architecture().name),
    };
    assemble(g, info, &facts)
}

fn linear_shape(fan_in: usize, out: usize) -> ConvShape {
    ConvShape {
        w_dims: vec![out as i64, fan_in as i64, 1, 1],
        strides: [1, 1],
        pads: [0; 4],
        group: 1,
    }
}

struct Walk<'a> {
    g: &'a mut Builder,
}

impl Walk<'_> {
    /// Exports `steps` reading tensor `x` on `grid`; returns the output tensor and grid.
    fn steps(
        &mut self,
        steps: &[Step],
        ops: &[QuantOp],
        input: &str,
        mut grid: QuantParams,
    ) -> (String, QuantParams) {
        let mut current = input.to_owned();
        for (step, op) in steps.iter().zip(ops) {
            let name = &step.name;
            let x = current.as_str();
            let next = match (op, &step.op) {
                (QuantOp::Conv2d { layer, pad }, Op::Conv2d(geom)) => {
                    let input = self.pad(name, x, geom, *pad, grid);
                    grid = layer.output;
                    let shape = conv_shape(geom, *pad, layer.input.zero_point());
                    self.g.quantized_layer(layer, &shape, &input)
                }
                (
                    QuantOp::Linear(layer),
                    Op::Linear {
                        in_features,
                        out_features,
                    },
                ) => {
                    grid = layer.output;
                    self.g
                        .quantized_layer(layer, &linear_shape(*in_features, *out_features), x)
                }
                (QuantOp::MaxPool, Op::MaxPool(p)) => {
                    self.g.max_pool(name, x, hw(p.kernel), hw(p.stride))
                }
                (QuantOp::AvgPool, Op::AvgPool(p)) => self.average(name, x, grid, Some(p)),
                (QuantOp::GlobalAvgPool, Op::GlobalAvgPool(_)) => self.average(name, x, grid, None),
                (QuantOp::Flatten, _) => {
                    let out = format!("{name}.out");
                    self.g
                        .reshape(name, x, &[-1, step.output.len() as i64, 1, 1], &out);
                    out
                }
                (QuantOp::Dropout, _) => x.to_owned(),
                (QuantOp::Residual { body, add }, Op::Residual(inner)) => {
                    let (y, _) = self.steps(inner, body, x, grid);
                    grid = add.output;
                    let sum = self.qdq_add(name, x, &y, add.skip, add.body, add.output);
                    self.g.clip(name, &sum, add.act_min, add.act_max)
                }
                _ => unreachable!("a validated graph's ops fit their steps"),
            };
            current = next;
        }
        (current, grid)
    }

    /// `x` padded with `pad` where the code is not the input zero point (else `x` itself:
    /// the QLinearConv pads with its zero point).
    fn pad(&mut self, name: &str, x: &str, g: &ConvGeometry, pad: u8, grid: QuantParams) -> String {
        let (ph, pw) = (g.padding.h as i64, g.padding.w as i64);
        if (ph == 0 && pw == 0) || i32::from(pad) == grid.zero_point() {
            return x.to_owned();
        }
        let pads = format!("{name}.pads");
        let value = format!("{name}.pad_value");
        self.g
            .constant(Tensor::i64(&pads, &[8], &[0, 0, ph, pw, 0, 0, ph, pw]));
        self.g.constant(Tensor::u8(&value, &[], &[pad]));
        let out = format!("{name}.padded");
        self.g.node(Node::new(
            "Pad",
            &format!("{name}.pad"),
            &[x, &pads, &value],
            &[&out],
        ));
        out
    }

    /// `name.scale`/`name.zero_point` constants of `grid`; returns their names.
    fn grid(&mut self, name: &str, grid: QuantParams) -> (String, String) {
        let (s, z) = (format!("{name}.scale"), format!("{name}.zero_point"));
        self.g.constant(Tensor::f32(&s, &[], &[grid.scale()]));
        self.g
            .constant(Tensor::u8(&z, &[], &[code(grid.zero_point())]));
        (s, z)
    }

    fn dequantize(&mut self, name: &str, x: &str, grid: QuantParams) -> String {
        let (s, z) = self.grid(name, grid);
        let out = format!("{name}.real");
        self.g
            .node(Node::new("DequantizeLinear", name, &[x, &s, &z], &[&out]));
        out
    }

    fn quantize(&mut self, name: &str, x: &str, grid: QuantParams) -> String {
        let (s, z) = self.grid(name, grid);
        let out = format!("{name}.codes");
        self.g
            .node(Node::new("QuantizeLinear", name, &[x, &s, &z], &[&out]));
        out
    }

    /// Average pooling on `grid` (global when `pool` is `None`) as QDQ.
    fn average(
        &mut self,
        name: &str,
        x: &str,
        grid: QuantParams,
        pool: Option<&PoolGeometry>,
    ) -> String {
        let real = self.dequantize(&format!("{name}.dq"), x, grid);
        let avg = format!("{name}.avg");
        let node = match pool {
            Some(p) => Node::new("AveragePool", name, &[&real], &[&avg])
                .with_ints("kernel_shape", &hw(p.kernel))
                .with_ints("strides", &hw(p.stride)),
            None => Node::new("GlobalAveragePool", name, &[&real], &[&avg]),
        };
        self.g.node(node);
        self.quantize(&format!("{name}.q"), &avg, grid)
    }

    /// `skip + body` on `output` as QDQ.
    fn qdq_add(
        &mut self,
        name: &str,
        skip: &str,
        body: &str,
        skip_grid: QuantParams,
        body_grid: QuantParams,
        output: QuantParams,
    ) -> String {
        let a = self.dequantize(&format!("{name}.dq_skip"), skip, skip_grid);
        let b = self.dequantize(&format!("{name}.dq_body"), body, body_grid);
        let sum = format!("{name}.sum");
        self.g.node(Node::new("Add", name, &[&a, &b], &[&sum]));
        self.quantize(&format!("{name}.q"), &sum, output)
    }
}

fn hw(s: burnq_arch::arch::Size2) -> [i64; 2] {
    [s.h as i64, s.w as i64]
}

/// The QLinearConv shape of a convolution: its own padding unless an explicit `Pad` precedes
/// it (padding code ≠ input zero point).
fn conv_shape(g: &ConvGeometry, pad: u8, input_zero_point: i32) -> ConvShape {
    let [o, i, kh, kw] = g.weight_shape().map(|d| d as i64);
    let (ph, pw) = (g.padding.h as i64, g.padding.w as i64);
    let explicit = i32::from(pad) != input_zero_point;
    ConvShape {
        w_dims: vec![o, i, kh, kw],
        strides: hw(g.stride),
        pads: if explicit { [0; 4] } else { [ph, pw, ph, pw] },
        group: g.groups as i64,
    }
}
