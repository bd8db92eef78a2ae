//! Any described network, quantized: a [`QuantGraph`] pairs an [`Architecture`] (and its
//! [`Plan`]) with one [`QuantOp`] per step, and runs the reference forward pass over them.
//!
//! Each convolution and linear layer is a [`QuantLayer`] whose weights are its GEMM view,
//! `[out, fan_in]` (a convolution's `fan_in = (in/groups)·kh·kw` in channel, row, column
//! order; its [`crate::LayerKind`] is `Linear { in_features: fan_in, out_features: out }`), with
//! the batch norm folded in and the activation folded into its clamp. Pools, flatten and
//! dropout keep their input's grid; a residual add requantizes onto its own grid
//! ([`QuantAdd`]). The last step is a linear layer whose accumulators give the predictions,
//! as in the tutorial model.

mod add;
mod convert;
mod engine;
pub mod reference;
mod tutorial;

use burnq_arch::arch::{Op, Step};
use burnq_arch::{Architecture, Plan};

use crate::model::check_widest;
use crate::{
    ConvertOptions, LayerKind, Normalization, Output, QuantError, QuantLayer, QuantParams,
};

pub use add::{ADD_LEFT_SHIFT, Multiplier, QuantAdd};
pub use convert::{PointRanges, convert_graph, convert_graph_with_grids};
pub use engine::{GraphEngine, GraphWorkspace};

/// One step of a quantized graph, aligned with the [`Plan`]'s step of the same index.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantOp {
    /// A convolution: its GEMM-view layer and the code it pads with.
    Conv2d {
        /// Weights `[out, fan_in]`, bias, grids, requantization.
        layer: QuantLayer,
        /// The code outside the image: the input zero point, or the folded normalization's
        /// padding pixel for the first layer.
        pad: u8,
    },
    /// A fully connected layer.
    Linear(QuantLayer),
    /// Max pooling (keeps the grid).
    MaxPool,
    /// Average pooling on the input's grid.
    AvgPool,
    /// Global average pooling on the input's grid.
    GlobalAvgPool,
    /// Flatten (codes unchanged, C, H, W order).
    Flatten,
    /// Dropout: the identity at inference.
    Dropout,
    /// A residual block: its body and the add.
    Residual {
        /// The body's ops, aligned with the step's body.
        body: Vec<QuantOp>,
        /// The add of the block's input and the body's output.
        add: QuantAdd,
    },
}

/// A validated quantized network of any architecture. Built by [`convert_graph`] or
/// [`QuantGraph::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct QuantGraph {
    architecture: Architecture,
    plan: Plan,
    options: ConvertOptions,
    input: QuantParams,
    normalization: Option<Normalization>,
    ops: Vec<QuantOp>,
}

/// Where [`build_ops`] takes each step's integer parameters from: the converter (float
/// weights and calibrated ranges) or a model file (stored layers and grids).
pub(crate) trait OpSource {
    /// The padding code of convolution `step`, whose input is on `input` (asked before its
    /// layer).
    fn pad(&mut self, step: &Step, input: QuantParams) -> Result<u8, QuantError>;
    /// The GEMM-view layer (`[out, fan_in]`) of convolution or linear `step` reading `input`.
    fn layer(
        &mut self,
        step: &Step,
        out: usize,
        fan_in: usize,
        input: QuantParams,
    ) -> Result<QuantLayer, QuantError>;
    /// Called before residual block `step`'s body.
    fn enter_residual(&mut self, _step: &Step) -> Result<(), QuantError> {
        Ok(())
    }
    /// The output grid of residual add `step`.
    fn add_output(&mut self, step: &Step) -> Result<QuantParams, QuantError>;
}

/// The ops of `steps` from `source`, the first reading `grid`; each layer reads the grid of
/// the step before it, each add is derived from its three grids ([`QuantAdd::derive`]).
/// Returns the ops and the last output grid.
pub(crate) fn build_ops(
    steps: &[Step],
    mut grid: QuantParams,
    source: &mut impl OpSource,
) -> Result<(Vec<QuantOp>, QuantParams), QuantError> {
    let mut ops = Vec::with_capacity(steps.len());
    for step in steps {
        let op = match &step.op {
            Op::Conv2d(g) => {
                let pad = source.pad(step, grid)?;
                let layer = source.layer(step, g.out_channels, g.fan_in(), grid)?;
                grid = layer.output;
                QuantOp::Conv2d { layer, pad }
            }
            Op::Linear {
                in_features,
                out_features,
            } => {
                let layer = source.layer(step, *out_features, *in_features, grid)?;
                grid = layer.output;
                QuantOp::Linear(layer)
            }
            Op::MaxPool(_) => QuantOp::MaxPool,
            Op::AvgPool(_) => QuantOp::AvgPool,
            Op::GlobalAvgPool(_) => QuantOp::GlobalAvgPool,
            Op::Flatten => QuantOp::Flatten,
            Op::Dropout(_) => QuantOp::Dropout,
            Op::Residual(body) => {
                source.enter_residual(step)?;
                let (body, body_grid) = build_ops(body, grid, source)?;
                let output = source.add_output(step)?;
                let add = QuantAdd::derive(grid, body_grid, output, step.activation)?;
                grid = output;
                QuantOp::Residual { body, add }
            }
        };
        ops.push(op);
    }
    Ok((ops, grid))
}

