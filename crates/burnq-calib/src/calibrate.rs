//! Runs the float model over the first `samples` images of a split and observes its taps.

use std::collections::BTreeMap;

use burn::prelude::*;
use burnq_arch::Plan;
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::data::ImageBatcher;
use burnq_model::export::to_vec as values;
use burnq_model::{ArchNet, Net};
use burnq_quant::{QuantScheme, tutorial_layer_names};

use crate::CalibError;
use crate::stats::{Calibration, CalibrationMethod, RangeObserver, RangeStats, TAP_NAMES};

/// How to calibrate.
#[derive(Debug, Clone)]
pub struct CalibrationSettings {
    /// Number of images (the first ones of the split). Default 1000, as in the tutorial.
    pub samples: usize,
    /// Images per batch. Default 64, the tutorial's loader batch size.
    pub batch_size: usize,
    /// The estimate recorded as the one to use.
    pub method: CalibrationMethod,
    /// Activation bit width the MSE ranges are searched for (2..=8).
    pub act_bits: u8,
    /// Taps whose MSE range is searched at their own width instead of `act_bits` (a layer
    /// with its own activation width, `--bits-per-layer`), by tap name.
    pub point_bits: BTreeMap<String, u8>,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            samples: 1000,
            batch_size: 64,
            method: CalibrationMethod::MeanMinmax,
            act_bits: 8,
            point_bits: BTreeMap::new(),
        }
    }
}

impl CalibrationSettings {
    /// The same settings searching each MSE range at the width of the codes that tap is
    /// quantized to under `scheme`: the model-wide `act_bits` of `scheme`, and for every tap
    /// whose width differs, its own (`(tap, width)` pairs). The MSE-optimal clipping range
    /// depends strongly on the width (at 2 bits it clips far inside the min/max range), so a
    /// range searched at another width starts a layer far from its best grid.
    fn with_widths<'a>(
        mut self,
        scheme: &QuantScheme,
        taps: impl IntoIterator<Item = (&'a str, u8)>,
    ) -> Self {
        self.act_bits = scheme.defaults.act_bits;
        self.point_bits = taps
            .into_iter()
            .filter(|&(_, bits)| bits != self.act_bits)
            .map(|(tap, bits)| (tap.to_owned(), bits))
            .collect();
        self
    }

    /// [`CalibrationSettings::with_widths`] for the tutorial network: layer `i`'s activation
    /// width (conv1, conv2, fc1, fc2) is that of the tap after it ([`TAP_NAMES`]`[i + 1]`,
    /// the next layer's input; the logits for fc2).
    pub fn tutorial_widths(self, scheme: &QuantScheme) -> Self {
        let taps = TAP_NAMES[1..]
            .iter()
            .zip(tutorial_layer_names())
            .map(|(&tap, layer)| (tap, scheme.layer(layer).act_bits));
        self.with_widths(scheme, taps)
    }

    /// [`CalibrationSettings::with_widths`] for a described network: each quantization point
    /// of `plan` at its step's activation width (a residual add's at the model-wide one, as
    /// the converter quantizes it).
    pub fn plan_widths(self, plan: &Plan, scheme: &QuantScheme) -> Self {
        let points = plan.quantization_points();
        let taps: Vec<(&str, u8)> = points
            .iter()
            .map(|step| (step.name.as_str(), scheme.layer(&step.name).act_bits))
            .collect();
        self.with_widths(scheme, taps)
    }

    /// The width the MSE range of `tap` is searched at.
    pub fn bits_of(&self, tap: &str) -> u8 {
        self.point_bits.get(tap).copied().unwrap_or(self.act_bits)
    }
}

/// Observes `model`'s taps over the first `settings.samples` images of `set`: the inputs of
/// its four layers and the logits ([`TAP_NAMES`]).
pub fn calibrate(
    model: &Net,
    set: &ImageSet,
    settings: CalibrationSettings,
    device: &Device,
) -> Result<Calibration, CalibError> {
    let taps = observe(set, &settings, device, |images| {
        let taps = model.forward_taps(images);
        let batch = [
            values(taps.conv1_in),
            values(taps.conv2_in),
            values(taps.fc1_in),
            values(taps.fc2_in),
            values(taps.logits),
        ];
        TAP_NAMES.iter().map(|n| n.to_string()).zip(batch).collect()
    })?;
    Ok(calibration(set, settings, "tutorial", taps))
}

/// Observes a described network's quantization points ([`burnq_arch::Plan::quantization_points`]:
/// each convolution's, linear layer's and residual add's output after its batch norm and
/// activation) over the first `settings.samples` images of `set`; the taps are named by step
/// and the calibration by the architecture's `name`.
pub fn calibrate_arch(
    model: &ArchNet,
    name: &str,
    set: &ImageSet,
    settings: CalibrationSettings,
    device: &Device,
) -> Result<Calibration, CalibError> {
    let taps = observe(set, &settings, device, |images| {
        let taps = model.forward_taps(images);
        taps.points
            .into_iter()
            .map(|(name, value)| (name, value.to_vec()))
            .collect()
    })?;
    Ok(calibration(set, settings, name, taps))
}

fn calibration(
    set: &ImageSet,
    settings: CalibrationSettings,
    architecture: &str,
    taps: Vec<(String, RangeStats)>,
) -> Calibration {
    Calibration {
        architecture: architecture.to_owned(),
        dataset: set.kind.dir_name().to_owned(),
        split: set.split.name().to_owned(),
        samples: settings.samples,
        batch_size: settings.batch_size,
        act_bits: settings.act_bits,
        point_bits: settings.point_bits,
        method: settings.method,
        taps,
    }
}

/// Runs `taps_of` on every batch of the first `settings.samples` normalized images of `set`
/// and returns each named tap's statistics, in the order `taps_of` lists them.
fn observe(
    set: &ImageSet,
    settings: &CalibrationSettings,
    device: &Device,
    mut taps_of: impl FnMut(Tensor<4>) -> Vec<(String, Vec<f32>)>,
) -> Result<Vec<(String, RangeStats)>, CalibError> {
    if settings.samples == 0 {
        return Err(CalibError::Empty);
    }
    if settings.batch_size == 0 {
        return Err(CalibError::ZeroBatch);
    }
    if set.len() < settings.samples {
        return Err(CalibError::NotEnoughSamples {
            requested: settings.samples,
            available: set.len(),
            split: set.split.name().to_owned(),
        });
    }
    let batcher = ImageBatcher::new(set.kind.normalization());
    let mut observers: Vec<(String, RangeObserver)> = Vec::new();
    for start in (0..settings.samples).step_by(settings.batch_size) {
        let end = (start + settings.batch_size).min(settings.samples);
        let images = batcher.images(
            &set.pixels[start * IMAGE_PIXELS..end * IMAGE_PIXELS],
            device,
        );
        for (i, (tap, values)) in taps_of(images).into_iter().enumerate() {
            if values.iter().any(|v| !v.is_finite()) {
                return Err(CalibError::NonFinite { tap });
            }
            if observers.len() == i {
                observers.push((tap, RangeObserver::default()));
            }
            observers[i].1.observe(&values);
        }
    }
    observers
        .into_iter()
        .map(|(tap, observer)| {
            match observer.stats(settings.bits_of(&tap)) {
                Ok(Some(s)) => Ok((tap, s)),
                // An observer exists only once a batch reached its tap; none observed means no
                // sample was calibrated on.
                Ok(None) => Err(CalibError::Empty),
                Err(source) => Err(CalibError::Range {
                    tap,
                    source: Box::new(source),
                }),
            }
        })
        .collect()
}
