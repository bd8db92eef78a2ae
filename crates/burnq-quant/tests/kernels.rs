//! Conformance of every fast kernel with the reference, bit for bit (`assert_eq!`): proptest
//! over random shapes (sizes 1..=10, 15..=17, 31..=33), zero points (0, mid-range, `qmax`,
//! random per channel), independent bit widths 2..=8 for input, weights and output, extreme
//! codes (all 0, all `qmax`), extreme biases and multipliers (`M ≥ 1`, tiny, exact powers of
//! two, zero), drawn per channel, so per-channel layers have different zero points and
//! multipliers in each channel.
//!
//! `kernel_tests!` generates the suite once per kernel implementation. On a CPU without AVX2
//! the AVX2 tests (`avx2`, `avx2_maddubs`) print `SKIPPED: no AVX2`, or fail if
//! `BURNQ_REQUIRE_AVX2=1`; without AVX-512 VNNI the `avx512_vnni` tests print
//! `SKIPPED: no AVX-512 VNNI`, or fail if `BURNQ_REQUIRE_AVX512_VNNI=1`.

mod common;

use std::fmt::Debug;

use burnq_quant::kernels::{self, GemmForm, KernelChoice, PackedLayer};
use burnq_quant::{LayerKind, QuantError, QuantLayer, QuantParams, reference};
use burnq_testkit::Rng;
use common::kernels::available;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Random cases per property.
const CASES: u32 = 256;
/// Cap on a convolution case's multiply-accumulates, to bound the reference's run time.
const MAX_CONV_MACS: usize = 3_000_000;

