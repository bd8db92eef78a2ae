//! The fast engine for any [`QuantGraph`]: [`GraphEngine`] packs every layer once for a
//! [`KernelChoice`] and reproduces [`QuantGraph::forward_reference`] bit for bit.
//!
//! # Design
//! - **Layout.** Activations are NHWC inside the engine (`[n, h, w, c]` codes): the input
//!   images are transposed from NCHW once, and a flatten transposes back to the reference's
//!   (C, H, W) feature order. NHWC makes a convolution's output the GEMM's natural
//!   `[positions, out]` rows and puts the channels innermost for every loop.
//! - **Batching.** Images run in chunks (sized so a chunk's largest activation is about
//!   512 KiB, 8 to 64 images), each chunk through every step; each step reads one buffer and
//!   writes another from a pool in the [`GraphWorkspace`], so a warm workspace allocates
//!   nothing.
//! - **Convolutions** (`nodes::GemmConv`) are GEMMs on the existing linear driver
//!   (`kernels::linear_rows`, requantization in its epilogue): im2col rows
//!   `[positions, fan_in]` of the chunk, in blocks of about 32 KiB, filled with the op's `pad`
//!   code outside the image and strided as the geometry says. Each GEMM-view layer's weights
//!   are permuted at pack time from (c, ky, kx) to (ky, kx, c) order, so that an im2col row is
//!   `kh·kw` contiguous runs of channels. A 1×1, stride 1, unpadded convolution reads the
//!   NHWC input directly. A grouped convolution runs one GEMM per group (the layer split per
//!   group at pack time) and scatters each group's columns.
//! - **A one-group, stride-1, square-kernel convolution followed by a 2×2, stride-2 max
//!   pool** (`nodes::ChwConvPool`; the tutorial network's and LeNet-5's layers) runs one image
//!   at a time on the tutorial [`Engine`](crate::Engine)'s kernels: the image is laid out in
//!   CHW order with its padding written out, the im2col panels are packed straight from it as
//!   the GEMM's B (in registers where a half panel is a run of eight codes, which widening
//!   the rows to a multiple of 8 positions makes always so), the weights are A, and the
//!   accumulators `[out, positions]` are max-pooled and requantized per channel in one pass;
//!   the pooled codes go back to NHWC, or stay CHW where the next step is another such
//!   convolution or a flatten. No im2col matrix is written and packed again.
//! - **Other one-group convolutions followed by a max pool** run fused, one image at a time:
//!   the GEMM keeps its accumulators, which are max-pooled, then requantized (exact,
//!   requantization being non-decreasing), so only the pooled values are requantized.
//! - **Depthwise convolutions** (one input channel per group) run a direct loop
//!   (`loops::depthwise`): padded input offsets, each tap one multiply-add along the output
//!   channels, then the layer's requantization across the channels.
//! - **Pools** loop over codes along the channels; average pools requantize window sums with
//!   [`reference::pool_multiplier`](super::reference::pool_multiplier). **Residual adds** look
//!   up a 64 KiB table of [`QuantAdd::apply`](super::QuantAdd::apply) built at pack time.
//! - **Linear layers** run the same driver on the chunk's rows; the last one keeps its
//!   accumulators (`fc2_acc`), then requantizes them into the logits and predicts.
//!
//! Every sum is exact in `i32`: layers are packed only if their worst-case accumulator fits
//! (`QuantLayer::check_accumulator_bound`), and inputs and padding codes are `≤ qmax`.

mod loops;
mod nodes;

use burnq_arch::arch::{PoolGeometry, Shape};

use super::{QuantGraph, QuantOp, check_codes};
use crate::engine::split_batch;
use crate::kernels::{
    Isa, KernelChoice, LayerRequant, LinearOut, Scratch, conv_pool_image, grow, linear_rows,
    with_isa,
};
use crate::{Output, QuantError, QuantParams};
use nodes::{Compiled, Node};

