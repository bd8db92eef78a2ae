//! Offline conversion of the float network into a [`QuantModel`]: all the floating-point math
//! of the pipeline lives here, none at inference.
//!
//! Steps (Jacob et al. 2018, §2–3), with the [`ConvertOptions`] `weight_bits`, `act_bits` and
//! `per_channel`:
//! 1. Fold the input normalization `x = (p/255 − mean)/std` into conv1 (valid convolution, so
//!    every output sees every kernel tap): `w' = w/std`, `b' = b − (mean/std)·Σ_k w[o,k]`.
//!    The raw pixel bytes are then conv1's quantized input, scale 1/255, zero point 0, 8 bits
//!    whatever the options (the image is 8-bit data).
//! 2. Weights: asymmetric, `weight_bits` bits, from their `[min, max]` widened to contain 0:
//!    one range for the whole tensor (per tensor), or one per output channel, from that
//!    channel's own weights (`per_channel`).
//! 3. Bias: `q_b[o] = round(b[o] / (S_in·S_w[o]))` (half away from zero), zero point 0,
//!    saturated to `i32`.
//! 4. Outputs, `act_bits` bits: conv1 → conv2-input range, conv2 → fc1-input range, fc1 →
//!    fc2-input range (with ReLU folded into the clamp, `act_min = Z_out`), fc2 → logit range
//!    (clamp `[0, qmax]`).
//! 5. Requantization per output channel: `M[o] = S_in·S_w[o]/S_out` (`f64`), as
//!    `(m0[o], shift[o])` by [`quantize_multiplier`](crate::quantize_multiplier); steps 2, 3
//!    and 5 are the one derivation of [`crate::derive`], which QAT uses too.
//! 6. Validation, including the worst-case accumulator bound.

use burnq_arch::arch::Activation;

use crate::derive::LayerQuantization;
use crate::{
    ActivationRanges, FloatLayer, FloatNetwork, LayerKind, Normalization, QuantError, QuantLayer,
    QuantModel, QuantParams, QuantScheme, params::qmax, tutorial_layer_names,
};

/// How a network is quantized: bit widths and weight granularity. A [`QuantModel`] keeps the
/// options it follows ([`QuantModel::options`]).
///
/// `From<u8>` gives the per-tensor scheme with one width for weights and activations
/// ([`ConvertOptions::uniform`]), so `convert(…, 8)` still reads as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvertOptions {
    /// Bit width of the weight codes, 2..=8: codes in `[0, 2^weight_bits − 1]`.
    pub weight_bits: u8,
    /// Bit width of the computed activations (the outputs of conv1, conv2, fc1 and the
    /// logits), 2..=8. conv1's input stays the 8-bit pixels.
    pub act_bits: u8,
    /// One weight scale and zero point (hence one requantization multiplier) per output
    /// channel, instead of one per layer.
    pub per_channel: bool,
}

impl ConvertOptions {
    /// Per-tensor weights, `bits` bits for weights and activations: the scheme of format
    /// version 1.
    pub const fn uniform(bits: u8) -> Self {
        Self {
            weight_bits: bits,
            act_bits: bits,
            per_channel: false,
        }
    }

    /// Errors with [`QuantError::InvalidBits`] unless both widths are in `2..=8`.
    pub fn check(&self) -> Result<(), QuantError> {
        qmax(self.weight_bits)?;
        qmax(self.act_bits)?;
        Ok(())
    }
}

impl From<u8> for ConvertOptions {
    fn from(bits: u8) -> Self {
        Self::uniform(bits)
    }
}

/// Folds `norm` into a layer trained on normalized input, so that it takes `p/255` directly:
/// `w' = w/std`, `b' = b − (mean/std)·Σ_k w[o,k]` (sums in `f64`), for weights `[out, fan_in]`.
///
/// Exact in real arithmetic for every output that sees only image pixels; a padded
/// convolution must pad with the raw pixel of a normalized 0, which the engine approximates
/// by [`Normalization::padding_pixel`] (and training pads with its normalized value).
pub fn fold_normalization(
    weights: &[f32],
    bias: &[f32],
    fan_in: usize,
    norm: Normalization,
) -> (Vec<f32>, Vec<f32>) {
    let (mean, std) = (f64::from(norm.mean), f64::from(norm.std));
    let folded = weights
        .iter()
        .map(|&w| (f64::from(w) / std) as f32)
        .collect();
    let bias = bias
        .iter()
        .zip(weights.chunks(fan_in.max(1)))
        .map(|(&b, row)| {
            let sum: f64 = row.iter().map(|&w| f64::from(w)).sum();
            (f64::from(b) - mean / std * sum) as f32
        })
        .collect();
    (folded, bias)
}

