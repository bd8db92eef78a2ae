//! The engine's loops over NHWC codes: layout changes, im2col rows, the depthwise
//! convolution, pools and the residual add. Each inner loop runs along the channels, which
//! are contiguous in NHWC, so the compiler vectorizes it.

use burnq_arch::arch::{ConvGeometry, PoolGeometry};

use super::GraphWorkspace;
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

/// One image of `g`'s input, NHWC or (`chw`) CHW, into a CHW image of `plane` codes per
/// channel, rows of `plane / (h + 2·pad_h)` codes, at offset `(pad_h, pad_w)`: `out`, whose
/// border the caller has filled with the padding code.
pub(super) fn to_padded_chw(
    g: &ConvGeometry,
    chw: bool,
    image: &[u8],
    plane: usize,
    out: &mut [u8],
) {
    let (c, h, w) = (g.in_channels, g.input.h, g.input.w);
    let wp = plane / (h + 2 * g.padding.h);
    let at = |ch: usize, y: usize| ch * plane + (y + g.padding.h) * wp + g.padding.w;
    if chw || c == 1 {
        for (i, row) in image.chunks_exact(w).enumerate() {
            let at = at(i / h, i % h);
            out[at..at + w].copy_from_slice(row);
        }
        return;
    }
    for (y, row) in image.chunks_exact(w * c).enumerate() {
        for (x, pixel) in row.chunks_exact(c).enumerate() {
            for (ch, &q) in pixel.iter().enumerate() {
                out[at(ch, y) + x] = q;
            }
        }
    }
}

/// Rows `r0..r0 + rows` of the im2col matrix of NHWC images (row `b·positions + y·out_w + x`),
/// channels `c0..c0 + cg`, each row in (ky, kx, c) order, `pad` outside the image, then code 0
/// up to the row length `k ≥ kh·kw·cg`.
///
/// Rows are written in order, each kernel row's `kw·cg` bytes with one copy where they are
/// contiguous (one group, inside the image), else one copy per tap; short copies are
/// fixed-width ([`copy_short`]), never a call to `memcpy` per few bytes.
#[allow(clippy::too_many_arguments)]
pub(super) fn im2col(
    g: &ConvGeometry,
    input: &[u8],
    r0: usize,
    rows: usize,
    c0: usize,
    cg: usize,
    pad: u8,
    k: usize,
    out: &mut [u8],
) {
    let (c, h, w) = (g.in_channels, g.input.h, g.input.w);
    let (kh, kw) = (g.kernel.h, g.kernel.w);
    let ow = g.output.w;
    let positions = g.output.h * ow;
    let fan_in = kh * kw * cg;
    let whole = cg == c;
    let pads = [pad; SHORT];
    let out = &mut out[..rows * k];
    // The row's image and position, advanced without dividing.
    let (mut b, pos) = (r0 / positions, r0 % positions);
    let (mut y, mut x) = (pos / ow, pos % ow);
    for row in 0..rows {
        if row > 0 {
            x += 1;
            if x == ow {
                (x, y) = (0, y + 1);
                if y == g.output.h {
                    (y, b) = (0, b + 1);
                }
            }
        }
        let image = &input[b * h * w * c..][..h * w * c];
        let at = row * k;
        for ky in 0..kh {
            let at = at + ky * kw * cg;
            let Some(iy) = input_row(g, y, ky) else {
                fill(out, at, kw * cg, &pads);
                continue;
            };
            let first = (x * g.stride.w).checked_sub(g.padding.w);
            match first {
                Some(ix) if whole && ix + kw <= w => {
                    copy_short(out, at, image, (iy * w + ix) * c, kw * c);
                }
                _ => {
                    for kx in 0..kw {
                        let at = at + kx * cg;
                        let ix = (x * g.stride.w + kx)
                            .checked_sub(g.padding.w)
                            .filter(|&ix| ix < w);
                        match ix {
                            Some(ix) => copy_short(out, at, image, (iy * w + ix) * c + c0, cg),
                            None => fill(out, at, cg, &pads),
                        }
                    }
                }
            }
        }
        // After the copies, which may run past the row's `fan_in` bytes.
        for q in &mut out[at + fan_in..at + k] {
            *q = 0;
        }
    }
}