/// Bytes of the largest activation of a chunk of images.
const CHUNK_BYTES: usize = 512 * 1024;
/// Bytes of one block of im2col rows.
const BLOCK_BYTES: usize = 32 * 1024;
/// Rows of an im2col block are a multiple of this (whole tiles of both GEMMs: 6 and 10 rows).
const BLOCK_ROWS: usize = 30;

/// A [`QuantGraph`] packed for one kernel implementation. Immutable and `Sync`: threads can
/// share one engine, each with its own [`GraphWorkspace`].
#[derive(Debug, Clone)]
pub struct GraphEngine {
    kernel: KernelChoice,
    input: QuantParams,
    /// Input channels and `h·w` of one image.
    input_channels: usize,
    input_positions: usize,
    classes: usize,
    /// Images per chunk.
    chunk: usize,
    nodes: Vec<Compiled>,
}

/// Reusable scratch for [`GraphEngine::forward`]: grows on first use, reused afterwards. Any
/// workspace fits any engine.
#[derive(Debug, Default, Clone)]
pub struct GraphWorkspace {
    scratch: Scratch,
    /// One block of im2col rows.
    cols: Vec<u8>,
    /// One group's GEMM output.
    group_out: Vec<u8>,
    /// A depthwise convolution's padded input offsets.
    padded: Vec<i16>,
    /// A depthwise convolution's tap offsets into them.
    taps: Vec<usize>,
    /// One position's sums.
    acc: Vec<i32>,
    /// One image's convolution accumulators (a convolution fused with its max pool).
    image_acc: Vec<i32>,
    /// Activation buffers not in use.
    free: Vec<Vec<u8>>,
}

impl GraphWorkspace {
    /// An empty workspace; the first forward pass sizes it.
    pub fn new() -> Self {
        Self::default()
    }

    fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buffer = self.free.pop().unwrap_or_default();
        buffer.resize(len, 0);
        buffer
    }
}

/// Where the last layer's results go, `[n, classes]` and `[n]`.
struct Results<'a> {
    acc: &'a mut [i32],
    logits: &'a mut [u8],
    predictions: &'a mut [u8],
}

impl GraphEngine {
    /// Packs `graph` for [`KernelChoice::selected`].
    pub fn new(graph: &QuantGraph) -> Result<Self, QuantError> {
        Self::with_kernel(graph, KernelChoice::selected()?)
    }

    /// Packs `graph` for `kernel`; an error if this CPU cannot run it or a layer is beyond the
    /// fast kernels ([`crate::kernels::PackedLayer::new`]; validated graphs never are).
    pub fn with_kernel(graph: &QuantGraph, kernel: KernelChoice) -> Result<Self, QuantError> {
        kernel.check_available()?;
        let plan = graph.plan();
        let logits = graph
            .ops()
            .iter()
            .rposition(|op| !matches!(op, QuantOp::Dropout));
        let nodes = nodes::compile(&plan.steps, graph.ops(), graph.input_params(), logits)?;
        let (input_channels, input_positions) = match plan.input {
            Shape::Image {
                channels,
                height,
                width,
            } => (channels, height * width),
            Shape::Features(n) => (n, 1),
        };
        fn largest(steps: &[burnq_arch::arch::Step]) -> usize {
            steps
                .iter()
                .map(|s| match &s.op {
                    burnq_arch::arch::Op::Residual(body) => largest(body).max(s.output.len()),
                    _ => s.output.len(),
                })
                .max()
                .unwrap_or(0)
        }
        let largest = largest(&plan.steps).max(plan.input.len()).max(1);
        Ok(Self {
            kernel,
            input: graph.input_params(),
            input_channels,
            input_positions,
            classes: plan.classes(),
            chunk: (CHUNK_BYTES / largest).clamp(8, 64),
            nodes,
        })
    }

    /// The kernel implementation this engine runs.
    pub fn kernel(&self) -> KernelChoice {
        self.kernel
    }

