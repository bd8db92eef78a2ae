//! Conversion of any described network: float parameters ([`FloatParams`]) and the
//! calibrated output range of every quantization point ([`PointRanges`]), or its grids
//! ([`convert_graph_with_grids`]: learned by QAT), to a [`QuantGraph`], through the crate's one
//! derivation ([`LayerQuantization`]).
//!
//! Per convolution or linear step: the batch norm folded into the weights and bias
//! ([`StepParams::folded`]); for the first such step, the input normalization folded too
//! ([`fold_normalization`]), so the engine reads raw pixels and pads with the normalization's
//! padding pixel; then weight grids (per tensor or per channel), bias at `S_in·S_w[o]`,
//! multipliers onto the step's output grid and the activation's clamp. Pools, flatten and
//! dropout keep their input's grid; a residual add gets its own ([`QuantAdd::derive`]).

use std::collections::BTreeMap;

use burnq_arch::Architecture;
use burnq_arch::arch::{FloatParams, Step};

use super::{OpSource, QuantGraph, build_ops, layer_names, widest};
use crate::convert::fold_normalization;
use crate::{
    LayerGrids, LayerKind, Normalization, QuantError, QuantLayer, QuantParams, QuantScheme,
};

/// The calibrated real `(min, max)` output range of each quantization point (convolution,
/// linear layer or residual add; after its batch norm and activation), by step name.
pub type PointRanges = BTreeMap<String, (f32, f32)>;

/// Quantizes `params` of `architecture` with the output grids of `ranges` and `scheme` (a
/// [`QuantScheme`] with per-layer widths by step name, or plain [`crate::ConvertOptions`]): each
/// convolution or linear layer on its own weight and output widths, each residual add's
/// output on the model-wide activation width; `norm` is folded into the first convolution or linear
/// layer, which must come before any residual block.
pub fn convert_graph(
    architecture: &Architecture,
    params: &FloatParams,
    ranges: &PointRanges,
    norm: Normalization,
    scheme: impl Into<QuantScheme>,
) -> Result<QuantGraph, QuantError> {
    let scheme = scheme.into();
    let grids = ranges
        .iter()
        .map(|(name, &(min, max))| {
            let output = QuantParams::from_range(min, max, scheme.layer(name).act_bits)?;
            let weights = None;
            Ok((name.clone(), LayerGrids { output, weights }))
        })
        .collect::<Result<_, QuantError>>()?;
    convert_graph_with_grids(architecture, params, &grids, norm, scheme)
}

/// Like [`convert_graph`], with each quantization point's grids given by step name: its output
/// grid and, for a convolution or linear layer, optionally one weight grid per output channel
/// (of its folded weights; the first layer's with the normalization folded too), else derived
/// from the weights under `scheme`. A network trained on learned grids is exported on exactly
/// those grids.
pub fn convert_graph_with_grids(
    architecture: &Architecture,
    params: &FloatParams,
    grids: &BTreeMap<String, LayerGrids>,
    norm: Normalization,
    scheme: impl Into<QuantScheme>,
) -> Result<QuantGraph, QuantError> {
    let scheme = scheme.into();
    norm.check()?;
    let plan = architecture
        .plan()
        .map_err(|e| invalid("architecture", e.to_string()))?;
    scheme.check(&layer_names(&plan))?;
    params
        .check(&plan)
        .map_err(|e| invalid("float parameters", e.to_string()))?;
    let mut converter = Converter {
        params,
        grids,
        scheme: &scheme,
        pending_normalization: Some(norm),
    };
    let (ops, _) = build_ops(&plan.steps, QuantParams::RAW_PIXELS, &mut converter)?;
    QuantGraph::new(
        architecture.clone(),
        widest(scheme.defaults.per_channel, &ops),
        QuantParams::RAW_PIXELS,
        Some(norm),
        ops,
    )
}

fn invalid(what: &str, reason: String) -> QuantError {
    QuantError::InvalidValue {
        what: what.into(),
        reason,
    }
}

struct Converter<'a> {
    params: &'a FloatParams,
    grids: &'a BTreeMap<String, LayerGrids>,
    scheme: &'a QuantScheme,
    /// The normalization still to fold (into the first convolution or linear layer).
    pending_normalization: Option<Normalization>,
}

impl OpSource for Converter<'_> {
    /// The normalization's padding pixel for the first layer (raw pixels), else `Z_in`.
    fn pad(&mut self, _step: &Step, input: QuantParams) -> Result<u8, QuantError> {
        Ok(match self.pending_normalization {
            Some(norm) => norm.padding_pixel(),
            None => input.zero_point() as u8,
        })
    }

    /// The step's folded weights (and, for the first layer, the normalization) quantized
    /// onto its grids ([`LayerGrids::quantization`]).
    fn layer(
        &mut self,
        step: &Step,
        out: usize,
        fan_in: usize,
        input: QuantParams,
    ) -> Result<QuantLayer, QuantError> {
        let p = &self.params.layers[&step.name];
        let eps = step.batch_norm.map_or(0.0, |bn| bn.eps);
        let (mut weights, mut bias) = p.folded(eps);
        if let Some(norm) = self.pending_normalization.take() {
            (weights, bias) = fold_normalization(&weights, &bias, fan_in, norm);
        }
        let q = self.point(step)?.clone().quantization(
            &step.name,
            &weights,
            out,
            input,
            step.activation,
            &self.scheme.layer(&step.name),
        )?;
        let kind = LayerKind::Linear {
            in_features: fan_in,
            out_features: out,
        };
        Ok(q.layer(&step.name, kind, &weights, &bias))
    }

    fn enter_residual(&mut self, step: &Step) -> Result<(), QuantError> {
        if self.pending_normalization.is_some() {
            return Err(invalid(
                &step.name,
                "the normalization folds into the first convolution or linear layer, which \
                 must come before any residual block"
                    .into(),
            ));
        }
        Ok(())
    }

    fn add_output(&mut self, step: &Step) -> Result<QuantParams, QuantError> {
        Ok(self.point(step)?.output)
    }
}

impl Converter<'_> {
    /// The grids of a quantization point.
    fn point(&self, step: &Step) -> Result<&LayerGrids, QuantError> {
        self.grids.get(&step.name).ok_or_else(|| {
            invalid(
                &step.name,
                "no calibrated range or grid for this quantization point".into(),
            )
        })
    }
}