/// Every step's output codes of a forward pass, by step name (NCHW or `[n, features]`), plus
/// the final output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphTaps {
    /// `(step name, codes)` in execution order; a residual's body before its add. The last
    /// linear layer's entry holds its `u8` logits.
    pub codes: Vec<(String, Vec<u8>)>,
    /// Accumulators of the last layer, logits and predictions.
    pub output: Output,
}

impl QuantGraph {
    /// Validates and builds a graph: `ops` must mirror `architecture`'s plan step for step;
    /// each layer must have the GEMM geometry of its step, the grid of the step's input as
    /// its input grid and pass [`QuantLayer::validate`] (its own widths); each add must take
    /// the grids of its block's input and body output; `options`' widths must be the widest
    /// of the layers' and adds' ([`ConvertOptions::widest`]). With `normalization`, the input grid
    /// must be raw pixels ([`QuantParams::RAW_PIXELS`]).
    pub fn new(
        architecture: Architecture,
        options: ConvertOptions,
        input: QuantParams,
        normalization: Option<Normalization>,
        ops: Vec<QuantOp>,
    ) -> Result<Self, QuantError> {
        options.check()?;
        let plan = architecture
            .plan()
            .map_err(|e| invalid("architecture", e.to_string()))?;
        if let Some(norm) = normalization {
            norm.check()?;
            if input != QuantParams::RAW_PIXELS {
                return Err(invalid(
                    "input parameters",
                    format!("{input:?}, but a folded normalization needs raw pixels"),
                ));
            }
        }
        check_ops(&plan.steps, &ops, input, options.per_channel)?;
        check_widest(options, widest(options.per_channel, &ops))?;
        Ok(Self {
            architecture,
            plan,
            options,
            input,
            normalization,
            ops,
        })
    }

    /// The description.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// The validated plan of the description.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The widest widths of the layers (and adds), and the granularity.
    pub fn options(&self) -> ConvertOptions {
        self.options
    }

    /// The grid input images are read on.
    pub fn input_params(&self) -> QuantParams {
        self.input
    }

    /// The normalization folded into the first layer, if any.
    pub fn input_normalization(&self) -> Option<Normalization> {
        self.normalization
    }

    /// The ops, aligned with [`Plan::steps`].
    pub fn ops(&self) -> &[QuantOp] {
        &self.ops
    }

    /// Every convolution and linear layer, in execution order.
    pub fn layers(&self) -> Vec<&QuantLayer> {
        let mut out = Vec::new();
        visit(&self.ops, &mut |op| {
            if let QuantOp::Conv2d { layer, .. } | QuantOp::Linear(layer) = op {
                out.push(layer);
            }
        });
        out
    }

    /// Whether some layer's widths differ from another's.
    pub fn is_mixed(&self) -> bool {
        let layers = self.layers();
        layers.iter().any(|l| l.bits() != layers[0].bits())
    }

    /// The last layer, whose accumulators are the logits.
    pub fn logit_layer(&self) -> &QuantLayer {
        match self
            .ops
            .iter()
            .rev()
            .find(|op| !matches!(op, QuantOp::Dropout))
        {
            Some(QuantOp::Linear(layer)) => layer,
            _ => unreachable!("a validated plan ends with a linear layer"),
        }
    }

    /// Class probabilities of each `[n, classes]` row of u8 logits
    /// ([`crate::model::class_probabilities`] on the last layer's output grid).
    pub fn class_probabilities(&self, logits: &[u8]) -> Vec<f32> {
        let grid = self.logit_layer().output;
        crate::model::class_probabilities(grid, self.plan.classes(), logits)
    }