/// [`fold_normalization`] of the tutorial's conv1 (a valid convolution: exact).
pub fn fold_input_normalization(
    conv: &FloatLayer,
    norm: Normalization,
) -> Result<FloatLayer, QuantError> {
    norm.check()?;
    if !matches!(conv.kind, LayerKind::Conv2d { .. }) {
        return Err(QuantError::InvalidValue {
            what: "normalization folding".into(),
            reason: format!("{:?} is not a convolution", conv.kind),
        });
    }
    conv.check("folded conv")?;
    let (weights, bias) = fold_normalization(&conv.weights, &conv.bias, conv.kind.fan_in(), norm);
    Ok(FloatLayer {
        kind: conv.kind,
        weights,
        bias,
    })
}

/// Quantizes `network` as `scheme` says (see the module docs for the steps); `scheme` is a
/// [`QuantScheme`] (per-layer widths by layer name `conv1`, `conv2`, `fc1`, `fc2`), a
/// [`ConvertOptions`] (or a reference to one: one width for all layers), or a bit width `u8`
/// for [`ConvertOptions::uniform`]. Each layer's output grid has that layer's activation
/// width. Errors on invalid bits or layer names, normalization or ranges, and on a layer whose
/// accumulator could overflow `i32` ([`QuantError::AccumulatorOverflow`]).
pub fn convert(
    network: &FloatNetwork,
    ranges: &ActivationRanges,
    norm: Normalization,
    scheme: impl Into<QuantScheme>,
) -> Result<QuantModel, QuantError> {
    let scheme = scheme.into();
    scheme.check(&tutorial_layer_names())?;
    let names = tutorial_layer_names();
    let outputs = ranges.layer_outputs();
    let grid = |i: usize| -> Result<LayerGrids, QuantError> {
        let (min, max) = outputs[i];
        Ok(LayerGrids {
            output: QuantParams::from_range(min, max, scheme.layer(names[i]).act_bits)?,
            weights: None,
        })
    };
    let grids = [grid(0)?, grid(1)?, grid(2)?, grid(3)?];
    convert_with_grids(network, grids, norm, scheme)
}

/// The grids one layer is converted onto.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGrids {
    /// The grid of the layer's output codes (the layer's activation width).
    pub output: QuantParams,
    /// One weight grid per output channel (all equal per tensor), or `None` to derive them
    /// from the weights' min/max at the layer's weight width
    /// ([`crate::derive::weight_params`]). Learned grids (QAT with learned step sizes) are
    /// given here; conv1's refer to its normalization-folded weights.
    pub weights: Option<Vec<QuantParams>>,
}

impl LayerGrids {
    /// The parameters of layer `name`, whose float `weights` are `[out, fan_in]`, reading
    /// `input`, on these grids: the given weight grids ([`LayerQuantization::from_grids`]) or,
    /// without them, the weights' grids under the layer's own `options`
    /// ([`LayerQuantization::derive`]). Errors when the given grids are not one per output
    /// channel, or as those derivations.
    pub fn quantization(
        self,
        name: &str,
        weights: &[f32],
        out: usize,
        input: QuantParams,
        activation: Activation,
        options: &ConvertOptions,
    ) -> Result<LayerQuantization, QuantError> {
        match self.weights {
            Some(grids) if grids.len() == out => {
                LayerQuantization::from_grids(input, grids, self.output, activation)
            }
            Some(grids) => Err(QuantError::ShapeMismatch {
                what: format!("{name} weight grids"),
                expected: out,
                found: grids.len(),
            }),
            None => {
                LayerQuantization::derive(weights, out, input, self.output, activation, options)
            }
        }
    }
}

