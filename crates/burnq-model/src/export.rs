//! Weights and biases out of Burn as plain `f32` arrays, in PyTorch's layouts
//! (conv OIHW, linear out×in), so the integer engine needs no Burn.

use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use crate::Net;

/// One layer's parameters as plain arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// `conv1`, `conv2`, `fc1` or `fc2`.
    pub name: &'static str,
    /// Weight shape: `[out, in, kh, kw]` for a convolution, `[out, in]` for a linear layer.
    pub weight_shape: Vec<usize>,
    /// Row-major weights in `weight_shape`.
    pub weight: Vec<f32>,
    /// One bias per output channel.
    pub bias: Vec<f32>,
}

impl Net {
    /// The four layers' parameters, in forward order.
    pub fn export_weights(&self) -> Vec<LayerWeights> {
        vec![
            conv_weights("conv1", &self.conv1),
            conv_weights("conv2", &self.conv2),
            linear_weights("fc1", &self.fc1),
            linear_weights("fc2", &self.fc2),
        ]
    }

    /// Checks that every weight and bias is finite; the error names the first layer that is not.
    /// The error is the name of that layer.
    pub fn check_finite(&self) -> Result<(), &'static str> {
        match self
            .export_weights()
            .into_iter()
            .find(|l| l.weight.iter().chain(&l.bias).any(|v| !v.is_finite()))
        {
            Some(layer) => Err(layer.name),
            None => Ok(()),
        }
    }
}

/// A tensor's values as `f32`, row-major.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data converts to Vec<f32>")
}

fn bias_of(bias: Option<&burn::module::Param<Tensor<1>>>, out: usize) -> Vec<f32> {
    bias.map_or_else(|| vec![0.0; out], |b| to_vec(b.val()))
}

fn conv_weights(name: &'static str, conv: &Conv2d) -> LayerWeights {
    let w = conv.weight.val();
    let shape = w.dims().to_vec();
    LayerWeights {
        name,
        bias: bias_of(conv.bias.as_ref(), shape[0]),
        weight_shape: shape,
        weight: to_vec(w),
    }
}

fn linear_weights(name: &'static str, linear: &Linear) -> LayerWeights {
    // Burn stores a linear weight as [in, out]; PyTorch and the integer engine use [out, in].
    let w = linear.weight.val().transpose();
    let shape = w.dims().to_vec();
    LayerWeights {
        name,
        bias: bias_of(linear.bias.as_ref(), shape[0]),
        weight_shape: shape,
        weight: to_vec(w),
    }
}
