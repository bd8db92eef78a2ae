//! The `meta` JSON document of the model file: its serde types (the current layout, and
//! version 1's for reading), and the conversions between them plus the raw tensor bytes and
//! [`QuantLayer`]s.

use serde::{Deserialize, Serialize};

use crate::{
    ConvertOptions, LayerKind, QuantError, QuantLayer, QuantModel, QuantParams, layer::per_tensor,
};

/// The `meta` JSON document, version 2.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Meta {
    /// Bit width of the weight codes, 2..=8.
    pub(super) weight_bits: u8,
    /// Bit width of the activations the layers compute (their outputs), 2..=8.
    pub(super) act_bits: u8,
    /// Whether each output channel has its own weight scale, zero point and multiplier;
    /// `false` requires all channels of a layer to share them.
    pub(super) per_channel: bool,
    /// The layers in order: conv1, conv2, fc1, fc2.
    pub(super) layers: Vec<LayerMeta>,
    /// The logit parameters (equal to fc2's output parameters).
    pub(super) logits: ParamsMeta,
    /// Whether the input normalization was folded into conv1 (its input is then raw pixels).
    pub(super) input_normalization_folded: bool,
    /// The folded normalization; present exactly when `input_normalization_folded`.
    pub(super) input_normalization: Option<NormalizationMeta>,
}

impl Meta {
    /// The metadata of `model` (its layers described by [`layer_meta`]).
    pub(super) fn new(model: &QuantModel) -> Self {
        let options = model.options();
        Self {
            weight_bits: options.weight_bits,
            act_bits: options.act_bits,
            per_channel: options.per_channel,
            layers: model
                .layers()
                .iter()
                .map(|l| layer_meta(l, options.weight_bits))
                .collect(),
            logits: model.logit_params().into(),
            input_normalization_folded: model.input_normalization().is_some(),
            input_normalization: model.input_normalization().map(|n| NormalizationMeta {
                mean: n.mean,
                std: n.std,
            }),
        }
    }

    /// The scheme the model declares.
    pub(super) fn options(&self) -> ConvertOptions {
        ConvertOptions {
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            per_channel: self.per_channel,
        }
    }
}

/// The `meta` JSON document of version 1, read only: [`Meta`] with one `bits` for weights and
/// activations, and no `per_channel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetaV1 {
    /// Bit width of weights and activations, 2..=8.
    bits: u8,
    layers: Vec<LayerMeta>,
    logits: ParamsMeta,
    input_normalization_folded: bool,
    input_normalization: Option<NormalizationMeta>,
}

impl MetaV1 {
    /// The same model in the version-2 layout: `bits` for both widths; `per_channel` exactly
    /// when some layer's per-channel arrays (weight scales, zero points, `m0`, `shift`) differ.
    pub(super) fn upgrade(self) -> Meta {
        let per_channel = !self
            .layers
            .iter()
            .all(|l| per_tensor(&l.weight_scales, &l.weight_zero_points, &l.m0, &l.shift));
        Meta {
            weight_bits: self.bits,
            act_bits: self.bits,
            per_channel,
            layers: self.layers,
            logits: self.logits,
            input_normalization_folded: self.input_normalization_folded,
            input_normalization: self.input_normalization,
        }
    }
}

/// One layer's parameters; its tensors are `<name>.weight` (u8) and `<name>.bias` (i32).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LayerMeta {
    /// Layer name, the tensor name prefix.
    pub(super) name: String,
    /// `"conv2d"` or `"linear"`.
    pub(super) kind: KindMeta,
    /// `[out, in, k, k]` or `[out, in]`.
    pub(super) weight_shape: Vec<usize>,
    /// `[out]`.
    pub(super) bias_shape: Vec<usize>,
    /// Bit width of this layer's weight codes when it differs from the model's
    /// `weight_bits` (per-layer widths); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) weight_bits: Option<u8>,
    /// Input activation parameters.
    pub(super) input: ParamsMeta,
    /// Output activation parameters (their `bits`: the layer's activation width).
    pub(super) output: ParamsMeta,
    /// Weight scale per output channel.
    pub(super) weight_scales: Vec<f32>,
    /// Weight zero point per output channel.
    pub(super) weight_zero_points: Vec<i32>,
    /// Requantization mantissa per output channel.
    pub(super) m0: Vec<i32>,
    /// Requantization exponent per output channel.
    pub(super) shift: Vec<i32>,
    /// Lowest output code.
    pub(super) act_min: u8,
    /// Highest output code.
    pub(super) act_max: u8,
}

