use std::collections::BTreeMap;

use burnq_arch::arch::{ConvGeometry, FloatParams, PoolGeometry, Size2, StepParams};

use super::*;
use crate::test_support::{pattern_network, pattern_ranges};
use crate::{convert, reference::max_pool_2x2};

fn images(n: usize, len: usize) -> Vec<u8> {
    (0..n * len)
        .map(|i| ((i * 31 + i / 97) % 256) as u8)
        .collect()
}

/// The pattern network's parameters and ranges in the graph's terms.
fn tutorial_inputs() -> (FloatParams, PointRanges) {
    let names = ["conv1", "conv2", "fc1", "fc2"];
    let layers = names
        .iter()
        .zip(pattern_network().layers())
        .map(|(name, l)| {
            let p = StepParams {
                weight: l.weights.clone(),
                bias: Some(l.bias.clone()),
                batch_norm: None,
            };
            (name.to_string(), p)
        })
        .collect();
    let ranges = names
        .iter()
        .zip(pattern_ranges().layer_outputs())
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    (FloatParams { layers }, ranges)
}

#[test]
fn tutorial_graph_is_the_tutorial_model() {
    let arch = Architecture::preset("tutorial").unwrap();
    let (params, ranges) = tutorial_inputs();
    for options in [
        ConvertOptions::uniform(8),
        ConvertOptions {
            weight_bits: 3,
            act_bits: 5,
            per_channel: true,
        },
    ] {
        let model = convert(
            &pattern_network(),
            &pattern_ranges(),
            Normalization::MNIST,
            options,
        )
        .unwrap();
        let graph = convert_graph(&arch, &params, &ranges, Normalization::MNIST, options).unwrap();
        assert!(
            graph == QuantGraph::from_tutorial(&model).unwrap(),
            "{options:?}"
        );
        let n = 3;
        let x = images(n, 784);
        let taps = model.forward_reference_taps(&x, n).unwrap();
        let graph_taps = graph.forward_reference_taps(&x, n).unwrap();
        assert_eq!(graph_taps.output, taps.output);
        let codes: BTreeMap<_, _> = graph_taps.codes.into_iter().collect();
        assert_eq!(codes["conv1"], taps.conv1_out);
        assert_eq!(codes["max_pool_3"], taps.pool1_out);
        assert_eq!(codes["fc1"], taps.fc1_out);
    }
}

#[test]
fn padding_uses_the_padding_code() {
    // A 2×3 image, one channel, 3×3 kernel with padding 1 versus the explicitly padded 4×5
    // image without padding: equal accumulators, for the zero point and for another code.
    let conv = |padding: usize, h: usize, w: usize| ConvGeometry {
        in_channels: 1,
        out_channels: 2,
        kernel: Size2::square(3),
        stride: Size2::square(1),
        padding: Size2::square(padding),
        groups: 1,
        input: Size2 { h, w },
        output: Size2 { h: 2, w: 3 },
    };
    let layer = QuantLayer {
        name: "c".into(),
        kind: LayerKind::Linear {
            in_features: 9,
            out_features: 2,
        },
        weight_bits: 8,
        weights: (0..18).map(|i| (i * 37 % 256) as u8).collect(),
        weight_zero_points: vec![100, 7],
        weight_scales: vec![1.0; 2],
        bias: vec![5, -9],
        input: QuantParams::new(1.0, 40, 8).unwrap(),
        output: QuantParams::new(1.0, 0, 8).unwrap(),
        m0: vec![1 << 30; 2],
        shift: vec![1; 2],
        act_min: 0,
        act_max: 255,
    };
    let image = [3u8, 250, 40, 41, 0, 255];
    for pad in [40u8, 33] {
        let mut padded = vec![pad; 4 * 5];
        for y in 0..2 {
            for x in 0..3 {
                padded[(y + 1) * 5 + x + 1] = image[y * 3 + x];
            }
        }
        let implicit = reference::conv2d(&layer, &conv(1, 2, 3), pad, &image, 1).unwrap();
        let explicit = reference::conv2d(&layer, &conv(0, 4, 5), 0, &padded, 1).unwrap();
        assert_eq!(implicit, explicit, "pad {pad}");
    }
    // Padding with the zero point adds nothing: the corner output of a kernel of ones sees
    // only the four pixels inside the image.
    let ones = QuantLayer {
        weights: vec![1; 18],
        weight_zero_points: vec![0; 2],
        bias: vec![0; 2],
        ..layer
    };
    let acc = reference::conv2d(&ones, &conv(1, 2, 3), 40, &image, 1).unwrap();
    assert_eq!(acc[0], (3 - 40) + (250 - 40) + (41 - 40) + (0 - 40));
}

