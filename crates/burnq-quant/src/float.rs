//! The float inputs of the conversion: the trained network's `f32` weights
//! ([`FloatNetwork`]), the calibrated activation ranges ([`ActivationRanges`]) and the input
//! normalization the network was trained with ([`Normalization`]).

use crate::{LayerKind, QuantError, model::ARCHITECTURE};

/// One float layer: weights row-major `[out, fan_in]` (OIHW for convolutions) and one bias per
/// output channel, in real units.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatLayer {
    /// Geometry.
    pub kind: LayerKind,
    /// Weights, `out × fan_in` values.
    pub weights: Vec<f32>,
    /// Bias, `out` values.
    pub bias: Vec<f32>,
}

impl FloatLayer {
    /// Checks lengths against `kind` and that every value is finite.
    pub fn check(&self, name: &str) -> Result<(), QuantError> {
        let out = self.kind.out_channels();
        let expected = out.saturating_mul(self.kind.fan_in());
        for (what, expected, values) in [
            ("weights", expected, &self.weights),
            ("bias", out, &self.bias),
        ] {
            if values.len() != expected {
                return Err(QuantError::ShapeMismatch {
                    what: format!("{name} float {what}"),
                    expected,
                    found: values.len(),
                });
            }
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(QuantError::NonFinite {
                    what: format!("{name} float {what}"),
                    index,
                    value,
                });
            }
        }
        Ok(())
    }
}

/// The float tutorial network `[conv1, conv2, fc1, fc2]`: conv1 `[20, 1, 5, 5]`,
/// conv2 `[50, 20, 5, 5]`, fc1 `[500, 800]`, fc2 `[10, 500]`, checked on construction.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatNetwork {
    layers: [FloatLayer; 4],
}

impl FloatNetwork {
    /// Validates that the layers have the tutorial architecture, consistent lengths and finite
    /// values.
    pub fn new(layers: [FloatLayer; 4]) -> Result<Self, QuantError> {
        for (layer, (name, kind)) in layers.iter().zip(ARCHITECTURE) {
            if layer.kind != kind {
                return Err(QuantError::InvalidValue {
                    what: format!("{name} float layer"),
                    reason: format!("geometry {:?}, expected {kind:?}", layer.kind),
                });
            }
            layer.check(name)?;
        }
        Ok(Self { layers })
    }

    /// The layers, `[conv1, conv2, fc1, fc2]`.
    pub fn layers(&self) -> &[FloatLayer; 4] {
        &self.layers
    }
}

/// Calibrated real `(min, max)` ranges of the activations, keyed by layer: the one type of
/// ranges that calibration produces (`burnq_calib::Calibration::ranges`) and conversion,
/// QAT, simulation and the sensitivity report take. Each `*_input` is the input range of the
/// named layer, i.e. the output range of the previous stage after ReLU and pooling; `logits`
/// is fc2's output range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationRanges {
    /// conv1 input: the normalized image `(p/255 − mean)/std`. Conversion does not use it: with
    /// the normalization folded into conv1, conv1 reads the raw pixel bytes (scale 1/255, zero
    /// point 0, exact at 8 bits). The tutorial's simulated scheme quantizes it.
    pub input: (f32, f32),
    /// conv2 input = conv1 → ReLU → max-pool output.
    pub conv2_input: (f32, f32),
    /// fc1 input = conv2 → ReLU → max-pool output, flattened.
    pub fc1_input: (f32, f32),
    /// fc2 input = fc1 → ReLU output.
    pub fc2_input: (f32, f32),
    /// fc2 output, the logits.
    pub logits: (f32, f32),
}

impl ActivationRanges {
    /// The output range of each quantized layer, by layer index (conv1, conv2, fc1, fc2): the
    /// ranges its output codes cover.
    pub fn layer_outputs(&self) -> [(f32, f32); 4] {
        [
            self.conv2_input,
            self.fc1_input,
            self.fc2_input,
            self.logits,
        ]
    }

    /// Ranges from the network `input` range and each layer's output range, by layer index
    /// (the inverse of [`ActivationRanges::layer_outputs`]).
    pub fn from_layer_outputs(input: (f32, f32), outputs: [(f32, f32); 4]) -> Self {
        let [conv2_input, fc1_input, fc2_input, logits] = outputs;
        Self {
            input,
            conv2_input,
            fc1_input,
            fc2_input,
            logits,
        }
    }
}