    fn image_len(&self) -> usize {
        self.input_channels * self.input_positions
    }

    fn check(&self, images: &[u8], n: usize) -> Result<Output, QuantError> {
        check_codes(
            "input images",
            self.input,
            images,
            n.checked_mul(self.image_len()),
        )?;
        Ok(Output {
            fc2_acc: vec![0; n * self.classes],
            logits_u8: vec![0; n * self.classes],
            predictions: vec![0; n],
        })
    }

    /// Runs `n` images of the plan's input codes (NCHW), as
    /// [`QuantGraph::forward_reference`], whose result this equals exactly.
    pub fn forward(
        &self,
        workspace: &mut GraphWorkspace,
        images: &[u8],
        n: usize,
    ) -> Result<Output, QuantError> {
        let mut out = self.check(images, n)?;
        self.run(
            workspace,
            images,
            Results {
                acc: &mut out.fc2_acc,
                logits: &mut out.logits_u8,
                predictions: &mut out.predictions,
            },
        )?;
        Ok(out)
    }

    /// [`GraphEngine::forward`] split over `threads` threads (0: one per available core),
    /// each running a contiguous share of the images with its own [`GraphWorkspace`].
    pub fn forward_parallel(
        &self,
        images: &[u8],
        n: usize,
        threads: usize,
    ) -> Result<Output, QuantError> {
        let mut out = self.check(images, n)?;
        split_batch(
            images,
            self.image_len(),
            self.classes,
            threads,
            &mut out,
            |share| {
                let results = Results {
                    acc: share.acc,
                    logits: share.logits,
                    predictions: share.predictions,
                };
                self.run(&mut GraphWorkspace::new(), share.images, results)
            },
        )?;
        Ok(out)
    }

    /// The forward pass on checked images.
    fn run(
        &self,
        workspace: &mut GraphWorkspace,
        images: &[u8],
        results: Results<'_>,
    ) -> Result<(), QuantError> {
        with_isa!(self.kernel, |isa| self
            .run_with(isa, workspace, images, results));
        Ok(())
    }

    fn run_with<K: Isa>(
        &self,
        isa: K,
        ws: &mut GraphWorkspace,
        images: &[u8],
        results: Results<'_>,
    ) {
        let (len, classes, chunk) = (self.image_len(), self.classes, self.chunk);
        let chunks = images
            .chunks(chunk * len)
            .zip(results.acc.chunks_mut(chunk * classes))
            .zip(results.logits.chunks_mut(chunk * classes))
            .zip(results.predictions.chunks_mut(chunk));
        for (((images, acc), logits), predictions) in chunks {
            let nb = predictions.len();
            let mut results = Results {
                acc,
                logits,
                predictions,
            };
            if self.input_channels == 1 || self.input_positions == 1 {
                // NCHW is NHWC.
                let out = self.run_nodes(isa, &self.nodes, images, nb, ws, &mut results);
                ws.free.extend(out);
                continue;
            }
            let mut x = ws.take(nb * len);
            loops::to_nhwc(images, self.input_channels, self.input_positions, &mut x);
            let out = self.run_nodes(isa, &self.nodes, &x, nb, ws, &mut results);
            ws.free.extend(out);
            ws.free.push(x);
        }
    }

