//! Layer algorithms written once over [`Isa`] (the drivers the engine runs), and the public
//! kernel entry points, which check every length, allocate their outputs and compute exactly
//! what the [`reference`](crate::reference) functions of the same names compute.
//!
//! A convolution is a GEMM per image: A = the packed weights (`out × in·k²`), B = the im2col
//! matrix (`in·k² × positions`), packed one column panel at a time right before the tiles that
//! read it, so it is used from L1. The accumulators of one image (`out × positions`, at most
//! 46 KB for conv1) are then max-pooled and requantized in one pass; pooling first is exact
//! because requantization is non-decreasing, and it requantizes four times fewer values.
//! A linear layer is a GEMM with A = the input rows and B = the packed weights, requantized in
//! the tile's epilogue.
//!
//! Each driver runs the layer's byte GEMM if the instruction set has one that is exact for it
//! ([`Isa::bytes`]), else the `i16` GEMM.

use super::bytes::{ByteIsa, Codes, NibbleIsa, Outer, TableIsa};
use super::direct::{DirectIsa, PAIR_BYTES, half_runs};
use super::isa::{Isa, TileBias, TileOut};
use super::layer::PackedLayer;
use super::lut::{MRL, TABLES};
use super::pack::{self, Im2col, MR, MRB, NR, groups, offset, pairs};
use super::requant::LayerRequant;
use super::{KernelChoice, with_isa};
use crate::QuantError;

/// Reusable scratch of the layer drivers: its buffers grow to the sizes a layer needs on
/// first use and are reused afterwards.
#[derive(Debug, Default, Clone)]
pub(crate) struct Scratch {
    /// One column panel of an im2col matrix as `i16` pairs.
    panel: Vec<i16>,
    /// One column panel of an im2col matrix as bytes.
    bytes: Vec<u8>,
    /// The look-up indices of such a panel.
    indices: Vec<u8>,
    /// A pair panel of the direct form.
    pairs: Vec<u8>,
    /// A linear layer's input rows, packed.
    packed: Vec<i32>,
    /// The same, split into nibbles.
    nibbles: Vec<i32>,
    /// The code sums of a linear layer's input rows.
    sums: Vec<i32>,
}

/// The first `len` elements of `buffer`, grown (zero-filled) if it is shorter.
pub(crate) fn grow<T: Default + Clone>(buffer: &mut Vec<T>, len: usize) -> &mut [T] {
    if buffer.len() < len {
        buffer.resize(len, T::default());
    }
    &mut buffer[..len]
}

/// Where a convolution's tiles write: each output channel's plane of `ld` values in `c`.
#[derive(Debug, Clone, Copy)]
enum ConvDest {
    /// The accumulators, `ld = positions`.
    Acc,
    /// The vertical maxima of [`Im2col::pool_panels`], `ld = (out_h / 2)·out_w`.
    VerticalMax,
}

impl ConvDest {
    /// The destination of a tile whose first element is `c[0]`, rows `ld` apart, `cols`
    /// columns wide.
    fn tile(self, c: &mut [i32], ld: usize, cols: usize) -> TileOut<'_> {
        match self {
            Self::Acc => TileOut::Acc { c, ld, cols },
            Self::VerticalMax => TileOut::VerticalMax { rows: c, ld },
        }
    }
}

/// The accumulators of one image: `c[o·positions + pos]` for every output channel `o` and
/// output position `pos = y·out_w + x`, bias included.
pub(crate) fn conv_image<K: Isa>(
    isa: K,
    layer: &PackedLayer,
    plan: &Im2col,
    image: &[u8],
    scratch: &mut Scratch,
    c: &mut [i32],
) {
    let panels = plan.panels().enumerate().map(|(j, cols)| (cols, j * NR));
    let ld = plan.positions();
    conv_tiles(
        isa,
        layer,
        plan,
        image,
        scratch,
        panels,
        ConvDest::Acc,
        ld,
        c,
    );
}

