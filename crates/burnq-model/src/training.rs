//! The tutorial's training recipe: SGD (lr 0.01, momentum 0.5, dampening 0 as in
//! PyTorch), batch 64, 10 epochs, seed 1, NLL loss on log-softmax, shuffled training set.
//!
//! Determinism: the device is seeded before the weights are drawn and the data loader
//! shuffles with the same seed in the calling thread (no worker threads), so the same
//! seed on the same CPU backend gives bit-identical weights (tested).

use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burnq_arch::Plan;
use burnq_data::ImageSet;
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use serde::{Deserialize, Serialize};

use crate::data::{ImageBatch, ImageBatcher, ImageDataset};
use crate::eval::{EvalResult, evaluate_with, nll_loss};
use crate::sgd::FusedSgd;
use crate::{ArchNet, ModelError, Net, NetConfig};

/// Hyper-parameters; defaults reproduce the tutorial.
///
/// `shards` > 1 trains data-parallel: see [`sharded_gradients`].
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// Layer sizes.
    pub net: NetConfig,
    /// Passes over the training set.
    #[config(default = 10)]
    pub epochs: usize,
    /// Images per SGD step.
    #[config(default = 64)]
    pub batch_size: usize,
    /// Learning rate.
    #[config(default = 0.01)]
    pub lr: f64,
    /// SGD momentum (dampening is 0, as in PyTorch).
    #[config(default = 0.5)]
    pub momentum: f64,
    /// Learning-rate factor per epoch: epoch `e` (1-based) uses `lr · lr_decay^(e−1)`.
    /// 1.0 (constant) reproduces the tutorial.
    #[config(default = 1.0)]
    pub lr_decay: f64,
    /// Seed of the weight initialization and of the shuffling.
    #[config(default = 1)]
    pub seed: u64,
    /// Data-parallel shards per batch, each computed on its own thread
    /// ([`sharded_gradients`]); 1 computes the whole batch in one pass. Networks whose
    /// training pass depends on the whole batch or on the RNG (batch norm, dropout) and
    /// stateful forward modes (QAT) always use 1.
    #[config(default = 1)]
    pub shards: usize,
    /// Batch size of the evaluation after each epoch (does not change results).
    #[config(default = 1000)]
    pub test_batch_size: usize,
}

/// What happened in one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test-set loss and accuracy after the epoch.
    pub test: EvalResult,
    /// Wall-clock seconds of the training pass (evaluation excluded).
    pub train_seconds: f64,
    /// Training throughput, images per second.
    pub train_images_per_second: f64,
    /// Data-parallel shards each batch was cut into ([`data_parallel_shards`]).
    #[serde(default = "one_shard")]
    pub shards: usize,
}

/// Records written before data-parallel training trained whole batches.
fn one_shard() -> usize {
    1
}

/// Progress reported while training.
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent {
    /// An epoch begins with this many batches.
    EpochStart { epoch: usize, batches: usize },
    /// A batch finished with this loss; `images_per_second` is the epoch's running rate.
    Batch {
        epoch: usize,
        batch: usize,
        loss: f32,
        images_per_second: f64,
    },
    /// An epoch finished (training and evaluation).
    EpochEnd(EpochRecord),
}

/// A network the training loop can train: a Burn module computing log-probabilities of the
/// classes from normalized images. The tutorial's [`Net`] and the described
/// [`ArchNet`] are both one.
pub trait Classifier: burn::module::Module {
    /// Log-probabilities `[n, classes]` of normalized images `[n, c, h, w]`.
    fn log_probs(&self, images: Tensor<4>) -> Tensor<2>;

    /// Whether each image's training forward pass depends only on that image and the
    /// parameters, so a batch may be split into shards computed apart
    /// ([`Plan::trains_per_image`]).
    fn trains_per_image(&self) -> bool;
}

impl Classifier for Net {
    fn log_probs(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn trains_per_image(&self) -> bool {
        true
    }
}

impl Classifier for ArchNet {
    fn log_probs(&self, images: Tensor<4>) -> Tensor<2> {
        log_softmax(self.forward(images), 1)
    }

