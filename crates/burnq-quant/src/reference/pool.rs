//! Max-pooling on `u8` codes and the final argmax.
//!
//! Why max-pooling on codes is exact: dequantization `q ↦ S·(q − Z)` with `S > 0` is strictly
//! increasing, so `max_i S·(q_i − Z) = S·(max_i q_i − Z)`: the max commutes with
//! dequantization. The pooled output keeps the input's scale and zero point, so no
//! requantization is needed and nothing is rounded.

use crate::QuantError;

/// 2×2 max-pool with stride 2 over `planes` (batch × channels) planes of `height × width`
/// codes, row-major. The output is `planes × ⌊height/2⌋ × ⌊width/2⌋`; an odd last row or
/// column is dropped, as in PyTorch and Burn.
pub fn max_pool_2x2(
    input: &[u8],
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, QuantError> {
    let expected = super::accumulate::product(&[planes, height, width]);
    if expected != Some(input.len()) {
        return Err(QuantError::ShapeMismatch {
            what: format!("max-pool input [{planes}, {height}, {width}]"),
            expected: expected.unwrap_or(usize::MAX),
            found: input.len(),
        });
    }
    let (out_h, out_w) = (height / 2, width / 2);
    let mut out = Vec::with_capacity(planes * out_h * out_w);
    for plane in input.chunks_exact((height * width).max(1)).take(planes) {
        for y in 0..out_h {
            for x in 0..out_w {
                let top = (2 * y) * width + 2 * x;
                let bottom = top + width;
                let m = plane[top]
                    .max(plane[top + 1])
                    .max(plane[bottom])
                    .max(plane[bottom + 1]);
                out.push(m);
            }
        }
    }
    Ok(out)
}

/// Index of the largest value, the lowest index on ties; `None` for an empty slice.
pub fn argmax<T: Ord>(values: &[T]) -> Option<usize> {
    let mut best: Option<(usize, &T)> = None;
    for (i, v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The predicted class from fc2's accumulators: the largest real logit
/// `S_in·S_w[o]·acc[o]`, lowest index on ties.
///
/// The common factor `S_in/S_out` aside, `S_w[o]` is carried by channel `o`'s requantization
/// multiplier `M[o] = m0[o]·2^(shift[o]−31)`, so the logits compare exactly, in integers, as
/// `acc[o]·m0[o]·2^(shift[o] − min_o shift)` in i128 (|acc|, m0 < 2^31 and shifts differ by at
/// most 61: below 2^124). With per-tensor weights every multiplier is the same and this is the
/// argmax of the accumulators; with per-channel weights the raw accumulators are in different
/// units and their argmax would be wrong. `None` for an empty row, a length mismatch or more
/// than 256 classes (a class is a `u8`, like the data sets' labels).
pub fn predict(acc: &[i32], requants: &[crate::Requant]) -> Option<u8> {
    if acc.len() != requants.len() {
        return None;
    }
    let min_shift = requants.iter().map(|r| r.shift).min()?;
    let scaled: Vec<i128> = acc
        .iter()
        .zip(requants)
        .map(|(&a, r)| (i128::from(a) * i128::from(r.m0)) << (r.shift - min_shift))
        .collect();
    argmax(&scaled).and_then(|class| u8::try_from(class).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_each_window() {
        #[rustfmt::skip]
        let input = [
            1, 9, 2, 3, 7,
            4, 5, 8, 0, 7,
            6, 6, 0, 0, 7,
            6, 7, 1, 0, 7,
            9, 9, 9, 9, 9,
        ];
        assert_eq!(max_pool_2x2(&input, 1, 5, 5).unwrap(), vec![9, 8, 7, 1]);
        let two = [input, input.map(|v| 255 - v)].concat();
        assert_eq!(
            max_pool_2x2(&two, 2, 5, 5).unwrap(),
            vec![9, 8, 7, 1, 254, 255, 249, 255]
        );
    }

    #[test]
    fn pool_checks_length() {
        assert!(matches!(
            max_pool_2x2(&[0; 15], 1, 4, 4),
            Err(QuantError::ShapeMismatch {
                expected: 16,
                found: 15,
                ..
            })
        ));
        assert!(matches!(
            max_pool_2x2(&[0; 4], usize::MAX, 2, 2),
            Err(QuantError::ShapeMismatch { .. })
        ));
        assert_eq!(max_pool_2x2(&[], 0, 4, 4).unwrap(), Vec::<u8>::new());
        assert_eq!(max_pool_2x2(&[3], 1, 1, 1).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn predict_compares_real_logits_across_channel_scales() {
        let r = |m0: i32, shift: i32| crate::Requant {
            m0,
            shift,
            output_zero_point: 0,
            act_min: 0,
            act_max: 255,
        };
        // Equal multipliers: the argmax of the accumulators, first on ties.
        let same = [r(1 << 30, -3); 3];
        assert_eq!(predict(&[5, 9, 9], &same), Some(1));
        // Channel 1 has a quarter of channel 0's weight scale: 100·1 > 300·(1/4).
        let per_channel = [r(1 << 30, 0), r(1 << 30, -2)];
        assert_eq!(predict(&[100, 300], &per_channel), Some(0));
        assert_eq!(predict(&[100, 500], &per_channel), Some(1));
        // Exact tie across scales (100·2^0 = 400·2^−2): the lower index.
        assert_eq!(predict(&[100, 400], &per_channel), Some(0));
        // Extreme values do not overflow.
        let wide = [r(i32::MAX, 30), r(i32::MAX, -31)];
        assert_eq!(predict(&[i32::MIN, i32::MAX], &wide), Some(1));
        assert_eq!(predict(&[1, i32::MAX], &wide), Some(0));
        assert_eq!(predict(&[1], &same), None);
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[3, 7, 7, 1]), Some(1));
        assert_eq!(argmax(&[-5, -5, -5]), Some(0));
        assert_eq!(argmax(&[i32::MIN, 0, i32::MAX, i32::MAX]), Some(2));
        assert_eq!(argmax::<u8>(&[]), None);
        assert_eq!(argmax(&[0u8, 0, 1]), Some(2));
    }
}