/// The convolution, requantization and 2×2 max pool of one image into `out`
/// (`[out_channels][out_h / 2][width / 2]` codes, `width ≤ out_w` the columns kept), as
/// [`conv_image`] then [`pool_requant_image`]. Where the output width is a multiple of eight,
/// the tiles run in [`Im2col::pool_panels`] order and store only vertical maxima (in `c`),
/// which are then paired and requantized: half the stores, and no pass over the
/// accumulators. `c` holds `out_channels·positions` values, `rows` `positions / 2`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_pool_image<K: Isa>(
    isa: K,
    layer: &PackedLayer,
    plan: &Im2col,
    width: usize,
    image: &[u8],
    scratch: &mut Scratch,
    c: &mut [i32],
    rows: &mut [i32],
    out: &mut [u8],
) {
    let Some(panels) = plan.pool_panels() else {
        conv_image(isa, layer, plan, image, scratch, c);
        return pool_requant_image(isa, layer, plan, width, c, rows, out);
    };
    let (ph, pw, ow) = (plan.out_h / 2, width / 2, plan.out_w);
    let ld = ph * ow;
    conv_tiles(
        isa,
        layer,
        plan,
        image,
        scratch,
        panels,
        ConvDest::VerticalMax,
        ld,
        c,
    );
    if ph * pw == 0 {
        return;
    }
    let requant = layer.requant();
    let planes = c.chunks_exact(ld).zip(out.chunks_exact_mut(ph * pw));
    for (o, (plane, pooled)) in planes.take(layer.out_channels()).enumerate() {
        if 2 * pw == ow {
            isa.pool_pairs_requant(plane, requant, o, pooled);
            continue;
        }
        for (row, pooled) in plane.chunks_exact(ow).zip(pooled.chunks_exact_mut(pw)) {
            isa.pool_pairs_requant(&row[..2 * pw], requant, o, pooled);
        }
    }
}

/// Runs a convolution's GEMM over the column `panels` (each its source offsets, `NR` of them
/// but in a last short panel, and where its results start in each channel's plane of `c`),
/// writing each tile to `dest`, planes `ld` apart.
#[allow(clippy::too_many_arguments)]
fn conv_tiles<K: Isa, C: AsRef<[usize]>>(
    isa: K,
    layer: &PackedLayer,
    plan: &Im2col,
    image: &[u8],
    scratch: &mut Scratch,
    panels: impl Iterator<Item = (C, usize)>,
    dest: ConvDest,
    ld: usize,
    c: &mut [i32],
) {
    if let Some(bytes) = isa.bytes(layer.byte_form()) {
        return conv_tiles_bytes(bytes, layer, plan, image, scratch, panels, dest, ld, c);
    }
    let out = layer.out_channels();
    let panel = grow(&mut scratch.panel, layer.panel_len());
    let z = layer.input().zero_point();
    for (cols, at) in panels {
        let cols = cols.as_ref();
        isa.im2col_panel(image, plan.k_offsets(), cols, z, panel);
        for i in 0..out.div_ceil(MR) {
            let rows = (out - i * MR).min(MR);
            let bias = TileBias::Rows(&layer.bias()[i * MR..][..rows]);
            let dst = dest.tile(&mut c[i * MR * ld + at..], ld, cols.len());
            isa.tile(rows, layer.row_panel(i), panel, bias, dst);
        }
    }
}

