//! Whole-network conformance of the fast [`Engine`]: for every kernel implementation this CPU
//! runs and for 1, 2 and 3 threads, its output equals [`QuantModel::forward_reference`] bit for
//! bit (accumulators, `u8` logits, predictions) on random models (converted or drawn, with
//! independent weight and activation bit widths, the same for every layer or each layer its
//! own, per tensor and per channel) and on the golden vectors.

mod common;

use burnq_quant::kernels::KernelChoice;
use burnq_quant::{
    ActivationRanges, ConvertOptions, Engine, IMAGE_PIXELS, LayerBits, Normalization, Output,
    QuantError, QuantModel, QuantParams, QuantScheme, Workspace, convert, quantize_multiplier,
};
use burnq_testkit::{Rng, golden, random_network};
use common::kernels;

const THREADS: [usize; 3] = [1, 2, 3];

/// Ranges of the right order of magnitude for [`random_network`] (some activations saturate,
/// which the comparison covers too).
const RANGES: ActivationRanges = ActivationRanges {
    // The MNIST-normalized pixel range; conversion does not read it.
    input: (-0.43, 2.83),
    conv2_input: (0.0, 4.0),
    fc1_input: (0.0, 6.0),
    fc2_input: (0.0, 6.0),
    logits: (-8.0, 8.0),
};

/// `weight_bits`-bit weights and `act_bits`-bit activations, per channel or per tensor.
const fn options(weight_bits: u8, act_bits: u8, per_channel: bool) -> ConvertOptions {
    ConvertOptions {
        weight_bits,
        act_bits,
        per_channel,
    }
}

fn converted(seed: u64, options: ConvertOptions) -> QuantModel {
    convert(
        &random_network(seed),
        &RANGES,
        Normalization::MNIST,
        options,
    )
    .unwrap()
}

/// A valid per-channel model with random weight zero points and scales per channel (hence
/// random multipliers), random `weight_bits`-bit weight codes and biases, `act_bits`-bit
/// activations, and `input` as conv1's input parameters (no folded normalization).
fn per_channel(seed: u64, weight_bits: u8, act_bits: u8, input: QuantParams) -> QuantModel {
    let mut rng = Rng::new(seed);
    let mut below = |n: i32| (rng.next_u64() % n as u64) as i32;
    let w_qmax = (1 << weight_bits) - 1;
    let options = options(weight_bits, act_bits, true);
    let mut layers = converted(seed, options).layers().clone();
    layers[0].input = input;
    for layer in &mut layers {
        let out = layer.kind.out_channels();
        layer.weight_zero_points = (0..out).map(|_| below(w_qmax + 1)).collect();
        layer.weight_scales = (0..out).map(|_| 1e-3 * (1 + below(50)) as f32).collect();
        layer
            .weights
            .iter_mut()
            .for_each(|w| *w = below(w_qmax + 1) as u8);
        layer.bias = (0..out).map(|_| below(20_001) - 10_000).collect();
        let (s_in, s_out) = (layer.input.scale(), layer.output.scale());
        let multipliers = layer.weight_scales.iter().map(|&s_w| {
            quantize_multiplier(f64::from(s_in) * f64::from(s_w) / f64::from(s_out)).unwrap()
        });
        (layer.m0, layer.shift) = multipliers.unzip();
    }
    let model = QuantModel::new(options, layers, None).unwrap();
    assert!(model.layers().iter().all(|l| !l.is_per_tensor()));
    model
}

/// `n` random images of codes `≤ qmax`.
fn images(seed: u64, n: usize, qmax: i32) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..n * IMAGE_PIXELS)
        .map(|_| (rng.next_u64() % (qmax as u64 + 1)) as u8)
        .collect()
}

/// Checks every entry point of every available kernel against `expected`.
fn check_all(model: &QuantModel, images: &[u8], n: usize, expected: &Output) {
    for kernel in kernels::all() {
        let engine = Engine::with_kernel(model, kernel).unwrap();
        assert_eq!(engine.kernel(), kernel);
        let mut workspace = Workspace::new();
        let out = engine.forward(&mut workspace, images, n).unwrap();
        assert_eq!(&out, expected, "{kernel}, n = {n}");
        for threads in THREADS {
            let out = engine.forward_parallel(images, n, threads).unwrap();
            assert_eq!(&out, expected, "{kernel}, n = {n}, {threads} threads");
        }
    }
}

#[test]
fn matches_reference_on_converted_models() {
    let cases = [
        (1, options(8, 8, false)),
        (2, options(7, 7, false)),
        (3, options(4, 4, false)),
        (4, options(2, 2, false)),
        (12, options(8, 8, true)),
        (13, options(4, 8, true)),
        (14, options(8, 4, false)),
        (15, options(2, 8, false)),
        (16, options(8, 2, true)),
        (17, options(3, 6, true)),
    ];
    for (seed, options) in cases {
        let model = converted(seed, options);
        assert_eq!(model.options(), options);
        let n = 7;
        let images = images(seed, n, 255);
        let expected = model.forward_reference(&images, n).unwrap();
        check_all(&model, &images, n, &expected);
    }
}

