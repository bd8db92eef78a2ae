//! Version 4 of the model file: a network of any architecture ([`QuantGraph`]). The tensors
//! are those of versions 1–3 for every convolution and linear layer in execution order
//! (`<name>.weight`, u8, packed densely below 8 bits, else `[out, fan_in]` — a convolution's
//! GEMM view, its OIHW weights flattened per output channel; `<name>.bias`, i32 `[out]`).
//! `meta` is a JSON object with
//! - `architecture`: the description (as in a `--arch` JSON file);
//! - `weight_bits`, `act_bits`, `per_channel`: as in version 3 (the widest widths; a layer
//!   with its own weight width says so, a residual add's output grid has its own `bits`);
//! - `input`: the grid the images are read on (`scale`, `zero_point`, `bits`);
//! - `input_normalization`: `{mean, std}` folded into the first layer, or `null`;
//! - `layers`: one entry per convolution and linear layer, in execution order, as in version 3
//!   with `kind = "linear"` and `weight_shape = [out, fan_in]` for every one;
//! - `pads`: each convolution's padding code, by name;
//! - `adds`: each residual add's output grid, by name (its multipliers and clamp are derived
//!   from the three grids and the description, [`crate::QuantAdd::derive`]).
//!
//! `checksum` signs the tensors then `meta`, as in version 3. Files of versions 1–3 (the
//! tutorial network) load as the `tutorial` preset ([`QuantGraph::from_tutorial`]).

use std::collections::BTreeMap;
use std::path::Path;

use burnq_arch::Architecture;
use burnq_arch::arch::{Op, Step};
use serde::{Deserialize, Serialize};

use super::meta::{LayerMeta, NormalizationMeta, ParamsMeta, layer_meta};
use super::{
    bad_metadata, layer_tensors, load_tutorial, normalization, open, read, read_layers, to_json,
    write_signed,
};
use crate::graph::{OpSource, build_ops};
use crate::{ConvertOptions, QuantError, QuantGraph, QuantLayer, QuantOp, QuantParams};

/// The `version` metadata value of a graph file.
pub const GRAPH_FORMAT_VERSION: &str = "4";

/// The `meta` JSON document of version 4.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphMeta {
    architecture: Architecture,
    weight_bits: u8,
    act_bits: u8,
    per_channel: bool,
    input: ParamsMeta,
    input_normalization: Option<NormalizationMeta>,
    layers: Vec<LayerMeta>,
    pads: BTreeMap<String, u8>,
    adds: BTreeMap<String, ParamsMeta>,
}

/// Writes `graph` to `path` as a version-4 file, atomically.
pub fn save_graph(graph: &QuantGraph, path: impl AsRef<Path>) -> Result<(), QuantError> {
    let path = path.as_ref();
    let layers = graph.layers();
    let options = graph.options();
    let mut pads = BTreeMap::new();
    let mut adds = BTreeMap::new();
    collect(
        graph.plan().steps.as_slice(),
        graph.ops(),
        &mut pads,
        &mut adds,
    );
    let meta = GraphMeta {
        architecture: graph.architecture().clone(),
        weight_bits: options.weight_bits,
        act_bits: options.act_bits,
        per_channel: options.per_channel,
        input: graph.input_params().into(),
        input_normalization: graph.input_normalization().map(|n| NormalizationMeta {
            mean: n.mean,
            std: n.std,
        }),
        layers: layers
            .iter()
            .map(|l| layer_meta(l, options.weight_bits))
            .collect(),
        pads,
        adds,
    };
    let data = layer_tensors(&layers);
    write_signed(path, data, GRAPH_FORMAT_VERSION, to_json(path, &meta)?)
}

fn collect(
    steps: &[Step],
    ops: &[QuantOp],
    pads: &mut BTreeMap<String, u8>,
    adds: &mut BTreeMap<String, ParamsMeta>,
) {
    for (step, op) in steps.iter().zip(ops) {
        match (op, &step.op) {
            (QuantOp::Conv2d { pad, .. }, _) => {
                pads.insert(step.name.clone(), *pad);
            }
            (QuantOp::Residual { body, add }, Op::Residual(inner)) => {
                collect(inner, body, pads, adds);
                adds.insert(step.name.clone(), add.output.into());
            }
            _ => {}
        }
    }
}

