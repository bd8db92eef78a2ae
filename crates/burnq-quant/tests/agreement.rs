//! Float-vs-integer agreement: a random float network is run in plain `f32` on normalized
//! stroke images, its activation ranges are measured on a calibration set, it is converted,
//! and the integer engine (on raw pixels, normalization folded) must mostly agree with it.

use burnq_quant::{
    ActivationRanges, ConvertOptions, FloatLayer, FloatNetwork, IMAGE_PIXELS, IMAGE_SIDE,
    LayerKind, Normalization, convert,
};
use burnq_testkit::{Rng, random_network};

/// Valid stride-1 convolution of one CHW image.
fn conv(x: &[f32], side: usize, layer: &FloatLayer) -> Vec<f32> {
    let LayerKind::Conv2d {
        in_channels,
        out_channels,
        kernel,
    } = layer.kind
    else {
        panic!("conv called on {:?}", layer.kind)
    };
    let out_side = side - kernel + 1;
    let mut out = vec![0.0; out_channels * out_side * out_side];
    for o in 0..out_channels {
        for y in 0..out_side {
            for x0 in 0..out_side {
                let mut sum = layer.bias[o];
                for c in 0..in_channels {
                    for ky in 0..kernel {
                        for kx in 0..kernel {
                            sum += layer.weights
                                [((o * in_channels + c) * kernel + ky) * kernel + kx]
                                * x[(c * side + y + ky) * side + x0 + kx];
                        }
                    }
                }
                out[(o * out_side + y) * out_side + x0] = sum;
            }
        }
    }
    out
}

/// ReLU then 2×2 max-pool with stride 2, per channel.
fn relu_pool(x: &[f32], side: usize) -> Vec<f32> {
    let half = side / 2;
    x.chunks(side * side)
        .flat_map(|plane| {
            (0..half * half).map(move |i| {
                let (y, x0) = (2 * (i / half), 2 * (i % half));
                [0, 1, side, side + 1]
                    .iter()
                    .map(|d| plane[y * side + x0 + d])
                    .fold(0.0f32, f32::max)
            })
        })
        .collect()
}

fn linear(x: &[f32], layer: &FloatLayer) -> Vec<f32> {
    let fan_in = layer.kind.fan_in();
    layer
        .weights
        .chunks(fan_in)
        .zip(&layer.bias)
        .map(|(row, b)| b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>())
        .collect()
}

/// The float network on one image of raw pixels: the inputs of conv2, fc1, fc2 and the logits.
fn float_forward(net: &FloatNetwork, norm: Normalization, pixels: &[u8]) -> [Vec<f32>; 4] {
    let [conv1, conv2, fc1, fc2] = net.layers();
    let x: Vec<f32> = pixels
        .iter()
        .map(|&p| (f32::from(p) / 255.0 - norm.mean) / norm.std)
        .collect();
    let conv2_in = relu_pool(&conv(&x, IMAGE_SIDE, conv1), 24);
    let fc1_in = relu_pool(&conv(&conv2_in, 12, conv2), 8);
    let fc2_in: Vec<f32> = linear(&fc1_in, fc1).iter().map(|v| v.max(0.0)).collect();
    let logits = linear(&fc2_in, fc2);
    [conv2_in, fc1_in, fc2_in, logits]
}

/// An MNIST-like image: two to four thick bright strokes on black.
fn stroke_image(rng: &mut Rng) -> Vec<u8> {
    let mut image = vec![0u8; IMAGE_PIXELS];
    let strokes = 2 + rng.next_u64() % 3;
    for _ in 0..strokes {
        let mut point = || (4.0 + 20.0 * rng.unit(), 4.0 + 20.0 * rng.unit());
        let (a, b) = (point(), point());
        for (i, px) in image.iter_mut().enumerate() {
            let p = ((i % IMAGE_SIDE) as f32, (i / IMAGE_SIDE) as f32);
            let d = distance_to_segment(p, a, b);
            let v = (255.0 * (2.5 - d).clamp(0.0, 1.0)) as u8;
            *px = (*px).max(v);
        }
    }
    image
}

fn distance_to_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = (dx * dx + dy * dy).max(1e-6);
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0);
    ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
}

/// Index of the largest logit, the first on ties.
fn float_argmax(values: &[f32]) -> usize {
    (0..values.len())
        .reduce(|best, i| if values[i] > values[best] { i } else { best })
        .unwrap_or(0)
}

