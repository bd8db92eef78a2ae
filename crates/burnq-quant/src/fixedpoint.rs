//! Fixed-point primitives of gemmlowp/TFLite, under their gemmlowp names: the specification of
//! how a real multiplier `M` is applied to an `i32` accumulator without floating point.
//!
//! `M` is stored as a Q0.31 mantissa `m0` in `[2^30, 2^31)` and a power-of-two exponent
//! `shift`: `M = m0 · 2^(shift − 31)`. Applying it rounds twice, exactly as TFLite's
//! `MultiplyByQuantizedMultiplier`: once in [`saturating_rounding_doubling_high_mul`] (ties
//! toward +∞) and once in [`rounding_divide_by_pot`] (ties away from zero). Every function here
//! is total: defined, without panicking, for every argument value.

use crate::QuantError;

/// Represents the real multiplier `m ≥ 0` as `(m0, shift)` with `m ≈ m0 · 2^(shift − 31)`.
///
/// Like TFLite's `QuantizeMultiplier`: `m = q · 2^shift` with `q` in `[0.5, 1)` (frexp), then
/// `m0 = round(q · 2^31)` (half away from zero), so `m0` is in `[2^30, 2^31]`; if rounding
/// reaches `2^31`, `m0` is halved and `shift` incremented. The error is at most half a unit of
/// `m0`: `|m0 · 2^(shift − 31) − m| ≤ 2^(shift − 32)`.
///
/// Special cases: `m = 0` gives `(0, 0)`; a multiplier so small that `shift < −31` (about
/// `m < 2^−32`) is flushed to `(0, 0)` as TFLite does, since every bit would be shifted out.
/// Multipliers `≥ 1` give a positive shift; `shift > 30` (`m ≥ 2^30`), negative, NaN or
/// infinite multipliers are errors.
pub fn quantize_multiplier(m: f64) -> Result<(i32, i32), QuantError> {
    let invalid = |reason| QuantError::InvalidMultiplier {
        multiplier: m,
        reason,
    };
    if !m.is_finite() {
        return Err(invalid("must be finite"));
    }
    if m < 0.0 {
        return Err(invalid("must be >= 0"));
    }
    if m == 0.0 || !m.is_normal() {
        // Zero, or subnormal (far below 2^-32): flushed to zero.
        return Ok((0, 0));
    }
    let (q, mut shift) = frexp(m);
    let mut q_fixed = (q * 2f64.powi(31)).round() as i64;
    if q_fixed == 1 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Ok((0, 0));
    }
    if shift > 30 {
        return Err(invalid("must be < 2^30"));
    }
    Ok((q_fixed as i32, shift))
}

/// `m = q · 2^e` with `q` in `[0.5, 1)`, for a normal positive `m` (C's `frexp`).
fn frexp(m: f64) -> (f64, i32) {
    const EXPONENT_MASK: u64 = 0x7ff << 52;
    let bits = m.to_bits();
    let e = ((bits & EXPONENT_MASK) >> 52) as i32 - 1022;
    let q = f64::from_bits((bits & !EXPONENT_MASK) | (1022 << 52));
    (q, e)
}