/// Runs `test` on `CASES` values of `strategy` with `kernel`, if this CPU runs it.
fn check<S: Strategy>(
    kernel: KernelChoice,
    strategy: S,
    test: fn(KernelChoice, S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: Debug,
{
    let Some(kernel) = available(kernel) else {
        return;
    };
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    if let Err(e) = TestRunner::new(config).run(&strategy, |case| test(kernel, case)) {
        panic!("{kernel} kernel: {e}");
    }
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

/// A dimension: small, around 16 or around 32 (the vector and tile edges).
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![1..=10usize, 15..=17usize, 31..=33usize]
}

/// How codes are drawn.
#[derive(Debug, Clone, Copy)]
enum Fill {
    Random,
    Zero,
    Max,
}

impl Fill {
    fn code(self, qmax: i32, rng: &mut Rng) -> u8 {
        match self {
            Self::Random => below(rng, qmax as u64 + 1) as u8,
            Self::Zero => 0,
            Self::Max => qmax as u8,
        }
    }
}

/// A zero point for a bit width: 0, mid-range (128 at 8 bits), `qmax`, or random (per channel
/// for weights).
#[derive(Debug, Clone, Copy)]
enum Zero {
    Min,
    Mid,
    Max,
    Random,
}

impl Zero {
    fn value(self, qmax: i32, rng: &mut Rng) -> i32 {
        match self {
            Self::Min => 0,
            Self::Mid => (qmax + 1) / 2,
            Self::Max => qmax,
            Self::Random => below(rng, qmax as u64 + 1) as i32,
        }
    }
}

/// How each channel's multiplier `M = m0·2^(shift − 31)` is drawn.
#[derive(Debug, Clone, Copy)]
enum Multiplier {
    /// Any valid `(m0, shift)`.
    Random,
    /// `M ≥ 1` (`shift ≥ 1`): the saturating left shift.
    Large,
    /// `shift` in `[−31, −15]`: large right shifts.
    Small,
    /// `m0 = 2^30`: exact powers of two, every rounding hits its ties.
    PowerOfTwo,
    /// `M = 0`.
    Zero,
}

impl Multiplier {
    fn draw(self, rng: &mut Rng) -> (i32, i32) {
        let m0 = (1 << 30) + below(rng, 1 << 30) as i32;
        let shift = |rng: &mut Rng, lo: i32, hi: i32| lo + below(rng, (hi - lo + 1) as u64) as i32;
        match self {
            Self::Random => (m0, shift(rng, -31, 30)),
            Self::Large => (m0, shift(rng, 1, 30)),
            Self::Small => (m0, shift(rng, -31, -15)),
            Self::PowerOfTwo => (1 << 30, shift(rng, -31, 30)),
            Self::Zero => (0, 0),
        }
    }
}

/// Everything about a layer but its geometry.
#[derive(Debug, Clone)]
struct Params {
    weight_bits: u8,
    /// Output (activation) bit width.
    act_bits: u8,
    input_bits: u8,
    z_in: Zero,
    z_w: Zero,
    z_out: Zero,
    relu: bool,
    weights: Fill,
    input: Fill,
    multiplier: Multiplier,
    /// Biases as large as the accumulator bound allows, instead of small ones.
    extreme_bias: bool,
    seed: u64,
}

fn params() -> impl Strategy<Value = Params> {
    let fill = || prop_oneof![6 => Just(Fill::Random), 1 => Just(Fill::Zero), 1 => Just(Fill::Max)];
    let zero = || {
        prop_oneof![
            Just(Zero::Min),
            Just(Zero::Mid),
            Just(Zero::Max),
            Just(Zero::Random)
        ]
    };
    let multiplier = prop_oneof![
        3 => Just(Multiplier::Random),
        1 => Just(Multiplier::Large),
        1 => Just(Multiplier::Small),
        1 => Just(Multiplier::PowerOfTwo),
        1 => Just(Multiplier::Zero),
    ];
    (
        (2..=8u8, 2..=8u8, 2..=8u8),
        (zero(), zero(), zero()),
        (any::<bool>(), fill(), fill(), multiplier),
        (prop::bool::weighted(0.25), any::<u64>()),
    )
        .prop_map(
            |(
                (weight_bits, act_bits, input_bits),
                (z_in, z_w, z_out),
                (relu, weights, input, multiplier),
                (extreme_bias, seed),
            )| Params {
                weight_bits,
                act_bits,
                input_bits,
                z_in,
                z_w,
                z_out,
                relu,
                weights,
                input,
                multiplier,
                extreme_bias,
                seed,
            },
        )
}

impl Params {
    /// 8-bit codes and random everything else.
    fn random(seed: u64) -> Self {
        Self {
            weight_bits: 8,
            act_bits: 8,
            input_bits: 8,
            z_in: Zero::Random,
            z_w: Zero::Random,
            z_out: Zero::Random,
            relu: true,
            weights: Fill::Random,
            input: Fill::Random,
            multiplier: Multiplier::Random,
            extreme_bias: false,
            seed,
        }
    }

    /// A layer of geometry `kind` within the accumulator bound (unit scales: the kernels read
    /// only the integer fields).
    fn layer(&self, kind: LayerKind) -> QuantLayer {
        let mut rng = Rng::new(self.seed);
        let qmax = |bits: u8| (1 << bits) - 1;
        let (w_qmax, a_qmax) = (qmax(self.weight_bits), qmax(self.act_bits));
        let (out, fan_in) = (kind.out_channels(), kind.fan_in());
        let input = QuantParams::new(
            1.0,
            self.z_in.value(qmax(self.input_bits), &mut rng),
            self.input_bits,
        )
        .unwrap();
        let z_out = self.z_out.value(a_qmax, &mut rng);
        let weight_zero_points: Vec<i32> =
            (0..out).map(|_| self.z_w.value(w_qmax, &mut rng)).collect();
        let weights: Vec<u8> = (0..out * fan_in)
            .map(|_| self.weights.code(w_qmax, &mut rng))
            .collect();
        let max_x = i64::from(input.max_abs_offset());
        let bias = weights
            .chunks(fan_in)
            .zip(&weight_zero_points)
            .map(|(row, &z)| {
                let sum: i64 = row
                    .iter()
                    .map(|&w| (i64::from(w) - i64::from(z)).abs())
                    .sum();
                let room = i64::from(i32::MAX) - max_x * sum;
                let magnitude = if self.extreme_bias {
                    room
                } else {
                    below(&mut rng, room.min(100_000) as u64 + 1) as i64
                };
                (if rng.next_u64().is_multiple_of(2) {
                    magnitude
                } else {
                    -magnitude
                }) as i32
            })
            .collect();
        let (m0, shift) = (0..out).map(|_| self.multiplier.draw(&mut rng)).unzip();
        QuantLayer {
            name: "test".into(),
            kind,
            weight_bits: self.weight_bits,
            weights,
            weight_zero_points,
            weight_scales: vec![1.0; out],
            bias,
            input,
            output: QuantParams::new(1.0, z_out, self.act_bits).unwrap(),
            m0,
            shift,
            act_min: if self.relu { z_out as u8 } else { 0 },
            act_max: a_qmax as u8,
        }
    }

    /// `len` input codes for `layer`.
    fn input(&self, layer: &QuantLayer, len: usize) -> Vec<u8> {
        let mut rng = Rng::new(self.seed ^ 0x5eed);
        let qmax = layer.input.qmax();
        (0..len).map(|_| self.input.code(qmax, &mut rng)).collect()
    }
}

#[derive(Debug, Clone)]
struct ConvCase {
    params: Params,
    kind: LayerKind,
    n: usize,
    height: usize,
    width: usize,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (params(), dim(), dim(), 1..=5usize, dim(), dim(), 1..=2usize).prop_map(
        |(params, in_channels, out_channels, kernel, height, width, n)| {
            let (height, width) = (height.max(kernel), width.max(kernel));
            let per_input_channel =
                n * out_channels * (height - kernel + 1) * (width - kernel + 1) * kernel * kernel;
            let in_channels = in_channels.min(MAX_CONV_MACS / per_input_channel).max(1);
            ConvCase {
                params,
                kind: LayerKind::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                },
                n,
                height,
                width,
            }
        },
    )
}

/// Convolutions whose output width is a multiple of eight, which the fused kernels run as
/// pairs of output rows keeping only vertical maxima: widths of 8 to 24 outputs, odd and even
/// output heights, one to many channels.
fn pool_panel_conv_case() -> impl Strategy<Value = ConvCase> {
    (conv_case(), 1..=3usize).prop_map(|(mut case, blocks)| {
        let LayerKind::Conv2d {
            in_channels,
            kernel,
            ..
        } = case.kind
        else {
            unreachable!("conv cases are convolutions")
        };
        case.width = 8 * blocks + kernel - 1;
        let per_channel = case.n * case.kind.out_channels() * case.height * case.width * 25;
        let in_channels = in_channels.min(MAX_CONV_MACS / per_channel).max(1);
        if let LayerKind::Conv2d {
            in_channels: ic, ..
        } = &mut case.kind
        {
            *ic = in_channels;
        }
        case
    })
}

impl ConvCase {
    fn setup(&self) -> (QuantLayer, PackedLayer, Vec<u8>) {
        let layer = self.params.layer(self.kind);
        let LayerKind::Conv2d { in_channels, .. } = self.kind else {
            unreachable!("conv cases are convolutions")
        };
        let input = self
            .params
            .input(&layer, self.n * in_channels * self.height * self.width);
        let packed = PackedLayer::new(&layer).unwrap();
        (layer, packed, input)
    }

    fn out_side(&self) -> (usize, usize) {
        let LayerKind::Conv2d { kernel, .. } = self.kind else {
            unreachable!("conv cases are convolutions")
        };
        (self.height - kernel + 1, self.width - kernel + 1)
    }
}

fn conv2d(kernel: KernelChoice, case: ConvCase) -> Result<(), TestCaseError> {
    let (layer, packed, input) = case.setup();
    let (n, h, w) = (case.n, case.height, case.width);
    let expected = reference::conv2d(&layer, &input, n, h, w).unwrap();
    prop_assert_eq!(
        kernels::conv2d(kernel, &packed, &input, n, h, w).unwrap(),
        expected
    );
    Ok(())
}

fn conv2d_requant_pool(kernel: KernelChoice, case: ConvCase) -> Result<(), TestCaseError> {
    let (layer, packed, input) = case.setup();
    let (n, h, w) = (case.n, case.height, case.width);
    let (oh, ow) = case.out_side();
    let acc = reference::conv2d(&layer, &input, n, h, w).unwrap();
    let codes = reference::requantize(&layer, &acc, oh * ow).unwrap();
    let planes = n * layer.kind.out_channels();
    let expected = reference::max_pool_2x2(&codes, planes, oh, ow).unwrap();
    let fused = kernels::conv2d_requant_pool(kernel, &packed, &input, n, h, w).unwrap();
    prop_assert_eq!(fused, expected);
    Ok(())
}

#[derive(Debug, Clone)]
struct LinearCase {
    params: Params,
    kind: LayerKind,
    n: usize,
}

fn linear_case() -> impl Strategy<Value = LinearCase> {
    (params(), dim(), dim(), dim()).prop_map(|(params, in_features, out_features, n)| LinearCase {
        params,
        kind: LayerKind::Linear {
            in_features,
            out_features,
        },
        n,
    })
}

impl LinearCase {
    fn setup(&self) -> (QuantLayer, PackedLayer, Vec<u8>) {
        let layer = self.params.layer(self.kind);
        let input = self.params.input(&layer, self.n * self.kind.fan_in());
        let packed = PackedLayer::new(&layer).unwrap();
        (layer, packed, input)
    }
}

fn linear(kernel: KernelChoice, case: LinearCase) -> Result<(), TestCaseError> {
    let (layer, packed, input) = case.setup();
    let expected = reference::linear(&layer, &input, case.n).unwrap();
    prop_assert_eq!(
        kernels::linear(kernel, &packed, &input, case.n).unwrap(),
        expected
    );
    Ok(())
}

fn linear_requant(kernel: KernelChoice, case: LinearCase) -> Result<(), TestCaseError> {
    let (layer, packed, input) = case.setup();
    let acc = reference::linear(&layer, &input, case.n).unwrap();
    let expected = reference::requantize(&layer, &acc, 1).unwrap();
    let fused = kernels::linear_requant(kernel, &packed, &input, case.n).unwrap();
    prop_assert_eq!(fused, expected);
    Ok(())
}

#[derive(Debug, Clone)]
struct RequantCase {
    params: Params,
    channels: usize,
    spatial: usize,
    batch: usize,
}

fn requant_case() -> impl Strategy<Value = RequantCase> {
    let spatial = prop_oneof![Just(1usize), dim()];
    (params(), dim(), spatial, 1..=3usize).prop_map(|(params, channels, spatial, batch)| {
        RequantCase {
            params,
            channels,
            spatial,
            batch,
        }
    })
}

/// Accumulators of every magnitude, with the `i32` extremes and values around 0 mixed in.
fn accumulators(seed: u64, len: usize) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    const EDGES: [i32; 7] = [i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX - 1, i32::MAX];
    (0..len)
        .map(|_| match below(&mut rng, 8) {
            0 => rng.next_u64() as i32,
            1 => EDGES[below(&mut rng, EDGES.len() as u64) as usize],
            _ => (rng.next_u64() as i32) >> below(&mut rng, 32),
        })
        .collect()
}

