//! The library entry points of quantization-aware training: [`QatConfig`] (with the defaults
//! the `qat` and `sweep` commands share), [`run_qat`] (the tutorial network) and
//! [`run_arch_qat`] (a described network): start the activation ranges from a calibration,
//! fine-tune with the fake-quantized forward pass, convert through the same converter as
//! post-training quantization, and run the integer model and the fake-quantized network over
//! the test set so their predictions can be compared.

use std::sync::Arc;

use burn::prelude::*;
use burnq_arch::Architecture;
use burnq_calib::{CalibrationMethod, CalibrationSettings, calibrate, calibrate_arch};
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::eval::EvalResult;
use burnq_model::training::{EpochRecord, TrainEvent, TrainingConfig, fit};
use burnq_model::{ArchNet, Device, ModelError, Net, NetConfig};
use burnq_quant::graph::layer_names;
use burnq_quant::{
    ConvertOptions, Engine, GraphEngine, LayerBits, QuantGraph, QuantModel, QuantScheme, convert,
    convert_graph, convert_graph_with_grids, convert_with_grids, tutorial_layer_names,
};

use crate::lsq::StepInit;
use crate::{ArchQat, Distillation, QatError, QatForward, QatSettings, Quantizer, float_network};

/// Images per batch when the fake-quantized network is evaluated (does not change results).
const EVAL_BATCH: usize = 1000;

/// How to run quantization-aware training. [`Default`] is burnq's recipe: w4a4 per tensor,
/// three epochs of SGD from lr 0.002 halved each epoch, momentum 0.5, seed 1, ranges started
/// from the tutorial's mean of batch min/max and tracked with EMA decay 0.99.
#[derive(Debug, Clone, PartialEq)]
pub struct QatConfig {
    /// How the quantizers' grids are chosen: min/max and EMA ranges, or learned step sizes.
    pub quantizer: Quantizer,
    /// Bits of the weight codes (2..=8).
    pub weight_bits: u8,
    /// Bits of the activation codes (2..=8).
    pub act_bits: u8,
    /// Each convolution and linear layer's own widths, in execution order (the network's
    /// [`burnq_quant::graph::layer_names`]; for the tutorial network conv1, conv2, fc1, fc2),
    /// instead of `weight_bits` and `act_bits` for all.
    pub bits_per_layer: Option<Vec<LayerBits>>,
    /// One weight scale and zero point per output channel.
    pub per_channel: bool,
    /// Where learned weight step sizes start (LSQ, LSQ+).
    pub step_init: StepInit,
    /// Fine-tuning epochs.
    pub epochs: usize,
    /// SGD learning rate of the first epoch.
    pub lr: f64,
    /// Learning-rate factor per epoch.
    pub lr_decay: f64,
    /// SGD momentum (dampening 0).
    pub momentum: f64,
    /// Seed of the shuffling.
    pub seed: u64,
    /// EMA decay of the activation ranges (1 keeps them where the calibration put them).
    pub ema_decay: f32,
    /// Training steps before activations are quantized.
    pub act_delay: usize,
    /// The range estimate the activation ranges start from.
    pub range_init: CalibrationMethod,
    /// Fine-tune on the first N training images only (the calibration still sees its full
    /// 1000 images).
    pub train_limit: Option<usize>,
    /// Weight `α ∈ [0, 1]` of the distillation from the float model in the training loss
    /// ([`Distillation`]); 0 trains on the labels alone.
    pub distill: f64,
}

impl QatConfig {
    /// The defaults, as a constant (command-line defaults read it).
    pub const DEFAULT: Self = Self {
        quantizer: Quantizer::Minmax,
        weight_bits: 4,
        act_bits: 4,
        bits_per_layer: None,
        per_channel: false,
        step_init: StepInit::Paper,
        epochs: 3,
        lr: 0.002,
        lr_decay: 0.5,
        momentum: 0.5,
        seed: 1,
        ema_decay: 0.99,
        act_delay: 0,
        range_init: CalibrationMethod::MeanMinmax,
        train_limit: None,
        distill: 0.0,
    };

    /// The model-wide options: the widths of every layer without its own, and the granularity.
    pub fn options(&self) -> ConvertOptions {
        ConvertOptions {
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            per_channel: self.per_channel,
        }
    }