/// Layer geometry family; the sizes come from `weight_shape`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum KindMeta {
    /// Valid stride-1 convolution, square kernel.
    Conv2d,
    /// Fully connected.
    Linear,
}

/// `r = scale·(q − zero_point)` with `bits`-bit codes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParamsMeta {
    /// Real units per step.
    pub(super) scale: f32,
    /// Code of real 0.
    pub(super) zero_point: i32,
    /// Bit width.
    pub(super) bits: u8,
}

/// `x = (p/255 − mean)/std`, folded into conv1.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NormalizationMeta {
    /// Mean, in units of `p/255`.
    pub(super) mean: f32,
    /// Standard deviation, in units of `p/255`.
    pub(super) std: f32,
}

impl From<QuantParams> for ParamsMeta {
    fn from(p: QuantParams) -> Self {
        Self {
            scale: p.scale(),
            zero_point: p.zero_point(),
            bits: p.bits(),
        }
    }
}

impl LayerMeta {
    /// The layer's weight width: its own, or the model's `model_weight_bits`.
    pub(super) fn weight_bits(&self, model_weight_bits: u8) -> u8 {
        self.weight_bits.unwrap_or(model_weight_bits)
    }
}

/// The metadata of a layer of a model whose widest weights have `model_weight_bits` bits.
pub(super) fn layer_meta(l: &QuantLayer, model_weight_bits: u8) -> LayerMeta {
    LayerMeta {
        name: l.name.clone(),
        kind: match l.kind {
            LayerKind::Conv2d { .. } => KindMeta::Conv2d,
            LayerKind::Linear { .. } => KindMeta::Linear,
        },
        weight_shape: l.kind.weight_shape(),
        bias_shape: vec![l.bias.len()],
        weight_bits: (l.weight_bits != model_weight_bits).then_some(l.weight_bits),
        input: l.input.into(),
        output: l.output.into(),
        weight_scales: l.weight_scales.clone(),
        weight_zero_points: l.weight_zero_points.clone(),
        m0: l.m0.clone(),
        shift: l.shift.clone(),
        act_min: l.act_min,
        act_max: l.act_max,
    }
}

/// A [`QuantLayer`] from its metadata, its weight width and tensor bytes (whose dtypes and
/// shapes are checked). Value ranges are left to [`QuantModel::new`](crate::QuantModel::new).
pub(super) fn build_layer(
    l: &LayerMeta,
    weight_bits: u8,
    weights: &[u8],
    bias: &[u8],
) -> Result<QuantLayer, QuantError> {
    let invalid = |reason: String| QuantError::InvalidValue {
        what: format!("layer {} metadata", l.name),
        reason,
    };
    let kind = match (l.kind, l.weight_shape.as_slice()) {
        (KindMeta::Conv2d, &[out, inp, kh, kw]) if kh == kw => LayerKind::Conv2d {
            in_channels: inp,
            out_channels: out,
            kernel: kh,
        },
        (KindMeta::Linear, &[out, inp]) => LayerKind::Linear {
            in_features: inp,
            out_features: out,
        },
        (kind, shape) => {
            return Err(invalid(format!(
                "weight shape {shape:?} does not fit {kind:?}"
            )));
        }
    };
    if l.bias_shape != [kind.out_channels()] {
        return Err(invalid(format!(
            "bias shape {:?} does not fit {kind:?}",
            l.bias_shape
        )));
    }
    let params = |p: ParamsMeta| QuantParams::new(p.scale, p.zero_point, p.bits);
    Ok(QuantLayer {
        name: l.name.clone(),
        kind,
        weight_bits,
        weights: weights.to_vec(),
        weight_zero_points: l.weight_zero_points.clone(),
        weight_scales: l.weight_scales.clone(),
        bias: bias
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        input: params(l.input)?,
        output: params(l.output)?,
        m0: l.m0.clone(),
        shift: l.shift.clone(),
        act_min: l.act_min,
        act_max: l.act_max,
    })
}
