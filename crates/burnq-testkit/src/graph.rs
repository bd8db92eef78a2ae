//! Random networks as data, for the graph conformance suites: valid descriptions drawn from
//! the whole layer vocabulary ([`random_architecture`]), and float parameters and calibrated
//! ranges for any plan ([`random_graph_inputs`]).

use burnq_arch::Architecture;
use burnq_arch::arch::{
    Activation, BatchNorm, BatchNormParams, Conv2d, Dropout, FloatParams, InputShape, Layer,
    Linear, Op, Plan, Pool, Residual, Size2, StepParams,
};
use burnq_quant::PointRanges;

use crate::Rng;

impl Rng {
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    /// `true` with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }
}

/// A convolution fitting `channels × h × w`, with optional batch norm and activation.
fn conv(rng: &mut Rng, channels: usize, h: usize, w: usize, same: bool) -> Vec<Layer> {
    let kernel = Size2 {
        h: rng.range(1, 3.min(h + 2)),
        w: rng.range(1, 3.min(w + 2)),
    };
    let padding = Size2 {
        h: rng
            .range(0, kernel.h - 1)
            .min((kernel.h - 1) / 2 + usize::from(!same)),
        w: rng
            .range(0, kernel.w - 1)
            .min((kernel.w - 1) / 2 + usize::from(!same)),
    };
    let (kernel, padding, stride) = if same {
        // Shape-preserving for residual bodies: odd kernel, "same" padding, stride 1.
        let k = Size2 {
            h: 2 * rng.range(0, 1) + 1,
            w: 2 * rng.range(0, 1) + 1,
        };
        (
            k,
            Size2 {
                h: k.h / 2,
                w: k.w / 2,
            },
            Size2::square(1),
        )
    } else {
        let fits = |k: usize, p: usize, n: usize| k <= n + 2 * p;
        let padding = Size2 {
            h: if fits(kernel.h, padding.h, h) {
                padding.h
            } else {
                kernel.h - 1
            },
            w: if fits(kernel.w, padding.w, w) {
                padding.w
            } else {
                kernel.w - 1
            },
        };
        let stride = Size2 {
            h: rng.range(1, 2),
            w: rng.range(1, 2),
        };
        (kernel, padding, stride)
    };
    let depthwise = channels > 1 && rng.chance(0.3);
    let (out_channels, groups) = if same || depthwise {
        (channels, if depthwise { channels } else { 1 })
    } else {
        (rng.range(1, 8), 1)
    };
    let with_bn = rng.chance(0.4);
    let mut layers = vec![Layer::Conv2d(Conv2d {
        name: None,
        in_channels: None,
        out_channels,
        kernel,
        stride,
        padding,
        groups,
        bias: !with_bn || rng.chance(0.5),
    })];
    if with_bn {
        layers.push(Layer::BatchNorm(BatchNorm { eps: 1e-5 }));
    }
    match rng.range(0, 2) {
        0 => layers.push(Layer::Relu),
        1 => layers.push(Layer::Relu6),
        _ => {}
    }
    layers
}

