//! The engine's loops over NHWC codes: layout changes, im2col rows, the depthwise
//! convolution, pools and the residual add. Each inner loop runs along the channels, which
//! are contiguous in NHWC, so the compiler vectorizes it.

use burnq_arch::arch::{ConvGeometry, PoolGeometry};

use super::nodes::Depthwise;
use crate::kernels::{Isa, LayerRequant};

/// `out[b][p·c + ch] = input[b][ch·positions + p]`: NCHW images to NHWC.
pub(super) fn to_nhwc(input: &[u8], channels: usize, positions: usize, out: &mut [u8]) {
    if channels == 1 || positions == 1 {
        out.copy_from_slice(input);
        return;
    }
    let len = channels * positions;
    for (src, dst) in input.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for (ch, plane) in src.chunks_exact(positions).enumerate() {
            for (p, &q) in plane.iter().enumerate() {
                dst[p * channels + ch] = q;
            }
        }
    }
}

/// `out[b][ch·positions + p] = input[b][p·c + ch]`: NHWC images to NCHW (flatten's order).
pub(super) fn to_nchw(input: &[u8], channels: usize, positions: usize, out: &mut [u8]) {
    let len = channels * positions;
    for (src, dst) in input.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for (p, pixel) in src.chunks_exact(channels).enumerate() {
            for (ch, &q) in pixel.iter().enumerate() {
                dst[ch * positions + p] = q;
            }
        }
    }
}

/// Rows `r0..r0 + rows` of the im2col matrix of NHWC images (row `b·positions + y·out_w + x`),
/// channels `c0..c0 + cg`, each row in (ky, kx, c) order; `pad` outside the image.
///
/// The rows are filled one output row segment (fixed image and `y`) at a time: with at least
/// [`WIDE`] bytes per kernel row, row by row, copying each kernel row's `kw·cg` bytes at once
/// where they are contiguous; with fewer, column by column (a strided copy along `x` per
/// `(ky, kx, c)`), which avoids a call to `memcpy` per few bytes.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    g: &ConvGeometry,
    input: &[u8],
    r0: usize,
    rows: usize,
    c0: usize,
    cg: usize,
    pad: u8,
    out: &mut [u8],
) {
    let (h, w) = (g.input.h, g.input.w);
    let ow = g.output.w;
    let positions = g.output.h * ow;
    let fan_in = g.kernel.h * g.kernel.w * cg;
    let mut r = r0;
    while r < r0 + rows {
        let (b, pos) = (r / positions, r % positions);
        let (y, x0) = (pos / ow, pos % ow);
        let x1 = ow.min(x0 + r0 + rows - r);
        let image = &input[b * h * w * g.in_channels..][..h * w * g.in_channels];
        let dst = &mut out[(r - r0) * fan_in..][..(x1 - x0) * fan_in];
        if g.kernel.w * cg >= WIDE {
            segment_rows(g, image, y, x0..x1, c0, cg, pad, dst);
        } else {
            segment_cols(g, image, y, x0..x1, c0, cg, pad, dst);
        }
        r += x1 - x0;
    }
}

/// Kernel rows of at least this many bytes are copied row by row.
const WIDE: usize = 32;

/// The input row of kernel row `ky` at output row `y`, if inside the image.
fn input_row(g: &ConvGeometry, y: usize, ky: usize) -> Option<usize> {
    (y * g.stride.h + ky)
        .checked_sub(g.padding.h)
        .filter(|&iy| iy < g.input.h)
}

/// The output columns `x` whose input column `x·s_w + kx − p_w` is inside the image.
fn inside(g: &ConvGeometry, kx: usize) -> std::ops::Range<usize> {
    let (s, p, w) = (g.stride.w, g.padding.w, g.input.w);
    let lo = p.saturating_sub(kx).div_ceil(s);
    let hi = (w + p).saturating_sub(kx).div_ceil(s);
    lo..hi.max(lo)
}

