//! One quantized layer ([`QuantLayer`]): `u8` weights with per-output-channel zero points and
//! scales, `i32` bias, input and output parameters and the per-channel requantization, plus
//! its validation and the worst-case accumulator bound that rules out `i32` overflow.

use crate::{LayerBits, QuantError, QuantParams, Requant, params::qmax};

/// Geometry of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Valid (unpadded), stride-1 convolution with a square kernel; weights OIHW.
    Conv2d {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel side, in pixels.
        kernel: usize,
    },
    /// Fully connected layer; weights out × in.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
}

impl LayerKind {
    /// Number of output channels (or features).
    pub fn out_channels(&self) -> usize {
        match *self {
            Self::Conv2d { out_channels, .. } => out_channels,
            Self::Linear { out_features, .. } => out_features,
        }
    }

    /// Number of weights per output channel: `in·k·k` or `in`.
    pub fn fan_in(&self) -> usize {
        match *self {
            Self::Conv2d {
                in_channels,
                kernel,
                ..
            } => in_channels * kernel * kernel,
            Self::Linear { in_features, .. } => in_features,
        }
    }

    /// Weight tensor shape: `[out, in, k, k]` or `[out, in]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        match *self {
            Self::Conv2d {
                in_channels,
                out_channels,
                kernel,
            } => vec![out_channels, in_channels, kernel, kernel],
            Self::Linear {
                in_features,
                out_features,
            } => vec![out_features, in_features],
        }
    }
}

/// A quantized layer, with its own widths: `weight_bits`-bit weight codes and
/// `output.bits()`-bit output codes (per-layer widths: a layer's widths need not equal its
/// neighbours'). Weight `o, k` represents `weight_scales[o]·(weights[o·fan_in + k] −
/// weight_zero_points[o])`; the bias represents `S_in·weight_scales[o]·bias[o]` (zero point 0);
/// output channel `o` is requantized by [`Requant`] with `m0[o]`, `shift[o]`, the output zero
/// point and `[act_min, act_max]`.
///
/// The integer fields define the arithmetic; the scales are kept to dequantize and to check
/// that `(m0, shift)` matches `M = S_in·S_w/S_out`. Per-tensor weight quantization is the case
/// where all per-channel entries are equal ([`QuantLayer::is_per_tensor`]). Fields are public: [`QuantLayer::validate`] (run by
/// [`crate::QuantModel::new`]) checks them.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLayer {
    /// Layer name, e.g. `"conv1"`.
    pub name: String,
    /// Geometry.
    pub kind: LayerKind,
    /// Bit width of the weight codes and zero points, 2..=8: codes in `[0, 2^weight_bits − 1]`.
    pub weight_bits: u8,
    /// Weight codes, row-major `[out, fan_in]` (OIHW for convolutions).
    pub weights: Vec<u8>,
    /// Weight zero point per output channel.
    pub weight_zero_points: Vec<i32>,
    /// Weight scale per output channel.
    pub weight_scales: Vec<f32>,
    /// Bias per output channel, scale `S_in·S_w[o]`, zero point 0.
    pub bias: Vec<i32>,
    /// Input activation parameters.
    pub input: QuantParams,
    /// Output activation parameters (for the last layer: the logit parameters).
    pub output: QuantParams,
    /// Requantization mantissa per output channel.
    pub m0: Vec<i32>,
    /// Requantization exponent per output channel.
    pub shift: Vec<i32>,
    /// Lowest output code (the output zero point when a ReLU is folded in).
    pub act_min: u8,
    /// Highest output code.
    pub act_max: u8,
}

impl QuantLayer {
    /// Checks that every per-channel vector has one entry per output channel and that the
    /// weights fill `[out, fan_in]`: the precondition of every reference operation.
    pub fn check_shapes(&self) -> Result<(), QuantError> {
        let out = self.kind.out_channels();
        let expected = out.checked_mul(self.kind.fan_in());
        let mismatch = |what: &str, expected, found| QuantError::ShapeMismatch {
            what: format!("{} {what}", self.name),
            expected,
            found,
        };
        if expected != Some(self.weights.len()) {
            return Err(mismatch(
                "weights",
                expected.unwrap_or(usize::MAX),
                self.weights.len(),
            ));
        }
        for (what, len) in [
            ("weight zero points", self.weight_zero_points.len()),
            ("weight scales", self.weight_scales.len()),
            ("bias", self.bias.len()),
            ("m0", self.m0.len()),
            ("shift", self.shift.len()),
        ] {
            if len != out {
                return Err(mismatch(what, out, len));
            }
        }
        Ok(())
    }