    /// Runs the reference engine on `n` images of `plan.input` codes.
    pub fn forward_reference(&self, images: &[u8], n: usize) -> Result<Output, QuantError> {
        Ok(self.forward_reference_taps(images, n)?.output)
    }

    /// [`QuantGraph::forward_reference`], keeping every step's output codes.
    pub fn forward_reference_taps(&self, images: &[u8], n: usize) -> Result<GraphTaps, QuantError> {
        check_codes(
            "input images",
            self.input,
            images,
            n.checked_mul(self.plan.input.len()),
        )?;
        let mut codes = Vec::new();
        let mut acc = Vec::new();
        let x = run_steps(
            &self.plan.steps,
            &self.ops,
            self.input,
            images.to_vec(),
            n,
            &mut codes,
            &mut acc,
        )?;
        let layer = self.logit_layer();
        let requants: Vec<_> = layer.requants().collect();
        let classes = self.plan.classes();
        let predictions = acc
            .chunks_exact(classes)
            .filter_map(|row| crate::reference::predict(row, &requants))
            .collect();
        Ok(GraphTaps {
            codes,
            output: Output {
                fc2_acc: acc,
                logits_u8: x,
                predictions,
            },
        })
    }
}

/// The options `ops` span: `per_channel` and the widest widths of their layers (weights and
/// outputs) and residual adds (outputs).
pub(crate) fn widest(per_channel: bool, ops: &[QuantOp]) -> ConvertOptions {
    let (mut weights, mut acts) = (Vec::new(), Vec::new());
    visit(ops, &mut |op| match op {
        QuantOp::Conv2d { layer, .. } | QuantOp::Linear(layer) => {
            weights.push(layer.weight_bits);
            acts.push(layer.output.bits());
        }
        QuantOp::Residual { add, .. } => acts.push(add.output.bits()),
        _ => {}
    });
    ConvertOptions::widest(per_channel, weights, acts)
}

/// The names of `plan`'s convolution and linear steps in execution order: the layers
/// per-layer widths are given for ([`crate::QuantScheme`]).
pub fn layer_names(plan: &Plan) -> Vec<&str> {
    plan.flat_steps()
        .into_iter()
        .filter(|s| matches!(s.op, Op::Conv2d(_) | Op::Linear { .. }))
        .map(|s| s.name.as_str())
        .collect()
}

/// Calls `f` on every op in execution order, a residual block's body ops before the block.
fn visit<'a>(ops: &'a [QuantOp], f: &mut impl FnMut(&'a QuantOp)) {
    for op in ops {
        if let QuantOp::Residual { body, .. } = op {
            visit(body, f);
        }
        f(op);
    }
}

fn invalid(what: &str, reason: String) -> QuantError {
    QuantError::InvalidValue {
        what: what.into(),
        reason,
    }
}

/// Checks that `codes` has `expected` elements (`None`: overflowed), each at most `qmax`.
pub(crate) fn check_codes(
    what: &str,
    params: QuantParams,
    codes: &[u8],
    expected: Option<usize>,
) -> Result<(), QuantError> {
    if expected != Some(codes.len()) {
        return Err(QuantError::ShapeMismatch {
            what: what.into(),
            expected: expected.unwrap_or(usize::MAX),
            found: codes.len(),
        });
    }
    if let Some(&q) = codes.iter().find(|&&q| i32::from(q) > params.qmax()) {
        return Err(QuantError::CodeAboveQmax {
            what: what.into(),
            code: q,
            qmax: params.qmax(),
            bits: params.bits(),
        });
    }
    Ok(())
}

/// The GEMM geometry a step's layer must have: `Linear { fan_in, out }`.
fn gemm_kind(step: &Step) -> Option<LayerKind> {
    match &step.op {
        Op::Conv2d(g) => Some(LayerKind::Linear {
            in_features: g.fan_in(),
            out_features: g.out_channels,
        }),
        Op::Linear {
            in_features,
            out_features,
        } => Some(LayerKind::Linear {
            in_features: *in_features,
            out_features: *out_features,
        }),
        _ => None,
    }
}

