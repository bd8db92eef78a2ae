//! Integer accumulation, the paper's eq. 4 with the bias folded in:
//! `acc[o] = bias[o] + Σ_k (q_x[k] − Z_in)·(q_w[o,k] − Z_w[o])`, for a valid stride-1
//! convolution (`k` over input channel, kernel row, kernel column) and for a linear layer.

use crate::{LayerKind, QuantError, QuantLayer};

/// Valid (unpadded), stride-1 convolution of `n` NCHW `u8` images of `height × width` pixels
/// with `layer`'s OIHW weights: accumulators `[n, out, height − k + 1, width − k + 1]` in
/// `i32`, bias included (scale `S_in·S_w[o]`, zero point 0).
pub fn conv2d(
    layer: &QuantLayer,
    input: &[u8],
    n: usize,
    height: usize,
    width: usize,
) -> Result<Vec<i32>, QuantError> {
    let LayerKind::Conv2d {
        in_channels,
        out_channels,
        kernel,
    } = layer.kind
    else {
        return Err(wrong_kind(layer, "conv2d"));
    };
    layer.check_shapes()?;
    check_len(layer, input, [n, in_channels, height, width])?;
    if kernel == 0 || kernel > height || kernel > width {
        return Err(QuantError::ImageTooSmall {
            layer: layer.name.clone(),
            height,
            width,
            kernel,
        });
    }
    let (out_h, out_w) = (height - kernel + 1, width - kernel + 1);
    let x = input_offsets(layer, input);
    let w = weight_offsets(layer);
    let mut acc = Vec::with_capacity(product(&[n, out_channels, out_h, out_w]).unwrap_or(0));
    for b in 0..n {
        for o in 0..out_channels {
            for y in 0..out_h {
                for x0 in 0..out_w {
                    let mut sum = i64::from(layer.bias[o]);
                    for c in 0..in_channels {
                        for ky in 0..kernel {
                            for kx in 0..kernel {
                                let xi =
                                    ((b * in_channels + c) * height + y + ky) * width + x0 + kx;
                                let wi = ((o * in_channels + c) * kernel + ky) * kernel + kx;
                                sum += i64::from(x[xi] * w[wi]);
                            }
                        }
                    }
                    acc.push(narrow(layer, o, sum)?);
                }
            }
        }
    }
    Ok(acc)
}

/// Fully connected layer on `n` rows of `u8` features: accumulators `[n, out]` in `i32`,
/// bias included.
pub fn linear(layer: &QuantLayer, input: &[u8], n: usize) -> Result<Vec<i32>, QuantError> {
    let LayerKind::Linear {
        in_features,
        out_features,
    } = layer.kind
    else {
        return Err(wrong_kind(layer, "linear"));
    };
    layer.check_shapes()?;
    check_len(layer, input, [n, in_features, 1, 1])?;
    let x = input_offsets(layer, input);
    let w = weight_offsets(layer);
    let mut acc = Vec::with_capacity(product(&[n, out_features]).unwrap_or(0));
    for b in 0..n {
        let row = &x[b * in_features..(b + 1) * in_features];
        for o in 0..out_features {
            let weights = &w[o * in_features..(o + 1) * in_features];
            let mut sum = i64::from(layer.bias[o]);
            for (&xk, &wk) in row.iter().zip(weights) {
                sum += i64::from(xk * wk);
            }
            acc.push(narrow(layer, o, sum)?);
        }
    }
    Ok(acc)
}

/// `q_x − Z_in` for every input code, in `i32`.
fn input_offsets(layer: &QuantLayer, input: &[u8]) -> Vec<i32> {
    let z = layer.input.zero_point();
    input.iter().map(|&q| i32::from(q) - z).collect()
}

/// `q_w[o,k] − Z_w[o]` for every weight, in `i32` (the layer's shapes are already checked).
fn weight_offsets(layer: &QuantLayer) -> Vec<i32> {
    let fan_in = layer.kind.fan_in().max(1);
    layer
        .weights
        .chunks(fan_in)
        .zip(&layer.weight_zero_points)
        .flat_map(|(row, &z)| row.iter().map(move |&q| i32::from(q) - z))
        .collect()
}

/// The product of `dims`, or `None` if it overflows `usize`.
pub(super) fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn check_len(layer: &QuantLayer, input: &[u8], dims: [usize; 4]) -> Result<(), QuantError> {
    let expected = product(&dims);
    if expected == Some(input.len()) {
        Ok(())
    } else {
        Err(QuantError::ShapeMismatch {
            what: format!("{} input {dims:?}", layer.name),
            expected: expected.unwrap_or(usize::MAX),
            found: input.len(),
        })
    }
}