/// [`conv_tiles`] with the byte GEMM `isa`: B is the im2col matrix of the codes themselves,
/// with its column sums where the layer needs them.
#[allow(clippy::too_many_arguments)]
fn conv_tiles_bytes<B: ByteIsa, C: AsRef<[usize]>>(
    isa: B,
    layer: &PackedLayer,
    plan: &Im2col,
    image: &[u8],
    scratch: &mut Scratch,
    panels: impl Iterator<Item = (C, usize)>,
    dest: ConvDest,
    ld: usize,
    c: &mut [i32],
) {
    let out = layer.out_channels();
    let form = layer.byte_form();
    let panel = grow(&mut scratch.bytes, layer.byte_panel_len());
    let indices = grow(&mut scratch.indices, form.groups * TABLES);
    let direct = isa.direct(form).zip(form.direct.as_ref());
    let pairs = grow(
        &mut scratch.pairs,
        direct.map_or(0, |(_, d)| d.pairs * PAIR_BYTES),
    );
    let tables = isa.tables(form).zip(form.lut.as_ref());
    let mut sums = [0; NR];
    for (cols, at) in panels {
        let cols = cols.as_ref();
        let runs = half_runs(cols);
        if let (Some((tile, d)), Some(runs)) = (direct, runs) {
            tile.pair_panel(image, plan, runs, pairs);
            for i in 0..out.div_ceil(MRB) {
                let rows = (out - i * MRB).min(MRB);
                let bias = TileBias::Rows(&form.bias[i * MRB..][..rows]);
                let dst = dest.tile(&mut c[i * MRB * ld + at..], ld, cols.len());
                tile.pair_tile(rows, d.panel(i), pairs, d.pairs, bias, dst);
            }
            continue;
        }
        // Table indices straight from the image where the halves are runs and no code sums
        // are needed; else from the byte panel, which the byte tile reads too.
        match (tables, runs) {
            (Some((tab, _)), Some(runs)) if form.centre_shift.is_none() => {
                tab.index_runs(image, plan, runs, indices);
            }
            _ => {
                isa.im2col_bytes(image, plan, cols, panel);
                if form.centre_shift.is_some() {
                    isa.col_sums(panel, &mut sums);
                }
                if let Some((tab, _)) = tables {
                    tab.index_panel(panel, indices);
                }
            }
        }
        // Row panel `i` of `mr` rows: its row count, bias and correction.
        let rows_of = |i: usize, mr: usize| {
            let rows = (out - i * mr).min(mr);
            let outer = form.centre_shift.as_deref().map(|d| Outer {
                rows: &d[i * mr..][..rows],
                cols: &sums,
            });
            (rows, TileBias::Rows(&form.bias[i * mr..][..rows]), outer)
        };
        if let Some((tab, lut)) = tables {
            for i in 0..out.div_ceil(MRL) {
                let (rows, bias, outer) = rows_of(i, MRL);
                let dst = dest.tile(&mut c[i * MRL * ld + at..], ld, cols.len());
                let tables = lut.panel(i, form.groups);
                tab.lut_tile(rows, tables, indices, lut.steps, bias, outer, dst);
            }
            continue;
        }
        for i in 0..out.div_ceil(MRB) {
            let (rows, bias, outer) = rows_of(i, MRB);
            let dst = dest.tile(&mut c[i * MRB * ld + at..], ld, cols.len());
            let a = layer.byte_row_panel(i);
            isa.byte_tile(rows, a, panel, Codes::B, form.chain, bias, outer, dst);
        }
    }
}

/// `out[o][py][px] = requant_o(max of the 2×2 window at (2py, 2px) of channel o)` from the
/// accumulators [`conv_image`] leaves in `c`, over the first `width ≤ plan.out_w` output
/// columns (the others are dropped); `rows` is scratch of `positions / 2` values.
pub(crate) fn pool_requant_image<K: Isa>(
    isa: K,
    layer: &PackedLayer,
    plan: &Im2col,
    width: usize,
    c: &[i32],
    rows: &mut [i32],
    out: &mut [u8],
) {
    let (ph, pw, ow) = (plan.out_h / 2, width / 2, plan.out_w);
    if ph * pw == 0 {
        return;
    }
    // Vertical maxima, the odd last column dropped: pairs (2j, 2j + 1) are then the windows.
    let rows = &mut rows[..ph * 2 * pw];
    let requant = layer.requant();
    let planes = c
        .chunks_exact(plan.positions())
        .zip(out.chunks_exact_mut(ph * pw));
    for (o, (plane, pooled)) in planes.take(layer.out_channels()).enumerate() {
        isa.max_rows(plane, ow, ph, rows);
        isa.pool_pairs_requant(rows, requant, o, pooled);
    }
}