fn requantize(kernel: KernelChoice, case: RequantCase) -> Result<(), TestCaseError> {
    let kind = LayerKind::Linear {
        in_features: 1,
        out_features: case.channels,
    };
    let layer = case.params.layer(kind);
    let packed = PackedLayer::new(&layer).unwrap();
    let acc = accumulators(case.params.seed, case.batch * case.channels * case.spatial);
    let expected = reference::requantize(&layer, &acc, case.spatial).unwrap();
    prop_assert_eq!(
        kernels::requantize(kernel, &packed, &acc, case.spatial).unwrap(),
        expected
    );
    Ok(())
}

#[derive(Debug, Clone)]
struct PoolCase {
    planes: usize,
    height: usize,
    width: usize,
    fill: Fill,
    seed: u64,
}

fn pool_case() -> impl Strategy<Value = PoolCase> {
    let fill = prop_oneof![4 => Just(Fill::Random), 1 => Just(Fill::Zero), 1 => Just(Fill::Max)];
    (1..=5usize, dim(), dim(), fill, any::<u64>()).prop_map(
        |(planes, height, width, fill, seed)| PoolCase {
            planes,
            height,
            width,
            fill,
            seed,
        },
    )
}

fn max_pool(kernel: KernelChoice, case: PoolCase) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(case.seed);
    let (p, h, w) = (case.planes, case.height, case.width);
    let input: Vec<u8> = (0..p * h * w)
        .map(|_| case.fill.code(255, &mut rng))
        .collect();
    let expected = reference::max_pool_2x2(&input, p, h, w).unwrap();
    prop_assert_eq!(
        kernels::max_pool_2x2(kernel, &input, p, h, w).unwrap(),
        expected
    );
    Ok(())
}