    fn trains_per_image(&self) -> bool {
        self.plan.trains_per_image()
    }
}

/// How the network computes log-probabilities while it is trained and evaluated: plain
/// float ([`FloatForward`], any [`Classifier`]) or with fake quantization
/// (`burnq_qat::QatForward`, the tutorial's [`Net`]).
pub trait ForwardMode<M = Net> {
    /// The training forward pass; may update statistics (e.g. activation ranges).
    fn train_forward(&mut self, model: &M, images: Tensor<4>) -> Tensor<2>;
    /// The evaluation forward pass; updates nothing.
    fn eval_forward(&self, model: &M, images: Tensor<4>) -> Tensor<2>;
    /// Called after each backward pass with its gradients and the step's learning rate and
    /// momentum, before the optimizer updates the network: a mode with trainable parameters of
    /// its own (QAT's learned step sizes) updates them here. The default does nothing.
    fn after_backward(&mut self, _grads: &burn::tensor::Gradients, _lr: f64, _momentum: f64) {}
    /// The loss a training step minimizes for the log-probabilities `log_probs` of the
    /// normalized `images` with labels `targets`: the mean negative log-likelihood by
    /// default; a mode may add terms (QAT's distillation from the float network).
    fn training_loss(
        &self,
        log_probs: Tensor<2>,
        targets: Tensor<1, Int>,
        _images: Tensor<4>,
    ) -> Tensor<1> {
        nll_loss(log_probs, targets)
    }
    /// The training forward pass as a plain function when it keeps no state (and its loss is
    /// the default [`ForwardMode::training_loss`]), so the training loop may run it on shards
    /// of a batch at once ([`TrainingConfig::shards`]); `None` (the default) keeps every
    /// batch whole and calls [`ForwardMode::train_forward`].
    fn stateless_forward(&self) -> Option<StatelessForward<M>> {
        None
    }
}

/// A training forward pass without state: log-probabilities of normalized images.
pub type StatelessForward<M> = fn(&M, Tensor<4>) -> Tensor<2>;

/// The plain float network.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloatForward;

impl<M: Classifier> ForwardMode<M> for FloatForward {
    fn train_forward(&mut self, model: &M, images: Tensor<4>) -> Tensor<2> {
        model.log_probs(images)
    }

    fn eval_forward(&self, model: &M, images: Tensor<4>) -> Tensor<2> {
        model.log_probs(images)
    }

    fn stateless_forward(&self) -> Option<StatelessForward<M>> {
        Some(|model: &M, images| model.log_probs(images))
    }
}

/// Trains a fresh network on `train_set`, evaluating on `test_set` after every epoch.
///
/// `on_event` receives progress; `on_epoch` is handed the model after each epoch (to save a
/// checkpoint) and may stop training with an error.
pub fn train(
    config: &TrainingConfig,
    train_set: Arc<ImageSet>,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&Net, &EpochRecord) -> Result<(), ModelError>,
) -> Result<(Net, Vec<EpochRecord>), ModelError> {
    let model = config
        .net
        .init_seeded(config.seed, &device.clone().autodiff());
    let mut mode = FloatForward;
    fit(
        config, model, &mut mode, train_set, test_set, device, on_event, on_epoch,
    )
}

/// Trains a fresh [`ArchNet`] for `plan` (drawn with the config's seed; `config.net` is not
/// used) on `train_set` with the tutorial's recipe, normalizing with the training set's
/// constants, evaluating on `test_set` after every epoch. `on_event` and `on_epoch` as in
/// [`train`].
pub fn train_arch(
    config: &TrainingConfig,
    plan: &Plan,
    train_set: Arc<ImageSet>,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&ArchNet, &EpochRecord) -> Result<(), ModelError>,
) -> Result<(ArchNet, Vec<EpochRecord>), ModelError> {
    let model = ArchNet::init_seeded(
        plan,
        train_set.kind.normalization(),
        config.seed,
        &device.clone().autodiff(),
    );
    let mut mode = FloatForward;
    fit(
        config, model, &mut mode, train_set, test_set, device, on_event, on_epoch,
    )
}

