//! Runs the float model over the first `samples` images of a split and observes its taps.

use burn::prelude::*;
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::Net;
use burnq_model::data::ImageBatcher;
use burnq_model::export::to_vec as values;

use crate::CalibError;
use crate::stats::{Calibration, CalibrationMethod, RangeObserver, TAP_NAMES};

/// How to calibrate.
#[derive(Debug, Clone, Copy)]
pub struct CalibrationSettings {
    /// Number of images (the first ones of the split). Default 1000, as in the tutorial.
    pub samples: usize,
    /// Images per batch. Default 64, the tutorial's loader batch size.
    pub batch_size: usize,
    /// The estimate recorded as the one to use.
    pub method: CalibrationMethod,
    /// Activation bit width the MSE ranges are searched for (2..=8).
    pub act_bits: u8,
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            samples: 1000,
            batch_size: 64,
            method: CalibrationMethod::MeanMinmax,
            act_bits: 8,
        }
    }
}

/// Observes `model`'s taps over the first `settings.samples` images of `set`.
pub fn calibrate(
    model: &Net,
    set: &ImageSet,
    settings: CalibrationSettings,
    device: &Device,
) -> Result<Calibration, CalibError> {
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
    let mut observers: [RangeObserver; 5] = Default::default();
    for start in (0..settings.samples).step_by(settings.batch_size) {
        let end = (start + settings.batch_size).min(settings.samples);
        let images = batcher.images(
            &set.pixels[start * IMAGE_PIXELS..end * IMAGE_PIXELS],
            device,
        );
        let taps = model.forward_taps(images);
        let batch = [
            values(taps.conv1_in),
            values(taps.conv2_in),
            values(taps.fc1_in),
            values(taps.fc2_in),
            values(taps.logits),
        ];
        for ((observer, values), tap) in observers.iter_mut().zip(batch).zip(TAP_NAMES) {
            if values.iter().any(|v| !v.is_finite()) {
                return Err(CalibError::NonFinite { tap });
            }
            observer.observe(&values);
        }
    }
    let mut stats = Vec::with_capacity(TAP_NAMES.len());
    for (name, observer) in TAP_NAMES.iter().zip(&observers) {
        let s = observer
            .stats(settings.act_bits)
            .map_err(|source| CalibError::Range { tap: name, source })?
            .expect("at least one batch observed");
        stats.push((name.to_string(), s));
    }
    Ok(Calibration {
        dataset: set.kind.dir_name().to_owned(),
        split: set.split.name().to_owned(),
        samples: settings.samples,
        batch_size: settings.batch_size,
        act_bits: settings.act_bits,
        method: settings.method,
        taps: stats,
    })
}
