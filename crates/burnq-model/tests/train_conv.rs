//! The GEMM training convolution against Burn's own: output and all three gradients, on random
//! shapes, strides and paddings; and Burn's convolution wherever the GEMM one does not apply.
//!
//! Tolerance: both convolutions sum the same products in different orders, each in `f32`. A
//! sum of `K` products computed in any order (any summation tree, with or without fused
//! multiply-adds) is within `γ_K·M` of the exact value, where `γ_K = K·u/(1 − K·u)`,
//! `u = 2⁻²⁴` and `M` is the same sum of the products' magnitudes (Higham, *Accuracy and
//! Stability of Numerical Algorithms*, §3.1). So the two results may differ by `2·γ_K·M`.
//! `M` is computed per element by running Burn's convolution and its gradients on `|x|`,
//! `|w|`, `|b|` with output gradient `|g|` (itself rounded, hence a factor 1.01). `K` is
//! `C·KH·KW + 1` for the output (bias included), `O·KH·KW` for the input gradient and
//! `N·OH·OW` for the weight and bias gradients.

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burnq_model::train_conv::{Unsupported, conv2d, plan};
use burnq_testkit::Rng;
use proptest::prelude::*;

/// One convolution to compare.
#[derive(Debug, Clone)]
struct Case {
    input: [usize; 4],
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    /// top, left, bottom, right.
    padding: [usize; 4],
    bias: bool,
    input_grad: bool,
    seed: u64,
}

/// The output and the gradients of input, weight and bias of one run.
struct Run {
    y: Vec<f32>,
    dx: Option<Vec<f32>>,
    dw: Vec<f32>,
    db: Option<Vec<f32>>,
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.symmetric(1.0)).collect()
}