/// Like [`convert`], with each layer's grids given explicitly (`[conv1, conv2, fc1, fc2]`): a
/// network trained on learned grids is exported on exactly those grids. `scheme` gives the
/// granularity and the weight width of layers whose grids are derived. Validation is that of
/// [`QuantModel::new`] (widths, per-tensor uniformity, accumulator bound).
pub fn convert_with_grids(
    network: &FloatNetwork,
    grids: [LayerGrids; 4],
    norm: Normalization,
    scheme: impl Into<QuantScheme>,
) -> Result<QuantModel, QuantError> {
    let scheme = scheme.into();
    scheme.check(&tutorial_layer_names())?;
    let [conv1, conv2, fc1, fc2] = network.layers();
    let folded = fold_input_normalization(conv1, norm)?;
    let [g1, g2, g3, g4] = grids;
    let (i2, i3, i4) = (g1.output, g2.output, g3.output);
    let layer = |name, float, input, grids, activation| {
        quantize_layer(name, float, input, grids, activation, &scheme.layer(name))
    };
    let layers = [
        layer(
            "conv1",
            &folded,
            QuantParams::RAW_PIXELS,
            g1,
            Activation::Relu,
        )?,
        layer("conv2", conv2, i2, g2, Activation::Relu)?,
        layer("fc1", fc1, i3, g3, Activation::Relu)?,
        layer("fc2", fc2, i4, g4, Activation::None)?,
    ];
    QuantModel::spanning(scheme.defaults.per_channel, layers, Some(norm))
}