    /// Full validation of the layer on its own widths: shapes, weight codes
    /// `≤ 2^weight_bits − 1`, weight zero points in `[0, 2^weight_bits − 1]`, weight scales
    /// finite and > 0, `m0` in `[2^30, 2^31)` (or `m0 = shift = 0`), `shift` in `[−31, 30]`,
    /// `(m0[o], shift[o])` within `10^−6` (relative) of `S_in·S_w[o]/S_out`,
    /// `act_min ≤ act_max ≤ 2^output.bits − 1`, without `per_channel` one weight scale, zero
    /// point and multiplier for every channel ([`QuantLayer::is_per_tensor`]), and the
    /// accumulator bound ([`QuantLayer::check_accumulator_bound`]). The input may have any
    /// valid bit width; the model checks that it is the previous layer's output grid.
    pub fn validate(&self, per_channel: bool) -> Result<(), QuantError> {
        let w_qmax = qmax(self.weight_bits)?;
        let a_qmax = self.output.qmax();
        self.check_shapes()?;
        let invalid = |what: &str, reason: String| QuantError::InvalidValue {
            what: format!("{} {what}", self.name),
            reason,
        };
        if let Some(&w) = self.weights.iter().find(|&&w| i32::from(w) > w_qmax) {
            return Err(invalid("weights", format!("code {w} exceeds {w_qmax}")));
        }
        for (o, &z) in self.weight_zero_points.iter().enumerate() {
            if !(0..=w_qmax).contains(&z) {
                return Err(invalid(
                    "weight zero points",
                    format!("channel {o}: {z} outside [0, {w_qmax}]"),
                ));
            }
        }
        for (o, &s) in self.weight_scales.iter().enumerate() {
            if !s.is_normal() || s < 0.0 {
                return Err(invalid(
                    "weight scales",
                    format!("channel {o}: {s} is not finite and > 0"),
                ));
            }
        }
        if !per_channel && !self.is_per_tensor() {
            return Err(invalid(
                "weight parameters",
                "channels differ in scale, zero point or multiplier, but the model is per tensor"
                    .into(),
            ));
        }
        for (o, r) in self.requants().enumerate() {
            self.check_multiplier(o, r.m0, r.shift)
                .map_err(|reason| invalid("requantization", format!("channel {o}: {reason}")))?;
        }
        if self.act_min > self.act_max || i32::from(self.act_max) > a_qmax {
            return Err(invalid(
                "clamp",
                format!(
                    "[{}, {}] not within [0, {a_qmax}]",
                    self.act_min, self.act_max
                ),
            ));
        }
        self.check_accumulator_bound()
    }

    /// The layer's widths: weights and output codes.
    pub fn bits(&self) -> LayerBits {
        LayerBits {
            weight_bits: self.weight_bits,
            act_bits: self.output.bits(),
        }
    }

    /// Bytes the weight codes take in the model file: `⌈n·weight_bits/8⌉` for the `n` codes
    /// (sub-byte codes are stored densely, 8-bit codes one per byte).
    pub fn stored_weight_bytes(&self) -> usize {
        crate::format::packed_len(self.weights.len(), self.weight_bits)
    }

    /// Whether every output channel has the same weight scale, weight zero point, `m0` and
    /// `shift`: per-tensor weight quantization.
    pub fn is_per_tensor(&self) -> bool {
        per_tensor(
            &self.weight_scales,
            &self.weight_zero_points,
            &self.m0,
            &self.shift,
        )
    }

    fn check_multiplier(&self, o: usize, m0: i32, shift: i32) -> Result<(), String> {
        let canonical = (m0 == 0 && shift == 0) || (m0 >= 1 << 30 && (-31..=30).contains(&shift));
        if !canonical {
            return Err(format!(
                "(m0, shift) = ({m0}, {shift}) is not m0 in [2^30, 2^31) with shift in [-31, 30], nor (0, 0)"
            ));
        }
        let real = f64::from(self.input.scale()) * f64::from(self.weight_scales[o])
            / f64::from(self.output.scale());
        let represented = f64::from(m0) * 2f64.powi(shift - 31);
        if (represented - real).abs() > 1e-6 * real + 2f64.powi(-32) {
            return Err(format!(
                "m0·2^(shift−31) = {represented} does not match S_in·S_w/S_out = {real}"
            ));
        }
        Ok(())
    }