/// Where a linear layer's results go, `[n, out]`.
#[derive(Debug)]
pub(crate) enum LinearOut<'a> {
    /// The accumulators, bias included.
    Acc(&'a mut [i32]),
    /// The requantized codes.
    Requant(&'a mut [u8]),
}

impl LinearOut<'_> {
    /// The destination of the tile at element `at` of `[n, out]` (row stride `ld`), its first
    /// column `col0` and `cols` columns wide.
    fn tile<'b>(
        &'b mut self,
        at: usize,
        ld: usize,
        cols: usize,
        requant: &'b LayerRequant,
        col0: usize,
    ) -> TileOut<'b> {
        match self {
            LinearOut::Acc(c) => TileOut::Acc {
                c: &mut c[at..],
                ld,
                cols,
            },
            LinearOut::Requant(q) => TileOut::Requant {
                out: &mut q[at..],
                ld,
                cols,
                requant,
                col0,
            },
        }
    }
}

/// A linear layer on `n` rows of `input` (`[n, in]`).
pub(crate) fn linear_rows<K: Isa>(
    isa: K,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
    scratch: &mut Scratch,
    mut out: LinearOut<'_>,
) {
    let form = layer.byte_form();
    if let Some(bytes) = isa.bytes(form) {
        let tile: &RowTile = &|rows, a, b, bias, outer, dst| {
            bytes.byte_tile(rows, a, b, Codes::A, form.chain, bias, outer, dst)
        };
        return linear_rows_bytes(layer, input, n, scratch, out, Planes::Codes, tile);
    }
    if let Some(nibbles) = isa.nibbles(form).filter(|_| n <= NIBBLE_ROWS) {
        let tile: &RowTile = &|rows, a, b, bias, outer, dst| {
            nibbles.nibble_tile(rows, a, b, form.nibble_chain, bias, outer, dst)
        };
        return linear_rows_bytes(layer, input, n, scratch, out, Planes::Nibbles, tile);
    }
    let (k, m) = (layer.fan_in(), layer.out_channels());
    let z = layer.input().zero_point();
    let packed = &mut scratch.packed;
    pack::pack_rows(n, k, |r, i| offset(input[r * k + i], z), packed);
    let a_len = pairs(k) * MR;
    for j in 0..m.div_ceil(NR) {
        let cols = (m - j * NR).min(NR);
        let b = layer.col_panel(j);
        let bias = TileBias::Cols(layer.bias()[j * NR..][..NR].try_into().unwrap());
        for i in 0..n.div_ceil(MR) {
            let rows = (n - i * MR).min(MR);
            let dst = out.tile(i * MR * m + j * NR, m, cols, layer.requant(), j * NR);
            isa.tile(rows, &packed[i * a_len..][..a_len], b, bias, dst);
        }
    }
}

/// Most rows a linear layer runs with the nibble GEMM ([`super::bytes::NibbleIsa`]) rather than
/// the `i16` GEMM: with few rows per call the weights stream from memory for each, and the
/// nibble GEMM reads half their bytes; with more, both run the same products per instruction.
const NIBBLE_ROWS: usize = 2;

/// A byte tile of a linear layer, `tile(rows, a, b, bias, outer, out)`.
type RowTile<'f> = dyn Fn(usize, &[i32], &[u8], TileBias<'_>, Option<Outer<'_>>, TileOut<'_>) + 'f;

/// How a byte GEMM's A holds a linear layer's input codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planes {
    /// The codes themselves ([`pack::pack_code_rows`]).
    Codes,
    /// Split into two planes of nibbles ([`pack::split_nibbles`]).
    Nibbles,
}

