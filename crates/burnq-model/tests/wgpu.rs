//! burn-wgpu: a few training batches lower the loss, and the forward pass agrees with the
//! CPU backend on the same weights. Built only with `--features wgpu`; on a machine without a
//! GPU it runs on Mesa's software Vulkan driver (lavapipe). Set `CUBECL_AUTOTUNE_LEVEL=minimal`
//! there: autotuning on a software device costs minutes.
#![cfg(feature = "wgpu")]

use std::sync::Arc;

use burn::prelude::*;
use burnq_data::locate::test_locator;
use burnq_data::{DatasetKind, ImageSet, Split};
use burnq_model::checkpoint::{load_model, save_model};
use burnq_model::training::{TrainEvent, TrainingConfig, train};
use burnq_model::{BackendChoice, NetConfig};

fn subset(split: Split, n: usize) -> ImageSet {
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, split).unwrap();
    set.truncate(n);
    set
}

#[test]
fn wgpu_trains_and_agrees_with_flex() {
    let wgpu = BackendChoice::Wgpu.device().unwrap();
    let mut losses = Vec::new();
    let config = TrainingConfig::new(NetConfig::new()).with_epochs(1);
    let (net, _) = train(
        &config,
        Arc::new(subset(Split::Train, 8 * 64)),
        &subset(Split::Test, 64),
        &wgpu,
        &mut |e| {
            if let TrainEvent::Batch { loss, .. } = e {
                losses.push(loss);
            }
        },
        &mut |_, _| Ok(()),
    )
    .unwrap();
    assert_eq!(losses.len(), 8);
    assert!(losses[7] < losses[0], "loss did not decrease: {losses:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bpk");
    save_model(&net, &path).unwrap();
    let flex = Device::flex();
    let on_flex = load_model(&NetConfig::new(), &path, &flex).unwrap();
    let on_wgpu = load_model(&NetConfig::new(), &path, &wgpu).unwrap();
    let pixels = subset(Split::Test, 16).pixels;
    let norm = DatasetKind::Mnist.normalization();
    let batcher = burnq_model::data::ImageBatcher::new(norm);
    let a: Vec<f32> = on_flex
        .forward(batcher.images(&pixels, &flex))
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let b: Vec<f32> = on_wgpu
        .forward(batcher.images(&pixels, &wgpu))
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .unwrap();
    let diff = burnq_testkit::max_abs_diff(&a, &b);
    assert!(
        diff < 1e-3,
        "flex and wgpu log-probabilities differ by {diff}"
    );
}