/// One layer, from its float weights and grids by the one derivation
/// ([`LayerQuantization::derive`]) under the layer's own `options`: weights per tensor or per
/// channel, bias at scale `S_in·S_w[o]`, `(m0[o], shift[o])` for `M[o] = S_in·S_w[o]/S_out`,
/// clamp `[Z_out or 0, qmax]`.
fn quantize_layer(
    name: &str,
    float: &FloatLayer,
    input: QuantParams,
    grids: LayerGrids,
    activation: Activation,
    options: &ConvertOptions,
) -> Result<QuantLayer, QuantError> {
    float.check(name)?;
    let out = float.kind.out_channels();
    let q = grids.quantization(name, &float.weights, out, input, activation, options)?;
    Ok(q.layer(name, float.kind, &float.weights, &float.bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::quantize_bias;
    use crate::test_support::{pattern_network, pattern_ranges};
    use crate::{quantize_multiplier, range};

    /// Valid stride-1 float convolution of one single-channel `side × side` image.
    fn float_conv(layer: &FloatLayer, image: &[f32], side: usize) -> Vec<f32> {
        let LayerKind::Conv2d {
            out_channels,
            kernel,
            ..
        } = layer.kind
        else {
            unreachable!("test layers are convolutions")
        };
        let out_side = side - kernel + 1;
        let mut out = Vec::new();
        for o in 0..out_channels {
            for y in 0..out_side {
                for x in 0..out_side {
                    let mut sum = layer.bias[o];
                    for ky in 0..kernel {
                        for kx in 0..kernel {
                            sum += layer.weights[(o * kernel + ky) * kernel + kx]
                                * image[(y + ky) * side + x + kx];
                        }
                    }
                    out.push(sum);
                }
            }
        }
        out
    }

    #[test]
    fn folding_matches_normalized_input() {
        let conv = FloatLayer {
            kind: LayerKind::Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel: 3,
            },
            weights: (0..18).map(|i| ((i * 7) % 11) as f32 / 5.0 - 1.0).collect(),
            bias: vec![0.3, -0.7],
        };
        let pixels: Vec<u8> = (0..25).map(|i| ((i * 37) % 256) as u8).collect();
        let norm = Normalization::MNIST;
        let normalized: Vec<f32> = pixels
            .iter()
            .map(|&p| (f32::from(p) / 255.0 - norm.mean) / norm.std)
            .collect();
        let raw: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
        let folded = fold_input_normalization(&conv, norm).unwrap();
        let expected = float_conv(&conv, &normalized, 5);
        let got = float_conv(&folded, &raw, 5);
        assert_eq!(expected.len(), 18);
        for (e, g) in expected.iter().zip(&got) {
            assert!((e - g).abs() <= 1e-5 * (1.0 + e.abs()), "{e} vs {g}");
        }
    }

    #[test]
    fn folding_rejects_bad_input() {
        let net = pattern_network();
        let [conv, _, linear, _] = net.layers();
        let bad = Normalization {
            mean: 0.1,
            std: 0.0,
        };
        assert!(matches!(
            fold_input_normalization(conv, bad),
            Err(QuantError::InvalidNormalization(_))
        ));
        assert!(matches!(
            fold_input_normalization(linear, Normalization::MNIST),
            Err(QuantError::InvalidValue { .. })
        ));
    }

    /// Every combination the tests below convert with.
    const OPTIONS: [ConvertOptions; 5] = [
        ConvertOptions::uniform(8),
        ConvertOptions::uniform(2),
        ConvertOptions {
            weight_bits: 4,
            act_bits: 8,
            per_channel: true,
        },
        ConvertOptions {
            weight_bits: 8,
            act_bits: 3,
            per_channel: false,
        },
        ConvertOptions {
            weight_bits: 2,
            act_bits: 6,
            per_channel: true,
        },
    ];

    #[test]
    fn converted_model_is_consistent() {
        let net = pattern_network();
        for options in OPTIONS {
            let model = convert(&net, &pattern_ranges(), Normalization::MNIST, options).unwrap();
            assert_eq!(model.options(), options);
            assert_eq!(
                (model.weight_bits(), model.act_bits()),
                (options.weight_bits, options.act_bits)
            );
            assert_eq!(model.input_params(), QuantParams::RAW_PIXELS);
            assert_eq!(model.input_normalization(), Some(Normalization::MNIST));
            let (w_qmax, a_qmax) = (
                qmax(options.weight_bits).unwrap(),
                qmax(options.act_bits).unwrap(),
            );
            let [conv1, conv2, fc1, fc2] = model.layers();
            for layer in [conv1, conv2, fc1] {
                assert_eq!(i32::from(layer.act_min), layer.output.zero_point());
                assert_eq!(i32::from(layer.act_max), a_qmax);
            }
            assert_eq!((fc2.act_min, i32::from(fc2.act_max)), (0, a_qmax));
            for (float, quant) in net.layers()[1..].iter().zip(&model.layers()[1..]) {
                assert_eq!(quant.output.bits(), options.act_bits);
                assert!(quant.weights.iter().all(|&w| i32::from(w) <= w_qmax));
                assert_eq!(
                    quant.is_per_tensor(),
                    !options.per_channel,
                    "{}",
                    quant.name
                );
                // Every non-folded weight is within half a step of its float value.
                let deq = quant.dequantize_weights().unwrap();
                let fan_in = quant.kind.fan_in();
                for (i, (w, d)) in float.weights.iter().zip(&deq).enumerate() {
                    let half_step = quant.weight_scales[i / fan_in] / 2.0 * (1.0 + 1e-5);
                    assert!((w - d).abs() <= half_step, "{}: {w} vs {d}", quant.name);
                }
            }
        }
    }

    #[test]
    fn per_channel_params_follow_each_channel() {
        let net = pattern_network();
        let options = ConvertOptions {
            weight_bits: 4,
            act_bits: 8,
            per_channel: true,
        };
        let model = convert(&net, &pattern_ranges(), Normalization::MNIST, options).unwrap();
        let per_tensor = convert(&net, &pattern_ranges(), Normalization::MNIST, 4).unwrap();
        let fc1 = &model.layers()[2];
        let float = &net.layers()[2];
        let fan_in = fc1.kind.fan_in();
        for o in 0..fc1.kind.out_channels() {
            let row = &float.weights[o * fan_in..(o + 1) * fan_in];
            let (min, max) = range::min_max(row);
            let wp = QuantParams::from_range(min, max, 4).unwrap();
            assert_eq!(fc1.weight_scales[o], wp.scale());
            assert_eq!(fc1.weight_zero_points[o], wp.zero_point());
            let bias_scale = f64::from(fc1.input.scale()) * f64::from(wp.scale());
            assert_eq!(fc1.bias[o], quantize_bias(float.bias[o], bias_scale));
            let m = bias_scale / f64::from(fc1.output.scale());
            assert_eq!((fc1.m0[o], fc1.shift[o]), quantize_multiplier(m).unwrap());
        }
        // Channels differ, and each channel's own range never quantizes worse than the
        // layer's: the total squared weight error drops.
        assert!(fc1.weight_scales.iter().any(|&s| s != fc1.weight_scales[0]));
        let error = |quant: &QuantLayer| -> f64 {
            let deq = quant.dequantize_weights().unwrap();
            float
                .weights
                .iter()
                .zip(&deq)
                .map(|(&w, &d)| f64::from(w - d).powi(2))
                .sum()
        };
        assert!(error(fc1) < error(&per_tensor.layers()[2]));
    }

    #[test]
    fn explicit_grids_are_used_as_given() {
        let net = pattern_network();
        let norm = Normalization::MNIST;
        let options = ConvertOptions {
            weight_bits: 4,
            act_bits: 4,
            per_channel: true,
        };
        let derived = convert(&net, &pattern_ranges(), norm, options).unwrap();
        // The grids `convert` derives, given explicitly, give the same model.
        let explicit = derived.layers().clone().map(|l| LayerGrids {
            output: l.output,
            weights: Some(
                l.weight_scales
                    .iter()
                    .zip(&l.weight_zero_points)
                    .map(|(&s, &z)| QuantParams::new(s, z, 4).unwrap())
                    .collect(),
            ),
        });
        assert_eq!(
            convert_with_grids(&net, explicit.clone(), norm, options).unwrap(),
            derived
        );
        // A learned symmetric grid (zero point 8 of 15) is kept, and the weights are on it.
        let mut learned = explicit.clone();
        let out = net.layers()[2].kind.out_channels();
        learned[2].weights = Some(vec![QuantParams::new(0.01, 8, 4).unwrap(); out]);
        let model = convert_with_grids(&net, learned.clone(), norm, options).unwrap();
        let fc1 = &model.layers()[2];
        assert!(fc1.weight_scales.iter().all(|&s| s == 0.01));
        assert!(fc1.weight_zero_points.iter().all(|&z| z == 8));
        let grid = QuantParams::new(0.01, 8, 4).unwrap();
        for (q, &w) in fc1.weights.iter().zip(&net.layers()[2].weights) {
            assert_eq!(*q, grid.quantize(w));
        }
        learned[2].weights = Some(vec![grid; out - 1]);
        assert!(matches!(
            convert_with_grids(&net, learned, norm, options),
            Err(QuantError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn options_convert_from_bits() {
        assert_eq!(ConvertOptions::from(5), ConvertOptions::uniform(5));
        let options = ConvertOptions::uniform(5);
        assert_eq!(QuantScheme::from(&options), QuantScheme::from(options));
        assert!(options.check().is_ok());
        for (weight_bits, act_bits) in [(1, 8), (8, 9), (0, 0)] {
            let bad = ConvertOptions {
                weight_bits,
                act_bits,
                per_channel: false,
            };
            assert!(matches!(bad.check(), Err(QuantError::InvalidBits { .. })));
        }
    }

    #[test]
    fn huge_bias_is_refused_as_overflow() {
        let [conv1, conv2, fc1, mut fc2] = pattern_network().layers().clone();
        fc2.bias[3] = 1e30;
        let net = FloatNetwork::new([conv1, conv2, fc1, fc2]).unwrap();
        let err = convert(&net, &pattern_ranges(), Normalization::MNIST, 8).unwrap_err();
        match err {
            QuantError::AccumulatorOverflow {
                layer,
                channel,
                magnitude,
            } => {
                assert_eq!((layer.as_str(), channel), ("fc2", 3));
                assert!(magnitude > i64::from(i32::MAX));
            }
            other => panic!("expected AccumulatorOverflow, got {other:?}"),
        }
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let net = pattern_network();
        let norm = Normalization::MNIST;
        assert!(matches!(
            convert(&net, &pattern_ranges(), norm, 1),
            Err(QuantError::InvalidBits { bits: 1 })
        ));
        let wide_weights = ConvertOptions {
            weight_bits: 9,
            ..ConvertOptions::uniform(8)
        };
        assert!(matches!(
            convert(&net, &pattern_ranges(), norm, wide_weights),
            Err(QuantError::InvalidBits { bits: 9 })
        ));
        let mut ranges = pattern_ranges();
        ranges.fc1_input = (0.0, f32::NAN);
        assert!(matches!(
            convert(&net, &ranges, norm, 8),
            Err(QuantError::InvalidRange { .. })
        ));
    }
}
