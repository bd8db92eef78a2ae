//! The input normalization of a network: one type for training (the batcher), calibration,
//! QAT and conversion (folded into the first layer), and the model file.

use serde::{Deserialize, Serialize};

/// The normalization applied to raw pixels during training: `x = (p/255 − mean) / std` for a
/// pixel byte `p`; `mean` and `std` in units of `p/255`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean, in units of `p/255`.
    pub mean: f32,
    /// Standard deviation, in units of `p/255`; must be finite and > 0.
    pub std: f32,
}

/// A normalization whose mean is not finite or whose std is not a finite positive number.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("input normalization: mean {mean} must be finite, std {std} finite and > 0")]
pub struct InvalidNormalization {
    /// The offending mean.
    pub mean: f32,
    /// The offending standard deviation.
    pub std: f32,
}

impl Normalization {
    /// The MNIST statistics of the PyTorch tutorial: mean 0.1307, std 0.3081.
    pub const MNIST: Self = Self {
        mean: 0.1307,
        std: 0.3081,
    };

    /// The Fashion-MNIST training-set statistics: mean 0.2860, std 0.3530.
    pub const FASHION_MNIST: Self = Self {
        mean: 0.2860,
        std: 0.3530,
    };

    /// Normalizes one raw pixel byte: `(p/255 − mean)/std`.
    pub fn apply(&self, pixel: u8) -> f32 {
        (f32::from(pixel) / 255.0 - self.mean) / self.std
    }

    /// The pixel byte closest to the mean, `round(255·mean)` clamped to `[0, 255]`: the code
    /// a convolution of raw pixels pads with once the normalization is folded into it (the
    /// nearest code to a normalized 0, which no byte represents exactly).
    pub fn padding_pixel(&self) -> u8 {
        (255.0 * self.mean).round().clamp(0.0, 255.0) as u8
    }

    /// The normalized value of [`Normalization::padding_pixel`]: what a float network pads its
    /// first layer's input with, so that float and integer pad the same real value
    /// (`(33/255 − 0.1307)/0.3081 ≈ −0.0041` for MNIST, not 0).
    pub fn padding_value(&self) -> f32 {
        self.apply(self.padding_pixel())
    }

    /// Errors unless `mean` is finite and `std` finite, normal and > 0.
    pub fn check(&self) -> Result<(), InvalidNormalization> {
        if self.mean.is_finite() && self.std.is_normal() && self.std > 0.0 {
            Ok(())
        } else {
            Err(InvalidNormalization {
                mean: self.mean,
                std: self.std,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_and_checks() {
        let n = Normalization::MNIST;
        assert_eq!(n.apply(0), -0.1307 / 0.3081);
        assert!(n.check().is_ok());
        assert_eq!(n.padding_pixel(), 33);
        assert_eq!(n.padding_value(), (33.0 / 255.0 - 0.1307) / 0.3081);
        assert!(n.padding_value().abs() < 0.005);
        assert_eq!(Normalization::FASHION_MNIST.padding_pixel(), 73);
        for (mean, std) in [
            (0.1, 0.0),
            (f32::NAN, 1.0),
            (0.1, -1.0),
            (0.1, f32::INFINITY),
        ] {
            let err = Normalization { mean, std }.check().unwrap_err();
            assert!(err.to_string().contains("input normalization"), "{err}");
        }
    }
}
