//! The reference operations of a graph, plain scalar loops over NCHW codes (the bit-exact
//! definition the fast engine must reproduce):
//!
//! - [`conv2d`]: `acc[b, o, y, x] = bias[o] + Σ_{c, ky, kx} (in − Z_in)·(q_w[o, c, ky, kx] − Z_w[o])`
//!   over the input channels of `o`'s group, where `in` is the input code at
//!   `(y·s_h + ky − p_h, x·s_w + kx − p_w)`, or the layer's padding code outside the image (the
//!   input zero point `Z_in`, i.e. real 0, except for a first layer with a folded
//!   normalization, which pads with [`burnq_arch::Normalization::padding_pixel`]);
//! - [`max_pool`]: the maximum code of each window (exact: requantization is monotonic);
//! - [`avg_pool`]: `Z + MBQM(Σ (q − Z), M)` with `M = 1/(kh·kw)` as a fixed-point multiplier
//!   ([`pool_multiplier`]), clamped to `[0, qmax]`: the mean on the input's own grid;
//! - a linear layer is [`crate::reference::linear`]; the residual add is [`super::QuantAdd::apply`] per element.

use burnq_arch::arch::{ConvGeometry, PoolGeometry};

use crate::{QuantError, QuantLayer, QuantParams, Requant, quantize_multiplier};

/// A convolution of `n` NCHW images (`[n, in, h, w]` codes) by `layer`, whose weights are
/// `[out, (in/groups)·kh·kw]`; accumulators `[n, out, out_h, out_w]`, bias included. Sums in
/// `i64`, narrowed with a check.
pub fn conv2d(
    layer: &QuantLayer,
    g: &ConvGeometry,
    pad: u8,
    input: &[u8],
    n: usize,
) -> Result<Vec<i32>, QuantError> {
    layer.check_shapes()?;
    let (c_in, h, w) = (g.in_channels, g.input.h, g.input.w);
    check_len(&layer.name, input, n * c_in * h * w)?;
    let group_in = c_in / g.groups;
    let group_out = g.out_channels / g.groups;
    let fan_in = g.fan_in();
    let z_in = layer.input.zero_point();
    let (out_h, out_w) = (g.output.h, g.output.w);
    let mut acc = Vec::with_capacity(n * g.out_channels * out_h * out_w);
    for b in 0..n {
        for o in 0..g.out_channels {
            let c0 = o / group_out * group_in;
            let z_w = layer.weight_zero_points[o];
            let weights = &layer.weights[o * fan_in..][..fan_in];
            for y in 0..out_h {
                for x in 0..out_w {
                    let mut sum = i64::from(layer.bias[o]);
                    for c in 0..group_in {
                        for ky in 0..g.kernel.h {
                            for kx in 0..g.kernel.w {
                                let iy = (y * g.stride.h + ky).checked_sub(g.padding.h);
                                let ix = (x * g.stride.w + kx).checked_sub(g.padding.w);
                                let code = match (iy, ix) {
                                    (Some(iy), Some(ix)) if iy < h && ix < w => {
                                        input[((b * c_in + c0 + c) * h + iy) * w + ix]
                                    }
                                    _ => pad,
                                };
                                let q_w = weights[(c * g.kernel.h + ky) * g.kernel.w + kx];
                                let term = (i32::from(code) - z_in) * (i32::from(q_w) - z_w);
                                sum += i64::from(term);
                            }
                        }
                    }
                    acc.push(
                        i32::try_from(sum).map_err(|_| QuantError::AccumulatorOverflow {
                            layer: layer.name.clone(),
                            channel: o,
                            magnitude: sum.saturating_abs(),
                        })?,
                    );
                }
            }
        }
    }
    Ok(acc)
}

/// The windows of `g` over `n` NCHW images: `f(window codes)` per output element, in NCHW
/// order.
fn pool(g: &PoolGeometry, input: &[u8], n: usize, mut f: impl FnMut(&[u8]) -> u8) -> Vec<u8> {
    let (h, w) = (g.input.h, g.input.w);
    let mut window = Vec::with_capacity(g.kernel.h * g.kernel.w);
    let mut out = Vec::with_capacity(n * g.channels * g.output.h * g.output.w);
    for plane in input.chunks_exact(h * w).take(n * g.channels) {
        for y in 0..g.output.h {
            for x in 0..g.output.w {
                window.clear();
                for ky in 0..g.kernel.h {
                    let row = (y * g.stride.h + ky) * w + x * g.stride.w;
                    window.extend_from_slice(&plane[row..row + g.kernel.w]);
                }
                out.push(f(&window));
            }
        }
    }
    out
}

/// Max pooling of `n` NCHW images.
pub fn max_pool(g: &PoolGeometry, input: &[u8], n: usize) -> Result<Vec<u8>, QuantError> {
    check_len("max_pool", input, n * g.channels * g.input.h * g.input.w)?;
    Ok(pool(g, input, n, |w| w.iter().copied().max().unwrap_or(0)))
}

/// The requantization of a window sum `Σ (q − Z)` to the mean on `params`' own grid:
/// `M = 1/(kh·kw)`, output zero point `Z`, clamp `[0, qmax]`.
pub fn pool_multiplier(g: &PoolGeometry, params: QuantParams) -> Result<Requant, QuantError> {
    let (m0, shift) = quantize_multiplier(1.0 / (g.kernel.h * g.kernel.w) as f64)?;
    Ok(Requant {
        m0,
        shift,
        output_zero_point: params.zero_point(),
        act_min: 0,
        act_max: params.qmax() as u8,
    })
}

/// Average pooling (or global average pooling, whose window is the image) of `n` NCHW
/// images on `params`' grid.
pub fn avg_pool(
    g: &PoolGeometry,
    params: QuantParams,
    input: &[u8],
    n: usize,
) -> Result<Vec<u8>, QuantError> {
    check_len("avg_pool", input, n * g.channels * g.input.h * g.input.w)?;
    let requant = pool_multiplier(g, params)?;
    let z = params.zero_point();
    Ok(pool(g, input, n, |w| {
        requant.apply(w.iter().map(|&q| i32::from(q) - z).sum())
    }))
}

fn check_len(what: &str, input: &[u8], expected: usize) -> Result<(), QuantError> {
    if input.len() == expected {
        Ok(())
    } else {
        Err(QuantError::ShapeMismatch {
            what: format!("{what} input"),
            expected,
            found: input.len(),
        })
    }
}
