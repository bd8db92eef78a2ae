//! Requantization of a whole layer's accumulators with each output channel's [`crate::Requant`]:
//! `q = clamp(Z_out + MultiplyByQuantizedMultiplier(acc, m0[o], shift[o]), act_min, act_max)`.

use crate::{QuantError, QuantLayer, Requant};

/// Requantizes accumulators laid out `[batch, out, spatial]` (`spatial = 1` for a linear layer,
/// `H·W` for a convolution) to `u8` output codes of the same layout.
pub fn requantize(layer: &QuantLayer, acc: &[i32], spatial: usize) -> Result<Vec<u8>, QuantError> {
    layer.check_shapes()?;
    let requants: Vec<Requant> = layer.requants().collect();
    let plane = requants.len().checked_mul(spatial).unwrap_or(0);
    if plane == 0 || !acc.len().is_multiple_of(plane) {
        return Err(QuantError::ShapeMismatch {
            what: format!(
                "{} accumulators per batch item [{}, {spatial}]",
                layer.name,
                requants.len()
            ),
            expected: plane,
            found: acc.len(),
        });
    }
    let mut out = Vec::with_capacity(acc.len());
    for batch in acc.chunks_exact(plane) {
        for (channel, r) in batch.chunks_exact(spatial).zip(&requants) {
            out.extend(channel.iter().map(|&a| r.apply(a)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LayerKind, test_support::unit_layer};

    #[test]
    fn per_channel_multipliers() {
        let kind = LayerKind::Conv2d {
            in_channels: 1,
            out_channels: 2,
            kernel: 1,
        };
        let mut layer = unit_layer(kind, vec![1, 1], 0, vec![0, 0], 0);
        // Channel 0: M = 1; channel 1: M = 0.5 (11 · 0.5 = 5.5, a tie of the high mul: → 6).
        layer.shift[1] = 0;
        let acc = [10, 300, 10, 11, -5, 23, 7, -7];
        assert_eq!(
            requantize(&layer, &acc, 2).unwrap(),
            vec![10, 255, 5, 6, 0, 23, 4, 0]
        );
    }

    #[test]
    fn length_must_fill_whole_batches() {
        let kind = LayerKind::Linear {
            in_features: 1,
            out_features: 2,
        };
        let layer = unit_layer(kind, vec![1, 1], 0, vec![0, 0], 0);
        assert!(matches!(
            requantize(&layer, &[1, 2, 3], 1),
            Err(QuantError::ShapeMismatch {
                expected: 2,
                found: 3,
                ..
            })
        ));
        assert!(matches!(
            requantize(&layer, &[1, 2], 0),
            Err(QuantError::ShapeMismatch { .. })
        ));
    }
}
