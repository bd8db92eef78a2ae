//! Deterministic fixtures shared by the unit tests: a float network with patterned weights,
//! plausible activation ranges, and a builder for tiny hand-checkable layers.

use crate::{
    ARCHITECTURE, ActivationRanges, FloatLayer, FloatNetwork, LayerKind, QuantLayer, QuantParams,
};

/// A value in `[-0.5, 0.5)` from an index, by a fixed multiplicative hash.
fn pattern(i: usize, salt: usize) -> f32 {
    let h = (i.wrapping_mul(2_654_435_761) ^ salt.wrapping_mul(40_503)) % 1000;
    h as f32 / 1000.0 - 0.5
}

/// The tutorial architecture with weights `≈ U(−1, 1)/√fan_in` and small biases.
pub(crate) fn pattern_network() -> FloatNetwork {
    let layers = ARCHITECTURE.map(|(_, kind)| {
        let gain = 2.0 / (kind.fan_in() as f32).sqrt();
        let salt = kind.fan_in();
        FloatLayer {
            kind,
            weights: (0..kind.out_channels() * kind.fan_in())
                .map(|i| gain * pattern(i, salt))
                .collect(),
            bias: (0..kind.out_channels())
                .map(|i| 0.1 * pattern(i, salt + 1))
                .collect(),
        }
    });
    FloatNetwork::new(layers).expect("the pattern network has the tutorial shapes")
}

/// Ranges of the right order of magnitude for [`pattern_network`].
pub(crate) fn pattern_ranges() -> ActivationRanges {
    ActivationRanges {
        // The MNIST-normalized pixel range; conversion does not read it.
        input: (-0.43, 2.83),
        conv2_input: (0.0, 2.0),
        fc1_input: (0.0, 2.0),
        fc2_input: (0.0, 2.0),
        logits: (-3.0, 3.0),
    }
}

/// A layer with unit scales and `M = 1`, clamp `[0, 255]`, to check integer sums by hand.
pub(crate) fn unit_layer(
    kind: LayerKind,
    weights: Vec<u8>,
    weight_zero_point: i32,
    bias: Vec<i32>,
    input_zero_point: i32,
) -> QuantLayer {
    let out = kind.out_channels();
    QuantLayer {
        name: "test".into(),
        kind,
        weight_bits: 8,
        weights,
        weight_zero_points: vec![weight_zero_point; out],
        weight_scales: vec![1.0; out],
        bias,
        input: QuantParams::new(1.0, input_zero_point, 8).unwrap(),
        output: QuantParams::new(1.0, 0, 8).unwrap(),
        m0: vec![1 << 30; out],
        shift: vec![1; out],
        act_min: 0,
        act_max: 255,
    }
}
