//! The one derivation of a layer's integer parameters from its float weights and its
//! activation grids (Jacob et al. 2018, §2.2–2.4), shared by the converter ([`crate::convert`])
//! and by quantization-aware training, which must compute exactly what the converter will:
//!
//! 1. weight grids [`weight_params`]: asymmetric, `weight_bits` bits, from the weights'
//!    `[min, max]` widened to contain 0 ([`QuantParams::from_range`]), one per tensor or one
//!    per output channel;
//! 2. accumulator scales [`accumulator_scales`]: `S_acc[o] = S_in·S_w[o]` in `f64`, the real
//!    value of one unit of the `i32` accumulator (and the scale of the bias);
//! 3. requantizers ([`LayerQuantization::derive`]): `M[o] = S_acc[o]/S_out` as `(m0[o],
//!    shift[o])` ([`quantize_multiplier`]), output zero point `Z_out`, clamp
//!    `[Z_out (ReLU folded) or 0, qmax_out]`;
//! 4. codes: weights `q = clamp(round(w/S_w) + Z_w, 0, qmax)`, bias
//!    `q_b[o] = round(b[o]/S_acc[o])` ([`quantize_bias`]), both half away from zero.

use burnq_arch::arch::Activation;

use crate::{
    ConvertOptions, LayerKind, QuantError, QuantLayer, QuantParams, Requant, quantize_multiplier,
    range,
};

/// The weight grid of each output channel: the min/max of that channel's `fan_in` weights
/// (`per_channel`) or of the whole tensor (repeated `out_channels` times), on a `bits`-bit
/// grid. `weights` is row-major `[out_channels, fan_in]`.
pub fn weight_params(
    weights: &[f32],
    out_channels: usize,
    bits: u8,
    per_channel: bool,
) -> Result<Vec<QuantParams>, QuantError> {
    let grid = |values: &[f32]| {
        let (min, max) = range::min_max(values);
        QuantParams::from_range(min, max, bits)
    };
    if per_channel {
        let fan_in = weights.len() / out_channels.max(1);
        weights.chunks(fan_in.max(1)).map(grid).collect()
    } else {
        Ok(vec![grid(weights)?; out_channels])
    }
}

/// `S_acc[o] = S_in·S_w[o]` in `f64`: the real value of one accumulator unit per output
/// channel, and the scale the bias is quantized at.
pub fn accumulator_scales(input: QuantParams, weights: &[QuantParams]) -> Vec<f64> {
    weights
        .iter()
        .map(|w| f64::from(input.scale()) * f64::from(w.scale()))
        .collect()
}

/// `round(bias / bias_scale)`, half away from zero, saturated to `[i32::MIN, i32::MAX]`.
/// `bias_scale = S_in·S_w` is the accumulator's scale.
pub fn quantize_bias(bias: f32, bias_scale: f64) -> i32 {
    (f64::from(bias) / bias_scale)
        .round()
        .clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32
}

/// The output clamp `[act_min, act_max]` on `output`'s codes with `activation` folded in:
/// `act_min = Z_out` (the code of real 0) for ReLU and ReLU6, else 0; `act_max` the code of
/// real 6 (`output.quantize(6.0)`: nearest, at most `qmax_out`) for ReLU6, else `qmax_out`.
pub fn output_clamp(output: QuantParams, activation: Activation) -> (u8, u8) {
    let z = output.zero_point() as u8;
    match activation {
        Activation::None => (0, output.qmax() as u8),
        Activation::Relu => (z, output.qmax() as u8),
        Activation::Relu6 => (z, output.quantize(6.0)),
    }
}

/// Every integer parameter of one layer except its codes: what the engine needs to turn the
/// layer's `i32` accumulators into output codes, and the grids the codes are on.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerQuantization {
    /// The input grid (`S_in`, `Z_in`).
    pub input: QuantParams,
    /// The weight grid of each output channel (all equal per tensor).
    pub weights: Vec<QuantParams>,
    /// `S_in·S_w[o]` per output channel, `f64`.
    pub accumulator_scales: Vec<f64>,
    /// The output grid (`S_out`, `Z_out`, `act_bits`).
    pub output: QuantParams,
    /// The requantization of each output channel.
    pub requants: Vec<Requant>,
}