    /// Per-channel worst-case accumulator magnitude
    /// `|bias[o]| + max_q|q − Z_in| · Σ_k |q_w[o,k] − Z_w[o]|`, in `i64`, where
    /// `max_q|q − Z_in| = max(Z_in, qmax_in − Z_in)` over all input codes.
    pub fn worst_case_accumulators(&self) -> Result<Vec<i64>, QuantError> {
        self.check_shapes()?;
        let max_x = i64::from(self.input.max_abs_offset());
        let fan_in = self.kind.fan_in();
        Ok(self
            .bias
            .iter()
            .zip(&self.weight_zero_points)
            .enumerate()
            .map(|(o, (&b, &z))| {
                let row = &self.weights[o * fan_in..(o + 1) * fan_in];
                let sum: i64 = row
                    .iter()
                    .map(|&w| i64::from((i32::from(w) - z).unsigned_abs()))
                    .sum();
                i64::from(b.unsigned_abs()) + max_x * sum
            })
            .collect())
    }

    /// Errors with [`QuantError::AccumulatorOverflow`] unless every worst-case accumulator fits
    /// in `i32`; when it does, no input can overflow the `i32` accumulator, not even in a
    /// partial sum (each partial sum is bounded by the same total).
    pub fn check_accumulator_bound(&self) -> Result<(), QuantError> {
        let bounds = self.worst_case_accumulators()?;
        match bounds
            .iter()
            .enumerate()
            .find(|&(_, &m)| m > i64::from(i32::MAX))
        {
            Some((channel, &magnitude)) => Err(QuantError::AccumulatorOverflow {
                layer: self.name.clone(),
                channel,
                magnitude,
            }),
            None => Ok(()),
        }
    }

    /// The [`Requant`] stage of every output channel, in order.
    pub fn requants(&self) -> impl Iterator<Item = Requant> + '_ {
        self.m0
            .iter()
            .zip(&self.shift)
            .map(|(&m0, &shift)| Requant {
                m0,
                shift,
                output_zero_point: self.output.zero_point(),
                act_min: self.act_min,
                act_max: self.act_max,
            })
    }

    /// Real weights `S_w[o]·(q_w − Z_w[o])`, row-major like `weights`.
    pub fn dequantize_weights(&self) -> Result<Vec<f32>, QuantError> {
        self.check_shapes()?;
        let fan_in = self.kind.fan_in().max(1);
        Ok(self
            .weights
            .iter()
            .enumerate()
            .map(|(i, &q)| {
                let o = i / fan_in;
                self.weight_scales[o] * (i32::from(q) - self.weight_zero_points[o]) as f32
            })
            .collect())
    }
}