#[test]
fn pools_match_their_definitions() {
    let g = PoolGeometry {
        channels: 2,
        kernel: Size2::square(2),
        stride: Size2::square(2),
        input: Size2 { h: 4, w: 4 },
        output: Size2 { h: 2, w: 2 },
    };
    let x = images(3, 32);
    assert_eq!(
        reference::max_pool(&g, &x, 3).unwrap(),
        max_pool_2x2(&x, 6, 4, 4).unwrap()
    );
    // The average of four codes on the input's grid is within one code of the real mean
    // and exact when the sum divides by 4.
    let p = QuantParams::new(0.1, 10, 8).unwrap();
    let avg = reference::avg_pool(&g, p, &x, 3).unwrap();
    for (i, &q) in avg.iter().enumerate() {
        let (plane, pos) = (i / 4, i % 4);
        let (y, x0) = (pos / 2 * 2, pos % 2 * 2);
        let window: Vec<f64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(dy, dx)| f64::from(x[plane * 16 + (y + dy) * 4 + x0 + dx]))
            .collect();
        let mean = window.iter().sum::<f64>() / 4.0;
        assert!((f64::from(q) - mean).abs() <= 0.5 + 1e-9, "{q} vs {mean}");
    }
    let global = PoolGeometry {
        kernel: Size2::square(4),
        stride: Size2::square(4),
        output: Size2::square(1),
        ..g
    };
    let even = vec![12u8; 32];
    assert_eq!(reference::avg_pool(&global, p, &even, 1).unwrap(), [12, 12]);
}

#[test]
fn new_rejects_ops_that_do_not_fit() {
    let arch = Architecture::preset("tutorial").unwrap();
    let (params, ranges) = tutorial_inputs();
    let graph = convert_graph(&arch, &params, &ranges, Normalization::MNIST, 8).unwrap();
    let rebuild = |edit: &dyn Fn(&mut Vec<QuantOp>)| {
        let mut ops = graph.ops().to_vec();
        edit(&mut ops);
        QuantGraph::new(
            arch.clone(),
            graph.options(),
            graph.input_params(),
            graph.input_normalization(),
            ops,
        )
    };
    assert_eq!(rebuild(&|_| ()).unwrap(), graph);
    assert!(rebuild(&|ops| ops.swap(0, 1)).is_err());
    assert!(
        rebuild(&|ops| {
            ops.pop();
        })
        .is_err()
    );
    assert!(
        rebuild(&|ops| if let QuantOp::Linear(l) = &mut ops[5] {
            l.input = QuantParams::new(0.5, 0, 8).unwrap();
        })
        .is_err()
    );
    // A missing range or parameter is a typed error naming the layer.
    let mut fewer = ranges.clone();
    fewer.remove("fc1");
    let err = convert_graph(&arch, &params, &fewer, Normalization::MNIST, 8).unwrap_err();
    assert!(err.to_string().contains("fc1"), "{err}");
    let mut missing = params.clone();
    missing.layers.remove("conv2");
    let err = convert_graph(&arch, &missing, &ranges, Normalization::MNIST, 8).unwrap_err();
    assert!(err.to_string().contains("conv2: missing"), "{err}");
}

