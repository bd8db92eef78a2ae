//! The integer residual add, as TFLite's quantized `Add` computes it (reference_ops `Add` for
//! `uint8`): both inputs are brought to a common scale with fixed-point multipliers at 20
//! extra bits of precision, summed in `i32`, and the sum requantized.
//!
//! For inputs `a` (scale `S_a`, zero point `Z_a`), `b` (`S_b`, `Z_b`) and output (`S_o`,
//! `Z_o`), with `S_2 = 2·max(S_a, S_b)`:
//! 1. `a' = MBQM((q_a − Z_a)·2^20, M_a)`, `M_a = S_a/S_2 ≤ 1/2`; `b'` likewise with `M_b`;
//! 2. `s = a' + b'` (exact in `i32`: each term is below `2^27` in magnitude);
//! 3. `q = clamp(Z_o + MBQM(s, M_o), act_min, act_max)`, `M_o = S_2/(2^20·S_o)`;
//!
//! where `MBQM` is [`multiply_by_quantized_multiplier`] (double rounding, the crate's
//! rounding contract) and the clamp folds a following ReLU/ReLU6 ([`output_clamp`]).

use burnq_arch::arch::Activation;

use crate::derive::output_clamp;
use crate::{QuantError, QuantParams, multiply_by_quantized_multiplier, quantize_multiplier};

/// Extra bits of precision the add's inputs are shifted left by (TFLite's `left_shift`).
pub const ADD_LEFT_SHIFT: u32 = 20;

/// A fixed-point multiplier `m0·2^(shift − 31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiplier {
    /// Q0.31 mantissa in `[2^30, 2^31)`.
    pub m0: i32,
    /// Power-of-two exponent.
    pub shift: i32,
}

impl Multiplier {
    fn new(real: f64) -> Result<Self, QuantError> {
        let (m0, shift) = quantize_multiplier(real)?;
        Ok(Self { m0, shift })
    }

    fn apply(&self, x: i32) -> i32 {
        multiply_by_quantized_multiplier(x, self.m0, self.shift)
    }
}

/// A residual add's integer parameters, derived from its three grids ([`QuantAdd::derive`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantAdd {
    /// Grid of the block's input (the skip connection).
    pub skip: QuantParams,
    /// Grid of the block body's output.
    pub body: QuantParams,
    /// Grid of the sum.
    pub output: QuantParams,
    /// `M_a` for the skip input.
    pub skip_multiplier: Multiplier,
    /// `M_b` for the body's output.
    pub body_multiplier: Multiplier,
    /// `M_o` for the sum.
    pub output_multiplier: Multiplier,
    /// Lowest output code (`Z_o` with a folded ReLU/ReLU6).
    pub act_min: u8,
    /// Highest output code.
    pub act_max: u8,
}

impl QuantAdd {
    /// The parameters of `skip + body` on `output`, `activation` folded into the clamp.
    /// Errors if a multiplier cannot be represented, or if an input has more than 8 bits'
    /// worth of offsets (never, for valid grids).
    pub fn derive(
        skip: QuantParams,
        body: QuantParams,
        output: QuantParams,
        activation: Activation,
    ) -> Result<Self, QuantError> {
        let twice_max = 2.0 * f64::from(skip.scale()).max(f64::from(body.scale()));
        let (act_min, act_max) = output_clamp(output, activation);
        Ok(Self {
            skip,
            body,
            output,
            skip_multiplier: Multiplier::new(f64::from(skip.scale()) / twice_max)?,
            body_multiplier: Multiplier::new(f64::from(body.scale()) / twice_max)?,
            output_multiplier: Multiplier::new(
                twice_max / (f64::from(1u32 << ADD_LEFT_SHIFT) * f64::from(output.scale())),
            )?,
            act_min,
            act_max,
        })
    }

    /// The output code of `skip_code + body_code` (steps 1–3 of the module docs).
    pub fn apply(&self, skip_code: u8, body_code: u8) -> u8 {
        let shifted = |q: u8, p: QuantParams| (i32::from(q) - p.zero_point()) << ADD_LEFT_SHIFT;
        let a = self.skip_multiplier.apply(shifted(skip_code, self.skip));
        let b = self.body_multiplier.apply(shifted(body_code, self.body));
        let y = self.output_multiplier.apply(a + b);
        y.saturating_add(self.output.zero_point())
            .clamp(i32::from(self.act_min), i32::from(self.act_max)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_matches_real_sum_within_one_code() {
        let skip = QuantParams::from_range(-1.0, 3.0, 8).unwrap();
        let body = QuantParams::from_range(-2.5, 0.5, 8).unwrap();
        let output = QuantParams::from_range(-3.0, 3.5, 8).unwrap();
        let add = QuantAdd::derive(skip, body, output, Activation::None).unwrap();
        for a in (0..=255u8).step_by(7) {
            for b in (0..=255u8).step_by(5) {
                let real = skip.dequantize(a) + body.dequantize(b);
                let want = output.quantize(real);
                let got = add.apply(a, b);
                assert!(
                    (i32::from(got) - i32::from(want)).abs() <= 1,
                    "{a} {b}: {got} vs {want}"
                );
            }
        }
        // Real zero plus real zero is exactly the output zero point.
        let z = |p: QuantParams| p.zero_point() as u8;
        assert_eq!(add.apply(z(skip), z(body)), z(output));
    }

    #[test]
    fn add_hand_values_and_clamps() {
        // Equal scales 0.5, zero points 0: M_a = M_b = 1/2, M_o = 1/2^20 · 2·0.5/0.5 = 2^-19.
        let p = QuantParams::new(0.5, 0, 8).unwrap();
        let add = QuantAdd::derive(p, p, p, Activation::None).unwrap();
        assert_eq!(
            (add.skip_multiplier.m0, add.skip_multiplier.shift),
            (1 << 30, 0)
        );
        assert_eq!(add.apply(3, 4), 7);
        assert_eq!(add.apply(200, 100), 255);
        // ReLU6 on a grid reaching 10: the sum stops at the code of 6.
        let out = QuantParams::from_range(-2.0, 10.0, 8).unwrap();
        let relu6 = QuantAdd::derive(p, p, out, Activation::Relu6).unwrap();
        assert_eq!(relu6.apply(10, 10), out.quantize(6.0));
        assert_eq!(relu6.apply(0, 0), out.zero_point() as u8);
    }
}