    /// Runs `nodes` on `input`, a chunk of `nb` images; returns the last activation, or
    /// `None` if no node wrote one (the output is then `input`).
    fn run_nodes<K: Isa>(
        &self,
        isa: K,
        nodes: &[Compiled],
        input: &[u8],
        nb: usize,
        ws: &mut GraphWorkspace,
        results: &mut Results<'_>,
    ) -> Option<Vec<u8>> {
        let mut owned: Option<Vec<u8>> = None;
        for (node, out_len) in nodes {
            let x = owned.as_deref().unwrap_or(input);
            let y = match node {
                Node::Identity => continue,
                Node::Logits(layer) => {
                    linear_rows(
                        isa,
                        layer,
                        x,
                        nb,
                        &mut ws.scratch,
                        LinearOut::Acc(results.acc),
                    );
                    let rows = results
                        .acc
                        .chunks_exact(self.classes)
                        .zip(results.logits.chunks_exact_mut(self.classes))
                        .zip(results.predictions.iter_mut());
                    for ((acc, logits), prediction) in rows {
                        isa.requant_channels(acc, layer.requant(), logits);
                        *prediction = crate::reference::predict(acc, &layer.requant().scalar)
                            .unwrap_or_default();
                    }
                    continue;
                }
                Node::Residual(body, table) => {
                    let b = self.run_nodes(isa, body, x, nb, ws, results);
                    let mut y = ws.take(nb * out_len);
                    loops::add(table, x, b.as_deref().unwrap_or(x), &mut y);
                    ws.free.extend(b);
                    y
                }
                _ => {
                    let mut y = ws.take(nb * out_len);
                    self.run_node(isa, node, x, nb, ws, &mut y);
                    y
                }
            };
            ws.free.extend(owned.replace(y));
        }
        owned
    }

    /// One step without children: `input` (`nb` images) to `out`.
    fn run_node<K: Isa>(
        &self,
        isa: K,
        node: &Node,
        input: &[u8],
        nb: usize,
        ws: &mut GraphWorkspace,
        out: &mut [u8],
    ) {
        match node {
            Node::Gemm(conv) => gemm_conv(isa, conv, input, nb, ws, out),
            Node::Depthwise(d) => {
                loops::depthwise(isa, d, input, nb, ws, out);
            }
            Node::ChwConvPool(conv) => chw_conv_pool(isa, conv, input, nb, ws, out),
            Node::ConvMaxPool {
                conv,
                pool,
                requant,
            } => conv_max_pool(isa, conv, pool, requant, input, nb, ws, out),
            Node::MaxPool(g) => loops::max_pool(g, input, out),
            Node::AvgPool {
                g,
                zero_point,
                requant,
            } => loops::avg_pool(isa, g, *zero_point, requant, input, &mut ws.acc, out),
            Node::Flatten {
                channels,
                positions,
            } => loops::to_nchw(input, *channels, *positions, out),
            Node::Linear(layer) => linear_rows(
                isa,
                layer,
                input,
                nb,
                &mut ws.scratch,
                LinearOut::Requant(out),
            ),
            Node::Logits(_) | Node::Residual(..) | Node::Identity => {
                unreachable!("run by run_nodes")
            }
        }
    }
}

/// A convolution as GEMMs over blocks of im2col rows (see the module docs).
fn gemm_conv<K: Isa>(
    isa: K,
    conv: &nodes::GemmConv,
    input: &[u8],
    nb: usize,
    ws: &mut GraphWorkspace,
    out: &mut [u8],
) {
    let g = &conv.g;
    let total = nb * g.output.h * g.output.w;
    let groups = conv.groups.len();
    let (cg, og, oc) = (
        g.in_channels / groups,
        g.out_channels / groups,
        g.out_channels,
    );
    let k = conv.k;
    let block = (BLOCK_BYTES / k).max(1).next_multiple_of(BLOCK_ROWS);
    let GraphWorkspace {
        scratch,
        cols,
        group_out,
        ..
    } = ws;
    for r0 in (0..total).step_by(block) {
        let rows = block.min(total - r0);
        for (gi, layer) in conv.groups.iter().enumerate() {
            let a: &[u8] = if conv.pointwise {
                &input[r0 * k..][..rows * k]
            } else {
                let cols = grow(cols, rows * k);
                loops::im2col(g, input, r0, rows, gi * cg, cg, conv.pad, k, cols);
                cols
            };
            if groups == 1 {
                let dst = &mut out[r0 * oc..][..rows * oc];
                linear_rows(isa, layer, a, rows, scratch, LinearOut::Requant(dst));
                continue;
            }
            let tmp = grow(group_out, rows * og);
            linear_rows(isa, layer, a, rows, scratch, LinearOut::Requant(tmp));
            for (src, dst) in tmp
                .chunks_exact(og)
                .zip(out[r0 * oc..].chunks_exact_mut(oc))
            {
                dst[gi * og..][..og].copy_from_slice(src);
            }
        }
    }
}