/// Models with random per-layer widths (each layer's weights and outputs 2..=8 bits on their
/// own): every kernel equals the reference.
#[test]
fn matches_reference_on_mixed_width_models() {
    let names = burnq_quant::ARCHITECTURE.map(|(name, _)| name);
    for seed in 20..32u64 {
        let mut rng = Rng::new(seed);
        let mut width = || 2 + (rng.next_u64() % 7) as u8;
        let spec: Vec<String> = names
            .iter()
            .map(|name| format!("{name}=w{}a{}", width(), width()))
            .collect();
        let defaults = options(8, 8, seed % 2 == 0);
        let scheme = QuantScheme::parse(defaults, &spec.join(","), &names).unwrap();
        let model = convert(
            &random_network(seed),
            &RANGES,
            Normalization::MNIST,
            scheme.clone(),
        )
        .unwrap();
        for layer in model.layers() {
            assert_eq!(layer.bits(), LayerBits::of(scheme.layer(&layer.name)));
        }
        let n = 5;
        let images = images(seed, n, 255);
        let expected = model.forward_reference(&images, n).unwrap();
        check_all(&model, &images, n, &expected);
    }
}

#[test]
fn matches_reference_on_per_channel_models() {
    for (seed, weight_bits, act_bits, input) in [
        (5, 8, 8, QuantParams::new(0.02, 128, 8).unwrap()),
        (6, 8, 3, QuantParams::new(0.01, 255, 8).unwrap()),
        (7, 5, 5, QuantParams::new(0.1, 3, 4).unwrap()),
        (8, 3, 7, QuantParams::new(0.5, 1, 2).unwrap()),
        (18, 2, 8, QuantParams::new(0.05, 40, 6).unwrap()),
        (19, 8, 2, QuantParams::new(0.02, 0, 8).unwrap()),
    ] {
        let model = per_channel(seed, weight_bits, act_bits, input);
        let n = 5;
        let images = images(seed, n, input.qmax());
        let expected = model.forward_reference(&images, n).unwrap();
        check_all(&model, &images, n, &expected);
    }
}

#[test]
fn matches_golden_vectors() {
    let bytes = golden::read();
    let g = golden::Golden::parse(&bytes);
    let model = g.model();
    let q_in = g.u8s("out.q_in");
    let expected = model.forward_reference(&q_in, golden::N).unwrap();
    assert_eq!(expected.fc2_acc, g.i32s("out.fc2_acc"));
    assert_eq!(expected.predictions, g.predictions());
    check_all(&model, &q_in, golden::N, &expected);
}

#[test]
fn batch_sizes_around_the_fc_batch() {
    let model = converted(9, options(8, 8, true));
    let images = images(9, 100, 255);
    for kernel in kernels::all() {
        let engine = Engine::with_kernel(&model, kernel).unwrap();
        let mut workspace = Workspace::new();
        let mut out = engine.forward(&mut workspace, &[], 0).unwrap();
        assert!(out.predictions.is_empty() && out.fc2_acc.is_empty());
        for n in [1, 47, 48, 49, 100, 2] {
            let images = &images[..n * IMAGE_PIXELS];
            engine
                .forward_into(&mut workspace, images, n, &mut out)
                .unwrap();
            assert_eq!(
                out,
                model.forward_reference(images, n).unwrap(),
                "{kernel}, n = {n}"
            );
        }
        let parallel = engine
            .forward_parallel(&images[..IMAGE_PIXELS], 1, 0)
            .unwrap();
        assert_eq!(
            parallel,
            model.forward_reference(&images[..IMAGE_PIXELS], 1).unwrap()
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let four_bit = QuantParams::new(1.0 / 15.0, 0, 4).unwrap();
    let model = per_channel(10, 8, 8, four_bit);
    let bright = images(10, 2, 255);
    for kernel in kernels::all() {
        let engine = Engine::with_kernel(&model, kernel).unwrap();
        let mut workspace = Workspace::new();
        assert!(matches!(
            engine.forward(&mut workspace, &bright[1..], 2),
            Err(QuantError::ShapeMismatch {
                expected: 1568,
                found: 1567,
                ..
            })
        ));
        assert!(matches!(
            engine.forward_parallel(&bright, 2, 2),
            Err(QuantError::CodeAboveQmax { .. })
        ));
        assert!(matches!(
            engine.forward(&mut workspace, &bright, 2),
            Err(QuantError::CodeAboveQmax { .. })
        ));
    }
}

#[test]
fn kernel_choice() {
    let model = converted(11, ConvertOptions::uniform(8));
    match KernelChoice::selected() {
        Ok(selected) => assert_eq!(Engine::new(&model).unwrap().kernel(), selected),
        Err(_) => assert!(Engine::new(&model).is_err()),
    }
    let avx2 = Engine::with_kernel(&model, KernelChoice::Avx2);
    assert_eq!(avx2.is_ok(), KernelChoice::Avx2.is_available());
    let generic = Engine::with_kernel(&model, KernelChoice::Generic).unwrap();
    assert_eq!(generic.kernel(), KernelChoice::Generic);
}
