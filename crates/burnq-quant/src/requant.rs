//! Requantization of one output channel: from an `i32` accumulator to a `u8` code
//! (Jacob et al. 2018, §2.2 and §2.4).
//!
//! The accumulator `acc` already includes the bias (the bias has scale `S_in·S_w` and zero
//! point 0, so it is added inside the accumulator). It represents `r = S_in·S_w·acc`; the output
//! code must represent `r = S_out·(q − Z_out)`, so `q = Z_out + acc·M` with
//! `M = S_in·S_w / S_out`, computed in three named stages:
//!
//! 1. **scale**: `y = multiply_by_quantized_multiplier(acc, m0, shift)` ≈ `round(acc·M)`;
//! 2. **offset**: `y + Z_out` (saturating in `i32`; the clamp follows, so saturation never
//!    changes a result);
//! 3. **clamp**: to `[act_min, act_max]`, then cast to `u8`. A ReLU is folded into the clamp:
//!    `act_min = Z_out` (the code of real 0) for ReLU layers, `act_min = 0` otherwise;
//!    `act_max = 2^bits − 1`.

use crate::fixedpoint::multiply_by_quantized_multiplier;

/// The requantization of one output channel: `q = clamp(Z_out + acc·M, act_min, act_max)`
/// with `M = m0 · 2^(shift − 31)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requant {
    /// Q0.31 mantissa of `M`, in `[2^30, 2^31)` (or 0 for `M = 0`).
    pub m0: i32,
    /// Power-of-two exponent of `M`.
    pub shift: i32,
    /// Output zero point `Z_out`.
    pub output_zero_point: i32,
    /// Lowest output code (`Z_out` when a ReLU is folded in).
    pub act_min: u8,
    /// Highest output code (`2^bits − 1`).
    pub act_max: u8,
}

impl Requant {
    /// Stage 1, scale: `y = round(acc·M)` with TFLite's double rounding.
    pub fn scale(&self, acc: i32) -> i32 {
        multiply_by_quantized_multiplier(acc, self.m0, self.shift)
    }

    /// Stages 2 and 3, offset and clamp: `clamp(y + Z_out, act_min, act_max)` as `u8`.
    ///
    /// If `act_min > act_max` (which model validation rejects) the result is `act_max`.
    pub fn offset_and_clamp(&self, y: i32) -> u8 {
        let q = y
            .saturating_add(self.output_zero_point)
            .max(i32::from(self.act_min))
            .min(i32::from(self.act_max));
        q as u8
    }

    /// All three stages: accumulator to output code.
    pub fn apply(&self, acc: i32) -> u8 {
        self.offset_and_clamp(self.scale(acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_hand_computed() {
        // M = 0.25 (m0 = 2^30, shift = −1), Z_out = 10, no ReLU.
        let r = Requant {
            m0: 1 << 30,
            shift: -1,
            output_zero_point: 10,
            act_min: 0,
            act_max: 255,
        };
        assert_eq!(r.scale(100), 25);
        assert_eq!(r.scale(-100), -25);
        assert_eq!(r.apply(100), 35);
        assert_eq!(r.apply(-100), 0);
        assert_eq!(r.apply(-40), 0);
        assert_eq!(r.apply(-36), 1);
        assert_eq!(r.apply(1000), 255);
        assert_eq!(r.apply(i32::MAX), 255);
        // acc = 6: exactly 1.5; the high mul gives 3, then 3 / 2 = 1.5 rounds away to 2.
        assert_eq!(r.apply(6), 12);
    }

    #[test]
    fn relu_is_the_lower_clamp() {
        let r = Requant {
            m0: 1 << 30,
            shift: 1,
            output_zero_point: 7,
            act_min: 7,
            act_max: 15,
        };
        assert_eq!(r.apply(-3), 7);
        assert_eq!(r.apply(0), 7);
        assert_eq!(r.apply(3), 10);
        assert_eq!(r.apply(100), 15);
    }

    #[test]
    fn inverted_clamp_gives_act_max() {
        let r = Requant {
            m0: 1 << 30,
            shift: 1,
            output_zero_point: 0,
            act_min: 9,
            act_max: 4,
        };
        assert_eq!(r.apply(0), 4);
        assert_eq!(r.apply(100), 4);
    }

    #[test]
    fn offset_saturates() {
        let r = Requant {
            m0: 0,
            shift: 0,
            output_zero_point: 255,
            act_min: 0,
            act_max: 255,
        };
        assert_eq!(r.offset_and_clamp(i32::MAX), 255);
        assert_eq!(r.offset_and_clamp(i32::MIN), 0);
        assert_eq!(r.apply(12345), 255);
    }
}
