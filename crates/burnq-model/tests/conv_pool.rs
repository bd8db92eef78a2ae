//! The fused convolution + ReLU + max pooling against Burn's own three operations, and
//! against this crate's unfused pair ([`conv2d`], [`max_pool2d`]).
//!
//! Against Burn, inputs, weights, biases and output gradients are small integers: every
//! product and sum, in any order, is then an exact `f32` integer, so both sides compute the
//! same convolution outputs (ties included, and small integers tie often, exercising the
//! first-maximum rule), the same pooling and the same gradients, and are compared exactly
//! (`==`, so only the sign of a zero may differ). Against the unfused pair, on real-valued
//! data, every output and gradient must match bit for bit (the module documents why).

use burn::module::Param;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burnq_model::conv_pool::{conv_relu_pool, plan};
use burnq_model::train_conv::{Unsupported, conv2d};
use burnq_model::train_pool::max_pool2d;
use burnq_testkit::Rng;
use proptest::prelude::*;

/// One block to compare.
#[derive(Debug, Clone)]
struct Case {
    input: [usize; 4],
    out_channels: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    /// top, left, bottom, right.
    padding: [usize; 4],
    pool: [usize; 2],
    pool_stride: [usize; 2],
    bias: bool,
    input_grad: bool,
    /// Small integers (for the comparison with Burn) or reals.
    integers: bool,
    seed: u64,
}

/// The output and the gradients of input, weight and bias of one run.
#[derive(Debug, PartialEq)]
struct Run {
    z: Vec<f32>,
    dx: Option<Vec<f32>>,
    dw: Vec<f32>,
    db: Option<Vec<f32>>,
}

type Block = fn(&Conv2d, &MaxPool2d, Tensor<4>) -> Tensor<4>;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

impl Case {
    fn draw(&self, rng: &mut Rng, n: usize, span: u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                if self.integers {
                    (rng.next_u64() % (2 * span + 1)) as f32 - span as f32
                } else {
                    rng.symmetric(1.0)
                }
            })
            .collect()
    }

    /// Runs `block` with loss `Σ z·g` (so the pooled output's gradient is `g`).
    fn run(&self, block: Block) -> Run {
        let device = Device::flex().autodiff();
        let [_, c, _, _] = self.input;
        let [kh, kw] = self.kernel;
        let [t, l, b, r] = self.padding;
        let mut conv = Conv2dConfig::new([c, self.out_channels], self.kernel)
            .with_stride(self.stride)
            .with_padding(PaddingConfig2d::Explicit(t, l, b, r))
            .with_bias(self.bias)
            .init(&device);
        let mut rng = Rng::new(self.seed);
        let w = self.draw(&mut rng, self.out_channels * c * kh * kw, 2);
        let shape = [self.out_channels, c, kh, kw];
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, shape), &device));
        if self.bias {
            let b = self.draw(&mut rng, self.out_channels, 3);
            let b = Tensor::from_data(TensorData::new(b, [self.out_channels]), &device);
            conv.bias = Some(Param::from_tensor(b));
        }
        let pool = MaxPool2dConfig::new(self.pool)
            .with_strides(self.pool_stride)
            .init();
        let x = self.draw(&mut rng, self.input.iter().product(), 3);
        let mut x = Tensor::<4>::from_data(TensorData::new(x, self.input), &device);
        if self.input_grad {
            x = x.require_grad();
        }
        let z = block(&conv, &pool, x.clone());
        let dims = z.dims();
        let g = self.draw(&mut rng, dims.iter().product(), 3);
        let g = Tensor::<4>::from_data(TensorData::new(g, dims), &device);
        let grads = (z.clone() * g).sum().backward();
        Run {
            z: values(z),
            dx: x.grad(&grads).map(values),
            dw: values(conv.weight.val().grad(&grads).unwrap()),
            db: conv.bias.map(|b| values(b.val().grad(&grads).unwrap())),
        }
    }
}

fn burn(conv: &Conv2d, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    pool.forward(relu(conv.forward(x)))
}

fn unfused(conv: &Conv2d, pool: &MaxPool2d, x: Tensor<4>) -> Tensor<4> {
    max_pool2d(pool, conv2d(conv, x), true)
}

fn bits(run: &Run) -> Vec<Vec<u32>> {
    let b = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect();
    let mut all = vec![b(&run.dw)];
    all.extend(run.dx.as_deref().map(b));
    all.extend(run.db.as_deref().map(b));
    all
}