impl LayerQuantization {
    /// Derives a layer's parameters from its float `weights` (row-major `[out_channels,
    /// fan_in]`), its input and output grids, the activation folded into the output clamp,
    /// and the weight width and granularity of `options` — the layer's own options, which
    /// with per-layer widths differ from layer to layer ([`crate::QuantScheme::layer`]).
    /// Errors on a weight range or a multiplier that cannot be represented.
    pub fn derive(
        weights: &[f32],
        out_channels: usize,
        input: QuantParams,
        output: QuantParams,
        activation: Activation,
        options: &ConvertOptions,
    ) -> Result<Self, QuantError> {
        let weights = weight_params(
            weights,
            out_channels,
            options.weight_bits,
            options.per_channel,
        )?;
        Self::from_grids(input, weights, output, activation)
    }

    /// The parameters of a layer whose weight grids are already known (one per output
    /// channel, all of one width): steps 2 and 3 of the derivation.
    pub fn from_grids(
        input: QuantParams,
        weights: Vec<QuantParams>,
        output: QuantParams,
        activation: Activation,
    ) -> Result<Self, QuantError> {
        if let Some(w) = weights.iter().find(|w| w.bits() != weights[0].bits()) {
            return Err(QuantError::InvalidValue {
                what: "weight grids".into(),
                reason: format!(
                    "channels of {} and {} bits: a layer's weights have one width",
                    weights[0].bits(),
                    w.bits()
                ),
            });
        }
        let accumulator_scales = accumulator_scales(input, &weights);
        let (act_min, act_max) = output_clamp(output, activation);
        let requants = accumulator_scales
            .iter()
            .map(|&s| {
                let (m0, shift) = quantize_multiplier(s / f64::from(output.scale()))?;
                Ok(Requant {
                    m0,
                    shift,
                    output_zero_point: output.zero_point(),
                    act_min,
                    act_max,
                })
            })
            .collect::<Result<_, QuantError>>()?;
        Ok(Self {
            input,
            weights,
            accumulator_scales,
            output,
            requants,
        })
    }

    /// Bit width of the weight codes (of every channel's grid).
    pub fn weight_bits(&self) -> u8 {
        self.weights
            .first()
            .map_or(crate::MAX_BITS, QuantParams::bits)
    }

    /// The [`QuantLayer`] `name` of geometry `kind` on these parameters: the codes of its
    /// float `weights` (`[out_channels, fan_in]`) and `bias`, its widths, grids,
    /// requantization and clamp.
    pub fn layer(&self, name: &str, kind: LayerKind, weights: &[f32], bias: &[f32]) -> QuantLayer {
        let (act_min, act_max) = self
            .requants
            .first()
            .map_or((0, self.output.qmax() as u8), |r| (r.act_min, r.act_max));
        QuantLayer {
            name: name.to_owned(),
            kind,
            weight_bits: self.weight_bits(),
            weights: self.quantize_weights(weights),
            weight_zero_points: self.weights.iter().map(QuantParams::zero_point).collect(),
            weight_scales: self.weights.iter().map(QuantParams::scale).collect(),
            bias: self.quantize_bias(bias),
            input: self.input,
            output: self.output,
            m0: self.requants.iter().map(|r| r.m0).collect(),
            shift: self.requants.iter().map(|r| r.shift).collect(),
            act_min,
            act_max,
        }
    }

    /// The weight codes, row-major `[out_channels, fan_in]`, each row on its channel's grid.
    pub fn quantize_weights(&self, weights: &[f32]) -> Vec<u8> {
        let fan_in = weights.len() / self.weights.len().max(1);
        weights
            .chunks(fan_in.max(1))
            .zip(&self.weights)
            .flat_map(|(row, grid)| row.iter().map(|&w| grid.quantize(w)))
            .collect()
    }

