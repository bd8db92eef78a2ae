//! The fast engine's time per layer and stage, on one thread: where an image's time goes.
//!
//! Each of the tutorial network's four layers runs through the kernels' public entry points on
//! the same `BATCH` test images, its input the previous layer's codes as the engine computes
//! them. The convolutions are timed twice — im2col + GEMM alone (`kernels::conv2d`, the
//! accumulators) and fused with the requantization and 2×2 max pool
//! (`kernels::conv2d_requant_pool`, what the engine runs) — so the difference is the
//! requantization + pooling (0 where the fused call is the faster: it stores only vertical
//! maxima); fc1 runs its GEMM with the requantization fused, fc2 its GEMM to the accumulators.
//! Each figure is the median over `runs` calls, divided by `BATCH`: microseconds
//! per image. (The entry points allocate their outputs, which the engine does not, so the sum
//! is a little above the engine's own time per image.)

use std::time::Instant;

use burnq_quant::kernels::limits::MachineLimits;
use burnq_quant::kernels::{self, KernelChoice, PackedLayer};
use burnq_quant::{IMAGE_SIDE, LayerKind, QuantModel, macs_per_image};
use serde::Serialize;

use super::measure::median;

/// Images per timed call.
pub(super) const BATCH: usize = 64;

/// One stage of one layer.
#[derive(Debug, Clone, Serialize)]
pub(super) struct LayerTime {
    /// The model's widths, `w<W>a<A>`.
    pub width: String,
    /// `conv1`, `conv2`, `fc1` or `fc2`.
    pub layer: String,
    /// What was timed: `im2col + GEMM`, `requant + 2×2 max pool`, `GEMM + requant` or `GEMM`.
    pub stage: &'static str,
    /// Median microseconds per image, one thread.
    pub us_per_image: f64,
    /// The layer's multiply-accumulates per image (on its GEMM rows only).
    pub macs_per_image: Option<u64>,
    /// The GEMM the layer runs on this kernel: `bytes` (`u8 × i8`: `vpdpbusd` or
    /// `vpmaddubsw`), `tables` (two-bit inputs, `vpshufb` look-ups), `direct` (a convolution
    /// whose reduction fits one `i16` sum, `vpmaddubsw` on pair panels) or `i16` (`vpmaddwd`,
    /// or the portable loop).
    pub gemm: &'static str,
    /// The multiply instruction that bounds that GEMM on this kernel (`vpmaddwd ymm`, …;
    /// none for the portable kernel).
    pub instruction: Option<&'static str>,
    /// The stage's GMAC/s over that instruction's measured limit on one core, a fraction
    /// (0.73 = 73 %; [`MachineLimits`]; GEMM stages only).
    pub share_of_limit: Option<f64>,
}

impl LayerTime {
    /// The stage's multiply-accumulates per second, in GMAC/s (GEMM stages only).
    pub fn gmac_per_s(&self) -> Option<f64> {
        self.macs_per_image
            .map(|m| m as f64 / self.us_per_image / 1e3)
    }
}

/// Median seconds of `runs` calls of `f`.
fn time<T>(runs: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut samples = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let out = f()?;
        samples.push(start.elapsed().as_secs_f64());
        last = Some(out);
    }
    Ok((median(samples), last.expect("at least one run")))
}

/// The stages of `model` (labelled `width`) on `kernel`, on the first [`BATCH`] of `pixels`
/// (28×28 codes per image), each the median of `runs` calls, the GEMM stages compared with
/// `limits`.
pub(super) fn layer_times(
    width: &str,
    model: &QuantModel,
    kernel: KernelChoice,
    pixels: &[u8],
    runs: usize,
    limits: Option<&MachineLimits>,
) -> anyhow::Result<Vec<LayerTime>> {
    let n = BATCH.min(pixels.len() / (IMAGE_SIDE * IMAGE_SIDE));
    anyhow::ensure!(n > 0, "no test image to time the layers on");
    let layers = model.layers();
    let packed = layers
        .iter()
        .map(PackedLayer::new)
        .collect::<Result<Vec<_>, _>>()?;
    // Multiply-accumulates of layer i: the stack up to i minus the stack before it.
    let kinds: Vec<_> = layers.iter().map(|l| l.kind).collect();
    let macs = |i: usize| {
        macs_per_image(kinds[..=i].iter().copied()) - macs_per_image(kinds[..i].iter().copied())
    };
    let per_image = |seconds: f64| seconds * 1e6 / n as f64;
    let forms = packed
        .iter()
        .map(|p| p.gemm_form(kernel))
        .collect::<Result<Vec<_>, _>>()?;
    let row = |i: usize, stage, seconds: f64, with_macs: bool| {
        let instruction = forms[i].instruction(kernel);
        let mut time = LayerTime {
            width: width.into(),
            layer: layers[i].name.clone(),
            stage,
            us_per_image: per_image(seconds),
            macs_per_image: with_macs.then(|| macs(i)),
            gemm: forms[i].name(),
            instruction,
            share_of_limit: None,
        };
        let limit = instruction.and_then(|name| limits?.of(name));
        time.share_of_limit = time.gmac_per_s().zip(limit).map(|(g, l)| g / l.gmacs);
        time
    };
    let mut rows = Vec::new();
    let mut input = pixels[..n * IMAGE_SIDE * IMAGE_SIDE].to_vec();
    let mut side = IMAGE_SIDE;
    for (i, layer) in packed.iter().take(2).enumerate() {
        let (gemm, _) = time(runs, || {
            Ok(kernels::conv2d(kernel, layer, &input, n, side, side)?)
        })?;
        let (fused, pooled) = time(runs, || {
            Ok(kernels::conv2d_requant_pool(
                kernel, layer, &input, n, side, side,
            )?)
        })?;
        rows.push(row(i, "im2col + GEMM", gemm, true));
        rows.push(row(
            i,
            "requant + 2×2 max pool",
            (fused - gemm).max(0.0),
            false,
        ));
        input = pooled;
        if let LayerKind::Conv2d { kernel, .. } = layers[i].kind {
            side = (side + 1 - kernel) / 2;
        }
    }
    let (fc1, hidden) = time(runs, || {
        Ok(kernels::linear_requant(kernel, &packed[2], &input, n)?)
    })?;
    rows.push(row(2, "GEMM + requant", fc1, true));
    let (fc2, _) = time(runs, || {
        Ok(kernels::linear(kernel, &packed[3], &hidden, n)?)
    })?;
    rows.push(row(3, "GEMM", fc2, true));
    Ok(rows)
}