/// Reads and fully validates a model file of any version as a graph: version 4 as written by
/// [`save_graph`], versions 1–3 (the tutorial network) through [`super::load`]'s checks.
pub fn load_graph(path: impl AsRef<Path>) -> Result<QuantGraph, QuantError> {
    let path = path.as_ref();
    let bytes = read(path)?;
    let file = open(path, &bytes)?;
    let invalid = |source| QuantError::InvalidModel {
        path: path.to_owned(),
        source: Box::new(source),
    };
    if file.version != GRAPH_FORMAT_VERSION {
        let model = load_tutorial(path, &file)?;
        return QuantGraph::from_tutorial(&model).map_err(invalid);
    }
    let bad = |reason: String| bad_metadata(path, reason);
    let meta: GraphMeta = serde_json::from_str(&file.meta_json).map_err(|e| bad(e.to_string()))?;
    let plan = meta
        .architecture
        .plan()
        .map_err(|e| bad(format!("architecture: {e}")))?;
    let layers = read_layers(
        path,
        &file,
        &meta.layers,
        meta.weight_bits,
        true,
        file.meta_json.as_bytes(),
    )?;
    let mut parts = Parts {
        layers: layers.into_iter().map(|l| (l.name.clone(), l)).collect(),
        pads: meta.pads.clone(),
        adds: meta.adds.clone(),
    };
    let input = params(meta.input).map_err(invalid)?;
    let (ops, _) = build_ops(&plan.steps, input, &mut parts).map_err(invalid)?;
    let leftover: Vec<&String> = parts
        .layers
        .keys()
        .chain(parts.pads.keys())
        .chain(parts.adds.keys())
        .collect();
    if !leftover.is_empty() {
        return Err(bad(format!(
            "entries for no step of the architecture: {leftover:?}"
        )));
    }
    let options = ConvertOptions {
        weight_bits: meta.weight_bits,
        act_bits: meta.act_bits,
        per_channel: meta.per_channel,
    };
    let norm = normalization(
        path,
        meta.input_normalization.is_some(),
        meta.input_normalization,
    )?;
    QuantGraph::new(meta.architecture, options, input, norm, ops).map_err(invalid)
}

fn params(p: ParamsMeta) -> Result<QuantParams, QuantError> {
    QuantParams::new(p.scale, p.zero_point, p.bits)
}

/// The file's layers, pads and adds, taken by name as the plan is walked.
struct Parts {
    layers: BTreeMap<String, QuantLayer>,
    pads: BTreeMap<String, u8>,
    adds: BTreeMap<String, ParamsMeta>,
}

impl Parts {
    fn missing(step: &Step, what: &str) -> QuantError {
        QuantError::InvalidValue {
            what: step.name.clone(),
            reason: format!("no {what} for {:?} in the file", step.name),
        }
    }
}

impl OpSource for Parts {
    fn pad(&mut self, step: &Step, _input: QuantParams) -> Result<u8, QuantError> {
        let pad = self.pads.remove(&step.name);
        pad.ok_or_else(|| Self::missing(step, "padding code"))
    }

    fn layer(
        &mut self,
        step: &Step,
        _out: usize,
        _fan_in: usize,
        _input: QuantParams,
    ) -> Result<QuantLayer, QuantError> {
        let layer = self.layers.remove(&step.name);
        layer.ok_or_else(|| Self::missing(step, "layer"))
    }

    fn add_output(&mut self, step: &Step) -> Result<QuantParams, QuantError> {
        let grid = self.adds.remove(&step.name);
        let grid = grid.ok_or_else(|| Self::missing(step, "add grid"))?;
        params(grid).map_err(|e| QuantError::InvalidValue {
            what: format!("{} add grid", step.name),
            reason: e.to_string(),
        })
    }
}