/// `round(a · b / 2^31)` as gemmlowp's `SaturatingRoundingDoublingHighMul`.
///
/// Computed as `(a·b + nudge) / 2^31` in `i64` with `nudge = 2^30` if `a·b ≥ 0` else
/// `1 − 2^30`, the division truncating toward zero. Exact ties (`a·b` an odd multiple of
/// `2^30`) therefore round toward +∞: `0.5 → 1`, `−0.5 → 0`, `−1.5 → −1`. The one overflow,
/// `a = b = i32::MIN` (`2^31·2^31 / 2^31 = 2^31`), saturates to `i32::MAX`.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab + nudge| / 2^31 ≤ 2^31 − 1 here, so the narrowing is exact.
    ((ab + nudge) / (1 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero, as gemmlowp's
/// `RoundingDivideByPOT`: `(x >> e) + (remainder > threshold)` with `mask = 2^e − 1`,
/// `remainder = x & mask`, `threshold = (mask >> 1) + (x < 0)`.
///
/// gemmlowp defines `exponent` in `0..=31`; there this is its formula bit for bit. The same
/// formula is evaluated in `i64` (exponents above 62 act as 62, which gives the same result,
/// 0) so that larger exponents give the correctly rounded result too (0, or −1 for
/// `i32::MIN / 2^32 = −0.5`) instead of an invalid shift. Examples:
/// `(5, 1) → 3`, `(−5, 1) → −3`, `(3, 1) → 2`, `(−3, 1) → −2`, `(−6, 2) → −2`.
pub fn rounding_divide_by_pot(x: i32, exponent: u32) -> i32 {
    let e = exponent.min(62);
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    ((x >> e) + i64::from(remainder > threshold)) as i32
}

/// `acc · M` for `M = m0 · 2^(shift − 31)`, as TFLite's `MultiplyByQuantizedMultiplier`
/// (double rounding):
///
/// `left = max(shift, 0)`, `right = max(−shift, 0)`,
/// `rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc · 2^left, m0), right)`.
///
/// `acc · 2^left` saturates to the `i32` range. TFLite writes it as a plain `int32`
/// multiplication, whose overflow is undefined behaviour in C++; saturation (gemmlowp's
/// `SaturatingRoundingMultiplyByPOT` convention) agrees with TFLite wherever TFLite is defined.
///
/// Double rounding example: `m0 = 2^30, shift = −1` (`M = 0.25`) maps `acc = 1` to 1, not
/// `round(0.25) = 0`: the high mul rounds `0.5` up to 1, then `1 / 2 = 0.5` rounds away to 1.
pub fn multiply_by_quantized_multiplier(acc: i32, m0: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 32) as u32;
    let right = if shift < 0 { shift.unsigned_abs() } else { 0 };
    let scaled = (i64::from(acc) << left).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, m0), right)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `round(n / 2^e)` with ties away from zero, exactly in `i128`.
    fn div_pow2_ties_away(n: i128, e: u32) -> i128 {
        let d = 1i128 << e;
        let q = (2 * n.abs() + d) / (2 * d);
        if n < 0 { -q } else { q }
    }

    /// `round(n / 2^e)` with ties toward +∞, exactly in `i128`.
    fn div_pow2_ties_up(n: i128, e: u32) -> i128 {
        (2 * n + (1i128 << e)).div_euclid(1i128 << (e + 1))
    }

    #[test]
    fn srdhm_ties_go_toward_positive_infinity() {
        // a·b = 2^30: exactly 0.5 → 1.
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 15, 1 << 15), 1);
        // a·b = −2^30: exactly −0.5 → 0.
        assert_eq!(
            saturating_rounding_doubling_high_mul(-(1 << 15), 1 << 15),
            0
        );
        // a·b = 3·2^30: exactly 1.5 → 2.
        assert_eq!(saturating_rounding_doubling_high_mul(3 << 15, 1 << 15), 2);
        // a·b = −3·2^30: exactly −1.5 → −1.
        assert_eq!(
            saturating_rounding_doubling_high_mul(3 << 15, -(1 << 15)),
            -1
        );
        // Not ties: 0.25 → 0, 0.75 → 1, −0.75 → −1.
        assert_eq!(saturating_rounding_doubling_high_mul(1 << 14, 1 << 15), 0);
        assert_eq!(saturating_rounding_doubling_high_mul(3 << 14, 1 << 15), 1);
        assert_eq!(
            saturating_rounding_doubling_high_mul(-(3 << 14), 1 << 15),
            -1
        );
    }

    #[test]
    fn srdhm_saturates_only_at_min_times_min() {
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MAX),
            -i32::MAX
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
            i32::MAX - 1
        );
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, 1 << 30),
            -(1 << 30)
        );
    }

    #[test]
    fn rdbp_ties_go_away_from_zero() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(3, 1), 2);
        assert_eq!(rounding_divide_by_pot(-3, 1), -2);
        assert_eq!(rounding_divide_by_pot(1, 1), 1);
        assert_eq!(rounding_divide_by_pot(-1, 1), -1);
        assert_eq!(rounding_divide_by_pot(6, 2), 2);
        assert_eq!(rounding_divide_by_pot(-6, 2), -2);
        assert_eq!(rounding_divide_by_pot(5, 2), 1);
        assert_eq!(rounding_divide_by_pot(-5, 2), -1);
        assert_eq!(rounding_divide_by_pot(7, 2), 2);
        assert_eq!(rounding_divide_by_pot(-7, 2), -2);
        assert_eq!(rounding_divide_by_pot(-7, 0), -7);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 32), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 32), 0);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 33), 0);
        assert_eq!(rounding_divide_by_pot(i32::MIN, u32::MAX), 0);
    }

    #[test]
    fn mbqm_rounds_twice() {
        // M = 0.25: 1 → 1 (0.5 → 1, then 0.5 → 1), not round(0.25) = 0.
        assert_eq!(multiply_by_quantized_multiplier(1, 1 << 30, -1), 1);
        // −1 → 0 (−0.5 → 0, then 0).
        assert_eq!(multiply_by_quantized_multiplier(-1, 1 << 30, -1), 0);
        // M = 0.5 with one rounding: 3 → 2, −3 → −1 (the high mul's ties go up).
        assert_eq!(multiply_by_quantized_multiplier(3, 1 << 30, 0), 2);
        assert_eq!(multiply_by_quantized_multiplier(-3, 1 << 30, 0), -1);
        // M = 3 (m0 = 3·2^29, shift = 2): exact.
        assert_eq!(multiply_by_quantized_multiplier(-7, 3 << 29, 2), -21);
        // Left shift saturates.
        assert_eq!(
            multiply_by_quantized_multiplier(1 << 30, 1 << 30, 2),
            1 << 30
        );
        assert_eq!(
            multiply_by_quantized_multiplier(-(1 << 30), 1 << 30, 2),
            -(1 << 30)
        );
        assert_eq!(
            multiply_by_quantized_multiplier(5, 1 << 30, i32::MAX),
            1 << 30
        );
        assert_eq!(multiply_by_quantized_multiplier(5, 1 << 30, i32::MIN), 0);
    }

    #[test]
    fn quantize_multiplier_hand_cases() {
        assert_eq!(quantize_multiplier(0.0).unwrap(), (0, 0));
        assert_eq!(quantize_multiplier(0.5).unwrap(), (1 << 30, 0));
        assert_eq!(quantize_multiplier(0.25).unwrap(), (1 << 30, -1));
        assert_eq!(quantize_multiplier(1.0).unwrap(), (1 << 30, 1));
        assert_eq!(quantize_multiplier(3.0).unwrap(), (3 << 29, 2));
        assert_eq!(quantize_multiplier(0.75).unwrap(), (3 << 29, 0));
        // Rounds up to 2^31: halved, shift + 1.
        assert_eq!(
            quantize_multiplier(1.0 - 2f64.powi(-40)).unwrap(),
            (1 << 30, 1)
        );
        // Flushed to zero below 2^-32; kept at 2^-32.
        assert_eq!(quantize_multiplier(2f64.powi(-33)).unwrap(), (0, 0));
        assert_eq!(quantize_multiplier(2f64.powi(-32)).unwrap(), (1 << 30, -31));
        assert_eq!(
            quantize_multiplier(f64::MIN_POSITIVE / 4.0).unwrap(),
            (0, 0)
        );
        assert_eq!(quantize_multiplier(2f64.powi(29)).unwrap(), (1 << 30, 30));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 2f64.powi(30)] {
            assert!(matches!(
                quantize_multiplier(bad),
                Err(QuantError::InvalidMultiplier { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn srdhm_matches_exact_formula(a in any::<i32>(), b in any::<i32>()) {
            let exact = div_pow2_ties_up(i128::from(a) * i128::from(b), 31);
            let expected = exact.min(i128::from(i32::MAX)) as i32;
            prop_assert_eq!(saturating_rounding_doubling_high_mul(a, b), expected);
        }

        #[test]
        fn rdbp_matches_exact_formula(x in any::<i32>(), e in 0u32..=64) {
            let expected = div_pow2_ties_away(i128::from(x), e.min(100)) as i32;
            prop_assert_eq!(rounding_divide_by_pot(x, e), expected);
        }

        #[test]
        fn mbqm_matches_composed_formula(
            acc in any::<i32>(),
            m0 in (1i32 << 30)..=i32::MAX,
            shift in -31i32..=30,
        ) {
            let left = shift.max(0) as u32;
            let right = (-shift).max(0) as u32;
            let scaled = (i128::from(acc) << left)
                .clamp(i128::from(i32::MIN), i128::from(i32::MAX));
            let high = div_pow2_ties_up(scaled * i128::from(m0), 31)
                .min(i128::from(i32::MAX));
            let expected = div_pow2_ties_away(high, right) as i32;
            prop_assert_eq!(multiply_by_quantized_multiplier(acc, m0, shift), expected);
        }

        #[test]
        fn mbqm_is_within_one_of_exact_product(
            acc in -(1i32 << 24)..(1 << 24),
            m in 1e-6f64..1.0,
        ) {
            let (m0, shift) = quantize_multiplier(m).unwrap();
            let got = f64::from(multiply_by_quantized_multiplier(acc, m0, shift));
            let exact = f64::from(acc) * m0 as f64 * 2f64.powi(shift - 31);
            prop_assert!((got - exact).abs() <= 1.0, "{got} vs {exact}");
        }

        #[test]
        fn quantize_multiplier_round_trips(m in 2f64.powi(-31)..2f64.powi(29)) {
            let (m0, shift) = quantize_multiplier(m).unwrap();
            prop_assert!(((1 << 30)..=i32::MAX).contains(&m0));
            prop_assert!((-31..=30).contains(&shift));
            let unit = 2f64.powi(shift - 31);
            let represented = f64::from(m0) * unit;
            prop_assert!((represented - m).abs() <= unit / 2.0, "{m}: {m0} {shift}");
            prop_assert_eq!(shift > 0, m >= 1.0 - 2f64.powi(-32));
        }
    }
}