    /// The conversion this configuration trains for, on a network whose convolution and
    /// linear layers are `names` in execution order: [`QatConfig::options`] with
    /// `bits_per_layer` by name. Errors when `bits_per_layer` does not give one entry per layer.
    pub fn scheme(&self, names: &[&str]) -> Result<QuantScheme, QatError> {
        let Some(bits) = &self.bits_per_layer else {
            return Ok(self.options().into());
        };
        if bits.len() != names.len() {
            return Err(QatError::Unsupported(format!(
                "{} per-layer widths for {} layers ({})",
                bits.len(),
                names.len(),
                names.join(", ")
            )));
        }
        Ok(QuantScheme {
            defaults: self.options(),
            layers: names
                .iter()
                .map(|n| n.to_string())
                .zip(bits.clone())
                .collect(),
        })
    }

    /// The tutorial network's forward-pass settings for a data set normalized by
    /// `normalization`; errors as [`QatConfig::scheme`].
    pub fn settings(
        &self,
        normalization: burnq_quant::Normalization,
    ) -> Result<QatSettings, QatError> {
        let names = tutorial_layer_names();
        let scheme = self.scheme(&names)?;
        Ok(QatSettings {
            quantizer: self.quantizer,
            weight_bits: self.weight_bits,
            act_bits: self.act_bits,
            bits_per_layer: self
                .bits_per_layer
                .is_some()
                .then(|| names.map(|n| LayerBits::of(scheme.layer(n)))),
            per_channel: self.per_channel,
            step_init: self.step_init,
            ema_decay: self.ema_decay,
            act_delay: self.act_delay,
            normalization,
        })
    }

    /// The fine-tuning's SGD schedule.
    pub fn training(&self) -> TrainingConfig {
        TrainingConfig::new(NetConfig::new())
            .with_epochs(self.epochs)
            .with_lr(self.lr)
            .with_lr_decay(self.lr_decay)
            .with_momentum(self.momentum)
            .with_seed(self.seed)
    }
}

impl Default for QatConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What a QAT run produced: of the tutorial network ([`run_qat`]), or of a described one
/// ([`ArchQatOutcome`]).
#[derive(Debug)]
pub struct QatOutcome<Model = Net, Forward = QatForward, Integer = QuantModel> {
    /// The fine-tuned float model.
    pub model: Model,
    /// One record per epoch (the fake-quantized network's test accuracy).
    pub history: Vec<EpochRecord>,
    /// The fake-quantized forward pass with its final ranges (and learned grids).
    pub forward: Forward,
    /// The exported integer model.
    pub quant: Integer,
    /// Loss and accuracy of the fake-quantized network on the test set (ranges frozen).
    pub fake_quant: EvalResult,
    /// Its prediction for each test image.
    pub fake_quant_predictions: Vec<u8>,
    /// The integer model's prediction for each test image.
    pub integer_predictions: Vec<u8>,
}

/// Runs QAT as `config` says on `float`: calibrates the starting ranges on `train_set`,
/// fine-tunes (reporting through `on_event`, and `on_epoch` after each epoch, e.g. to save a
/// checkpoint), converts, and evaluates both the fake-quantized and the integer network on
/// `test_set`.
pub fn run_qat(
    config: &QatConfig,
    float: &Net,
    train_set: ImageSet,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&Net, &EpochRecord) -> Result<(), ModelError>,
) -> Result<QatOutcome, QatError> {
    run_qat_from(
        config, float, float, train_set, test_set, device, on_event, on_epoch,
    )
}

/// [`run_qat`] fine-tuning `start` instead of the float model `float`: progressive precision
/// (a model QAT already trained on a finer grid, e.g. w4a4, started again at w2a2). Everything
/// a run initialises comes from `start`: its weights, the activation ranges calibrated on it
/// (each MSE range at its layer's own width), and the weight step sizes learned from its
/// weights at the first step; `float` stays the teacher of `config.distill`.
#[allow(clippy::too_many_arguments)]
pub fn run_qat_from(
    config: &QatConfig,
    float: &Net,
    start: &Net,
    mut train_set: ImageSet,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&Net, &EpochRecord) -> Result<(), ModelError>,
) -> Result<QatOutcome, QatError> {
    if !(0.0..=1.0).contains(&config.distill) {
        return Err(QatError::Unsupported(format!(
            "distillation weight {} is outside [0, 1]",
            config.distill
        )));
    }
    let scheme = config.scheme(&tutorial_layer_names())?;
    let calibration = calibrate(
        start,
        &train_set,
        CalibrationSettings {
            method: config.range_init,
            ..Default::default()
        }
        .tutorial_widths(&scheme),
        device,
    )
    .map_err(QatError::Calibration)?;
    if let Some(n) = config.train_limit {
        train_set.truncate(n);
    }
    let normalization = train_set.kind.normalization();
    let mut forward = QatForward::with_ranges(
        config.settings(normalization)?,
        &calibration.ranges(config.range_init),
    );
    if config.distill > 0.0 {
        forward = forward.with_distillation(Distillation::new(float, config.distill, device));
    }
    let start = start.fresh_copy(&NetConfig::new(), &device.clone().autodiff());
    let (model, history) = fit(
        &config.training(),
        start,
        &mut forward,
        Arc::new(train_set),
        test_set,
        device,
        on_event,
        on_epoch,
    )?;
    let network = float_network(&model)?;
    let quant = match forward.learned_grids(&model)? {
        Some(grids) => convert_with_grids(&network, grids, normalization, scheme),
        None => convert(&network, &forward.ranges(), normalization, scheme),
    }
    .map_err(QatError::Quant)?;
    let (fake_quant, fake_quant_predictions) =
        forward.evaluate(&model, test_set, EVAL_BATCH, device);
    let integer_predictions = Engine::new(&quant)
        .and_then(|engine| {
            engine.forward_parallel(&test_set.pixels, test_set.pixels.len() / IMAGE_PIXELS, 0)
        })
        .map_err(QatError::Quant)?
        .predictions;
    Ok(QatOutcome {
        model,
        history,
        forward,
        quant,
        fake_quant,
        fake_quant_predictions,
        integer_predictions,
    })
}