fn case() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, 2usize..=11, 2usize..=11),
        (1usize..=4, 1usize..=3, 1usize..=3, 1usize..=2, 1usize..=2),
        [0usize..=1, 0usize..=1, 0usize..=1, 0usize..=1],
        (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        (any::<bool>(), any::<bool>(), any::<u64>()),
    )
        .prop_filter_map(
            "the padded input must hold the kernel and the output the window",
            |((n, c, h, w), (o, kh, kw, sh, sw), padding, (ph, pw, psh, psw), flags)| {
                let [t, l, b, r] = padding;
                let oh = (h + t + b).checked_sub(kh)? / sh + 1;
                let ow = (w + l + r).checked_sub(kw)? / sw + 1;
                (oh >= ph && ow >= pw).then_some(Case {
                    input: [n, c, h, w],
                    out_channels: o,
                    kernel: [kh, kw],
                    stride: [sh, sw],
                    padding,
                    pool: [ph, pw],
                    pool_stride: [psh, psw],
                    bias: flags.0,
                    input_grad: flags.1,
                    integers: true,
                    seed: flags.2,
                })
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fused_block_equals_burns_operations(case in case()) {
        let ours = case.run(conv_relu_pool);
        prop_assert_eq!(&ours, &case.run(burn));
        prop_assert_eq!(ours.dx.is_some(), case.input_grad);
        prop_assert_eq!(ours.db.is_some(), case.bias);
    }

    #[test]
    fn fused_block_equals_the_unfused_pair_bit_for_bit(case in case()) {
        let case = Case { integers: false, ..case };
        let (ours, pair) = (case.run(conv_relu_pool), case.run(unfused));
        prop_assert_eq!(&ours.z, &pair.z);
        prop_assert_eq!(bits(&ours), bits(&pair));
    }
}

/// The tutorial's two blocks at its batch size, real-valued: the same bits as the pair.
#[test]
fn tutorial_blocks_equal_the_unfused_pair() {
    for (input, out_channels, input_grad) in
        [([64, 1, 28, 28], 20, false), ([64, 20, 12, 12], 50, true)]
    {
        let case = Case {
            input,
            out_channels,
            kernel: [5, 5],
            stride: [1, 1],
            padding: [0; 4],
            pool: [2, 2],
            pool_stride: [2, 2],
            bias: true,
            input_grad,
            integers: false,
            seed: 5,
        };
        let (ours, pair) = (case.run(conv_relu_pool), case.run(unfused));
        assert_eq!(ours.z, pair.z);
        assert_eq!(bits(&ours), bits(&pair));
    }
}

/// Layers the fused block does not cover, and tensors outside `Autodiff<Flex>`, take the
/// unfused operations (and so, in turn, Burn's where those do not apply).
#[test]
fn unsupported_blocks_are_the_unfused_pair() {
    let ad = Device::flex().autodiff();
    let x = |device: &Device| {
        let v: Vec<f32> = (0..2 * 2 * 81)
            .map(|i| (i % 13) as f32 / 7.0 - 0.9)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [2, 2, 9, 9]), device)
    };
    let conv = |config: Conv2dConfig, device: &Device| config.init(device);
    let pool = MaxPool2dConfig::new([2, 2]).init();
    let cases = [
        (
            conv(Conv2dConfig::new([2, 3], [3, 3]).with_dilation([2, 1]), &ad),
            pool.clone(),
            Unsupported::Dilation([2, 1]),
        ),
        (
            conv(Conv2dConfig::new([2, 3], [3, 3]), &ad),
            MaxPool2dConfig::new([2, 2]).with_ceil_mode(true).init(),
            Unsupported::PoolPadding,
        ),
        (
            conv(Conv2dConfig::new([2, 3], [8, 8]), &ad),
            MaxPool2dConfig::new([3, 3]).init(),
            Unsupported::PoolShapes {
                input: [2, 3, 2, 2],
                kernel: [3, 3],
            },
        ),
    ];
    for (conv, pool, why) in cases {
        assert_eq!(plan(&conv, &pool, &x(&ad)).err(), Some(why));
        let fused = conv_relu_pool(&conv, &pool, x(&ad));
        assert_eq!(values(fused), values(unfused(&conv, &pool, x(&ad))));
    }
    let plain = Device::flex();
    let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&plain);
    assert!(
        plan(&conv, &pool, &x(&plain)).is_ok(),
        "shapes alone are supported"
    );
    assert_eq!(
        values(conv_relu_pool(&conv, &pool, x(&plain))),
        values(burn(&conv, &pool, x(&plain))),
        "inference falls back to Burn"
    );
}
