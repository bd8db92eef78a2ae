//! Range statistics per observed tensor, and the calibration record that holds them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CalibError;

/// Names of the observed tensors, in forward order.
pub const TAP_NAMES: [&str; 5] = ["conv1_in", "conv2_in", "fc1_in", "fc2_in", "logits"];

/// Which range estimate feeds quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrationMethod {
    /// Global minimum and maximum over all samples.
    Minmax,
    /// Average over batches of each batch's minimum and maximum (the tutorial's).
    MeanMinmax,
}

impl CalibrationMethod {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CalibrationMethod::Minmax => "minmax",
            CalibrationMethod::MeanMinmax => "mean-minmax",
        }
    }
}

/// Range statistics of one tensor over the calibration set (float units of the tensor).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RangeStats {
    /// Smallest value seen.
    pub min: f32,
    /// Largest value seen.
    pub max: f32,
    /// Mean over batches of the batch minimum.
    pub mean_min: f32,
    /// Mean over batches of the batch maximum.
    pub mean_max: f32,
    /// Number of batches observed.
    pub batches: usize,
}

/// Accumulates [`RangeStats`] batch by batch.
#[derive(Debug, Clone, Default)]
pub struct RangeObserver {
    min: f32,
    max: f32,
    sum_min: f64,
    sum_max: f64,
    batches: usize,
}

impl RangeObserver {
    /// Records one batch's minimum and maximum.
    pub fn observe(&mut self, batch_min: f32, batch_max: f32) {
        if self.batches == 0 {
            (self.min, self.max) = (batch_min, batch_max);
        } else {
            self.min = self.min.min(batch_min);
            self.max = self.max.max(batch_max);
        }
        self.sum_min += f64::from(batch_min);
        self.sum_max += f64::from(batch_max);
        self.batches += 1;
    }

    /// The statistics so far (`None` before the first batch).
    pub fn stats(&self) -> Option<RangeStats> {
        (self.batches > 0).then(|| RangeStats {
            min: self.min,
            max: self.max,
            mean_min: (self.sum_min / self.batches as f64) as f32,
            mean_max: (self.sum_max / self.batches as f64) as f32,
            batches: self.batches,
        })
    }
}

impl RangeStats {
    /// The `(min, max)` range under `method`.
    pub fn range(&self, method: CalibrationMethod) -> (f32, f32) {
        match method {
            CalibrationMethod::Minmax => (self.min, self.max),
            CalibrationMethod::MeanMinmax => (self.mean_min, self.mean_max),
        }
    }
}

/// The calibration of one float model (`calibration.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Data set name (`mnist`, `fashion-mnist`).
    pub dataset: String,
    /// Split the samples came from (`train` or `test`).
    pub split: String,
    /// Number of images observed (the first `samples` of the split).
    pub samples: usize,
    /// Images per batch (the mean-of-batch estimate depends on it).
    pub batch_size: usize,
    /// The method chosen to feed quantization.
    pub method: CalibrationMethod,
    /// Statistics per observed tensor, in the order of [`TAP_NAMES`].
    pub taps: Vec<(String, RangeStats)>,
}

impl Calibration {
    /// The statistics of tensor `name` (one of [`TAP_NAMES`]).
    pub fn tap(&self, name: &str) -> Option<&RangeStats> {
        self.taps.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Checks that every tap is present once, finite, ordered `min ≤ max`.
    pub fn validate(&self, path: &Path) -> Result<(), CalibError> {
        let invalid = |message: String| CalibError::Invalid {
            path: path.to_owned(),
            message,
        };
        if self.samples == 0 {
            return Err(invalid("zero samples".into()));
        }
        let names: Vec<&str> = self.taps.iter().map(|(n, _)| n.as_str()).collect();
        if names != TAP_NAMES {
            return Err(invalid(format!(
                "taps are {names:?}, expected {TAP_NAMES:?}"
            )));
        }
        for (name, s) in &self.taps {
            let all = [s.min, s.max, s.mean_min, s.mean_max];
            if all.iter().any(|v| !v.is_finite()) {
                return Err(invalid(format!("{name} has a non-finite bound")));
            }
            if s.min > s.max || s.mean_min > s.mean_max || s.batches == 0 {
                return Err(invalid(format!("{name} has an empty or inverted range")));
            }
        }
        Ok(())
    }

    /// Reads and validates a calibration file.
    pub fn load(path: &Path) -> Result<Self, CalibError> {
        let file_err = |message: String| CalibError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| file_err(format!("{e} (run `cargo xtask quantize` to calibrate)")))?;
        let cal: Calibration = serde_json::from_str(&text).map_err(|e| file_err(e.to_string()))?;
        cal.validate(path)?;
        Ok(cal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_keeps_global_and_mean_ranges() {
        let mut o = RangeObserver::default();
        assert!(o.stats().is_none());
        o.observe(-1.0, 2.0);
        o.observe(-3.0, 4.0);
        let s = o.stats().unwrap();
        assert_eq!((s.min, s.max, s.batches), (-3.0, 4.0, 2));
        assert_eq!((s.mean_min, s.mean_max), (-2.0, 3.0));
        assert_eq!(s.range(CalibrationMethod::Minmax), (-3.0, 4.0));
        assert_eq!(s.range(CalibrationMethod::MeanMinmax), (-2.0, 3.0));
    }

    #[test]
    fn load_rejects_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let stats = RangeStats {
            min: 0.0,
            max: 1.0,
            mean_min: 0.0,
            mean_max: 1.0,
            batches: 1,
        };
        let good = Calibration {
            dataset: "mnist".into(),
            split: "train".into(),
            samples: 10,
            batch_size: 10,
            method: CalibrationMethod::Minmax,
            taps: TAP_NAMES.iter().map(|n| (n.to_string(), stats)).collect(),
        };
        let path = dir.path().join("c.json");
        std::fs::write(&path, serde_json::to_string(&good).unwrap()).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), good);

        let mut inverted = good.clone();
        inverted.taps[2].1.min = 5.0;
        std::fs::write(&path, serde_json::to_string(&inverted).unwrap()).unwrap();
        assert!(matches!(
            Calibration::load(&path),
            Err(CalibError::Invalid { .. })
        ));

        let mut missing = good.clone();
        missing.taps.pop();
        std::fs::write(&path, serde_json::to_string(&missing).unwrap()).unwrap();
        assert!(matches!(
            Calibration::load(&path),
            Err(CalibError::Invalid { .. })
        ));

        std::fs::write(&path, "{ not json").unwrap();
        let err = Calibration::load(&path).unwrap_err();
        assert!(matches!(err, CalibError::File { .. }) && err.to_string().contains("c.json"));

        let err = Calibration::load(&dir.path().join("none.json")).unwrap_err();
        assert!(err.to_string().contains("cargo xtask quantize"));
    }
}