/// [`linear_rows`] with a byte GEMM, whose `tile(rows, a, b, bias, outer, out)` is
/// [`ByteIsa::byte_tile`] or [`super::bytes::NibbleIsa::nibble_tile`]: A is the input codes in
/// `planes`, with their row sums where the layer needs them.
fn linear_rows_bytes(
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
    scratch: &mut Scratch,
    mut out: LinearOut<'_>,
    planes: Planes,
    tile: &RowTile,
) {
    let (k, m) = (layer.fan_in(), layer.out_channels());
    let form = layer.byte_form();
    let Scratch {
        packed,
        nibbles,
        sums,
        ..
    } = scratch;
    pack::pack_code_rows(input, n, k, packed);
    let mut a_len = groups(k) * MRB;
    let packed = match planes {
        Planes::Codes => packed,
        Planes::Nibbles => {
            pack::split_nibbles(packed, n, groups(k), nibbles);
            a_len *= 2;
            nibbles
        }
    };
    if form.centre_shift.is_some() {
        sums.clear();
        sums.extend(
            input[..n * k]
                .chunks_exact(k)
                .map(|row| row.iter().map(|&q| i32::from(q)).sum::<i32>()),
        );
    }
    for j in 0..m.div_ceil(NR) {
        let cols = (m - j * NR).min(NR);
        let b = layer.byte_col_panel(j);
        let bias = TileBias::Cols(form.bias[j * NR..][..NR].try_into().unwrap());
        let shift = form.centre_shift.as_deref();
        let shift: Option<&[i32; NR]> = shift.map(|d| d[j * NR..][..NR].try_into().unwrap());
        for i in 0..n.div_ceil(MRB) {
            let rows = (n - i * MRB).min(MRB);
            let outer = shift.map(|cols| Outer {
                rows: &sums[i * MRB..][..rows],
                cols,
            });
            let dst = out.tile(i * MRB * m + j * NR, m, cols, layer.requant(), j * NR);
            tile(rows, &packed[i * a_len..][..a_len], b, bias, outer, dst);
        }
    }
}

/// Checks that `input` has `dims` elements, each a code `≤ qmax` of the layer's input.
fn check_input(layer: &PackedLayer, input: &[u8], dims: &[usize]) -> Result<(), QuantError> {
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(input.len()) {
        return Err(QuantError::ShapeMismatch {
            what: format!("{} input {dims:?}", layer.name()),
            expected: expected.unwrap_or(usize::MAX),
            found: input.len(),
        });
    }
    let qmax = layer.input().qmax();
    match crate::model::code_above(input, qmax) {
        Some(code) => Err(QuantError::CodeAboveQmax {
            what: format!("{} input", layer.name()),
            code,
            qmax,
            bits: layer.input().bits(),
        }),
        None => Ok(()),
    }
}

/// The convolution of `n` NCHW images of `height × width` codes (each `≤ qmax_in`): the
/// accumulators `[n, out, height − k + 1, width − k + 1]`, as [`crate::reference::conv2d`].
pub fn conv2d(
    kernel: KernelChoice,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
    height: usize,
    width: usize,
) -> Result<Vec<i32>, QuantError> {
    let plan = layer.conv_plan(height, width)?;
    check_input(layer, input, &[n, plan.image_len])?;
    let plane = layer.out_channels() * plan.positions();
    let mut acc = vec![0; n * plane];
    let mut scratch = Scratch::default();
    let images = input
        .chunks_exact(plan.image_len)
        .zip(acc.chunks_exact_mut(plane));
    with_isa!(kernel, |isa| {
        for (image, c) in images {
            conv_image(isa, layer, &plan, image, &mut scratch, c);
        }
    });
    Ok(acc)
}