#[test]
fn average_rounding_hand_values() {
    // The contract's 2×2 ties: M = 0.25 exactly, window sums of offsets from Z.
    let g = PoolGeometry {
        channels: 1,
        kernel: Size2::square(2),
        stride: Size2::square(2),
        input: Size2::square(2),
        output: Size2::square(1),
    };
    let p = QuantParams::new(1.0, 10, 8).unwrap();
    let r = reference::pool_multiplier(&g, p).unwrap();
    assert_eq!((r.m0, r.shift), (1 << 30, -1));
    for (window, mean) in [
        ([11u8, 11, 10, 10], 11),
        ([9, 9, 10, 10], 9),
        ([12, 12, 11, 11], 12),
        ([9, 10, 10, 10], 10),
    ] {
        assert_eq!(
            reference::avg_pool(&g, p, &window, 1).unwrap(),
            [mean],
            "{window:?}"
        );
    }
}

#[test]
fn strided_padded_grouped_convolution_matches_float_within_one_code() {
    use crate::derive::LayerQuantization;
    use burnq_arch::arch::Activation;
    // 4 input channels in 2 groups, 6 outputs, 3×3 kernel, stride 2, padding 1, on 7×7.
    let g = ConvGeometry {
        in_channels: 4,
        out_channels: 6,
        kernel: Size2::square(3),
        stride: Size2::square(2),
        padding: Size2::square(1),
        groups: 2,
        input: Size2::square(7),
        output: Size2::square(4),
    };
    let fan_in = g.fan_in();
    let pattern =
        |i: usize, salt: usize| ((i * 2_654_435_761 + salt * 40_503) % 1000) as f32 / 1000.0 - 0.5;
    let weights: Vec<f32> = (0..6 * fan_in).map(|i| 0.6 * pattern(i, 1)).collect();
    let bias: Vec<f32> = (0..6).map(|i| 0.2 * pattern(i, 2)).collect();
    let input = QuantParams::from_range(-1.0, 3.0, 8).unwrap();
    let output = QuantParams::from_range(-4.0, 4.0, 8).unwrap();
    for per_channel in [false, true] {
        let options = ConvertOptions {
            per_channel,
            ..ConvertOptions::uniform(8)
        };
        let q = LayerQuantization::derive(&weights, 6, input, output, Activation::None, &options)
            .unwrap();
        let kind = LayerKind::Linear {
            in_features: fan_in,
            out_features: 6,
        };
        let layer = q.layer("c", kind, &weights, &bias);
        let x = images(1, 4 * 49);
        let acc = reference::conv2d(&layer, &g, input.zero_point() as u8, &x, 1).unwrap();
        let codes = crate::reference::requantize(&layer, &acc, 16).unwrap();
        // The float convolution of the dequantized input and weights, zero padding in real
        // units, the float bias.
        for o in 0..6 {
            let c0 = o / 3 * 2;
            for y in 0..4 {
                for x0 in 0..4 {
                    let mut sum = f64::from(bias[o]);
                    for c in 0..2 {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((y * 2 + ky) as i64 - 1, (x0 * 2 + kx) as i64 - 1);
                                if !(0..7).contains(&iy) || !(0..7).contains(&ix) {
                                    continue;
                                }
                                let xv = input
                                    .dequantize(x[(c0 + c) * 49 + iy as usize * 7 + ix as usize]);
                                let wk = (c * 3 + ky) * 3 + kx;
                                let wv = q.weights[o].dequantize(layer.weights[o * fan_in + wk]);
                                sum += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    let want = output.quantize(sum as f32);
                    let got = codes[o * 16 + y * 4 + x0];
                    assert!(
                        want.abs_diff(got) <= 1,
                        "per_channel {per_channel}, o {o} ({y}, {x0}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
