//! Short training runs on subsets of MNIST: learning, determinism.

use std::sync::Arc;

use burn::prelude::*;
use burnq_data::locate::test_locator;
use burnq_data::{DatasetKind, ImageSet, Split};
use burnq_model::training::{TrainEvent, TrainingConfig, train};
use burnq_model::{Net, NetConfig};

fn subset(split: Split, n: usize) -> ImageSet {
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, split).unwrap();
    set.truncate(n);
    set
}

fn run(
    config: &TrainingConfig,
    n_train: usize,
    n_test: usize,
) -> (Net, Vec<burnq_model::training::EpochRecord>, Vec<f32>) {
    let mut losses = Vec::new();
    let (net, history) = train(
        config,
        Arc::new(subset(Split::Train, n_train)),
        &subset(Split::Test, n_test),
        &Device::flex(),
        &mut |e| {
            if let TrainEvent::Batch { loss, .. } = e {
                losses.push(loss);
            }
        },
        &mut |_, _| Ok(()),
    )
    .unwrap();
    (net, history, losses)
}

#[test]
fn a_short_run_learns_mnist() {
    let config = TrainingConfig::new(NetConfig::new()).with_epochs(3);
    let (_, history, losses) = run(&config, 8000, 2000);
    assert_eq!(history.len(), 3);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    assert!(last < first * 0.5, "loss went from {first} to {last}");
    assert!(history[2].test.loss < history[0].test.loss);
    let acc = history[2].test.accuracy;
    assert!(acc > 0.90, "test accuracy {acc}");
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let config = TrainingConfig::new(NetConfig::new()).with_epochs(1);
    let weights = |seed| {
        let (net, _, _) = run(&config.clone().with_seed(seed), 320, 10);
        net.export_weights()
    };
    let a = weights(3);
    let b = weights(3);
    assert_eq!(a, b, "two runs with seed 3 differ");
    let c = weights(4);
    assert_ne!(a, c, "seeds 3 and 4 gave the same weights");
}

#[test]
fn data_parallel_training_is_deterministic() {
    let config = TrainingConfig::new(NetConfig::new())
        .with_epochs(1)
        .with_shards(2);
    let weights = || run(&config, 320, 10).0.export_weights();
    assert_eq!(weights(), weights(), "two 2-shard runs with seed 1 differ");
}