/// Trains `model` (its parameters on `device`'s autodiff twin) with `mode`'s forward pass:
/// SGD with the config's learning rate and momentum, the training set shuffled with the
/// config's seed, the test set evaluated with `mode` after each epoch.
#[allow(clippy::too_many_arguments)]
pub fn fit<M: Classifier>(
    config: &TrainingConfig,
    mut model: M,
    mode: &mut dyn ForwardMode<M>,
    train_set: Arc<ImageSet>,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&M, &EpochRecord) -> Result<(), ModelError>,
) -> Result<(M, Vec<EpochRecord>), ModelError> {
    if train_set.is_empty() || test_set.is_empty() {
        return Err(ModelError::InvalidInput(
            "training and test sets must hold at least one image".into(),
        ));
    }
    let batcher = ImageBatcher::new(train_set.kind.normalization());
    let ad_device = device.clone().autodiff();
    let mut optim = ModuleOptimizer::from(FusedSgd {
        momentum: config.momentum,
        dampening: 0.0,
    });
    let n_train = train_set.len();
    let loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size.max(1))
        .shuffle(config.seed)
        .set_device(ad_device.clone())
        .build(ImageDataset::new(train_set));
    let batches = n_train.div_ceil(config.batch_size.max(1));
    let shards = data_parallel_shards(config, &model, mode);
    let sharded = mode.stateless_forward().filter(|_| shards > 1);
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        on_event(TrainEvent::EpochStart { epoch, batches });
        let lr = config.lr * config.lr_decay.powi(epoch as i32 - 1);
        let start = Instant::now();
        let (mut loss_sum, mut seen, mut n_batches) = (0.0f64, 0usize, 0usize);
        for (batch_index, batch) in loader.iter().enumerate() {
            let batch = batch.map_err(|e| ModelError::Data(e.to_string()))?;
            let n = batch.targets.dims()[0];
            let (loss_value, grads) = match sharded {
                Some(forward) => sharded_gradients(&model, forward, batch, shards),
                None => {
                    let log_probs = mode.train_forward(&model, batch.images.clone());
                    let loss = mode.training_loss(log_probs, batch.targets, batch.images);
                    let loss_value = loss.clone().into_scalar::<f32>();
                    let grads = loss.backward();
                    mode.after_backward(&grads, lr, config.momentum);
                    (loss_value, GradientsParams::from_grads(grads, &model))
                }
            };
            if !loss_value.is_finite() {
                return Err(ModelError::Diverged {
                    epoch,
                    batch: batch_index,
                    loss: loss_value,
                });
            }
            model = optim.step(lr, model, grads);
            loss_sum += f64::from(loss_value);
            seen += n;
            n_batches += 1;
            on_event(TrainEvent::Batch {
                epoch,
                batch: batch_index,
                loss: loss_value,
                images_per_second: seen as f64 / start.elapsed().as_secs_f64(),
            });
        }
        let train_seconds = start.elapsed().as_secs_f64();
        let valid = model.valid();
        let (test, _) = evaluate_with(
            &|x| mode.eval_forward(&valid, x),
            test_set,
            &batcher,
            config.test_batch_size,
            device,
        );
        let record = EpochRecord {
            epoch,
            train_loss: loss_sum / n_batches.max(1) as f64,
            test,
            train_seconds,
            train_images_per_second: seen as f64 / train_seconds,
            shards,
        };
        on_epoch(&valid, &record)?;
        on_event(TrainEvent::EpochEnd(record));
        history.push(record);
    }
    Ok((model.valid(), history))
}

/// The shards [`fit`] cuts each batch into: `config.shards` where `mode`'s training forward
/// pass keeps no state ([`ForwardMode::stateless_forward`]) and `model` trains per image
/// ([`Classifier::trains_per_image`]; no batch norm, no dropout), else 1.
pub fn data_parallel_shards<M: Classifier>(
    config: &TrainingConfig,
    model: &M,
    mode: &dyn ForwardMode<M>,
) -> usize {
    let shardable = mode.stateless_forward().is_some() && model.trains_per_image();
    if shardable { config.shards.max(1) } else { 1 }
}