/// Validates `ops` against `steps` starting from the grid `input`; returns the output grid.
fn check_ops(
    steps: &[Step],
    ops: &[QuantOp],
    input: QuantParams,
    per_channel: bool,
) -> Result<QuantParams, QuantError> {
    if steps.len() != ops.len() {
        return Err(invalid(
            "graph",
            format!("{} ops for {} steps", ops.len(), steps.len()),
        ));
    }
    let mut grid = input;
    for (step, op) in steps.iter().zip(ops) {
        let mismatch = || {
            invalid(
                &step.name,
                format!("op {op:?} does not fit step {:?}", step.op),
            )
        };
        grid = match (op, &step.op) {
            (QuantOp::Conv2d { layer, pad }, Op::Conv2d(_)) => {
                if i32::from(*pad) > grid.qmax() {
                    return Err(invalid(
                        &step.name,
                        format!("padding code {pad} above its input's qmax {}", grid.qmax()),
                    ));
                }
                check_layer(step, layer, grid, per_channel)?;
                layer.output
            }
            (QuantOp::Linear(layer), Op::Linear { .. }) => {
                check_layer(step, layer, grid, per_channel)?;
                layer.output
            }
            (QuantOp::MaxPool, Op::MaxPool(_))
            | (QuantOp::AvgPool, Op::AvgPool(_))
            | (QuantOp::GlobalAvgPool, Op::GlobalAvgPool(_))
            | (QuantOp::Flatten, Op::Flatten)
            | (QuantOp::Dropout, Op::Dropout(_)) => grid,
            (QuantOp::Residual { body, add }, Op::Residual(steps)) => {
                let out = check_ops(steps, body, grid, per_channel)?;
                if add.skip != grid || add.body != out {
                    return Err(invalid(
                        &step.name,
                        format!("add grids {add:?} do not match its inputs"),
                    ));
                }
                if *add != QuantAdd::derive(add.skip, add.body, add.output, step.activation)? {
                    return Err(invalid(
                        &step.name,
                        "add multipliers or clamp are not derived from its grids".into(),
                    ));
                }
                add.output
            }
            _ => return Err(mismatch()),
        };
    }
    Ok(grid)
}

fn check_layer(
    step: &Step,
    layer: &QuantLayer,
    input: QuantParams,
    per_channel: bool,
) -> Result<(), QuantError> {
    if layer.name != step.name || Some(layer.kind) != gemm_kind(step) {
        return Err(invalid(
            &step.name,
            format!(
                "layer {} {:?}, expected {:?}",
                layer.name,
                layer.kind,
                gemm_kind(step)
            ),
        ));
    }
    if layer.input != input {
        return Err(invalid(
            &format!("{} input parameters", step.name),
            format!("{:?} differ from its input's grid {input:?}", layer.input),
        ));
    }
    layer.validate(per_channel)
}

/// Runs `steps` on `x` (`n` images on grid `grid`), recording codes; the last linear
/// layer's accumulators go to `acc`.
fn run_steps(
    steps: &[Step],
    ops: &[QuantOp],
    mut grid: QuantParams,
    mut x: Vec<u8>,
    n: usize,
    codes: &mut Vec<(String, Vec<u8>)>,
    acc: &mut Vec<i32>,
) -> Result<Vec<u8>, QuantError> {
    for (step, op) in steps.iter().zip(ops) {
        let positions = |s: &burnq_arch::arch::Shape| match *s {
            burnq_arch::arch::Shape::Image { height, width, .. } => height * width,
            burnq_arch::arch::Shape::Features(_) => 1,
        };
        x = match (op, &step.op) {
            (QuantOp::Conv2d { layer, pad }, Op::Conv2d(g)) => {
                let a = reference::conv2d(layer, g, *pad, &x, n)?;
                grid = layer.output;
                crate::reference::requantize(layer, &a, positions(&step.output))?
            }
            (QuantOp::Linear(layer), Op::Linear { .. }) => {
                let a = crate::reference::linear(layer, &x, n)?;
                grid = layer.output;
                let out = crate::reference::requantize(layer, &a, 1)?;
                *acc = a;
                out
            }
            (QuantOp::MaxPool, Op::MaxPool(g)) => reference::max_pool(g, &x, n)?,
            (QuantOp::AvgPool, Op::AvgPool(g)) | (QuantOp::GlobalAvgPool, Op::GlobalAvgPool(g)) => {
                reference::avg_pool(g, grid, &x, n)?
            }
            (QuantOp::Flatten | QuantOp::Dropout, _) => x,
            (QuantOp::Residual { body, add }, Op::Residual(inner)) => {
                let y = run_steps(inner, body, grid, x.clone(), n, codes, acc)?;
                grid = add.output;
                x.iter().zip(&y).map(|(&a, &b)| add.apply(a, b)).collect()
            }
            _ => return Err(invalid(&step.name, "op does not fit its step".into())),
        };
        codes.push((step.name.clone(), x.clone()));
    }
    Ok(x)
}

#[cfg(test)]
mod tests;
