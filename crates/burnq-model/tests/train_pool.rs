//! The training max pooling (optionally fused with ReLU) against Burn's ReLU and max pooling:
//! outputs bit for bit, input gradients within the rounding of a different summation order.
//!
//! Inputs are drawn from a few values (ties in most windows) with negatives and zeros, so the
//! first-maximum rule and ReLU's zero gradient at 0 are exercised. With non-overlapping
//! windows every input gradient is one output gradient or 0, so it is compared exactly; with
//! overlapping windows (stride < window) an input element sums up to `k = ⌈kh/sh⌉·⌈kw/sw⌉`
//! output gradients in |g| ≤ 1, in an order of its own, so the two differ by at most
//! `2·γ_k·k` (`γ_k = k·u/(1 − k·u)`, `u = 2⁻²⁴`).

use burn::nn::PaddingConfig2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burnq_model::train_conv::Unsupported;
use burnq_model::train_pool::{max_pool2d, plan};
use burnq_testkit::Rng;
use proptest::prelude::*;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// Output and input gradient of `forward` with loss `Σ y·g`.
fn run(
    forward: &dyn Fn(Tensor<4>) -> Tensor<4>,
    x: &[f32],
    shape: [usize; 4],
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
    let y = forward(x.clone());
    let dims = y.dims();
    let mut rng = Rng::new(seed);
    let g: Vec<f32> = (0..dims.iter().product())
        .map(|_| rng.symmetric(1.0))
        .collect();
    let grads = (y.clone() * Tensor::from_data(TensorData::new(g, dims), &device))
        .sum()
        .backward();
    (values(y), values(x.grad(&grads).unwrap()))
}

fn check(shape: [usize; 4], kernel: [usize; 2], stride: [usize; 2], fuse: bool, seed: u64) {
    let pool = MaxPool2dConfig::new(kernel).with_strides(stride).init();
    let mut rng = Rng::new(seed);
    let x: Vec<f32> = (0..shape.iter().product())
        .map(|_| (rng.next_u64() % 7) as f32 - 3.0)
        .collect();
    let burn = |x| pool.forward(if fuse { relu(x) } else { x });
    let (y_burn, dx_burn) = run(&burn, &x, shape, seed);
    let (y, dx) = run(&|x| max_pool2d(&pool, x, fuse), &x, shape, seed);
    assert_eq!(y, y_burn, "outputs");
    let k = kernel[0].div_ceil(stride[0]) * kernel[1].div_ceil(stride[1]);
    let u = f64::from(f32::EPSILON) / 2.0;
    let allowed = 2.0 * (k as f64 * u / (1.0 - k as f64 * u)) * k as f64;
    for (i, (a, b)) in dx.iter().zip(&dx_burn).enumerate() {
        let diff = f64::from(a - b).abs();
        assert!(
            diff <= allowed,
            "dx[{i}]: {a} vs Burn's {b} ({shape:?}, {kernel:?}, {stride:?}, fuse {fuse})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fused_pooling_matches_burn(
        (n, c, h, w) in (1usize..=3, 1usize..=3, 3usize..=11, 3usize..=11),
        kernel in [1usize..=3, 1usize..=3],
        stride in [1usize..=3, 1usize..=3],
        fuse in any::<bool>(),
        seed in any::<u64>(),
    ) {
        check([n, c, h, w], kernel, stride, fuse, seed);
    }
}

/// The tutorial's pooling of both layers' outputs at its batch size.
#[test]
fn tutorial_pooling_matches_burn() {
    for shape in [[64, 20, 24, 24], [64, 50, 8, 8]] {
        check(shape, [2, 2], [2, 2], true, 5);
    }
}

/// Padded, dilated and ceil-mode pooling, and tensors outside `Autodiff<Flex>`, are Burn's.
#[test]
fn unsupported_pooling_is_burns() {
    let ad = Device::flex().autodiff();
    let x = |device: &Device| {
        let v: Vec<f32> = (0..2 * 3 * 49).map(|i| (i % 11) as f32 - 5.0).collect();
        Tensor::<4>::from_data(TensorData::new(v, [2, 3, 7, 7]), device)
    };
    let base = || MaxPool2dConfig::new([2, 2]).with_strides([2, 2]);
    let cases: [(MaxPool2d, Unsupported); 4] = [
        (
            base().with_dilation([2, 2]).init(),
            Unsupported::Dilation([2, 2]),
        ),
        (
            base()
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            Unsupported::PoolPadding,
        ),
        (base().with_ceil_mode(true).init(), Unsupported::PoolPadding),
        (
            base().with_padding(PaddingConfig2d::Same).init(),
            Unsupported::SamePadding,
        ),
    ];
    for (pool, why) in cases {
        assert_eq!(plan(&pool, &x(&ad)), Err(why));
        assert_eq!(
            values(max_pool2d(&pool, x(&ad), true)),
            values(pool.forward(relu(x(&ad))))
        );
    }
    let big = MaxPool2dConfig::new([8, 8]).init();
    assert_eq!(
        plan(&big, &x(&ad)),
        Err(Unsupported::PoolShapes {
            input: [2, 3, 7, 7],
            kernel: [8, 8]
        })
    );
    let plain = Device::flex();
    let pool = base().init();
    assert_eq!(
        values(max_pool2d(&pool, x(&plain), true)),
        values(pool.forward(relu(x(&plain)))),
        "inference falls back to Burn"
    );
}
