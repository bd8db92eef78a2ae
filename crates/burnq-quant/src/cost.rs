//! What a forward pass costs: multiply-accumulates per image and weight memory.

use crate::{IMAGE_SIDE, LayerKind, QuantModel};

/// Multiply-accumulates per 28×28 image of a stack of layers: for a valid stride-1
/// convolution `out · in · k² · (side − k + 1)²` (the side halves after each conv's 2×2
/// max-pool), for a linear layer `in · out`. The tutorial network needs 2,293,000.
pub fn macs_per_image(kinds: impl IntoIterator<Item = LayerKind>) -> u64 {
    let mut side = IMAGE_SIDE as u64;
    let mut macs = 0;
    for kind in kinds {
        match kind {
            LayerKind::Conv2d {
                in_channels,
                out_channels,
                kernel,
            } => {
                let k = kernel as u64;
                let out_side = side + 1 - k;
                macs += (out_channels * in_channels) as u64 * k * k * out_side * out_side;
                side = out_side / 2;
            }
            LayerKind::Linear {
                in_features,
                out_features,
            } => macs += (in_features * out_features) as u64,
        }
    }
    macs
}

impl QuantModel {
    /// Multiply-accumulates per image (see [`macs_per_image`]).
    pub fn macs_per_image(&self) -> u64 {
        macs_per_image(self.layers().iter().map(|l| l.kind))
    }

    /// Weights plus biases, as a count of numbers.
    pub fn parameter_count(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.weights.len() + l.bias.len())
            .sum()
    }

    /// Bytes of the stored parameters: one byte per weight code, four per i32 bias.
    pub fn weight_bytes(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.weights.len() + 4 * l.bias.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use crate::ARCHITECTURE;

    #[test]
    fn the_tutorial_network_costs_2_293_000_macs() {
        // conv1 20·1·25·24², conv2 50·20·25·8², fc1 800·500, fc2 500·10.
        let macs = super::macs_per_image(ARCHITECTURE.map(|(_, k)| k));
        assert_eq!(macs, 288_000 + 1_600_000 + 400_000 + 5_000);
    }
}