fn min_max(values: impl Iterator<Item = f32>) -> (f32, f32) {
    values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// The float activations of `images` and the min/max activation ranges they span.
fn calibrate(
    net: &FloatNetwork,
    norm: Normalization,
    images: &[Vec<u8>],
) -> (Vec<[Vec<f32>; 4]>, ActivationRanges) {
    let activations: Vec<[Vec<f32>; 4]> = images
        .iter()
        .map(|image| float_forward(net, norm, image))
        .collect();
    let range = |k: usize| min_max(activations.iter().flat_map(|a| a[k].iter().copied()));
    let ranges = ActivationRanges {
        // The MNIST-normalized pixel range; conversion does not read it.
        input: (-0.43, 2.83),
        conv2_input: range(0),
        fc1_input: range(1),
        fc2_input: range(2),
        logits: range(3),
    };
    (activations, ranges)
}

#[test]
fn integer_engine_agrees_with_float_network() {
    let norm = Normalization::MNIST;
    let mut rng = Rng::new(7);
    let net = random_network(42);
    let calibration: Vec<Vec<u8>> = (0..64).map(|_| stroke_image(&mut rng)).collect();
    let (_, ranges) = calibrate(&net, norm, &calibration);

    let n = 256;
    let test: Vec<Vec<u8>> = (0..n).map(|_| stroke_image(&mut rng)).collect();
    let float_logits: Vec<Vec<f32>> = test
        .iter()
        .map(|image| float_forward(&net, norm, image)[3].clone())
        .collect();
    let mixed = |weight_bits, act_bits, per_channel| ConvertOptions {
        weight_bits,
        act_bits,
        per_channel,
    };
    // (options, least agreement, largest mean and max in-range logit error in logit steps).
    // Measured with these seeds (agreement of 256; mean, max steps): w8a8 252 (0.49, 2.50),
    // w7a7 251 (0.53, 2.69), w6a6 246 (0.48, 2.15), w8a8 per channel 251 (0.50, 2.56),
    // w6a8 per channel 251 (1.42, 5.83), w6a8 248 (1.25, 5.46), w8a6 250 (0.39, 1.65),
    // w4a8 per channel 224 (4.69, 21.4), w4a8 225 (4.10, 17.2). Weights coarser than the
    // activations dominate the error, so it exceeds half a logit step. The random network's
    // output channels all have about the same weight range, so per-channel weights gain
    // little here.
    let cases = [
        (ConvertOptions::uniform(8), 0.95, 1.0, 4.0),
        (ConvertOptions::uniform(7), 0.95, 1.0, 4.0),
        (ConvertOptions::uniform(6), 0.9, 1.0, 4.0),
        (mixed(8, 8, true), 0.95, 1.0, 4.0),
        (mixed(6, 8, true), 0.95, 2.0, 8.0),
        (mixed(6, 8, false), 0.95, 2.0, 8.0),
        (mixed(8, 6, false), 0.95, 1.0, 4.0),
        (mixed(4, 8, true), 0.85, 6.0, 30.0),
        (mixed(4, 8, false), 0.85, 6.0, 30.0),
    ];
    for (options, min_agreement, max_mean, max_error) in cases {
        let name = format!(
            "w{}a{}{}",
            options.weight_bits,
            options.act_bits,
            if options.per_channel {
                " per channel"
            } else {
                ""
            }
        );
        let model = convert(&net, &ranges, norm, options).unwrap();
        let out = model.forward_reference(&test.concat(), n).unwrap();
        let agree = float_logits
            .iter()
            .zip(&out.predictions)
            .filter(|(logits, p)| float_argmax(logits) == usize::from(**p))
            .count();
        println!("{name}: {agree}/{n} predictions agree");
        assert!(
            agree as f64 >= min_agreement * n as f64,
            "{name}: {agree}/{n}"
        );

        // Logits inside the representable range are close to the float ones; those outside
        // (rare: the calibration set is small) are clamped.
        let p = model.logit_params();
        let (lo, hi) = (p.dequantize(0), p.dequantize(p.qmax() as u8));
        let deq = model.dequantize_logits(&out.logits_u8);
        let errors: Vec<f32> = float_logits
            .concat()
            .iter()
            .zip(&deq)
            .filter(|(f, _)| (lo..=hi).contains(*f))
            .map(|(f, q)| (f - q).abs() / p.scale())
            .collect();
        let mean = errors.iter().sum::<f32>() / errors.len() as f32;
        let max = errors.iter().copied().fold(0.0f32, f32::max);
        println!("{name}: logit error mean {mean:.2}, max {max:.2} steps");
        assert!(
            errors.len() * 100 >= deq.len() * 99,
            "{} in range",
            errors.len()
        );
        assert!(
            mean <= max_mean && max <= max_error,
            "{name}: mean {mean}, max {max} steps"
        );
    }
}

#[test]
fn layer_sqnr_is_high_at_8_bits_and_falls_with_fewer_bits() {
    let norm = Normalization::MNIST;
    let mut rng = Rng::new(11);
    let net = random_network(42);
    let images: Vec<Vec<u8>> = (0..64).map(|_| stroke_image(&mut rng)).collect();
    let (float, ranges) = calibrate(&net, norm, &images);
    let flat: Vec<Vec<f32>> = (0..4)
        .map(|k| float.iter().flat_map(|a| a[k].iter().copied()).collect())
        .collect();
    let sqnr = |bits: u8| {
        let model = convert(&net, &ranges, norm, bits).unwrap();
        let taps = model
            .forward_reference_taps(&images.concat(), images.len())
            .unwrap();
        burnq_quant::layer_sqnr_db(&model, &taps, [&flat[0], &flat[1], &flat[2], &flat[3]])
    };
    let (s8, s4) = (sqnr(8), sqnr(4));
    println!("SQNR dB at 8 bits {s8:?}, at 4 bits {s4:?}");
    for layer in 0..4 {
        // Each bit is worth about 6 dB of SQNR.
        assert!(s8[layer] > 25.0, "8-bit layer {layer}: {} dB", s8[layer]);
        assert!(
            s8[layer] > s4[layer] + 12.0,
            "layer {layer}: {} vs {}",
            s8[layer],
            s4[layer]
        );
    }
}

/// Output channels whose weights differ in scale by up to 16×, as in trained networks: the
/// per-channel model must predict at least as well as the per-tensor one. (Comparing raw fc2
/// accumulators across channels of different weight scales — a bug this test caught — fails
/// it.)
#[test]
fn per_channel_weights_keep_predictions_when_channel_scales_differ() {
    let norm = Normalization::MNIST;
    let mut rng = Rng::new(5);
    let mut layers = random_network(9).layers().clone();
    for layer in &mut layers {
        let fan_in = layer.kind.fan_in();
        for (o, (row, b)) in layer
            .weights
            .chunks_mut(fan_in)
            .zip(&mut layer.bias)
            .enumerate()
        {
            let factor = 2f32.powi((o % 5) as i32) / 4.0;
            row.iter_mut().for_each(|w| *w *= factor);
            *b *= factor;
        }
    }
    let net = FloatNetwork::new(layers).unwrap();
    let calibration: Vec<Vec<u8>> = (0..64).map(|_| stroke_image(&mut rng)).collect();
    let (_, ranges) = calibrate(&net, norm, &calibration);
    let n = 256;
    let test: Vec<Vec<u8>> = (0..n).map(|_| stroke_image(&mut rng)).collect();
    let want: Vec<usize> = test
        .iter()
        .map(|i| float_argmax(&float_forward(&net, norm, i)[3]))
        .collect();
    let agree = |per_channel| {
        let options = ConvertOptions {
            weight_bits: 8,
            act_bits: 8,
            per_channel,
        };
        let model = convert(&net, &ranges, norm, options).unwrap();
        let out = model.forward_reference(&test.concat(), n).unwrap();
        out.predictions
            .iter()
            .zip(&want)
            .filter(|(p, w)| usize::from(**p) == **w)
            .count()
    };
    let (tensor, channel) = (agree(false), agree(true));
    println!(
        "scaled channels, w8a8: per-tensor {tensor}/{n}, per-channel {channel}/{n} agree with float"
    );
    assert!(
        channel as f64 >= 0.95 * n as f64,
        "per-channel {channel}/{n}"
    );
    assert!(
        channel + 3 >= tensor,
        "per-channel {channel} vs per-tensor {tensor}"
    );
}