/// A convolution and its 2×2 max pool, one image at a time, as the tutorial
/// [`Engine`](crate::Engine) runs them: the image in CHW order with its padding written out
/// (and more on the right, see [`nodes::ChwConvPool::plan`]),
/// the GEMM with the weights as A and the im2col panels as B, max-pooled and requantized per
/// channel (`conv_pool_image`, which keeps only vertical maxima where it can), then back to
/// NHWC unless the output stays CHW (`nodes::ChwConvPool::chw_out`).
fn chw_conv_pool<K: Isa>(
    isa: K,
    conv: &nodes::ChwConvPool,
    input: &[u8],
    nb: usize,
    ws: &mut GraphWorkspace,
    out: &mut [u8],
) {
    let (g, plan) = (&conv.g, &conv.plan);
    let oc = g.out_channels;
    let pooled = (plan.out_h / 2) * (g.output.w / 2);
    let GraphWorkspace {
        scratch,
        cols,
        acc,
        image_acc,
        group_out,
        ..
    } = ws;
    let padded = grow(cols, plan.image_len);
    padded.fill(conv.pad);
    let c = grow(image_acc, oc * plan.positions());
    let rows = grow(acc, plan.positions() / 2);
    let chw = grow(group_out, oc * pooled);
    let in_len = g.in_channels * g.input.h * g.input.w;
    for (image, dst) in input
        .chunks_exact(in_len)
        .zip(out.chunks_exact_mut(oc * pooled))
        .take(nb)
    {
        let plane = plan.image_len / g.in_channels;
        loops::to_padded_chw(g, conv.chw_in, image, plane, padded);
        let target = if conv.chw_out { &mut *dst } else { &mut *chw };
        conv_pool_image(
            isa,
            &conv.layer,
            plan,
            g.output.w,
            padded,
            scratch,
            c,
            rows,
            target,
        );
        if !conv.chw_out {
            loops::to_nhwc(chw, oc, pooled, dst);
        }
    }
}

/// A one-group convolution and its max pool, one image at a time: the GEMM's accumulators
/// (`LinearOut::Acc`), max-pooled, then requantized.
#[allow(clippy::too_many_arguments)]
fn conv_max_pool<K: Isa>(
    isa: K,
    conv: &nodes::GemmConv,
    pool: &PoolGeometry,
    requant: &LayerRequant,
    input: &[u8],
    nb: usize,
    ws: &mut GraphWorkspace,
    out: &mut [u8],
) {
    let g = &conv.g;
    let layer = &conv.groups[0];
    let (k, oc) = (conv.k, g.out_channels);
    let positions = g.output.h * g.output.w;
    let (in_len, out_len) = (
        g.in_channels * g.input.h * g.input.w,
        oc * pool.output.h * pool.output.w,
    );
    let GraphWorkspace {
        scratch,
        cols,
        acc,
        image_acc,
        group_out: codes,
        ..
    } = ws;
    for (b, dst) in out.chunks_exact_mut(out_len).take(nb).enumerate() {
        let a: &[u8] = if conv.pointwise {
            &input[b * in_len..][..in_len]
        } else {
            let cols = grow(cols, positions * k);
            loops::im2col(
                g,
                input,
                b * positions,
                positions,
                0,
                g.in_channels,
                conv.pad,
                k,
                cols,
            );
            cols
        };
        let c = grow(image_acc, positions * oc);
        linear_rows(isa, layer, a, positions, scratch, LinearOut::Acc(c));
        loops::max_pool_requant(isa, pool, c, requant, (acc, codes), dst);
    }
}
