//! The training's vectorized loops ([`burnq_model::simd`]) give the portable loop's results
//! bit for bit at every instruction-set level this CPU has, and the pooling's backward pass
//! (written once, in order, when the windows tile the plane) equals a plain scatter-add.
//!
//! Inputs hold ties, zeros of both signs and NaNs, where a vectorized `max` or a dropped
//! `0.0 +` would show.

use burnq_model::conv_gemm::{self, Geometry};
use burnq_model::conv_pool::{self, Wanted};
use burnq_model::simd::Level;
use burnq_model::train_pool::{self, PoolGeometry};
use burnq_testkit::Rng;

const LEVELS: [Level; 2] = [Level::Portable, Level::Avx512];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Values from a small set (ties), with `±0.0` and, when `nans`, a few NaNs.
fn values(rng: &mut Rng, n: usize, nans: bool) -> Vec<f32> {
    (0..n)
        .map(|_| match rng.next_u64() % 16 {
            0 => -0.0,
            1 => 0.0,
            2 if nans => f32::NAN,
            r => r as f32 - 9.0 + rng.symmetric(0.5).round() * 0.25,
        })
        .collect()
}

/// The pooling's input gradient as a plain scatter-add into zeros, window by window.
fn scatter_backward(g: &PoolGeometry, x: &[f32], y: &[f32], grad: &[f32], fuse: bool) -> Vec<f32> {
    let ([h, w], [kh, kw], [sh, sw], [oh, ow]) = (g.input, g.kernel, g.stride, g.output);
    let mut dx = vec![0.0f32; g.planes * h * w];
    for p in 0..g.planes {
        for (i, j) in (0..oh).flat_map(|i| (0..ow).map(move |j| (i, j))) {
            let at = (p * oh + i) * ow + j;
            let entries = (0..kh).flat_map(|u| (0..kw).map(move |v| (i * sh + u) * w + j * sw + v));
            let first = entries.clone().find(|&e| x[p * h * w + e] == y[at]);
            let flows = (!fuse || y[at] != 0.0) && !y[at].is_nan();
            match first {
                Some(e) if flows => dx[p * h * w + e] += grad[at],
                Some(e) => dx[p * h * w + e] += 0.0,
                None => {}
            }
        }
    }
    dx
}

#[test]
fn pooling_is_bit_identical_at_every_level() {
    let mut rng = Rng::new(7);
    // [planes, h, w], kernel, stride: tiling (with and without leftover rows and columns),
    // overlapping, and with gaps between windows.
    let cases = [
        ([40, 24, 24], [2, 2], [2, 2]),
        ([100, 8, 8], [2, 2], [2, 2]),
        ([7, 13, 11], [2, 3], [2, 3]),
        ([5, 9, 10], [3, 3], [2, 2]),
        ([6, 11, 17], [2, 2], [3, 4]),
        ([3, 40, 70], [4, 4], [4, 4]),
    ];
    for ([planes, h, w], kernel, stride) in cases {
        let g = PoolGeometry {
            planes,
            input: [h, w],
            kernel,
            stride,
            output: [
                (h - kernel[0]) / stride[0] + 1,
                (w - kernel[1]) / stride[1] + 1,
            ],
        };
        for (fuse, nans) in [(true, false), (false, false), (true, true), (false, true)] {
            let x = values(&mut rng, planes * h * w, nans);
            let y = train_pool::forward_at(Level::Portable, &g, &x, fuse);
            let grad = values(&mut rng, y.len(), false);
            let dx = train_pool::backward_at(Level::Portable, &g, &x, &y, &grad, fuse);
            let reference = scatter_backward(&g, &x, &y, &grad, fuse);
            assert_eq!(bits(&dx), bits(&reference), "{g:?} fuse {fuse} NaNs {nans}");
            for level in LEVELS {
                let case = format!("{g:?} fuse {fuse} NaNs {nans} at {level:?}");
                let y_at = train_pool::forward_at(level, &g, &x, fuse);
                assert_eq!(bits(&y_at), bits(&y), "forward, {case}");
                let dx_at = train_pool::backward_at(level, &g, &x, &y, &grad, fuse);
                assert_eq!(bits(&dx_at), bits(&dx), "backward, {case}");
            }
        }
    }
}