impl Case {
    fn conv(&self, device: &Device, magnitude: bool) -> Conv2d {
        let [_, c, _, _] = self.input;
        let [kh, kw] = self.kernel;
        let [t, l, b, r] = self.padding;
        let mut conv = Conv2dConfig::new([c, self.out_channels], self.kernel)
            .with_stride(self.stride)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .with_bias(self.bias)
            .init(device);
        let mut rng = Rng::new(self.seed ^ 1);
        let abs = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| if magnitude { x.abs() } else { x })
                .collect()
        };
        let w = abs(random(&mut rng, self.out_channels * c * kh * kw));
        let shape = [self.out_channels, c, kh, kw];
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), device));
        if self.bias {
            let b = abs(random(&mut rng, self.out_channels));
            conv.bias = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(b, [self.out_channels]),
                device,
            )));
        }
        conv
    }

    /// Runs `forward` with loss `Σ y·g` (so the output gradient is `g`).
    fn run(&self, forward: fn(&Conv2d, Tensor<4>) -> Tensor<4>, magnitude: bool) -> Run {
        let device = Device::flex().autodiff();
        let conv = self.conv(&device, magnitude);
        let mut rng = Rng::new(self.seed);
        let map = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| if magnitude { x.abs() } else { x })
                .collect()
        };
        let x = map(random(&mut rng, self.input.iter().product()));
        let mut x = Tensor::<4>::from_data(TensorData::new(x, self.input), &device);
        if self.input_grad {
            x = x.require_grad();
        }
        let y = forward(&conv, x.clone());
        let dims = y.dims();
        let g = map(random(&mut rng, dims.iter().product()));
        let g = Tensor::<4>::from_data(TensorData::new(g, dims), &device);
        let grads = (y.clone() * g).sum().backward();
        Run {
            y: values(y),
            dx: x.grad(&grads).map(values),
            dw: values(conv.weight.val().grad(&grads).unwrap()),
            db: conv.bias.map(|b| values(b.val().grad(&grads).unwrap())),
        }
    }

    fn check(&self) {
        let burn = self.run(|c, x| c.forward(x), false);
        let ours = self.run(conv2d, false);
        let bound = self.run(|c, x| c.forward(x), true);
        let [n, c, _, _] = self.input;
        let [kh, kw] = self.kernel;
        let positions = bound.y.len() / (n * self.out_channels);
        let terms = [c * kh * kw + 1, self.out_channels * kh * kw, n * positions];
        let close = |what: &str, a: &[f32], b: &[f32], m: &[f32], k: usize| {
            let u = f64::from(f32::EPSILON) / 2.0;
            let gamma = k as f64 * u / (1.0 - k as f64 * u);
            assert_eq!(a.len(), b.len(), "{what}: lengths");
            for (i, ((a, b), m)) in a.iter().zip(b).zip(m).enumerate() {
                let allowed = 2.0 * gamma * f64::from(*m) * 1.01;
                let diff = f64::from(a - b).abs();
                assert!(
                    diff <= allowed,
                    "{what}[{i}]: {a} vs Burn's {b} (differ by {diff:e}, allowed {allowed:e}) in {self:?}"
                );
            }
        };
        close("y", &ours.y, &burn.y, &bound.y, terms[0]);
        close("dw", &ours.dw, &burn.dw, &bound.dw, terms[2]);
        assert_eq!(ours.dx.is_some(), self.input_grad);
        if let (Some(a), Some(b), Some(m)) = (&ours.dx, &burn.dx, &bound.dx) {
            close("dx", a, b, m, terms[1]);
        }
        assert_eq!(ours.db.is_some(), self.bias);
        if let (Some(a), Some(b), Some(m)) = (&ours.db, &burn.db, &bound.db) {
            close("db", a, b, m, terms[2]);
        }
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=4, 1usize..=12, 1usize..=12),
        (1usize..=5, 1usize..=4, 1usize..=4),
        (1usize..=3, 1usize..=3),
        [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_filter_map(
            "the padded input must hold the kernel",
            |((n, c, h, w), (o, kh, kw), stride, padding, (bias, input_grad, seed))| {
                let [t, l, b, r] = padding;
                (h + t + b >= kh && w + l + r >= kw).then_some(Case {
                    input: [n, c, h, w],
                    out_channels: o,
                    kernel: [kh, kw],
                    stride: [stride.0, stride.1],
                    padding,
                    bias,
                    input_grad,
                    seed,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn gemm_convolution_matches_burns_output_and_gradients(case in case()) {
        case.check();
    }
}

/// The tutorial's two layers at its batch size, with and without the input gradient.
#[test]
fn tutorial_layers_match_burn() {
    for (input, out_channels, input_grad) in
        [([64, 1, 28, 28], 20, false), ([64, 20, 12, 12], 50, true)]
    {
        Case {
            input,
            out_channels,
            kernel: [5, 5],
            stride: [1, 1],
            padding: [0; 4],
            bias: true,
            input_grad,
            seed: 3,
        }
        .check();
    }
}

/// Grouped, dilated and `Same`-padded convolutions, and tensors outside `Autodiff<Flex>`, are
/// Burn's convolution exactly.
#[test]
fn unsupported_convolutions_are_burns() {
    let ad = Device::flex().autodiff();
    let x = |device: &Device, c: usize| {
        let v: Vec<f32> = (0..2 * c * 81)
            .map(|i| (i % 13) as f32 / 7.0 - 0.9)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [2, c, 9, 9]), device)
    };
    let cases = [
        (
            Conv2dConfig::new([4, 6], [3, 3]).with_groups(2),
            Unsupported::Groups(2),
        ),
        (
            Conv2dConfig::new([2, 3], [3, 3]).with_dilation([2, 1]),
            Unsupported::Dilation([2, 1]),
        ),
        (
            Conv2dConfig::new([2, 3], [3, 3]).with_padding(PaddingConfig2d::Same),
            Unsupported::SamePadding,
        ),
    ];
    for (config, why) in cases {
        let conv = config.init(&ad);
        let c = config.channels[0];
        assert_eq!(plan(&conv, &x(&ad, c)), Err(why));
        assert_eq!(
            values(conv2d(&conv, x(&ad, c))),
            values(conv.forward(x(&ad, c)))
        );
    }
    let plain = Device::flex();
    let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&plain);
    assert!(
        plan(&conv, &x(&plain, 2)).is_ok(),
        "shapes alone are supported"
    );
    assert_eq!(
        values(conv2d(&conv, x(&plain, 2))),
        values(conv.forward(x(&plain, 2))),
        "inference falls back to Burn"
    );
    let mismatched = Conv2dConfig::new([3, 3], [3, 3]).init(&ad);
    assert_eq!(
        plan(&mismatched, &x(&ad, 2)),
        Err(Unsupported::Shapes {
            input: [2, 2, 9, 9],
            weight: [3, 3, 3, 3]
        })
    );
}
