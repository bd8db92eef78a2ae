//! Test loss and accuracy of a float model, as the tutorial prints them.

use burn::prelude::*;
use burnq_data::{IMAGE_PIXELS, ImageSet};
use serde::{Deserialize, Serialize};

use crate::data::ImageBatcher;
use crate::{Net, Taps};

/// Mean negative log-likelihood and accuracy over a set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean NLL per image (nats).
    pub loss: f64,
    /// Fraction of images classified correctly, in 0..=1.
    pub accuracy: f64,
    /// Number of images evaluated.
    pub images: usize,
}

/// Mean NLL of log-probabilities `logp` `[n, classes]` against `targets` `[n]`.
pub fn nll_loss(logp: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let n = targets.dims()[0];
    logp.gather(1, targets.reshape([n, 1])).mean().neg()
}

/// Evaluates `model` (in inference mode) on `set` in batches of `batch_size`,
/// returning the predicted class of each image alongside loss and accuracy.
pub fn evaluate(
    model: &Net,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> (EvalResult, Vec<u8>) {
    evaluate_with(&|x| model.forward(x), set, batcher, batch_size, device)
}

/// Like [`evaluate`], with any function from normalized images `[n, 1, 28, 28]` to
/// log-probabilities `[n, classes]`.
pub fn evaluate_with(
    forward: &dyn Fn(Tensor<4>) -> Tensor<2>,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> (EvalResult, Vec<u8>) {
    let mut loss_sum = 0.0f64;
    let mut predictions = Vec::with_capacity(set.len());
    let batch_size = batch_size.max(1);
    for start in (0..set.len()).step_by(batch_size) {
        let end = (start + batch_size).min(set.len());
        let images = batcher.images(
            &set.pixels[start * IMAGE_PIXELS..end * IMAGE_PIXELS],
            device,
        );
        let labels: Vec<i64> = set.labels[start..end]
            .iter()
            .map(|&l| i64::from(l))
            .collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [end - start]), device);
        let logp = forward(images);
        let batch_loss = nll_loss(logp.clone(), targets).into_scalar::<f32>();
        loss_sum += f64::from(batch_loss) * (end - start) as f64;
        let pred = logp.argmax(1).into_data();
        predictions.extend(pred.iter::<i64>().map(|p| p as u8));
    }
    let correct = predictions
        .iter()
        .zip(&set.labels)
        .filter(|(p, l)| p == l)
        .count();
    let n = set.len().max(1) as f64;
    (
        EvalResult {
            loss: loss_sum / n,
            accuracy: correct as f64 / n,
            images: set.len(),
        },
        predictions,
    )
}

/// Runs `model` over `set` in batches of `batch_size`, handing each batch's taps to `f`.
fn for_each_batch(
    model: &Net,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
    mut f: impl FnMut(Taps),
) {
    for chunk in set.pixels.chunks(batch_size.max(1) * IMAGE_PIXELS) {
        f(model.forward_taps(batcher.images(chunk, device)));
    }
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data converts to f32")
}

/// The logits (fc2 outputs, before log-softmax) of every image of `set`, `[n × classes]`
/// row-major, computed in batches of `batch_size`.
pub fn logits(
    model: &Net,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(set.len() * 10);
    for_each_batch(model, set, batcher, batch_size, device, |taps| {
        out.extend(flat(taps.logits))
    });
    out
}

/// The float tensors the integer layers' outputs are compared with, for every image of `set`:
/// conv2's input `[n, 20, 12, 12]`, fc1's input `[n, 800]`, fc2's input `[n, 500]` and the
/// logits `[n, 10]`, each flattened row-major.
pub fn float_taps(
    model: &Net,
    set: &ImageSet,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
) -> [Vec<f32>; 4] {
    let mut out: [Vec<f32>; 4] = Default::default();
    for_each_batch(model, set, batcher, batch_size, device, |taps| {
        out[0].extend(flat(taps.conv2_in));
        out[1].extend(flat(taps.fc1_in));
        out[2].extend(flat(taps.fc2_in));
        out[3].extend(flat(taps.logits));
    });
    out
}