#[test]
fn convolution_loops_are_bit_identical_at_every_level() {
    let mut rng = Rng::new(11);
    // input [n, c, h, w], weights [o, c, kh, kw], stride, padding
    let cases = [
        ([64, 1, 28, 28], [20, 1, 5, 5], [1, 1], [(0, 0), (0, 0)]),
        ([64, 20, 12, 12], [50, 20, 5, 5], [1, 1], [(0, 0), (0, 0)]),
        ([3, 4, 11, 13], [5, 4, 3, 3], [2, 1], [(1, 2), (1, 0)]),
        ([2, 3, 9, 10], [6, 3, 4, 2], [1, 3], [(0, 0), (2, 2)]),
    ];
    for (x_shape, w_shape, stride, padding) in cases {
        let g = Geometry::new(x_shape, w_shape, stride, padding).unwrap();
        let x = values(&mut rng, x_shape.iter().product(), false);
        let cols = conv_gemm::im2col_at(Level::Portable, &g, &x);
        let dcols = values(&mut rng, cols.len(), false);
        let dx = conv_gemm::col2im_at(Level::Portable, &g, &dcols);
        let grad = values(&mut rng, g.out_channels * g.columns(), false);
        let db = conv_gemm::bias_grad_at(Level::Portable, &g, &grad);
        for level in LEVELS {
            let case = format!("{g:?} at {level:?}");
            let cols_at = conv_gemm::im2col_at(level, &g, &x);
            assert_eq!(bits(&cols_at), bits(&cols), "im2col, {case}");
            let dx_at = conv_gemm::col2im_at(level, &g, &dcols);
            assert_eq!(bits(&dx_at), bits(&dx), "col2im, {case}");
            let db_at = conv_gemm::bias_grad_at(level, &g, &grad);
            assert_eq!(bits(&db_at), bits(&db), "bias gradient, {case}");
        }
    }
}

/// The fused block's pooling of `Y[O, Q]` and its gradient layouts, at every level; the
/// layouts also equal the unfused pooling's gradient rearranged.
#[test]
fn fused_block_loops_are_bit_identical_at_every_level() {
    let mut rng = Rng::new(13);
    // input [n, c, h, w], weights [o, c, kh, kw], pooling window and stride
    let cases = [
        ([8, 1, 28, 28], [20, 1, 5, 5], [2, 2], [2, 2]),
        ([8, 20, 12, 12], [50, 20, 5, 5], [2, 2], [2, 2]),
        ([3, 2, 12, 11], [4, 2, 2, 3], [3, 2], [2, 1]),
    ];
    for (x_shape, w_shape, kernel, stride) in cases {
        let g = Geometry::new(x_shape, w_shape, [1, 1], [(0, 0), (0, 0)]).unwrap();
        let [oh, ow] = g.output;
        let pg = PoolGeometry {
            planes: g.batch * g.out_channels,
            input: [oh, ow],
            kernel,
            stride,
            output: [
                (oh - kernel[0]) / stride[0] + 1,
                (ow - kernel[1]) / stride[1] + 1,
            ],
        };
        for (nans, bias) in [(false, true), (true, true), (false, false)] {
            let yq = values(&mut rng, g.out_channels * g.columns(), nans);
            let b = bias.then(|| values(&mut rng, g.out_channels, false));
            let z = conv_pool::forward_at(Level::Portable, &g, &pg, &yq, b.as_deref());
            let dz = values(&mut rng, z.len(), false);
            let wanted = Wanted {
                rows: true,
                columns: true,
                bias: true,
            };
            let conv = (yq.as_slice(), b.as_deref());
            let grad = conv_pool::backward_at(Level::Portable, &g, &pg, conv, (&z, &dz), wanted);
            // The unfused pooling of the NCHW convolution output `y = Y + b`.
            let (o, p, q) = (g.out_channels, g.positions(), g.columns());
            let y: Vec<f32> = (0..g.batch * o * p)
                .map(|i| {
                    let (n, oc, pos) = (i / (o * p), i / p % o, i % p);
                    let v = yq[oc * q + n * p + pos];
                    b.as_ref().map_or(v, |b| v + b[oc])
                })
                .collect();
            let case = format!("{g:?} {pg:?} NaNs {nans} bias {bias}");
            let pooled: Vec<u32> = bits(&train_pool::forward(&pg, &y, true))
                .into_iter()
                .map(|b| if b == 0x8000_0000 { 0 } else { b })
                .collect();
            assert_eq!(bits(&z), pooled, "forward as unfused, {case}");
            let dy = train_pool::backward(&pg, &y, &z, &dz, true);
            let columns: Vec<f32> = (0..o * q)
                .map(|i| dy[(i % q / p * o + i / q) * p + i % p])
                .collect();
            let rows: Vec<f32> = (0..q * o)
                .map(|i| dy[(i / o / p * o + i % o) * p + i / o % p])
                .collect();
            assert_eq!(
                grad.columns.as_deref().map(bits),
                Some(bits(&columns)),
                "{case}"
            );
            assert_eq!(grad.rows.as_deref().map(bits), Some(bits(&rows)), "{case}");
            let db = conv_gemm::bias_grad(&g, &dy);
            assert_eq!(grad.bias.as_deref().map(bits), Some(bits(&db)), "{case}");
            for level in LEVELS {
                let at = format!("{case} at {level:?}");
                let z_at = conv_pool::forward_at(level, &g, &pg, &yq, b.as_deref());
                assert_eq!(bits(&z_at), bits(&z), "forward, {at}");
                let grad_at = conv_pool::backward_at(level, &g, &pg, conv, (&z, &dz), wanted);
                assert_eq!(grad_at, grad, "backward, {at}");
            }
        }
    }
}

#[test]
fn levels_are_capped_at_the_cpus() {
    let detected = Level::detected();
    for level in LEVELS {
        assert_eq!(level.available(), level.min(detected));
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert_eq!(detected, Level::Avx512);
    }
}
