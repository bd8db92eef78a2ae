//! The tutorial model ([`QuantModel`], the model files of versions 1–3) as a graph of the
//! `tutorial` preset: the same integers, its convolutions in their GEMM view.

use burnq_arch::Architecture;

use super::{QuantGraph, QuantOp};
use crate::{LayerKind, QuantError, QuantLayer, QuantModel};

impl QuantGraph {
    /// The tutorial `model` as a graph of the `tutorial` preset, computing the same outputs
    /// bit for bit.
    pub fn from_tutorial(model: &QuantModel) -> Result<Self, QuantError> {
        let arch = Architecture::preset("tutorial").expect("the tutorial preset exists");
        let [conv1, conv2, fc1, fc2] = model.layers().clone();
        // conv1 pads (never, being valid) like every first layer with a folded normalization.
        let first_pad = model.input_normalization().map(|n| n.padding_pixel());
        let conv = |layer: QuantLayer, pad: Option<u8>| QuantOp::Conv2d {
            pad: pad.unwrap_or(layer.input.zero_point() as u8),
            layer: QuantLayer {
                kind: LayerKind::Linear {
                    in_features: layer.kind.fan_in(),
                    out_features: layer.kind.out_channels(),
                },
                ..layer
            },
        };
        let ops = vec![
            conv(conv1, first_pad),
            QuantOp::MaxPool,
            conv(conv2, None),
            QuantOp::MaxPool,
            QuantOp::Flatten,
            QuantOp::Linear(fc1),
            QuantOp::Linear(fc2),
        ];
        Self::new(
            arch,
            model.options(),
            model.input_params(),
            model.input_normalization(),
            ops,
        )
    }
}