/// [`im2col`] of one output row segment, row by row.
#[allow(clippy::too_many_arguments)]
fn segment_rows(
    g: &ConvGeometry,
    image: &[u8],
    y: usize,
    xs: std::ops::Range<usize>,
    c0: usize,
    cg: usize,
    pad: u8,
    out: &mut [u8],
) {
    let (c, w, kw) = (g.in_channels, g.input.w, g.kernel.w);
    let fan_in = g.kernel.h * kw * cg;
    let whole = cg == c;
    for (x, row) in xs.zip(out.chunks_exact_mut(fan_in)) {
        for (ky, taps) in row.chunks_exact_mut(kw * cg).enumerate() {
            let Some(iy) = input_row(g, y, ky) else {
                taps.fill(pad);
                continue;
            };
            let first = (x * g.stride.w).checked_sub(g.padding.w);
            match first {
                Some(ix) if whole && ix + kw <= w => {
                    taps.copy_from_slice(&image[(iy * w + ix) * c..][..kw * c]);
                }
                _ => {
                    for (kx, dst) in taps.chunks_exact_mut(cg).enumerate() {
                        let ix = (x * g.stride.w + kx)
                            .checked_sub(g.padding.w)
                            .filter(|&ix| ix < w);
                        match ix {
                            Some(ix) => dst.copy_from_slice(&image[(iy * w + ix) * c + c0..][..cg]),
                            None => dst.fill(pad),
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] of one output row segment, column by column.
#[allow(clippy::too_many_arguments)]
fn segment_cols(
    g: &ConvGeometry,
    image: &[u8],
    y: usize,
    xs: std::ops::Range<usize>,
    c0: usize,
    cg: usize,
    pad: u8,
    out: &mut [u8],
) {
    let (c, w, kw) = (g.in_channels, g.input.w, g.kernel.w);
    let fan_in = g.kernel.h * kw * cg;
    let sx = g.stride.w * c;
    for ky in 0..g.kernel.h {
        let iy = input_row(g, y, ky);
        for kx in 0..kw {
            let valid = inside(g, kx);
            let lo = valid.start.clamp(xs.start, xs.end);
            let hi = valid.end.clamp(lo, xs.end);
            for ch in 0..cg {
                let k = (ky * kw + kx) * cg + ch;
                let column = out[k..].iter_mut().step_by(fan_in);
                let Some(iy) = iy else {
                    column.for_each(|q| *q = pad);
                    continue;
                };
                let (before, rest) = (lo - xs.start, hi - lo);
                let mut column = column;
                for q in column.by_ref().take(before) {
                    *q = pad;
                }
                if rest > 0 {
                    // Input column of x = lo: lo·s_w + kx − p_w ≥ 0.
                    let ix = lo * g.stride.w + kx - g.padding.w;
                    let src = image[(iy * w + ix) * c + c0 + ch..].iter().step_by(sx);
                    for (q, &v) in column.by_ref().take(rest).zip(src) {
                        *q = v;
                    }
                }
                column.for_each(|q| *q = pad);
            }
        }
    }
}

/// A convolution with one input channel per group on `nb` NHWC images: per image, the input
/// offsets `q − Z` are laid out padded (with `pad − Z`) and with each input channel repeated
/// for its output channels, so that every tap is one contiguous multiply-add along the output
/// channels; each position's sums are requantized across the channels.
pub(super) fn depthwise<K: Isa>(
    isa: K,
    d: &Depthwise,
    input: &[u8],
    nb: usize,
    padded: &mut Vec<i16>,
    acc: &mut Vec<i32>,
    out: &mut [u8],
) {
    let g = &d.g;
    let (c, h, w) = (g.in_channels, g.input.h, g.input.w);
    let oc = g.out_channels;
    let mult = oc / c;
    let (hp, wp) = (h + 2 * g.padding.h, w + 2 * g.padding.w);
    let (kh, kw) = (g.kernel.h, g.kernel.w);
    padded.clear();
    padded.resize(hp * wp * oc, d.pad);
    acc.clear();
    acc.resize(oc, 0);
    let out_len = g.output.h * g.output.w * oc;
    for (image, out) in input
        .chunks_exact(h * w * c)
        .zip(out.chunks_exact_mut(out_len))
        .take(nb)
    {
        for iy in 0..h {
            let row = &mut padded[((iy + g.padding.h) * wp + g.padding.w) * oc..][..w * oc];
            let src = &image[iy * w * c..][..w * c];
            if mult == 1 {
                for (p, &q) in row.iter_mut().zip(src) {
                    *p = (i32::from(q) - d.zero_point) as i16;
                }
            } else {
                for (p, &q) in row.chunks_exact_mut(mult).zip(src) {
                    p.fill((i32::from(q) - d.zero_point) as i16);
                }
            }
        }
        for (pos, dst) in out.chunks_exact_mut(oc).enumerate() {
            let (y, x) = (pos / g.output.w, pos % g.output.w);
            acc.copy_from_slice(&d.bias);
            for ky in 0..kh {
                for kx in 0..kw {
                    let at = ((y * g.stride.h + ky) * wp + x * g.stride.w + kx) * oc;
                    let xs = &padded[at..][..oc];
                    let ws = &d.weights[(ky * kw + kx) * oc..][..oc];
                    for ((a, &x), &w) in acc.iter_mut().zip(xs).zip(ws) {
                        *a += i32::from(x) * i32::from(w);
                    }
                }
            }
            isa.requant_channels(acc, &d.requant, dst);
        }
    }
}

/// The window at output position `(y, x)` of `g` over one NHWC image: `f(tap's channels)`
/// for each tap.
fn window<'a>(
    g: &PoolGeometry,
    image: &'a [u8],
    y: usize,
    x: usize,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let (c, w) = (g.channels, g.input.w);
    let (y0, x0, kw) = (y * g.stride.h, x * g.stride.w, g.kernel.w);
    (0..g.kernel.h)
        .flat_map(move |ky| (0..kw).map(move |kx| &image[((y0 + ky) * w + x0 + kx) * c..][..c]))
}

/// Max pooling of NHWC images.
pub(super) fn max_pool(g: &PoolGeometry, input: &[u8], out: &mut [u8]) {
    let c = g.channels;
    let (in_len, out_len) = (g.input.h * g.input.w * c, g.output.h * g.output.w * c);
    for (image, out) in input
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
    {
        for (pos, dst) in out.chunks_exact_mut(c).enumerate() {
            let mut taps = window(g, image, pos / g.output.w, pos % g.output.w);
            dst.copy_from_slice(taps.next().expect("a window has a tap"));
            for tap in taps {
                for (d, &q) in dst.iter_mut().zip(tap) {
                    *d = (*d).max(q);
                }
            }
        }
    }
}

/// Average pooling of NHWC images: `requant(Σ q − taps·Z)` per channel.
pub(super) fn avg_pool<K: Isa>(
    isa: K,
    g: &PoolGeometry,
    zero_point: i32,
    requant: &LayerRequant,
    input: &[u8],
    sums: &mut Vec<i32>,
    out: &mut [u8],
) {
    let c = g.channels;
    let (in_len, out_len) = (g.input.h * g.input.w * c, g.output.h * g.output.w * c);
    let base = -((g.kernel.h * g.kernel.w) as i32) * zero_point;
    sums.clear();
    sums.resize(c, 0);
    for (image, out) in input
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
    {
        for (pos, dst) in out.chunks_exact_mut(c).enumerate() {
            sums.fill(base);
            for tap in window(g, image, pos / g.output.w, pos % g.output.w) {
                for (s, &q) in sums.iter_mut().zip(tap) {
                    *s += i32::from(q);
                }
            }
            isa.requant_channels(sums, requant, dst);
        }
    }
}

/// The residual add by its table: `out[i] = table[skip[i]·256 + body[i]]`.
pub(super) fn add(table: &[u8], skip: &[u8], body: &[u8], out: &mut [u8]) {
    for ((o, &a), &b) in out.iter_mut().zip(skip).zip(body) {
        *o = table[usize::from(a) << 8 | usize::from(b)];
    }
}