/// Data-parallel gradients of one batch of `n` images: the batch is cut into `shards`
/// contiguous slices of `n_k` images; slice `k` runs `forward` and the backward pass on
/// thread `k` with its own copy of the parameters ([`Module::fork`]: fresh autodiff leaves,
/// the same parameter ids, so the shards' graphs never merge), with loss
/// `L_k = (n_k / n) · NLL_mean(slice k)`; then `Σ_k L_k` is the batch's mean loss and
/// `Σ_k ∇L_k` its gradient, summed in shard order. The result depends on `shards`, never
/// on thread scheduling. Returns the loss value `Σ_k L_k` and the summed gradients.
fn sharded_gradients<M: Classifier>(
    model: &M,
    forward: StatelessForward<M>,
    batch: ImageBatch,
    shards: usize,
) -> (f32, GradientsParams) {
    let n = batch.targets.dims()[0];
    let device = batch.images.device();
    let shards = shards.clamp(1, n);
    let bounds: Vec<(usize, usize)> = (0..shards)
        .map(|k| (k * n / shards, (k + 1) * n / shards))
        .collect();
    let work: Vec<_> = bounds
        .iter()
        .map(|&(start, end)| {
            let replica = model.clone().fork(&device);
            let images = batch.images.clone().slice(start..end);
            let targets = batch.targets.clone().slice(start..end);
            move || {
                let loss = nll_loss(forward(&replica, images), targets)
                    .mul_scalar((end - start) as f64 / n as f64);
                let value = loss.clone().into_scalar::<f32>();
                (
                    value,
                    GradientsParams::from_grads(loss.backward(), &replica),
                )
            }
        })
        .collect();
    // On rayon's pool, where Burn's kernels run too: no thread beyond the pool's, and a shard
    // waiting on a kernel helps with the other's work. `collect` keeps the shard order.
    let results: Vec<(f32, GradientsParams)> = work.into_par_iter().map(|job| job()).collect();
    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut loss = 0.0f32;
    for (value, grads) in results {
        loss += value;
        accumulator.accumulate(model, grads);
    }
    (loss, accumulator.grads())
}

#[cfg(test)]
mod tests {
    use burnq_testkit::max_abs_diff;

    use super::*;

    /// Every weight and bias of `net`, in one array.
    fn flat(net: &Net) -> Vec<f32> {
        net.valid()
            .export_weights()
            .into_iter()
            .flat_map(|l| l.weight.into_iter().chain(l.bias))
            .collect()
    }

    /// The data-parallel gradient is the whole batch's gradient, up to the rounding of the
    /// sums' order: one plain SGD step (lr 1) with either moves every parameter to within
    /// 2e-6 of the other, while the step itself moves them by far more.
    #[test]
    fn sharded_gradients_equal_the_whole_batch_gradients() {
        let device = Device::flex().autodiff();
        let model = NetConfig::new().init_seeded(7, &device);
        let n = 24;
        let pixels: Vec<f32> = (0..n * 784)
            .map(|i| (i * 7919 % 1000) as f32 / 400.0 - 0.4)
            .collect();
        let targets: Vec<i64> = (0..n as i64).map(|i| i * 3 % 10).collect();
        let batch = || ImageBatch {
            images: Tensor::from_data(TensorData::new(pixels.clone(), [n, 1, 28, 28]), &device),
            targets: Tensor::from_data(TensorData::new(targets.clone(), [n]), &device),
        };
        let step = |grads| {
            flat(
                &burn::optim::SgdConfig::new()
                    .init()
                    .step(1.0, model.clone(), grads),
            )
        };
        let whole_batch = batch();
        let loss = nll_loss(model.log_probs(whole_batch.images), whole_batch.targets);
        let whole_loss = loss.clone().into_scalar::<f32>();
        let expected = step(GradientsParams::from_grads(loss.backward(), &model));
        let before = flat(&model);
        let moved = max_abs_diff(&expected, &before);
        assert!(
            moved > 1e-3,
            "the whole-batch step moved parameters by only {moved}"
        );
        for shards in [2, 3, 5, n] {
            let (sharded_loss, grads) =
                sharded_gradients(&model, |m: &Net, x| m.log_probs(x), batch(), shards);
            assert!(
                (sharded_loss - whole_loss).abs() <= 1e-5 * whole_loss.abs(),
                "{shards} shards: loss {sharded_loss} vs {whole_loss}"
            );
            let got = step(grads);
            let worst = max_abs_diff(&got, &expected);
            assert!(
                worst <= 2e-6,
                "{shards} shards: a parameter differs by {worst}"
            );
        }
    }
}
