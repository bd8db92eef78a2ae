//! Asymmetric affine quantization parameters (Jacob et al. 2018, §2.1).
//!
//! A real value `r` is represented by an unsigned integer `q` through `r = S·(q − Z)`, where the
//! scale `S` is a positive `f32` (real units per quantization step) and the zero point `Z` is an
//! integer in `[0, 2^bits − 1]`: the code of real 0, which is therefore exactly representable.
//! Codes are stored in a `u8` whatever the bit width (2 to 8 bits; `qmin = 0`,
//! `qmax = 2^bits − 1`).
//!
//! The scale is an `f32`, as in TFLite: it is only used offline, to derive the integer
//! multipliers (computed in `f64` from these `f32` values) and to dequantize results.

use crate::QuantError;

/// Smallest supported bit width.
pub const MIN_BITS: u8 = 2;
/// Largest supported bit width (codes are stored in a `u8`).
pub const MAX_BITS: u8 = 8;

/// The largest code `qmax = 2^bits − 1` of a bit width, or an error outside `2..=8`.
pub fn qmax(bits: u8) -> Result<i32, QuantError> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok((1 << bits) - 1)
    } else {
        Err(QuantError::InvalidBits { bits })
    }
}

/// Scale, zero point and bit width of one quantized tensor: `r = scale·(q − zero_point)`.
///
/// Construction validates: `bits` in `2..=8`, `scale` a finite normal positive `f32`,
/// `zero_point` in `[0, 2^bits − 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    scale: f32,
    zero_point: i32,
    bits: u8,
}

impl QuantParams {
    /// Raw 8-bit pixel bytes as real values in `[0, 1]`: `S = 1/255`, `Z = 0`, 8 bits. This is
    /// conv1's input once the input normalization is folded into conv1.
    pub const RAW_PIXELS: Self = Self {
        scale: 1.0 / 255.0,
        zero_point: 0,
        bits: 8,
    };

    /// Parameters from explicit values, validated.
    pub fn new(scale: f32, zero_point: i32, bits: u8) -> Result<Self, QuantError> {
        let qmax = qmax(bits)?;
        if !scale.is_normal() || scale < 0.0 {
            return Err(QuantError::InvalidScale { scale });
        }
        if !(0..=qmax).contains(&zero_point) {
            return Err(QuantError::InvalidZeroPoint { zero_point, qmax });
        }
        Ok(Self {
            scale,
            zero_point,
            bits,
        })
    }

    /// Parameters covering the real range `[min, max]` with `bits`-bit codes (paper §2.1).
    ///
    /// The range is first widened to contain 0: `min' = min(min, 0)`, `max' = max(max, 0)`.
    /// Then `S = (max' − min') / (2^bits − 1)` (computed in `f64`, stored as `f32`) and
    /// `Z = round(qmin − min'/S)` (half away from zero) clamped to `[0, 2^bits − 1]`, an
    /// integer so that real 0 is exactly representable.
    ///
    /// Degenerate range: when `min' = max' = 0` every value is 0; the fallback is `S = 1.0`,
    /// `Z = 0` (no division by zero). Non-finite ends, `min > max`, or a range so narrow that
    /// `S` is not a normal `f32` are errors.
    pub fn from_range(min: f32, max: f32, bits: u8) -> Result<Self, QuantError> {
        let qmax = qmax(bits)?;
        let invalid = |reason| QuantError::InvalidRange { min, max, reason };
        if !min.is_finite() || !max.is_finite() {
            return Err(invalid("ends must be finite"));
        }
        if min > max {
            return Err(invalid("min > max"));
        }
        let lo = f64::from(min.min(0.0));
        let hi = f64::from(max.max(0.0));
        if lo == hi {
            return Self::new(1.0, 0, bits);
        }
        let scale = ((hi - lo) / f64::from(qmax)) as f32;
        if !scale.is_normal() {
            return Err(invalid("too narrow for a normal f32 scale"));
        }
        let zero_point = (-lo / f64::from(scale)).round().clamp(0.0, f64::from(qmax)) as i32;
        Self::new(scale, zero_point, bits)
    }

    /// The scale `S`, real units per step.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The zero point `Z`, the code of real 0.
    pub fn zero_point(&self) -> i32 {
        self.zero_point
    }

    /// The bit width.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The largest code, `2^bits − 1`.
    pub fn qmax(&self) -> i32 {
        (1 << self.bits) - 1
    }

    /// The largest `|q − Z|` over codes `q` in `[0, qmax]`: `max(Z, qmax − Z)`.
    pub fn max_abs_offset(&self) -> i32 {
        self.zero_point.max(self.qmax() - self.zero_point)
    }

    /// `q = clamp(round(x / S) + Z, 0, qmax)`, rounding half away from zero (`x / S` in `f64`).
    ///
    /// Infinities saturate to `0` or `qmax`; NaN maps to `Z` (real 0).
    pub fn quantize(&self, x: f32) -> u8 {
        if x.is_nan() {
            return self.zero_point as u8;
        }
        let q = (f64::from(x) / f64::from(self.scale)).round() + f64::from(self.zero_point);
        q.clamp(0.0, f64::from(self.qmax())) as u8
    }

    /// `r = S·(q − Z)`, exact up to one `f32` rounding of the product.
    pub fn dequantize(&self, q: u8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }

    /// The real range the codes cover, `[S·(0 − Z), S·(qmax − Z)]`.
    pub fn covered(&self) -> (f32, f32) {
        (self.dequantize(0), self.dequantize(self.qmax() as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmax_per_bit_width() {
        for bits in 2..=8u8 {
            assert_eq!(qmax(bits).unwrap(), (1 << bits) - 1);
            let p = QuantParams::from_range(-1.0, 1.0, bits).unwrap();
            assert_eq!(p.qmax(), (1 << bits) - 1);
            assert_eq!(i32::from(p.quantize(1e9)), p.qmax());
            assert_eq!(p.quantize(-1e9), 0);
        }
        assert_eq!(qmax(3).unwrap(), 7);
        assert_eq!(qmax(8).unwrap(), 255);
        for bits in [0, 1, 9, 255] {
            assert!(matches!(qmax(bits), Err(QuantError::InvalidBits { bits: b }) if b == bits));
        }
    }

    #[test]
    fn zero_is_exactly_representable() {
        for (min, max) in [
            (-1.0, 3.0),
            (-0.4242, 2.8201),
            (0.5, 7.0),
            (-5.0, -0.25),
            (-1e-3, 1e3),
        ] {
            for bits in 2..=8 {
                let p = QuantParams::from_range(min, max, bits).unwrap();
                assert_eq!(i32::from(p.quantize(0.0)), p.zero_point());
                assert_eq!(p.dequantize(p.zero_point() as u8), 0.0);
            }
        }
    }

    #[test]
    fn range_is_widened_to_contain_zero() {
        let p = QuantParams::from_range(2.0, 6.0, 8).unwrap();
        assert_eq!(p.zero_point(), 0);
        assert_eq!(p.scale(), (6.0f64 / 255.0) as f32);
        let n = QuantParams::from_range(-6.0, -2.0, 8).unwrap();
        assert_eq!(n.zero_point(), 255);
    }

    #[test]
    fn hand_computed_params() {
        // [-1, 3] at 8 bits: S = 4/255, Z = round(255/4) = round(63.75) = 64.
        let p = QuantParams::from_range(-1.0, 3.0, 8).unwrap();
        assert_eq!(p.scale(), (4.0f64 / 255.0) as f32);
        assert_eq!(p.zero_point(), 64);
        // [-1, 2] at 2 bits: S = 1, Z = 1; codes 0..=3 are -1, 0, 1, 2.
        let p = QuantParams::from_range(-1.0, 2.0, 2).unwrap();
        assert_eq!((p.scale(), p.zero_point()), (1.0, 1));
        assert_eq!([0, 1, 2, 3].map(|q| p.dequantize(q)), [-1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn quantize_rounds_half_away_from_zero() {
        let p = QuantParams::new(1.0, 8, 4).unwrap();
        assert_eq!(p.quantize(2.5), 11);
        assert_eq!(p.quantize(-2.5), 5);
        assert_eq!(p.quantize(2.4999), 10);
        assert_eq!(p.quantize(-0.5), 7);
        assert_eq!(p.quantize(0.5), 9);
        assert_eq!(p.quantize(f32::INFINITY), 15);
        assert_eq!(p.quantize(f32::NEG_INFINITY), 0);
        assert_eq!(p.quantize(f32::NAN), 8);
    }

    #[test]
    fn degenerate_range_falls_back() {
        for (min, max) in [(0.0, 0.0), (-0.0, 0.0)] {
            let p = QuantParams::from_range(min, max, 8).unwrap();
            assert_eq!((p.scale(), p.zero_point()), (1.0, 0));
            assert_eq!(p.quantize(0.0), 0);
        }
    }

    #[test]
    fn non_finite_and_inverted_ranges_are_errors() {
        for (min, max) in [
            (f32::NAN, 1.0),
            (0.0, f32::NAN),
            (f32::NEG_INFINITY, 1.0),
            (0.0, f32::INFINITY),
            (2.0, 1.0),
        ] {
            assert!(matches!(
                QuantParams::from_range(min, max, 8),
                Err(QuantError::InvalidRange { .. })
            ));
        }
        assert!(matches!(
            QuantParams::from_range(0.0, 1e-43, 8),
            Err(QuantError::InvalidRange { .. })
        ));
        assert!(matches!(
            QuantParams::from_range(-1.0, 1.0, 9),
            Err(QuantError::InvalidBits { bits: 9 })
        ));
    }

    #[test]
    fn new_validates() {
        assert!(matches!(
            QuantParams::new(0.0, 0, 8),
            Err(QuantError::InvalidScale { .. })
        ));
        assert!(matches!(
            QuantParams::new(-1.0, 0, 8),
            Err(QuantError::InvalidScale { .. })
        ));
        assert!(matches!(
            QuantParams::new(f32::NAN, 0, 8),
            Err(QuantError::InvalidScale { .. })
        ));
        assert!(matches!(
            QuantParams::new(1.0, 16, 4),
            Err(QuantError::InvalidZeroPoint {
                zero_point: 16,
                qmax: 15
            })
        ));
        assert!(matches!(
            QuantParams::new(1.0, -1, 4),
            Err(QuantError::InvalidZeroPoint {
                zero_point: -1,
                qmax: 15
            })
        ));
        let p = QuantParams::new(0.5, 3, 4).unwrap();
        assert_eq!(p.max_abs_offset(), 12);
    }
}
