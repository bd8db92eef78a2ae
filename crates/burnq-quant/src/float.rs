//! The float inputs of the conversion: the trained network's `f32` weights
//! ([`FloatNetwork`]), the calibrated activation ranges ([`ActivationRanges`]) and the input
//! normalization the network was trained with ([`InputNormalization`]).

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
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                return Err(QuantError::InvalidValue {
                    what: format!("{name} float {what}"),
                    reason: format!("non-finite value {v}"),
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

/// The normalization applied to raw pixels during training: `x = (p/255 − mean) / std` for a
/// pixel byte `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNormalization {
    /// Mean, in units of `p/255`.
    pub mean: f32,
    /// Standard deviation, in units of `p/255`; must be > 0.
    pub std: f32,
}

impl InputNormalization {
    /// The MNIST statistics of the PyTorch tutorial: mean 0.1307, std 0.3081.
    pub const MNIST: Self = Self {
        mean: 0.1307,
        std: 0.3081,
    };

    /// Checks that `mean` is finite and `std` finite and > 0.
    pub fn check(&self) -> Result<(), QuantError> {
        if self.mean.is_finite() && self.std.is_normal() && self.std > 0.0 {
            Ok(())
        } else {
            Err(QuantError::InvalidValue {
                what: "input normalization".into(),
                reason: format!(
                    "mean {} must be finite, std {} finite and > 0",
                    self.mean, self.std
                ),
            })
        }
    }
}

/// Calibrated real `(min, max)` ranges of the activations. Each is the input range of the
/// named layer, i.e. the output range of the previous stage after ReLU and pooling; `logits`
/// is fc2's output range. conv1's input needs no range: with the normalization folded into
/// conv1, its input is the raw pixel bytes (scale 1/255, zero point 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationRanges {
    /// conv2 input = conv1 → ReLU → max-pool output.
    pub conv2_input: (f32, f32),
    /// fc1 input = conv2 → ReLU → max-pool output, flattened.
    pub fc1_input: (f32, f32),
    /// fc2 input = fc1 → ReLU output.
    pub fc2_input: (f32, f32),
    /// fc2 output, the logits.
    pub logits: (f32, f32),
}
