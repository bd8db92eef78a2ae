//! The tutorial's training recipe: SGD (lr 0.01, momentum 0.5, dampening 0 as in
//! PyTorch), batch 64, 10 epochs, seed 1, NLL loss on log-softmax, shuffled training set.
//!
//! Determinism: the device is seeded before the weights are drawn and the data loader
//! shuffles with the same seed in the calling thread (no worker threads), so the same
//! seed on the same CPU backend gives bit-identical weights (tested).

use std::sync::Arc;
use std::time::Instant;

use burn::data::dataloader::DataLoaderBuilder;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burnq_arch::Plan;
use burnq_data::ImageSet;
use serde::{Deserialize, Serialize};

use crate::data::{ImageBatcher, ImageDataset};
use crate::eval::{EvalResult, evaluate_with, nll_loss};
use crate::{ArchNet, ModelError, Net, NetConfig};

/// Hyper-parameters; defaults reproduce the tutorial.
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
}

impl Classifier for Net {
    fn log_probs(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

impl Classifier for ArchNet {
    fn log_probs(&self, images: Tensor<4>) -> Tensor<2> {
        log_softmax(self.forward(images), 1)
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
}

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
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig {
            momentum: config.momentum,
            dampening: 0.0,
            nesterov: false,
        }))
        .init();
    let n_train = train_set.len();
    let loader = DataLoaderBuilder::new(batcher.clone())
        .batch_size(config.batch_size.max(1))
        .shuffle(config.seed)
        .set_device(ad_device.clone())
        .build(ImageDataset::new(train_set));
    let batches = n_train.div_ceil(config.batch_size.max(1));
    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        on_event(TrainEvent::EpochStart { epoch, batches });
        let lr = config.lr * config.lr_decay.powi(epoch as i32 - 1);
        let start = Instant::now();
        let (mut loss_sum, mut seen, mut n_batches) = (0.0f64, 0usize, 0usize);
        for (batch_index, batch) in loader.iter().enumerate() {
            let batch = batch.map_err(|e| ModelError::Data(e.to_string()))?;
            let n = batch.targets.dims()[0];
            let loss = nll_loss(mode.train_forward(&model, batch.images), batch.targets);
            let loss_value = loss.clone().into_scalar::<f32>();
            if !loss_value.is_finite() {
                return Err(ModelError::Diverged {
                    epoch,
                    batch: batch_index,
                    loss: loss_value,
                });
            }
            let grads = loss.backward();
            mode.after_backward(&grads, lr, config.momentum);
            let grads = GradientsParams::from_grads(grads, &model);
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
        };
        on_epoch(&valid, &record)?;
        on_event(TrainEvent::EpochEnd(record));
        history.push(record);
    }
    Ok((model.valid(), history))
}
