//! Steps shared by the commands: run an integer model over a test set, compare predictions
//! and per-layer outputs.

use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::Net;
use burnq_model::data::ImageBatcher;
use burnq_model::eval::float_taps;
use burnq_quant::{Engine, GraphEngine, Output, QuantGraph, QuantModel};

/// Runs `model` over every image of `set` with the fast engine on all cores (bit-exact with
/// the scalar reference, which the test suite and `cargo xtask bench` check).
pub fn run_integer(model: &QuantModel, set: &ImageSet) -> anyhow::Result<Output> {
    let engine = Engine::new(model)?;
    Ok(engine.forward_parallel(&set.pixels, set.pixels.len() / IMAGE_PIXELS, 0)?)
}

/// Runs a network of any architecture over `pixels` (whole images of its input shape) with
/// the fast graph engine on all cores (bit-exact with `QuantGraph::forward_reference`).
pub fn run_graph(graph: &QuantGraph, pixels: &[u8]) -> anyhow::Result<Output> {
    let n = pixels.len() / graph.plan().input.len();
    Ok(GraphEngine::new(graph)?.forward_parallel(pixels, n, 0)?)
}

/// Fraction of positions where `a` and `b` agree (e.g. predictions vs labels).
pub fn agreement(a: &[u8], b: &[u8]) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len().max(1) as f64
}

/// SQNR (dB) of the integer outputs of conv1, conv2, fc1 and fc2 against the float model,
/// over the first `images` images of `set` (see `burnq_quant::layer_sqnr_db`).
pub fn layer_sqnr(
    float: &Net,
    quant: &QuantModel,
    set: &ImageSet,
    images: usize,
    device: &burnq_model::Device,
) -> anyhow::Result<[f64; 4]> {
    let mut subset = set.clone();
    subset.truncate(images);
    let batcher = ImageBatcher::new(set.kind.normalization());
    let f = float_taps(float, &subset, &batcher, 500, device);
    let taps = quant.forward_reference_taps(&subset.pixels, subset.len())?;
    Ok(burnq_quant::layer_sqnr_db(
        quant,
        &taps,
        [&f[0], &f[1], &f[2], &f[3]],
    ))
}
