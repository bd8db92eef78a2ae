//! The tutorial's network: conv1 1→20 k5 → ReLU → max-pool 2 → conv2 20→50 k5 → ReLU →
//! max-pool 2 → flatten 800 → fc1 800→500 → ReLU → fc2 500→10 → log-softmax.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu};

use crate::conv_pool::conv_relu_pool;

/// Layer sizes of the network; the defaults are the tutorial's.
#[derive(Config, Debug)]
pub struct NetConfig {
    /// Output channels of conv1.
    #[config(default = 20)]
    pub conv1_channels: usize,
    /// Output channels of conv2.
    #[config(default = 50)]
    pub conv2_channels: usize,
    /// Width of the hidden fully connected layer.
    #[config(default = 500)]
    pub hidden: usize,
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
}

/// The MNIST network. Weights are initialized like PyTorch's defaults
/// (uniform ±1/√fan_in), which is Burn's default Kaiming-uniform with gain 1/√3.
#[derive(Module, Debug)]
pub struct Net {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
}

/// The tensors the calibration crate observes: what enters each quantized layer, and the
/// logits leaving fc2 (before log-softmax).
#[derive(Debug, Clone)]
pub struct Taps {
    /// `[n, 1, 28, 28]`, the normalized input.
    pub conv1_in: Tensor<4>,
    /// `[n, c1, 12, 12]`, after conv1, ReLU and max-pool.
    pub conv2_in: Tensor<4>,
    /// `[n, 800]`, after conv2, ReLU, max-pool and flatten.
    pub fc1_in: Tensor<2>,
    /// `[n, hidden]`, after fc1 and ReLU.
    pub fc2_in: Tensor<2>,
    /// `[n, classes]`, the output of fc2.
    pub logits: Tensor<2>,
}

/// Serializes "seed the device, then draw the weights": Burn's seed may be global to the
/// backend, so two threads initializing at once would otherwise interleave their draws.
pub(crate) static SEEDED_INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl NetConfig {
    /// Seeds `device` with `seed` and draws a fresh network from it; the same seed on the
    /// same backend always gives the same weights, whatever other threads do meanwhile.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> Net {
        let _guard = SEEDED_INIT.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        let net = self.init(device);
        // Burn draws parameters lazily, on first use: draw them now, under the lock.
        let _ = net.export_weights();
        net
    }

    /// Builds a freshly initialized network on `device` from the backend's current RNG state.
    pub fn init(&self, device: &Device) -> Net {
        Net {
            conv1: Conv2dConfig::new([1, self.conv1_channels], [5, 5]).init(device),
            conv2: Conv2dConfig::new([self.conv1_channels, self.conv2_channels], [5, 5])
                .init(device),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc1: LinearConfig::new(self.conv2_channels * 4 * 4, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.classes).init(device),
        }
    }
}

impl Net {
    /// A copy of this network with fresh, trainable parameters on `device` (use the
    /// autodiff device to fine-tune), detached from any previous computation graph.
    pub fn fresh_copy(&self, config: &NetConfig, device: &Device) -> Net {
        config.init(device).load_record(self.valid().into_record())
    }

    /// Log-probabilities of each class.
    ///
    /// # Shapes
    /// - input: `[n, 1, 28, 28]`, normalized pixels
    /// - output: `[n, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        log_softmax(self.forward_taps(images).logits, 1)
    }

    /// The forward pass returning every tensor a quantized layer consumes (see [`Taps`]).
    ///
    /// # Shapes
    /// - input: `[n, 1, 28, 28]`, normalized pixels
    pub fn forward_taps(&self, images: Tensor<4>) -> Taps {
        let conv2_in = conv_relu_pool(&self.conv1, &self.pool, images.clone());
        let pooled = conv_relu_pool(&self.conv2, &self.pool, conv2_in.clone());
        let fc1_in: Tensor<2> = pooled.flatten(1, 3);
        let fc2_in = relu(self.fc1.forward(fc1_in.clone()));
        let logits = self.fc2.forward(fc2_in.clone());
        Taps {
            conv1_in: images,
            conv2_in,
            fc1_in,
            fc2_in,
            logits,
        }
    }
}
