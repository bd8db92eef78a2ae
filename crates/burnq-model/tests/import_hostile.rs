//! Hostile PyTorch files: byte edits of the fixtures (zip and legacy formats; the trained
//! network's and the float16 checkpoint's zip header, pickle and central directory) must give an `Import` error naming the
//! file, or load (an edit inside tensor data), never a panic. `PROPTEST_CASES` sets the count.

use std::cell::RefCell;
use std::path::Path;

use burnq_model::import::import_pytorch;
use burnq_model::{Device, ModelError, NetConfig};
use burnq_testkit::mutation::{Tally, byte_edit, runner};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn mutated_pytorch_files_are_refused_without_panicking() {
    let files = [
        ("wrong_shape.pt", fixture("wrong_shape.pt")),
        ("wrong_shape_legacy.pt", fixture("wrong_shape_legacy.pt")),
        ("checkpoint_f16.pt", fixture("checkpoint_f16.pt")),
        ("mnist_cnn.pt", fixture("mnist_cnn.pt")),
    ];
    let dir = tempfile::tempdir().unwrap();
    let tally = RefCell::new(Tally::default());
    let device = Device::flex();
    // The trained file is 1.7 MB of tensor data between a zip header with the pickle (first
    // 4 KB) and the central directory (last 2 KB): edits go there, where parsing happens.
    let target = (0..files.len(), any::<bool>());
    runner(file!())
        .run(&(target, byte_edit()), |((which, tail), edit)| {
            let (name, bytes) = &files[which];
            let span = match (*name, tail) {
                ("mnist_cnn.pt" | "checkpoint_f16.pt", false) => 0..4096,
                ("mnist_cnn.pt" | "checkpoint_f16.pt", true) => bytes.len() - 2048..bytes.len(),
                _ => 0..bytes.len(),
            };
            let mutated = edit.apply(bytes, span);
            let mut tally = tally.borrow_mut();
            tally.cases += 1;
            if mutated == *bytes {
                tally.no_ops += 1;
                return Ok(());
            }
            let path = dir.path().join(name);
            std::fs::write(&path, &mutated).unwrap();
            match import_pytorch(&NetConfig::new(), &path, &device) {
                Ok(_) => {
                    prop_assert!(
                        matches!(*name, "mnist_cnn.pt" | "checkpoint_f16.pt"),
                        "a malformed network loaded from {}",
                        name
                    );
                    let at = bytes
                        .iter()
                        .zip(&mutated)
                        .take_while(|(a, b)| a == b)
                        .count();
                    tally.loaded(|| format!("{name}: {edit:?}, first change at byte {at}"));
                }
                Err(e @ ModelError::Import { .. }) => {
                    prop_assert!(e.to_string().contains(name), "{e}");
                    tally.error(&e);
                }
                Err(other) => prop_assert!(false, "not an import error: {other:?}"),
            }
            Ok(())
        })
        .unwrap();
    tally.into_inner().finish("PyTorch import");
}