/// Whether the per-channel arrays of a layer each hold one repeated value
/// ([`QuantLayer::is_per_tensor`]).
pub(crate) fn per_tensor(scales: &[f32], zero_points: &[i32], m0: &[i32], shift: &[i32]) -> bool {
    fn uniform<T: PartialEq>(v: &[T]) -> bool {
        v.windows(2).all(|w| w[0] == w[1])
    }
    uniform(scales) && uniform(zero_points) && uniform(m0) && uniform(shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::unit_layer;

    fn linear(in_features: usize) -> LayerKind {
        LayerKind::Linear {
            in_features,
            out_features: 1,
        }
    }

    fn reason_mentions(err: QuantError, needle: &str) -> bool {
        matches!(err, QuantError::InvalidValue { what, .. } if what.contains(needle))
    }

    #[test]
    fn kind_geometry() {
        let conv = LayerKind::Conv2d {
            in_channels: 20,
            out_channels: 50,
            kernel: 5,
        };
        assert_eq!((conv.out_channels(), conv.fan_in()), (50, 500));
        assert_eq!(conv.weight_shape(), vec![50, 20, 5, 5]);
        let fc = LayerKind::Linear {
            in_features: 800,
            out_features: 500,
        };
        assert_eq!((fc.out_channels(), fc.fan_in()), (500, 800));
        assert_eq!(fc.weight_shape(), vec![500, 800]);
    }

    #[test]
    fn worst_case_bound_hand_computed() {
        // Z_in = 10 → max |q − Z_in| = 245; |w − Z_w| = [3, 1, 3]; |bias| = 100.
        let layer = unit_layer(linear(3), vec![0, 4, 6], 3, vec![-100], 10);
        assert_eq!(
            layer.worst_case_accumulators().unwrap(),
            vec![100 + 245 * 7]
        );
        assert!(layer.validate(false).is_ok());
    }

    #[test]
    fn huge_layer_is_refused() {
        // 40000 · 255 · 255 = 2_601_000_000 > i32::MAX.
        let layer = unit_layer(linear(40_000), vec![255; 40_000], 0, vec![0], 0);
        match layer.validate(false) {
            Err(QuantError::AccumulatorOverflow {
                channel, magnitude, ..
            }) => assert_eq!((channel, magnitude), (0, 2_601_000_000)),
            other => panic!("expected AccumulatorOverflow, got {other:?}"),
        }
        // 30000 · 65025 = 1_950_750_000 fits.
        let layer = unit_layer(linear(30_000), vec![255; 30_000], 0, vec![0], 0);
        assert!(layer.check_accumulator_bound().is_ok());
        // The bias counts too.
        let layer = unit_layer(linear(1), vec![1], 0, vec![i32::MAX], 0);
        assert!(matches!(
            layer.check_accumulator_bound(),
            Err(QuantError::AccumulatorOverflow { .. })
        ));
    }

    #[test]
    fn validate_rejects_each_bad_field() {
        let good = unit_layer(linear(2), vec![1, 2], 1, vec![0], 0);
        assert!(good.validate(false).is_ok());
        let check = |edit: fn(&mut QuantLayer), needle: &str| {
            let mut layer = good.clone();
            edit(&mut layer);
            let err = layer.validate(false).unwrap_err();
            assert!(reason_mentions(err, needle), "{needle}");
        };
        // Weights of 2 bits: code 3 at most; the 8-bit outputs are fine.
        check(
            |l| {
                l.weight_bits = 2;
                l.weights[0] = 4;
            },
            "weights",
        );
        check(
            |l| {
                l.weight_bits = 2;
                l.weight_zero_points[0] = 4;
            },
            "weight zero points",
        );
        check(|l| l.weight_zero_points[0] = 256, "weight zero points");
        check(|l| l.weight_zero_points[0] = -1, "weight zero points");
        check(|l| l.weight_scales[0] = 0.0, "weight scales");
        check(|l| l.weight_scales[0] = f32::INFINITY, "weight scales");
        check(|l| l.m0[0] = 5, "requantization");
        check(|l| l.shift[0] = 2, "requantization");
        check(|l| l.m0[0] = (1 << 30) + 4096, "requantization");
        check(
            |l| {
                l.act_min = 5;
                l.act_max = 4;
            },
            "clamp",
        );
        // Weights of 8 bits with 4-bit outputs: the clamp must fit 4 bits.
        let mut layer = good.clone();
        layer.output = QuantParams::new(1.0, 0, 4).unwrap();
        layer.weights[0] = 200;
        assert!(reason_mentions(layer.validate(false).unwrap_err(), "clamp"));
        layer.act_max = 15;
        assert!(layer.validate(false).is_ok());
        assert_eq!(
            layer.bits(),
            LayerBits {
                weight_bits: 8,
                act_bits: 4
            }
        );
        layer.weight_bits = 4;
        assert!(reason_mentions(
            layer.validate(false).unwrap_err(),
            "weights"
        ));
        let mut layer = good.clone();
        layer.shift.push(1);
        assert!(matches!(
            layer.validate(false),
            Err(QuantError::ShapeMismatch {
                expected: 1,
                found: 2,
                ..
            })
        ));
        for bits in [9, 1] {
            let mut layer = good.clone();
            layer.weight_bits = bits;
            assert!(matches!(
                layer.validate(false),
                Err(QuantError::InvalidBits { bits: b }) if b == bits
            ));
        }
    }

    #[test]
    fn per_tensor_models_need_uniform_channels() {
        let kind = LayerKind::Linear {
            in_features: 2,
            out_features: 3,
        };
        let good = unit_layer(kind, vec![1, 2, 3, 4, 5, 6], 1, vec![0; 3], 0);
        assert!(good.is_per_tensor());
        let edits: [fn(&mut QuantLayer); 4] = [
            |l| l.weight_zero_points[2] = 7,
            |l| {
                // M halves with S_w: (2^30, 0) represents 0.5.
                l.weight_scales[1] = 0.5;
                l.shift[1] = 0;
            },
            // A multiplier one unit off, still within the tolerance of M = 1.
            |l| l.m0[0] = (1 << 30) + 1,
            |l| {
                l.weight_scales[2] = 2.0;
                l.shift[2] = 2;
            },
        ];
        for edit in edits {
            let mut layer = good.clone();
            edit(&mut layer);
            assert!(!layer.is_per_tensor());
            assert!(layer.validate(true).is_ok());
            let err = layer.validate(false).unwrap_err();
            assert!(reason_mentions(err, "weight parameters"));
        }
    }

    #[test]
    fn dequantized_weights() {
        let mut layer = unit_layer(linear(2), vec![1, 4], 2, vec![0], 0);
        layer.weight_scales[0] = 0.5;
        assert_eq!(layer.dequantize_weights().unwrap(), vec![-0.5, 1.0]);
    }
}