/// What [`run_arch_qat`] produced: the integer network is a [`QuantGraph`].
pub type ArchQatOutcome = QatOutcome<ArchNet, ArchQat, QuantGraph>;

/// Fine-tunes `float` (a described network) with [`ArchQat`] as `config` says (quantizer,
/// widths, each layer's own with `bits_per_layer`, granularity, epochs, learning rate and
/// decay, momentum, seed, EMA decay, range initialisation; distillation is refused), then
/// converts it through [`convert_graph`] (learned grids: [`convert_graph_with_grids`]) and runs
/// the fake-quantized network and the integer graph over `test_set`.
#[allow(clippy::too_many_arguments)]
pub fn run_arch_qat(
    config: &QatConfig,
    arch: &Architecture,
    float: &ArchNet,
    mut train_set: ImageSet,
    test_set: &ImageSet,
    device: &Device,
    on_event: &mut dyn FnMut(TrainEvent),
    on_epoch: &mut dyn FnMut(&ArchNet, &EpochRecord) -> Result<(), ModelError>,
) -> Result<ArchQatOutcome, QatError> {
    if config.distill != 0.0 {
        return Err(QatError::Unsupported(
            "distillation from the float model runs on the tutorial network only; leave out \
             --distill"
                .into(),
        ));
    }
    let plan = arch.plan().map_err(QatError::Arch)?;
    let scheme = config.scheme(&layer_names(&plan))?;
    let calibration = calibrate_arch(
        float,
        &arch.name,
        &train_set,
        CalibrationSettings {
            method: config.range_init,
            ..Default::default()
        }
        .plan_widths(&plan, &scheme),
        device,
    )
    .map_err(QatError::Calibration)?;
    let initial = calibration
        .point_ranges(&plan, config.range_init)
        .map_err(QatError::Calibration)?;
    if let Some(n) = config.train_limit {
        train_set.truncate(n);
    }
    let norm = train_set.kind.normalization();
    let mut forward = ArchQat::new(scheme.clone(), norm, config.ema_decay, &initial);
    if config.quantizer.learns_steps() {
        forward = forward.with_learned_steps(config.quantizer, config.step_init, &plan);
    }
    let ad = device.clone().autodiff();
    let start = ArchNet::init(&plan, norm, &ad).load_record(float.valid().into_record());
    let (model, history) = fit(
        &config.training(),
        start,
        &mut forward,
        Arc::new(train_set),
        test_set,
        device,
        on_event,
        on_epoch,
    )?;
    if let Some(failure) = forward.failure() {
        return Err(failure);
    }
    let params = model.float_params().map_err(QatError::Arch)?;
    let graph = match forward.learned_grids(&plan)? {
        Some(grids) => convert_graph_with_grids(arch, &params, &grids, norm, scheme),
        None => convert_graph(arch, &params, &forward.point_ranges(), norm, scheme),
    }
    .map_err(QatError::Quant)?;
    let (fake_quant, fake_quant_predictions) = forward.evaluate(&model, test_set, device);
    let integer_predictions = GraphEngine::new(&graph)
        .and_then(|e| e.forward_parallel(&test_set.pixels, test_set.pixels.len() / IMAGE_PIXELS, 0))
        .map_err(QatError::Quant)?
        .predictions;
    Ok(QatOutcome {
        model,
        history,
        forward,
        quant: graph,
        fake_quant,
        fake_quant_predictions,
        integer_predictions,
    })
}