/// A valid description drawn from the whole vocabulary: a small input, one to five stages
/// (convolutions of every stride, padding and group count, pools, residual blocks, global
/// pooling, dropout), flatten, an optional hidden linear layer and 2..=10 logits.
pub fn random_architecture(seed: u64) -> Architecture {
    let mut rng = Rng::new(seed);
    let input = InputShape {
        channels: 1,
        height: rng.range(4, 12),
        width: rng.range(4, 12),
    };
    let (mut c, mut h, mut w) = (1, input.height, input.width);
    let mut layers = Vec::new();
    for stage in 0..rng.range(1, 5) {
        let choice = if stage == 0 { 0 } else { rng.range(0, 5) };
        match choice {
            0 | 1 => {
                let block = conv(&mut rng, c, h, w, false);
                let Layer::Conv2d(cv) = &block[0] else {
                    unreachable!()
                };
                c = cv.out_channels;
                h = (h + 2 * cv.padding.h - cv.kernel.h) / cv.stride.h + 1;
                w = (w + 2 * cv.padding.w - cv.kernel.w) / cv.stride.w + 1;
                layers.extend(block);
            }
            2 => {
                let kernel = Size2 {
                    h: rng.range(1, 3.min(h)),
                    w: rng.range(1, 3.min(w)),
                };
                let stride = Size2 {
                    h: rng.range(1, kernel.h),
                    w: rng.range(1, kernel.w),
                };
                let pool = Pool {
                    kernel,
                    stride: Some(stride),
                };
                layers.push(if rng.chance(0.5) {
                    Layer::MaxPool(pool)
                } else {
                    Layer::AvgPool(pool)
                });
                h = (h - kernel.h) / stride.h + 1;
                w = (w - kernel.w) / stride.w + 1;
            }
            3 => {
                let mut body = conv(&mut rng, c, h, w, true);
                if rng.chance(0.5) {
                    body.extend(conv(&mut rng, c, h, w, true));
                }
                layers.push(Layer::Residual(Residual {
                    name: None,
                    layers: body,
                }));
                if rng.chance(0.5) {
                    layers.push(Layer::Relu);
                }
            }
            4 => layers.push(Layer::Dropout(Dropout { p: 0.25 })),
            _ => {
                layers.push(Layer::GlobalAvgPool);
                (h, w) = (1, 1);
            }
        }
    }
    layers.push(Layer::Flatten);
    if rng.chance(0.5) {
        layers.push(linear(rng.range(2, 12)));
        layers.push(Layer::Relu);
    }
    layers.push(linear(rng.range(2, 10)));
    let arch = Architecture {
        name: format!("random-{seed}"),
        input,
        layers,
    };
    let _ = (c, h, w);
    arch.plan()
        .unwrap_or_else(|e| panic!("random architecture {seed} is invalid: {e}\n{arch:?}"));
    arch
}

fn linear(out_features: usize) -> Layer {
    Layer::Linear(Linear {
        name: None,
        in_features: None,
        out_features,
        bias: true,
    })
}

/// Float parameters for every convolution and linear step of `plan` (He-uniform weights,
/// small biases, batch norms with γ in [0.5, 1.5), variances in [0.5, 1.5)), and plausible
/// output ranges for every quantization point: `[0, 2]` after ReLU, `[0, 6]` after ReLU6,
/// `[−3, 3]` otherwise.
pub fn random_graph_inputs(plan: &Plan, seed: u64) -> (FloatParams, PointRanges) {
    let mut rng = Rng::new(seed);
    let mut params = FloatParams::default();
    let mut ranges = PointRanges::new();
    for step in plan.quantization_points() {
        let range = match step.activation {
            Activation::Relu => (0.0, 2.0),
            Activation::Relu6 => (0.0, 6.0),
            Activation::None => (-3.0, 3.0),
        };
        ranges.insert(step.name.clone(), range);
        let (out, fan_in) = match &step.op {
            Op::Conv2d(g) => (g.out_channels, g.fan_in()),
            Op::Linear {
                in_features,
                out_features,
            } => (*out_features, *in_features),
            _ => continue,
        };
        let a = (6.0 / fan_in as f32).sqrt();
        let mut values = |n: usize, f: &mut dyn FnMut(&mut Rng) -> f32| -> Vec<f32> {
            (0..n).map(|_| f(&mut rng)).collect()
        };
        let weight = values(out * fan_in, &mut |r| r.symmetric(a));
        let bias = step.bias.then(|| values(out, &mut |r| r.symmetric(0.1)));
        let batch_norm = step.batch_norm.map(|_| BatchNormParams {
            gamma: values(out, &mut |r| 0.5 + r.unit()),
            beta: values(out, &mut |r| r.symmetric(0.2)),
            mean: values(out, &mut |r| r.symmetric(0.3)),
            var: values(out, &mut |r| 0.5 + r.unit()),
        });
        params.layers.insert(
            step.name.clone(),
            StepParams {
                weight,
                bias,
                batch_norm,
            },
        );
    }
    (params, ranges)
}