fn narrow(layer: &QuantLayer, channel: usize, sum: i64) -> Result<i32, QuantError> {
    i32::try_from(sum).map_err(|_| QuantError::AccumulatorOverflow {
        layer: layer.name.clone(),
        channel,
        magnitude: sum.saturating_abs(),
    })
}

fn wrong_kind(layer: &QuantLayer, op: &'static str) -> QuantError {
    QuantError::WrongLayerKind {
        layer: layer.name.clone(),
        kind: layer.kind,
        op,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::unit_layer;

    const CONV_2X2: LayerKind = LayerKind::Conv2d {
        in_channels: 1,
        out_channels: 1,
        kernel: 2,
    };

    #[test]
    fn conv2d_hand_computed() {
        // x − Z_in = [0..=8] as a 3×3 image; w − Z_w = [1, 0, −1, 2]; bias 10.
        let layer = unit_layer(CONV_2X2, vec![3, 2, 1, 4], 2, vec![10], 1);
        let image = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        // (0,0): 0·1 + 1·0 + 3·(−1) + 4·2 = 5; (0,1): 7; (1,0): 11; (1,1): 13.
        assert_eq!(
            conv2d(&layer, &image, 1, 3, 3).unwrap(),
            vec![15, 17, 21, 23]
        );
        let batch = [image, image.map(|v| v - 1)].concat();
        // Second image: every offset 1 lower, so each sum drops by Σ(w − Z_w) = 2.
        assert_eq!(
            conv2d(&layer, &batch, 2, 3, 3).unwrap(),
            vec![15, 17, 21, 23, 13, 15, 19, 21]
        );
    }

    #[test]
    fn conv2d_runs_over_input_channels_and_keeps_nchw() {
        let kind = LayerKind::Conv2d {
            in_channels: 2,
            out_channels: 2,
            kernel: 1,
        };
        // o0 = 1·c0 + 2·c1, o1 = 3·c0 + 0·c1 + 100.
        let layer = unit_layer(kind, vec![1, 2, 3, 0], 0, vec![0, 100], 0);
        let image = [5, 6, 7, 8]; // c0 = [5, 6], c1 = [7, 8], each 1×2.
        assert_eq!(
            conv2d(&layer, &image, 1, 1, 2).unwrap(),
            vec![19, 22, 115, 118]
        );
    }

    #[test]
    fn linear_hand_computed() {
        let kind = LayerKind::Linear {
            in_features: 3,
            out_features: 2,
        };
        // x − 2 = [[−1, 0, 1], [2, 3, 4]]; w − 1 = [[0, 0, 0], [−1, 1, 3]]; bias [7, −7].
        let layer = unit_layer(kind, vec![1, 1, 1, 0, 2, 4], 1, vec![7, -7], 2);
        let input = [1, 2, 3, 4, 5, 6];
        assert_eq!(linear(&layer, &input, 2).unwrap(), vec![7, -3, 7, 6]);
        assert_eq!(linear(&layer, &[], 0).unwrap(), Vec::<i32>::new());
    }

    #[test]
    fn bad_arguments_are_errors() {
        let conv = unit_layer(CONV_2X2, vec![3, 2, 1, 4], 2, vec![10], 1);
        assert!(matches!(
            conv2d(&conv, &[0; 8], 1, 3, 3),
            Err(QuantError::ShapeMismatch {
                expected: 9,
                found: 8,
                ..
            })
        ));
        assert!(matches!(
            conv2d(&conv, &[0; 1], 1, 1, 1),
            Err(QuantError::ImageTooSmall { kernel: 2, .. })
        ));
        assert!(matches!(
            linear(&conv, &[0; 4], 1),
            Err(QuantError::WrongLayerKind { op: "linear", .. })
        ));
        let mut short = conv.clone();
        short.bias.clear();
        assert!(matches!(
            conv2d(&short, &[0; 9], 1, 3, 3),
            Err(QuantError::ShapeMismatch {
                expected: 1,
                found: 0,
                ..
            })
        ));
    }

    #[test]
    fn unvalidated_overflow_is_an_error() {
        let kind = LayerKind::Linear {
            in_features: 1,
            out_features: 1,
        };
        let layer = unit_layer(kind, vec![255], 0, vec![i32::MAX], 0);
        assert!(matches!(
            linear(&layer, &[255], 1),
            Err(QuantError::AccumulatorOverflow { channel: 0, .. })
        ));
        assert_eq!(linear(&layer, &[0], 1).unwrap(), vec![i32::MAX]);
    }
}
