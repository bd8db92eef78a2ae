//! Runs the float model over the first `samples` images of a split and observes its taps.

use burn::prelude::*;
use burnq_data::{IMAGE_PIXELS, ImageSet};
use burnq_model::Net;
use burnq_model::data::ImageBatcher;

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
}

impl Default for CalibrationSettings {
    fn default() -> Self {
        Self {
            samples: 1000,
            batch_size: 64,
            method: CalibrationMethod::Minmax,
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
        let ranges = [
            min_max(taps.conv1_in),
            min_max(taps.conv2_in),
            min_max(taps.fc1_in),
            min_max(taps.fc2_in),
            min_max(taps.logits),
        ];
        for ((observer, (lo, hi)), tap) in observers.iter_mut().zip(ranges).zip(TAP_NAMES) {
            if !lo.is_finite() || !hi.is_finite() {
                return Err(CalibError::NonFinite { tap });
            }
            observer.observe(lo, hi);
        }
    }
    let taps = TAP_NAMES
        .iter()
        .zip(&observers)
        .map(|(name, o)| {
            (
                name.to_string(),
                o.stats().expect("at least one batch observed"),
            )
        })
        .collect();
    Ok(Calibration {
        dataset: set.kind.dir_name().to_owned(),
        split: set.split.name().to_owned(),
        samples: settings.samples,
        batch_size: settings.batch_size,
        method: settings.method,
        taps,
    })
}

/// Minimum and maximum of a tensor. A NaN anywhere makes the result non-finite or NaN,
/// because the sum is checked as well (min/max kernels may skip NaN).
fn min_max<const D: usize>(t: Tensor<D>) -> (f32, f32) {
    let sum = t.clone().sum().into_scalar::<f32>();
    let lo = t.clone().min().into_scalar::<f32>();
    let hi = t.max().into_scalar::<f32>();
    if sum.is_finite() {
        (lo, hi)
    } else {
        (f32::NAN, f32::NAN)
    }
}