    /// The bias codes at the accumulator scale of each channel ([`quantize_bias`]).
    pub fn quantize_bias(&self, bias: &[f32]) -> Vec<i32> {
        bias.iter()
            .zip(&self.accumulator_scales)
            .map(|(&b, &s)| quantize_bias(b, s))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_rounds_and_saturates() {
        assert_eq!(quantize_bias(2.5, 1.0), 3);
        assert_eq!(quantize_bias(-2.5, 1.0), -3);
        assert_eq!(quantize_bias(1.0, 0.25), 4);
        assert_eq!(quantize_bias(1e30, 1e-6), i32::MAX);
        assert_eq!(quantize_bias(-1e30, 1e-6), i32::MIN);
        assert_eq!(quantize_bias(f32::MAX, 1e-300), i32::MAX);
    }

    #[test]
    fn weight_grids_per_tensor_and_per_channel() {
        // [−1, 2] → 3/3 = 1; [0, 0.5] (widened to 0) → 0.5/3. Per tensor: [−1, 2] → 1.
        let w = [-1.0f32, 2.0, 0.5, 0.25];
        let per_channel = weight_params(&w, 2, 2, true).unwrap();
        assert_eq!(per_channel[0].scale(), 1.0);
        assert_eq!(per_channel[1].scale(), 0.5 / 3.0);
        assert_eq!(
            (per_channel[0].zero_point(), per_channel[1].zero_point()),
            (1, 0)
        );
        let per_tensor = weight_params(&w, 2, 2, false).unwrap();
        assert_eq!(
            per_tensor,
            vec![QuantParams::from_range(-1.0, 2.0, 2).unwrap(); 2]
        );
    }

    #[test]
    fn derivation_composes_the_steps() {
        let w = [-1.0f32, 2.0, 0.5, 0.25];
        let input = QuantParams::from_range(0.0, 4.0, 8).unwrap();
        let output = QuantParams::from_range(-2.0, 6.0, 4).unwrap();
        let options = ConvertOptions {
            weight_bits: 3,
            act_bits: 4,
            per_channel: true,
        };
        let q =
            LayerQuantization::derive(&w, 2, input, output, Activation::Relu, &options).unwrap();
        assert_eq!(q.weights, weight_params(&w, 2, 3, true).unwrap());
        for (o, grid) in q.weights.iter().enumerate() {
            let s = f64::from(input.scale()) * f64::from(grid.scale());
            assert_eq!(q.accumulator_scales[o], s);
            let (m0, shift) = quantize_multiplier(s / f64::from(output.scale())).unwrap();
            let r = q.requants[o];
            assert_eq!(
                (r.m0, r.shift, r.output_zero_point),
                (m0, shift, output.zero_point())
            );
            assert_eq!(
                (i32::from(r.act_min), i32::from(r.act_max)),
                (output.zero_point(), 15)
            );
        }
        let codes = q.quantize_weights(&w);
        assert_eq!(
            codes[..2],
            [q.weights[0].quantize(-1.0), q.weights[0].quantize(2.0)]
        );
        assert_eq!(
            codes[2..],
            [q.weights[1].quantize(0.5), q.weights[1].quantize(0.25)]
        );
        assert_eq!(
            q.quantize_bias(&[0.1, -0.1]),
            [
                quantize_bias(0.1, q.accumulator_scales[0]),
                quantize_bias(-0.1, q.accumulator_scales[1])
            ]
        );
        let no_relu =
            LayerQuantization::derive(&w, 2, input, output, Activation::None, &options).unwrap();
        assert_eq!(no_relu.requants[0].act_min, 0);
        // ReLU6: [Z, code of 6]; 6 beyond the grid clamps to qmax.
        let out8 = QuantParams::from_range(-1.0, 10.0, 8).unwrap();
        assert_eq!(
            output_clamp(out8, Activation::Relu6),
            (out8.zero_point() as u8, out8.quantize(6.0))
        );
        assert!(out8.quantize(6.0) < 255);
        assert_eq!(
            output_clamp(output, Activation::Relu6),
            (output.zero_point() as u8, 15)
        );
    }
}
