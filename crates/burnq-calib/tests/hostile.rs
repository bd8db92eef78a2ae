//! Hostile calibration files: property tests that take a valid `calibration.json` (built from
//! [`Calibration`] and written as `cargo xtask quantize` writes it, pretty-printed) and corrupt
//! it — bit flips, overwritten, inserted and deleted bytes, truncation, edits of the JSON
//! document (values at the edges of every field's type, removed and added members) — or
//! replace it by arbitrary bytes. [`Calibration::load`] must never panic: it refuses with a
//! typed [`CalibError`] (`File` for unreadable or malformed JSON, `Invalid` for an
//! inconsistent record) naming the file, or returns a calibration that passes
//! [`Calibration::validate`]. JSON has no checksum, so a change that keeps the record
//! consistent (another digit in a range bound) loads; each property prints how many did.
//!
//! Each property runs `PROPTEST_CASES` cases (256 by default).

use std::cell::RefCell;
use std::path::Path;
use std::sync::OnceLock;

use burnq_calib::{CalibError, Calibration, CalibrationMethod, RangeStats, TAP_NAMES};
use burnq_testkit::json_edit::json_edit;
use burnq_testkit::mutation::{Tally, byte_edit, describe_change, runner};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// A plausible calibration: each tap's ranges nested as the estimates usually are.
fn valid() -> Calibration {
    let stats = |lo: f32, hi: f32| RangeStats {
        min: lo,
        max: hi,
        mean_min: 0.9 * lo,
        mean_max: 0.9 * hi,
        ema_min: 0.85 * lo,
        ema_max: 0.85 * hi,
        percentile_min: 0.8 * lo,
        percentile_max: 0.8 * hi,
        mse_min: 0.7 * lo,
        mse_max: 0.7 * hi,
        batches: 4,
    };
    let ranges = [
        (-0.424_212_4, 2.821_487_2),
        (0.0, 3.5),
        (0.0, 6.25),
        (0.0, 5.75),
        (-12.5, 14.0),
    ];
    Calibration {
        architecture: "tutorial".into(),
        dataset: "mnist".into(),
        split: "train".into(),
        samples: 1000,
        batch_size: 250,
        act_bits: 8,
        point_bits: Default::default(),
        method: CalibrationMethod::MeanMinmax,
        taps: TAP_NAMES
            .iter()
            .zip(ranges)
            .map(|(name, (lo, hi))| (name.to_string(), stats(lo, hi)))
            .collect(),
    }
}

/// The valid calibration as `calibration.json` holds it.
fn original() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| serde_json::to_string_pretty(&valid()).unwrap())
}

/// Writes `bytes` to `path` and loads it: a refusal must be `File` or `Invalid` and name the
/// file; a calibration that loads must be valid and survive a round trip (`change` then
/// describes the corruption).
fn check_load(
    path: &Path,
    bytes: &[u8],
    tally: &RefCell<Tally>,
    change: impl FnOnce() -> String,
) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).unwrap();
    let mut tally = tally.borrow_mut();
    tally.cases += 1;
    if bytes == original().as_bytes() {
        tally.no_ops += 1;
        prop_assert_eq!(Calibration::load(path).unwrap(), valid());
        return Ok(());
    }
    match Calibration::load(path) {
        Err(err) => {
            prop_assert!(
                matches!(err, CalibError::Parse { .. } | CalibError::Invalid { .. }),
                "unexpected error: {err:?}"
            );
            let message = err.to_string();
            prop_assert!(
                message.contains(&path.display().to_string()),
                "message does not name the file: {message}"
            );
            tally.error(&err);
        }
        Ok(cal) => {
            prop_assert!(cal.validate(path).is_ok());
            let names: Vec<&str> = cal.taps.iter().map(|(n, _)| n.as_str()).collect();
            prop_assert_eq!(names, TAP_NAMES);
            std::fs::write(path, serde_json::to_string_pretty(&cal).unwrap()).unwrap();
            prop_assert_eq!(Calibration::load(path).unwrap(), cal);
            tally.loaded(change);
        }
    }
    Ok(())
}

#[test]
fn valid_file_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    std::fs::write(&path, original()).unwrap();
    assert_eq!(Calibration::load(&path).unwrap(), valid());
}

#[test]
fn mutated_files_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let tally = RefCell::new(Tally::default());
    runner(file!())
        .run(&byte_edit(), |edit| {
            let text = original().as_bytes();
            let bytes = edit.apply(text, 0..text.len());
            check_load(&path, &bytes, &tally, || describe_change(text, &bytes))
        })
        .unwrap();
    tally.into_inner().finish("calibration byte mutations");
}

#[test]
fn edited_documents_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let tally = RefCell::new(Tally::default());
    let doc: serde_json::Value = serde_json::from_str(original()).unwrap();
    runner(file!())
        .run(&prop::collection::vec(json_edit(), 1..4), |edits| {
            let mut edited = doc.clone();
            let changes: Vec<String> = edits.iter().map(|e| e.apply(&mut edited)).collect();
            if edited == doc {
                let mut tally = tally.borrow_mut();
                tally.cases += 1;
                tally.no_ops += 1;
                return Ok(());
            }
            let text = serde_json::to_string_pretty(&edited).unwrap();
            check_load(&path, text.as_bytes(), &tally, || changes.join("; "))
        })
        .unwrap();
    tally.into_inner().finish("calibration JSON edits");
}

#[test]
fn arbitrary_bytes_are_refused_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let tally = RefCell::new(Tally::default());
    let input = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        "\\{[ -~]{0,300}\\}".prop_map(String::into_bytes),
    ];
    runner(file!())
        .run(&input, |bytes| {
            check_load(&path, &bytes, &tally, String::new)?;
            prop_assert_eq!(tally.borrow().loaded, 0, "arbitrary bytes loaded");
            Ok(())
        })
        .unwrap();
    tally.into_inner().finish("calibration arbitrary bytes");
}