/// The tutorial network's four layers at their real shapes, with random parameters.
fn real_shapes(kernel: KernelChoice) {
    let Some(kernel) = available(kernel) else {
        return;
    };
    for (i, (name, kind)) in burnq_quant::ARCHITECTURE.into_iter().enumerate() {
        let params = Params::random(i as u64);
        let layer = params.layer(kind);
        let packed = PackedLayer::new(&layer).unwrap();
        let n = 3 + i;
        match kind {
            LayerKind::Conv2d { in_channels, .. } => {
                let side = if i == 0 { 28 } else { 12 };
                let input = params.input(&layer, n * in_channels * side * side);
                let expected = reference::conv2d(&layer, &input, n, side, side).unwrap();
                let got = kernels::conv2d(kernel, &packed, &input, n, side, side).unwrap();
                assert_eq!(got, expected, "{name}");
            }
            LayerKind::Linear { in_features, .. } => {
                let input = params.input(&layer, n * in_features);
                let expected = reference::linear(&layer, &input, n).unwrap();
                let got = kernels::linear(kernel, &packed, &input, n).unwrap();
                assert_eq!(got, expected, "{name}");
            }
        }
    }
}

/// Lengths, kinds and codes are checked before any kernel runs.
fn bad_arguments(kernel: KernelChoice) {
    let Some(kernel) = available(kernel) else {
        return;
    };
    let params = Params {
        input_bits: 4,
        ..Params::random(1)
    };
    let conv = params.layer(LayerKind::Conv2d {
        in_channels: 2,
        out_channels: 3,
        kernel: 3,
    });
    let fc = params.layer(LayerKind::Linear {
        in_features: 4,
        out_features: 2,
    });
    let (conv, fc) = (
        PackedLayer::new(&conv).unwrap(),
        PackedLayer::new(&fc).unwrap(),
    );
    let shape =
        |r: Result<Vec<i32>, QuantError>| matches!(r, Err(QuantError::ShapeMismatch { .. }));
    let value = |r: Result<Vec<i32>, QuantError>| {
        matches!(
            r,
            Err(QuantError::ImageTooSmall { .. }
                | QuantError::WrongLayerKind { .. }
                | QuantError::CodeAboveQmax { .. })
        )
    };
    assert!(shape(kernels::conv2d(kernel, &conv, &[0; 49], 1, 5, 5)));
    assert!(value(kernels::conv2d(kernel, &conv, &[0; 8], 1, 2, 2)));
    assert!(value(kernels::conv2d(kernel, &fc, &[0; 50], 1, 5, 5)));
    assert!(value(kernels::conv2d(kernel, &conv, &[16; 50], 1, 5, 5)));
    assert!(shape(kernels::linear(kernel, &fc, &[0; 7], 2)));
    assert!(value(kernels::linear(kernel, &conv, &[0; 18], 1)));
    assert!(value(kernels::linear(kernel, &fc, &[0, 0, 16, 0], 1)));
    assert!(matches!(
        kernels::linear_requant(kernel, &fc, &[0; 3], 1),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        kernels::conv2d_requant_pool(kernel, &conv, &[0; 51], 1, 5, 5),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        kernels::requantize(kernel, &fc, &[0; 3], 1),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        kernels::requantize(kernel, &fc, &[0; 4], 0),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        kernels::max_pool_2x2(kernel, &[0; 15], 1, 4, 4),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(
        kernels::conv2d(kernel, &conv, &[], 0, 5, 5)
            .unwrap()
            .is_empty()
    );
    assert!(
        kernels::max_pool_2x2(kernel, &[7], 1, 1, 1)
            .unwrap()
            .is_empty()
    );
}

/// A per-channel layer at the byte GEMMs' bounds: channels with weight zero points 0, mid and
/// `qmax`, each with every code at the end farthest from its zero point but one at the other
/// end (so that `max|q_w − c|` is as large as the centre rule allows, with one sign), inputs
/// all `qmax_in`: every `vpmaddubsw` pair sum is `±2·qmax_in·max|s|` and a chain adds them with
/// one sign. The reduction spans more than one chain (from 67 up to 8000 terms). Returns the layer and
/// its pair bound `2·qmax_in·max|s|`.
fn bound_layer(
    weight_bits: u8,
    input_bits: u8,
    kind: impl Fn(usize) -> LayerKind,
) -> (QuantLayer, i64) {
    let (w_qmax, x_qmax) = ((1 << weight_bits) - 1, (1i64 << input_bits) - 1);
    let zero_points = vec![0, (w_qmax + 1) / 2, w_qmax];
    // The largest |q − c| of the centre rule: |q − z| if it fits i8, else half the range.
    let far = |z: i32| z.max(w_qmax - z);
    let max_s = zero_points
        .iter()
        .map(|&z| if far(z) <= 127 { far(z) } else { 128 })
        .max()
        .unwrap();
    let pair = 2 * x_qmax * i64::from(max_s);
    let chain = usize::try_from(32767 / pair).unwrap();
    // At least 16 groups of four, the shortest reduction `avx2-maddubs` takes.
    let fan_in = (4 * (chain + 1) + 3).clamp(67, 8000);
    let layer = Params {
        weight_bits,
        input_bits,
        act_bits: 8,
        ..Params::random(u64::from(weight_bits) * 16 + u64::from(input_bits))
    }
    .layer(kind(fan_in));
    let fan_in = layer.kind.fan_in();
    let weights = zero_points
        .iter()
        .flat_map(|&z| {
            let (far_code, near_code) = if z > w_qmax - z {
                (0, w_qmax)
            } else {
                (w_qmax, 0)
            };
            (0..fan_in).map(move |k| if k + 1 == fan_in { near_code } else { far_code } as u8)
        })
        .collect();
    let layer = QuantLayer {
        weights,
        weight_zero_points: zero_points,
        bias: vec![0; 3],
        ..layer
    };
    (layer, pair)
}

/// Every width pair at the byte GEMMs' bounds ([`bound_layer`]), as a linear layer and as a
/// convolution: each kernel equals the reference, `avx2-maddubs` runs its byte GEMM exactly
/// when `2·qmax_in·max|s| ≤ 32767` (else the `i16` GEMM), `avx512-vnni` always.
#[test]
fn byte_gemm_bounds_are_exact() {
    let kernels = common::kernels::all();
    for weight_bits in 2..=8u8 {
        for input_bits in 2..=8u8 {
            let (linear, pair) = bound_layer(weight_bits, input_bits, |fan_in| LayerKind::Linear {
                in_features: fan_in,
                out_features: 3,
            });
            let (conv, _) = bound_layer(weight_bits, input_bits, |fan_in| LayerKind::Conv2d {
                in_channels: fan_in.div_ceil(9),
                out_channels: 3,
                kernel: 3,
            });
            let x_qmax = (1u16 << input_bits) - 1;
            let maddubs_exact = pair <= 32767;
            let what = format!("w{weight_bits} x{input_bits}");
            for layer in [&linear, &conv] {
                let packed = PackedLayer::new(layer).unwrap();
                let (n, side) = (2, 4);
                let (input_len, expected) = match layer.kind {
                    LayerKind::Linear { in_features, .. } => {
                        let input = vec![x_qmax as u8; n * in_features];
                        (input.len(), reference::linear(layer, &input, n).unwrap())
                    }
                    LayerKind::Conv2d { in_channels, .. } => {
                        let input = vec![x_qmax as u8; n * in_channels * side * side];
                        let acc = reference::conv2d(layer, &input, n, side, side).unwrap();
                        (input.len(), acc)
                    }
                };
                let input = vec![x_qmax as u8; input_len];
                for &kernel in &kernels {
                    let got = match layer.kind {
                        LayerKind::Linear { .. } => kernels::linear(kernel, &packed, &input, n),
                        LayerKind::Conv2d { .. } => {
                            kernels::conv2d(kernel, &packed, &input, n, side, side)
                        }
                    };
                    assert_eq!(got.unwrap(), expected, "{what} {kernel}");
                    let bytes = packed.gemm_form(kernel).unwrap() != GemmForm::I16;
                    match kernel {
                        KernelChoice::Avx2Maddubs => assert_eq!(bytes, maddubs_exact, "{what}"),
                        KernelChoice::Avx512Vnni => assert!(bytes, "{what}"),
                        KernelChoice::Generic | KernelChoice::Avx2 => assert!(!bytes),
                    }
                }
            }
        }
    }
}

/// Reductions shorter than 16 groups of four (a one-channel first convolution, `K = 25`):
/// `avx2-maddubs` runs its byte GEMM only when the whole reduction is one exact `i16` chain,
/// `⌈K/4⌉ ≤ chain`, taken at `⌈K/4⌉ = chain` and refused one group later; every kernel equals
/// the reference there, with every code at `qmax` and the weights at the far end of their range.
#[test]
fn short_reductions_take_the_byte_gemm_as_one_chain() {
    let linear = |fan_in| LayerKind::Linear {
        in_features: fan_in,
        out_features: 3,
    };
    let mut tried = 0;
    for weight_bits in 2..=8u8 {
        for input_bits in 2..=8u8 {
            let (_, pair) = bound_layer(weight_bits, input_bits, linear);
            let chain = usize::try_from(32767 / pair).unwrap();
            if !(1..=14).contains(&chain) {
                continue;
            }
            for groups in [chain, chain + 1] {
                let (layer, _) = bound_layer(weight_bits, input_bits, |_| linear(4 * groups));
                let packed = PackedLayer::new(&layer).unwrap();
                let input = vec![((1u16 << input_bits) - 1) as u8; 2 * layer.kind.fan_in()];
                let expected = reference::linear(&layer, &input, 2).unwrap();
                let what = format!("w{weight_bits} x{input_bits}, {groups} groups, chain {chain}");
                for kernel in common::kernels::all() {
                    let got = kernels::linear(kernel, &packed, &input, 2).unwrap();
                    assert_eq!(got, expected, "{what} {kernel}");
                    if kernel == KernelChoice::Avx2Maddubs {
                        let bytes = packed.gemm_form(kernel).unwrap() != GemmForm::I16;
                        assert_eq!(bytes, groups == chain, "{what}");
                    }
                }
                tried += 1;
            }
        }
    }
    assert!(tried >= 10, "only {tried} short-chain layers");
}

/// The nibble GEMM: `avx2-maddubs` runs a linear layer whose `u8 × i8` pair sums could
/// saturate (`2·qmax_in·max|s| > 32767`: 7- and 8-bit weights against 8-bit codes) on one or two
/// rows with the codes split into nibbles, `x = lo + 16·hi`. At its bound every code is 255 (both
/// nibbles 15) and the weights are at the far end of their range with one sign
/// ([`bound_layer`]), so each `i16` chain sum of `⌊32767 / (2·15·max|s|)⌋` pair sums (8 at
/// `max|s| = 128`) comes within 7 % of wrapping; the reduction spans three such chains and a
/// partial group. Every kernel equals the reference on 1 and 2 rows, and on 3 (the `i16` GEMM).
#[test]
fn nibble_gemm_is_exact_at_its_bound() {
    let linear = |fan_in| LayerKind::Linear {
        in_features: fan_in,
        out_features: 3,
    };
    for weight_bits in [7, 8] {
        let (_, pair) = bound_layer(weight_bits, 8, linear);
        assert!(
            pair > 32767,
            "w{weight_bits} x8 would run the byte GEMM as it is"
        );
        let max_s = pair / (2 * 255);
        let nibble_chain = usize::try_from(32767 / (2 * 15 * max_s)).unwrap();
        let fan_in = 4 * (3 * nibble_chain) + 3;
        let (layer, _) = bound_layer(weight_bits, 8, |_| linear(fan_in));
        let packed = PackedLayer::new(&layer).unwrap();
        for n in 1..=3 {
            let input = vec![255; n * fan_in];
            let expected = reference::linear(&layer, &input, n).unwrap();
            for kernel in common::kernels::all() {
                let got = kernels::linear(kernel, &packed, &input, n).unwrap();
                let what = format!("w{weight_bits} x8, K = {fan_in}, {n} rows, {kernel}");
                assert_eq!(got, expected, "{what}");
            }
        }
    }
}

/// Convolutions on two-bit inputs at the table form's bounds ([`bound_layer`]: every code 3,
/// weights at the far end of their range, one sign per channel): `avx2-maddubs` looks products
/// up exactly when entries fit `i8` (`e = 2·3·max|s| ≤ 127`) and a column's sum of all entries
/// fits `i16` (`⌈K/2⌉·e ≤ 32767`: taken at the last such `K`, refused one pair later), and
/// every kernel equals the reference there, where the `i8` and `i16` sums come closest to
/// wrapping.
#[test]
fn lookup_table_bounds_are_exact() {
    let conv = |fan_in| LayerKind::Conv2d {
        in_channels: fan_in,
        out_channels: 3,
        kernel: 1,
    };
    for weight_bits in 2..=6u8 {
        let (_, entry_bound) = bound_layer(weight_bits, 2, conv);
        let last = if entry_bound <= 127 {
            2 * usize::try_from(32767 / entry_bound).unwrap()
        } else {
            64
        };
        for (fan_in, expect_tables) in [(last, entry_bound <= 127), (last + 1, false)] {
            let (layer, _) = bound_layer(weight_bits, 2, |_| conv(fan_in));
            let packed = PackedLayer::new(&layer).unwrap();
            let what = format!("w{weight_bits} x2, K = {fan_in}, e = {entry_bound}");
            // Three columns (panels gathered, indices from the byte panel) and eight (each
            // half a run: indices read straight from the image), pooled too.
            for (n, height, width) in [(2, 3, 3), (2, 3, 8)] {
                let input = vec![3; n * fan_in * height * width];
                let expected = reference::conv2d(&layer, &input, n, height, width).unwrap();
                let codes = reference::requantize(&layer, &expected, height * width).unwrap();
                let pooled = reference::max_pool_2x2(&codes, n * 3, height, width).unwrap();
                for kernel in common::kernels::all() {
                    let got = kernels::conv2d(kernel, &packed, &input, n, height, width);
                    assert_eq!(got.unwrap(), expected, "{what} {width} wide {kernel}");
                    let fused =
                        kernels::conv2d_requant_pool(kernel, &packed, &input, n, height, width);
                    assert_eq!(fused.unwrap(), pooled, "{what} {width} wide {kernel}");
                }
            }
            for kernel in common::kernels::all() {
                let tables = packed.gemm_form(kernel).unwrap() == GemmForm::Tables;
                let expect = expect_tables && kernel == KernelChoice::Avx2Maddubs;
                assert_eq!(tables, expect, "{what} {kernel}");
            }
        }
    }
}

/// Convolutions whose whole reduction fits one `i16` sum (`K·qmax_in·max|s| ≤ 32767`) at that
/// bound ([`bound_layer`]'s zero points, every code `qmax_in` and every weight at the far end of
/// its range, so a channel's sum is the bound itself): `avx2-maddubs` runs them
/// directly on pair panels when the reduction is shorter than 16 groups of four (taken at the
/// last such `K`, refused one term later, and never for two-bit inputs whose tables it
/// prefers), and every kernel equals the reference there, both the accumulators and the fused
/// requantization and 2×2 max pool. Width pairs whose `vpmaddubsw` pairs could saturate (which
/// the byte GEMM, and with it the direct tile, refuses) are left to `byte_gemm_bounds_are_exact`.
#[test]
fn direct_convolution_is_exact_at_its_bound() {
    let conv = |fan_in| LayerKind::Conv2d {
        in_channels: fan_in,
        out_channels: 3,
        kernel: 1,
    };
    let mut direct = 0;
    for weight_bits in 2..=7u8 {
        for input_bits in 2..=8u8 {
            let (_, pair) = bound_layer(weight_bits, input_bits, conv);
            if pair > 32767 {
                continue;
            }
            // `pair = 2·qmax_in·max|s|`: the last direct `K` is `⌊32767 / (qmax_in·max|s|)⌋`.
            let last = usize::try_from(32767 / (pair / 2)).unwrap();
            for (fan_in, within) in [(last, true), (last + 1, false)] {
                // The direct tile takes reductions shorter than 16 groups of four.
                let short = fan_in.div_ceil(4) < 16;
                let (layer, _) = bound_layer(weight_bits, input_bits, |_| conv(fan_in));
                // Every weight at the far end (at these widths the centre is the zero point):
                // a channel's sum is then `K·qmax_in·max|s|` exactly.
                let w_qmax = (1i32 << weight_bits) - 1;
                let far = |z: i32| if z > w_qmax - z { 0 } else { w_qmax as u8 };
                let weights = (layer.weight_zero_points.iter())
                    .flat_map(|&z| std::iter::repeat_n(far(z), fan_in))
                    .collect();
                let layer = QuantLayer { weights, ..layer };
                let packed = PackedLayer::new(&layer).unwrap();
                // Two output rows of eight: one column panel, each half a run of eight.
                let (n, height, width) = (2, 3, 8);
                let x_qmax = ((1u16 << input_bits) - 1) as u8;
                let input = vec![x_qmax; n * fan_in * height * width];
                let acc = reference::conv2d(&layer, &input, n, height, width).unwrap();
                let codes = reference::requantize(&layer, &acc, height * width).unwrap();
                let pooled = reference::max_pool_2x2(&codes, n * 3, height, width).unwrap();
                let what = format!("w{weight_bits} x{input_bits}, K = {fan_in}");
                for kernel in common::kernels::all() {
                    let got = kernels::conv2d(kernel, &packed, &input, n, height, width).unwrap();
                    assert_eq!(got, acc, "{what} {kernel}");
                    let fused =
                        kernels::conv2d_requant_pool(kernel, &packed, &input, n, height, width);
                    assert_eq!(fused.unwrap(), pooled, "{what} {kernel}");
                    let form = packed.gemm_form(kernel).unwrap();
                    let expect = within
                        && short
                        && kernel == KernelChoice::Avx2Maddubs
                        && form != GemmForm::Tables;
                    assert_eq!(
                        form == GemmForm::Direct,
                        expect,
                        "{what} {kernel}: {form:?}"
                    );
                    direct += usize::from(form == GemmForm::Direct);
                }
            }
        }
    }
    if common::kernels::all().contains(&KernelChoice::Avx2Maddubs) {
        assert!(direct >= 15, "only {direct} direct layers");
    }
}

macro_rules! kernel_tests {
    ($($name:ident: $kernel:expr;)*) => {$(
        mod $name {
            use super::*;

            const KERNEL: KernelChoice = $kernel;

            #[test]
            fn conv2d_matches_reference() {
                check(KERNEL, conv_case(), conv2d);
            }

            #[test]
            fn conv2d_requant_pool_matches_reference() {
                check(KERNEL, conv_case(), conv2d_requant_pool);
            }

            #[test]
            fn conv2d_requant_pool_on_row_pair_panels_matches_reference() {
                check(KERNEL, pool_panel_conv_case(), conv2d_requant_pool);
            }

            #[test]
            fn linear_matches_reference() {
                check(KERNEL, linear_case(), linear);
            }

            #[test]
            fn linear_requant_matches_reference() {
                check(KERNEL, linear_case(), linear_requant);
            }

            #[test]
            fn requantize_matches_reference() {
                check(KERNEL, requant_case(), requantize);
            }

            #[test]
            fn max_pool_matches_reference() {
                check(KERNEL, pool_case(), max_pool);
            }

            #[test]
            fn real_layer_shapes_match_reference() {
                real_shapes(KERNEL);
            }

            #[test]
            fn bad_arguments_are_errors() {
                bad_arguments(KERNEL);
            }
        }
    )*};
}

kernel_tests! {
    generic: KernelChoice::Generic;
    avx2: KernelChoice::Avx2;
    avx2_maddubs: KernelChoice::Avx2Maddubs;
    avx512_vnni: KernelChoice::Avx512Vnni;
}

#[test]
fn packing_refuses_what_the_kernels_cannot_run_exactly() {
    let params = Params::random(2);
    let good = params.layer(LayerKind::Linear {
        in_features: 3,
        out_features: 2,
    });
    assert!(PackedLayer::new(&good).is_ok());
    let edit = |f: fn(&mut QuantLayer)| {
        let mut layer = good.clone();
        f(&mut layer);
        PackedLayer::new(&layer)
    };
    assert!(matches!(
        edit(|l| l.bias[1] = i32::MAX),
        Err(QuantError::AccumulatorOverflow { channel: 1, .. })
    ));
    assert!(matches!(
        edit(|l| l.m0[0] = -1),
        Err(QuantError::InvalidValue { .. })
    ));
    assert!(matches!(
        edit(|l| l.shift[0] = -32),
        Err(QuantError::InvalidValue { .. })
    ));
    assert!(matches!(
        edit(|l| l.weight_zero_points[0] = 256),
        Err(QuantError::InvalidValue { .. })
    ));
    assert!(matches!(
        edit(|l| l.bias.pop().map_or((), drop)),
        Err(QuantError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        edit(|l| {
            l.kind = LayerKind::Linear {
                in_features: 0,
                out_features: 2,
            };
            l.weights.clear();
        }),
        Err(QuantError::InvalidValue { .. })
    ));
}