/// The widest fixed-width copy.
const SHORT: usize = 32;

/// `dst[at..at + len] = src[from..from + len]`. Copies of up to [`SHORT`] bytes copy a fixed
/// 8, 16 or 32 bytes where both slices have room, so may overwrite bytes after `at + len`:
/// callers write in increasing order.
#[inline(always)]
fn copy_short(dst: &mut [u8], at: usize, src: &[u8], from: usize, len: usize) {
    macro_rules! fixed {
        ($n:literal) => {
            if len <= $n && at + $n <= dst.len() && from + $n <= src.len() {
                let d: &mut [u8; $n] = (&mut dst[at..at + $n]).try_into().unwrap();
                *d = src[from..from + $n].try_into().unwrap();
                return;
            }
        };
    }
    fixed!(8);
    fixed!(16);
    fixed!(32);
    dst[at..at + len].copy_from_slice(&src[from..from + len]);
}

/// `dst[at..at + len] = pad`, `pads` being [`SHORT`] pad codes; as [`copy_short`].
#[inline(always)]
fn fill(dst: &mut [u8], at: usize, len: usize, pads: &[u8; SHORT]) {
    if len <= SHORT {
        copy_short(dst, at, pads, 0, len);
    } else {
        dst[at..at + len].fill(pads[0]);
    }
}

/// The input row of kernel row `ky` at output row `y`, if inside the image.
fn input_row(g: &ConvGeometry, y: usize, ky: usize) -> Option<usize> {
    (y * g.stride.h + ky)
        .checked_sub(g.padding.h)
        .filter(|&iy| iy < g.input.h)
}

/// A convolution with one input channel per group on `nb` NHWC images: per image, the input
/// offsets `q − Z` are laid out padded (with `pad − Z`) and with each input channel repeated
/// for its output channels, so that every tap is one contiguous multiply-add along the output
/// channels ([`Isa::depthwise_sums`]); each position's sums are requantized across the
/// channels.
pub(super) fn depthwise<K: Isa>(
    isa: K,
    d: &Depthwise,
    input: &[u8],
    nb: usize,
    ws: &mut GraphWorkspace,
    out: &mut [u8],
) {
    let GraphWorkspace {
        padded, taps, acc, ..
    } = ws;
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
    taps.clear();
    taps.extend((0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky * wp + kx) * oc)));
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
            let at = (y * g.stride.h * wp + x * g.stride.w) * oc;
            isa.depthwise_sums(&padded[at..], taps, &d.weights, &d.bias, acc);
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
            let taps = window(g, image, pos / g.output.w, pos % g.output.w);
            dst.fill(0);
            for tap in taps {
                for (d, &q) in dst.iter_mut().zip(tap) {
                    *d = (*d).max(q);
                }
            }
        }
    }
}

/// Max pooling of one NHWC image's accumulators, then requantization across the channels,
/// padded to whole groups of eight (`requant` has stages for the padding channels, whose
/// codes are dropped) so that no channel takes the scalar tail; `m` and `codes` are scratch.
pub(super) fn max_pool_requant<K: Isa>(
    isa: K,
    g: &PoolGeometry,
    acc: &[i32],
    requant: &LayerRequant,
    (m, codes): (&mut Vec<i32>, &mut Vec<u8>),
    out: &mut [u8],
) {
    let (c, w) = (g.channels, g.input.w);
    let c8 = c.next_multiple_of(8);
    m.clear();
    m.resize(c8, 0);
    codes.clear();
    codes.resize(c8, 0);
    let positions = g.output.h * g.output.w;
    for pos in 0..positions {
        let (y0, x0) = (pos / g.output.w * g.stride.h, pos % g.output.w * g.stride.w);
        let max = &mut m[..c];
        max.fill(i32::MIN);
        for ky in 0..g.kernel.h {
            for kx in 0..g.kernel.w {
                let tap = &acc[((y0 + ky) * w + x0 + kx) * c..][..c];
                for (a, &v) in max.iter_mut().zip(tap) {
                    *a = (*a).max(v);
                }
            }
        }
        isa.requant_channels(m, requant, codes);
        copy_short(out, pos * c, codes, 0, c);
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
