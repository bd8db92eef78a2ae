//! Range statistics per observed tensor, and the calibration record that holds them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use burnq_quant::range::EmaRange;
use burnq_quant::{ActivationRanges, PointRanges};

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
    /// Exponential moving average of batch min/max (decay [`EMA_DECAY`] per batch), as
    /// TensorFlow's quantization-aware training tracks ranges.
    Ema,
    /// The [`PERCENTILE`]-th and (100 − [`PERCENTILE`])-th percentiles of all values:
    /// clips rare outliers.
    Percentile,
    /// The range minimizing the mean squared quantization error at the activation bit
    /// width (a search over clipped ranges, as TensorRT/ONNX Runtime offer).
    Mse,
}

/// Per-batch decay of [`CalibrationMethod::Ema`].
pub const EMA_DECAY: f32 = 0.9;
/// Percentile of [`CalibrationMethod::Percentile`].
pub const PERCENTILE: f64 = 99.99;

impl CalibrationMethod {
    /// All methods, in a fixed order.
    pub const ALL: [CalibrationMethod; 5] = [
        CalibrationMethod::Minmax,
        CalibrationMethod::MeanMinmax,
        CalibrationMethod::Ema,
        CalibrationMethod::Percentile,
        CalibrationMethod::Mse,
    ];

    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            CalibrationMethod::Minmax => "minmax",
            CalibrationMethod::MeanMinmax => "mean-minmax",
            CalibrationMethod::Ema => "ema",
            CalibrationMethod::Percentile => "percentile",
            CalibrationMethod::Mse => "mse",
        }
    }

    /// Parses a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
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
    /// Exponential moving average of the batch minimum.
    pub ema_min: f32,
    /// Exponential moving average of the batch maximum.
    pub ema_max: f32,
    /// Lower [`PERCENTILE`] clip of all values.
    pub percentile_min: f32,
    /// Upper [`PERCENTILE`] clip of all values.
    pub percentile_max: f32,
    /// Minimum-MSE range at the calibration's `act_bits`.
    pub mse_min: f32,
    /// Minimum-MSE range at the calibration's `act_bits`.
    pub mse_max: f32,
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
    ema: EmaRange,
    batches: usize,
    values: Vec<f32>,
}

impl RangeObserver {
    /// Records one batch of values (all of them are kept for the percentile and MSE
    /// estimates: at most a few million floats per tensor for 1000 images).
    pub fn observe(&mut self, values: &[f32]) {
        let (batch_min, batch_max) = values
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        self.values.extend_from_slice(values);
        if self.batches == 0 {
            (self.min, self.max) = (batch_min, batch_max);
        } else {
            self.min = self.min.min(batch_min);
            self.max = self.max.max(batch_max);
        }
        self.ema.update(batch_min, batch_max, EMA_DECAY);
        self.sum_min += f64::from(batch_min);
        self.sum_max += f64::from(batch_max);
        self.batches += 1;
    }

    /// The statistics so far, with the MSE range searched at `act_bits` (`None` before the
    /// first batch).
    pub fn stats(&self, act_bits: u8) -> Result<Option<RangeStats>, burnq_quant::QuantError> {
        if self.batches == 0 {
            return Ok(None);
        }
        let (percentile_min, percentile_max) =
            burnq_quant::range::percentile(&self.values, PERCENTILE)?;
        let (mse_min, mse_max) = burnq_quant::range::mse(&self.values, act_bits)?;
        Ok(Some(RangeStats {
            min: self.min,
            max: self.max,
            mean_min: (self.sum_min / self.batches as f64) as f32,
            mean_max: (self.sum_max / self.batches as f64) as f32,
            ema_min: self.ema.min,
            ema_max: self.ema.max,
            percentile_min,
            percentile_max,
            mse_min,
            mse_max,
            batches: self.batches,
        }))
    }
}

impl RangeStats {
    /// The `(min, max)` range under `method`.
    pub fn range(&self, method: CalibrationMethod) -> (f32, f32) {
        match method {
            CalibrationMethod::Minmax => (self.min, self.max),
            CalibrationMethod::MeanMinmax => (self.mean_min, self.mean_max),
            CalibrationMethod::Ema => (self.ema_min, self.ema_max),
            CalibrationMethod::Percentile => (self.percentile_min, self.percentile_max),
            CalibrationMethod::Mse => (self.mse_min, self.mse_max),
        }
    }
}

/// The calibration of one float model (`calibration.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// The network's architecture name (`tutorial` for files written before descriptions).
    #[serde(default = "tutorial")]
    pub architecture: String,
    /// Data set name (`mnist`, `fashion-mnist`).
    pub dataset: String,
    /// Split the samples came from (`train` or `test`).
    pub split: String,
    /// Number of images observed (the first `samples` of the split).
    pub samples: usize,
    /// Images per batch (the mean-of-batch and EMA estimates depend on it).
    pub batch_size: usize,
    /// Activation bit width the MSE ranges were searched for.
    pub act_bits: u8,
    /// Taps whose MSE range was searched at their own width instead (absent from older
    /// files: every tap at `act_bits`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub point_bits: std::collections::BTreeMap<String, u8>,
    /// The method chosen to feed quantization.
    pub method: CalibrationMethod,
    /// Statistics per observed tensor: for `tutorial`, the layer inputs and logits in the
    /// order of [`TAP_NAMES`]; for any other architecture, each quantization point's output
    /// by step name, in execution order.
    pub taps: Vec<(String, RangeStats)>,
}

fn tutorial() -> String {
    "tutorial".into()
}

