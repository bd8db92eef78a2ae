//! Loads the real data sets from `$BURNQ_DATA_DIR` (CI points it at `../shared/data`).

use burnq_data::locate::test_locator as locator;
use burnq_data::{DatasetKind, IMAGE_PIXELS, ImageSet, Split};

#[test]
fn both_data_sets_load_with_their_standard_sizes() {
    let loc = locator();
    for kind in DatasetKind::ALL {
        for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
            let set = ImageSet::load(&loc, kind, split).unwrap();
            assert_eq!(set.len(), n, "{kind} {split:?}");
            assert_eq!(set.pixels.len(), n * IMAGE_PIXELS);
            let mut per_class = [0usize; 10];
            set.labels.iter().for_each(|&l| per_class[l as usize] += 1);
            assert!(
                per_class.iter().all(|&c| c > n / 20),
                "{kind}: {per_class:?}"
            );
        }
    }
    let test = ImageSet::load(&loc, DatasetKind::Mnist, Split::Test).unwrap();
    assert_eq!(&test.labels[..5], &[7, 2, 1, 0, 4]);
}

#[test]
fn normalization_constants_match_the_training_pixels() {
    let loc = locator();
    for kind in DatasetKind::ALL {
        let set = ImageSet::load(&loc, kind, Split::Train).unwrap();
        let n = set.pixels.len() as f64;
        let mean = set
            .pixels
            .iter()
            .map(|&p| f64::from(p) / 255.0)
            .sum::<f64>()
            / n;
        let var = set
            .pixels
            .iter()
            .map(|&p| (f64::from(p) / 255.0 - mean).powi(2))
            .sum::<f64>()
            / n;
        let norm = kind.normalization();
        assert!(
            (f64::from(norm.mean) - mean).abs() < 1e-3,
            "{kind} mean {mean}"
        );
        assert!(
            (f64::from(norm.std) - var.sqrt()).abs() < 1e-3,
            "{kind} std {}",
            var.sqrt()
        );
    }
}

#[test]
fn mismatched_image_and_label_files_are_refused() {
    let loc = locator();
    let images = loc
        .find(DatasetKind::Mnist, "t10k-images-idx3-ubyte")
        .unwrap();
    let labels = loc
        .find(DatasetKind::Mnist, "train-labels-idx1-ubyte")
        .unwrap();
    let err = ImageSet::from_files(DatasetKind::Mnist, Split::Test, &images, &labels).unwrap_err();
    assert!(
        matches!(
            err,
            burnq_data::DataError::CountMismatch {
                n_images: 10_000,
                n_labels: 60_000,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn normalization_maps_bytes_as_the_formula_says() {
    let n = DatasetKind::Mnist.normalization();
    assert!((n.apply(0) - (-0.1307 / 0.3081)).abs() < 1e-6);
    assert!((n.apply(255) - ((1.0 - 0.1307) / 0.3081)).abs() < 1e-6);
}
