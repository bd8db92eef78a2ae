//! Calibration: run the float model over a calibration set and record, for every tensor
//! a quantized layer consumes (the input of conv1, conv2, fc1, fc2) and for the logits
//! leaving fc2, the range of values it takes.
//!
//! Two range estimates are kept per tensor, so both can be compared on the same run:
//! - **min/max**: the smallest and largest value over all samples;
//! - **mean of batch min/max**: the tutorial's estimate, the average over batches of each
//!   batch's min and max (less sensitive to one outlier image, narrower).
//!
//! The result is written as `calibration.json` (see `artifacts/README.md`).

pub mod calibrate;
pub mod error;
pub mod stats;

pub use calibrate::{CalibrationSettings, calibrate, calibrate_arch};
pub use error::CalibError;
pub use stats::{Calibration, CalibrationMethod, RangeStats, TAP_NAMES};