impl Calibration {
    /// Each quantization point's range as `method` estimated it, by step name: the ranges
    /// [`burnq_quant::convert_graph`] takes. Errors on a point the calibration lacks.
    pub fn point_ranges(
        &self,
        plan: &burnq_arch::Plan,
        method: CalibrationMethod,
    ) -> Result<PointRanges, CalibError> {
        plan.quantization_points()
            .iter()
            .map(|step| {
                let stats = self.taps.iter().find(|(n, _)| n == &step.name);
                match stats {
                    Some((_, s)) => Ok((step.name.clone(), s.range(method))),
                    None => Err(CalibError::MissingTap {
                        tap: step.name.clone(),
                        architecture: self.architecture.clone(),
                    }),
                }
            })
            .collect()
    }

    /// The ranges `method` estimated, keyed by layer: the one shape of ranges that conversion,
    /// QAT, simulation and the sensitivity report take. The taps are validated ([`TAP_NAMES`],
    /// in order) when a calibration is made or loaded.
    pub fn ranges(&self, method: CalibrationMethod) -> ActivationRanges {
        let range = |i: usize| {
            self.taps
                .get(i)
                .map_or((0.0, 0.0), |(_, s)| s.range(method))
        };
        ActivationRanges {
            input: range(0),
            conv2_input: range(1),
            fc1_input: range(2),
            fc2_input: range(3),
            logits: range(4),
        }
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
        let unique: std::collections::HashSet<&str> = names.iter().copied().collect();
        if unique.len() != names.len() {
            return Err(invalid(format!("a tap appears twice in {names:?}")));
        }
        if self.architecture == "tutorial" && names != TAP_NAMES {
            return Err(invalid(format!(
                "taps are {names:?}, expected {TAP_NAMES:?}"
            )));
        }
        for (name, s) in &self.taps {
            for method in CalibrationMethod::ALL {
                let (lo, hi) = s.range(method);
                if !lo.is_finite() || !hi.is_finite() {
                    return Err(invalid(format!(
                        "{name} has a non-finite {} bound",
                        method.name()
                    )));
                }
                if lo > hi {
                    return Err(invalid(format!(
                        "{name} has an inverted {} range",
                        method.name()
                    )));
                }
            }
            if s.batches == 0 {
                return Err(invalid(format!("{name} was observed in no batch")));
            }
        }
        Ok(())
    }

    /// Reads and validates a calibration file.
    pub fn load(path: &Path) -> Result<Self, CalibError> {
        let bytes = std::fs::read(path).map_err(|source| CalibError::Read {
            path: path.to_owned(),
            source,
        })?;
        let cal: Calibration =
            serde_json::from_slice(&bytes).map_err(|source| CalibError::Parse {
                path: path.to_owned(),
                source,
            })?;
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
        assert!(o.stats(8).unwrap().is_none());
        o.observe(&[-1.0, 0.5, 2.0]);
        o.observe(&[-3.0, 4.0]);
        let s = o.stats(8).unwrap().unwrap();
        assert_eq!((s.min, s.max, s.batches), (-3.0, 4.0, 2));
        assert_eq!((s.mean_min, s.mean_max), (-2.0, 3.0));
        assert_eq!(s.range(CalibrationMethod::Minmax), (-3.0, 4.0));
        assert_eq!(s.range(CalibrationMethod::MeanMinmax), (-2.0, 3.0));
        // EMA: −1 then 0.9·(−1) + 0.1·(−3) = −1.2; 2 then 0.9·2 + 0.1·4 = 2.2.
        let (lo, hi) = s.range(CalibrationMethod::Ema);
        assert!((lo + 1.2).abs() < 1e-6 && (hi - 2.2).abs() < 1e-6);
        // Percentile and MSE ranges lie within the observed range and contain 0.
        for m in [CalibrationMethod::Percentile, CalibrationMethod::Mse] {
            let (lo, hi) = s.range(m);
            assert!(
                (-3.0..=0.0).contains(&lo) && (0.0..=4.0).contains(&hi),
                "{m:?}: {lo} {hi}"
            );
        }
    }

    #[test]
    fn load_rejects_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let stats = RangeStats {
            min: 0.0,
            max: 1.0,
            mean_min: 0.0,
            mean_max: 1.0,
            ema_min: 0.0,
            ema_max: 1.0,
            percentile_min: 0.0,
            percentile_max: 1.0,
            mse_min: 0.0,
            mse_max: 0.9,
            batches: 1,
        };
        let good = Calibration {
            architecture: "tutorial".into(),
            dataset: "mnist".into(),
            split: "train".into(),
            samples: 10,
            batch_size: 10,
            act_bits: 8,
            point_bits: Default::default(),
            method: CalibrationMethod::Minmax,
            taps: TAP_NAMES.iter().map(|n| (n.to_string(), stats)).collect(),
        };
        let path = dir.path().join("c.json");
        std::fs::write(&path, serde_json::to_string(&good).unwrap()).unwrap();
        assert_eq!(Calibration::load(&path).unwrap(), good);
        let mut ordered = good.clone();
        for (i, (_, s)) in ordered.taps.iter_mut().enumerate() {
            s.mean_min = -(i as f32);
        }
        let r = ordered.ranges(CalibrationMethod::MeanMinmax);
        let mins = [r.input, r.conv2_input, r.fc1_input, r.fc2_input, r.logits].map(|r| r.0);
        assert_eq!(mins, [0.0, -1.0, -2.0, -3.0, -4.0]);

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
        assert!(matches!(err, CalibError::Parse { .. }) && err.to_string().contains("c.json"));

        let err = Calibration::load(&dir.path().join("none.json")).unwrap_err();
        assert!(err.to_string().contains("cargo xtask quantize"));
    }
}