/// The convolution, requantization (with its ReLU clamp) and 2×2 max-pool of `n` images, fused:
/// `[n, out, ⌊(height − k + 1)/2⌋, ⌊(width − k + 1)/2⌋]` codes, as [`crate::reference::max_pool_2x2`]
/// of [`crate::reference::requantize`] of [`crate::reference::conv2d`].
pub fn conv2d_requant_pool(
    kernel: KernelChoice,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, QuantError> {
    let plan = layer.conv_plan(height, width)?;
    check_input(layer, input, &[n, plan.image_len])?;
    let out = layer.out_channels();
    let pooled = out * (plan.out_h / 2) * (plan.out_w / 2);
    let mut codes = vec![0; n * pooled];
    let mut scratch = Scratch::default();
    let mut c = vec![0; out * plan.positions()];
    let mut rows = vec![0; plan.positions() / 2];
    with_isa!(kernel, |isa| {
        for (i, image) in input.chunks_exact(plan.image_len).enumerate() {
            let dst = &mut codes[i * pooled..][..pooled];
            conv_pool_image(
                isa,
                layer,
                &plan,
                plan.out_w,
                image,
                &mut scratch,
                &mut c,
                &mut rows,
                dst,
            );
        }
    });
    Ok(codes)
}

/// The linear layer on `n` rows of codes (each `≤ qmax_in`): accumulators `[n, out]`, as
/// [`crate::reference::linear`].
pub fn linear(
    kernel: KernelChoice,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
) -> Result<Vec<i32>, QuantError> {
    let mut acc = vec![0; n * layer.out_channels()];
    linear_checked(kernel, layer, input, n, LinearOut::Acc(&mut acc))?;
    Ok(acc)
}

/// The linear layer and its requantization, fused: `[n, out]` codes, as
/// [`crate::reference::requantize`] of [`crate::reference::linear`].
pub fn linear_requant(
    kernel: KernelChoice,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
) -> Result<Vec<u8>, QuantError> {
    let mut codes = vec![0; n * layer.out_channels()];
    linear_checked(kernel, layer, input, n, LinearOut::Requant(&mut codes))?;
    Ok(codes)
}

/// Checks a linear layer's input, then runs it into `out`.
fn linear_checked(
    kernel: KernelChoice,
    layer: &PackedLayer,
    input: &[u8],
    n: usize,
    out: LinearOut,
) -> Result<(), QuantError> {
    layer.check_linear()?;
    check_input(layer, input, &[n, layer.fan_in()])?;
    with_isa!(kernel, |isa| linear_rows(
        isa,
        layer,
        input,
        n,
        &mut Scratch::default(),
        out
    ));
    Ok(())
}

/// Requantizes accumulators laid out `[batch, out, spatial]` with each channel's stage, as
/// [`crate::reference::requantize`]: one channel at a time for `spatial > 1`, across channels for a
/// linear layer's rows (`spatial = 1`).
pub fn requantize(
    kernel: KernelChoice,
    layer: &PackedLayer,
    acc: &[i32],
    spatial: usize,
) -> Result<Vec<u8>, QuantError> {
    let out = layer.out_channels();
    let plane = out.checked_mul(spatial).unwrap_or(0);
    if plane == 0 || !acc.len().is_multiple_of(plane) {
        return Err(QuantError::ShapeMismatch {
            what: format!(
                "{} accumulators per batch item [{out}, {spatial}]",
                layer.name()
            ),
            expected: plane,
            found: acc.len(),
        });
    }
    let mut codes = vec![0; acc.len()];
    let requant = layer.requant();
    with_isa!(kernel, |isa| {
        for (acc, codes) in acc.chunks_exact(plane).zip(codes.chunks_exact_mut(plane)) {
            if spatial == 1 {
                isa.requant_channels(acc, requant, codes);
                continue;
            }
            let channels = acc
                .chunks_exact(spatial)
                .zip(codes.chunks_exact_mut(spatial));
            for (o, (acc, codes)) in channels.enumerate() {
                isa.requant_channel(acc, requant, o, codes);
            }
        }
    });
    Ok(codes)
}

/// 2×2 max-pool with stride 2 of `planes` planes of `height × width` codes, as
/// [`crate::reference::max_pool_2x2`].
pub fn max_pool_2x2(
    kernel: KernelChoice,
    input: &[u8],
    planes: usize,
    height: usize,
    width: usize,
) -> Result<Vec<u8>, QuantError> {
    let expected = planes
        .checked_mul(height)
        .and_then(|v| v.checked_mul(width));
    if expected != Some(input.len()) {
        return Err(QuantError::ShapeMismatch {
            what: format!("max-pool input [{planes}, {height}, {width}]"),
            expected: expected.unwrap_or(usize::MAX),
            found: input.len(),
        });
    }
    let (ph, pw) = (height / 2, width / 2);
    let mut out = vec![0; planes * ph * pw];
    if ph * pw == 0 {
        return Ok(out);
    }
    let planes = input
        .chunks_exact(height * width)
        .zip(out.chunks_exact_mut(ph * pw));
    with_isa!(kernel, |isa| {
        for (plane, pooled) in planes {
            for (py, row) in pooled.chunks_exact_mut(pw).enumerate() {
                let top = &plane[2 * py * width..][..2 * pw];
                let bottom = &plane[(2 * py + 1) * width..][..2 * pw];
                isa.max_pool_row(top, bottom, row);
            }
        }
    });
    Ok(out)
}
