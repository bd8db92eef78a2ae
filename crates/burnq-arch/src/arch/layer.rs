//! The layer vocabulary of a network description: what a user writes in a JSON or TOML file,
//! one enum variant per layer kind, tagged by `type`.

use serde::{Deserialize, Serialize};

/// A height × width pair (kernel, stride, padding). In a file: one number for a square
/// (`kernel = 5`) or `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Size2Repr", into = "Size2Repr")]
pub struct Size2 {
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
}

impl Size2 {
    /// The square `n × n`.
    pub const fn square(n: usize) -> Self {
        Self { h: n, w: n }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Size2Repr {
    Square(usize),
    Pair([usize; 2]),
}

impl From<Size2Repr> for Size2 {
    fn from(r: Size2Repr) -> Self {
        match r {
            Size2Repr::Square(n) => Self::square(n),
            Size2Repr::Pair([h, w]) => Self { h, w },
        }
    }
}

impl From<Size2> for Size2Repr {
    fn from(s: Size2) -> Self {
        if s.h == s.w {
            Self::Square(s.h)
        } else {
            Self::Pair([s.h, s.w])
        }
    }
}

fn one() -> Size2 {
    Size2::square(1)
}
fn zero() -> Size2 {
    Size2::square(0)
}
fn one_group() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}
fn is_one(s: &Size2) -> bool {
    *s == one()
}
fn is_zero(s: &Size2) -> bool {
    *s == zero()
}
fn is_one_group(g: &usize) -> bool {
    *g == 1
}
fn is_true(b: &bool) -> bool {
    *b
}

/// A 2-D convolution, cross-correlation as in PyTorch: `out[o, y, x] = bias[o] +
/// Σ_{c in o's group, ky, kx} w[o, c, ky, kx] · in[c, y·s_h + ky − p_h, x·s_w + kx − p_w]`,
/// zero padding (in real units). `groups = in_channels = out_channels` is a depthwise
/// convolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Name used for the layer's tensors (checkpoint, model file, ONNX, PyTorch import);
    /// default `layer<path>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Input channels, if the file states them (checked against the inferred shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<usize>,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `[h, w]`.
    pub kernel: Size2,
    /// Stride `[h, w]`, default 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub stride: Size2,
    /// Zero padding on each side `[h, w]`, default 0.
    #[serde(default = "zero", skip_serializing_if = "is_zero")]
    pub padding: Size2,
    /// Channel groups, default 1; must divide both channel counts.
    #[serde(default = "one_group", skip_serializing_if = "is_one_group")]
    pub groups: usize,
    /// Whether the layer has a bias (default true; a convolution followed by batch norm
    /// usually has none).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub bias: bool,
}

/// A fully connected layer `out[o] = bias[o] + Σ_i w[o, i]·in[i]` on flat features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Name, as for [`Conv2d::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Input features, if the file states them (checked against the inferred shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_features: Option<usize>,
    /// Output features.
    pub out_features: usize,
    /// Whether the layer has a bias (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub bias: bool,
}

/// Batch normalization of the preceding convolution's or linear layer's output, per channel:
/// `y = γ·(x − μ)/√(σ² + eps) + β` with the running mean `μ` and variance `σ²` at inference.
/// Folded into that layer's weights and bias when quantizing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Added to the variance, default `1e-5` (PyTorch's and Burn's).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

/// A max or average pool over `kernel` windows moved by `stride` (default: the kernel), no
/// padding; an average divides by the full window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Window `[h, w]`.
    pub kernel: Size2,
    /// Step `[h, w]`; default the kernel (non-overlapping windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Size2>,
}

impl Pool {
    /// The stride, the kernel when not given.
    pub fn stride(&self) -> Size2 {
        self.stride.unwrap_or(self.kernel)
    }
}

/// Dropout with probability `p` in `[0, 1)`: training only, the identity at inference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Probability of zeroing an element while training.
    pub p: f64,
}

/// `output = input + body(input)`; the body must keep the input's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residual {
    /// Name of the add, as for [`Conv2d::name`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The body, a sequence of layers.
    pub layers: Vec<Layer>,
}

/// One layer of a description. In a file, `type` names the kind and the other keys are its
/// fields: `{"type": "conv2d", "out_channels": 20, "kernel": 5}`, or in TOML an entry of
/// `[[layers]]` with `type = "conv2d"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Layer {
    /// A 2-D convolution.
    Conv2d(Conv2d),
    /// Batch normalization after a convolution or linear layer.
    BatchNorm(BatchNorm),
    /// `max(x, 0)`, folded into the preceding layer's output clamp.
    Relu,
    /// `min(max(x, 0), 6)`, folded into the preceding layer's output clamp.
    Relu6,
    /// Max pooling.
    MaxPool(Pool),
    /// Average pooling.
    AvgPool(Pool),
    /// The mean of each channel: `[c, h, w] → [c, 1, 1]`.
    GlobalAvgPool,
    /// `[c, h, w] → [c·h·w]`, in C, H, W order.
    Flatten,
    /// A fully connected layer.
    Linear(Linear),
    /// Dropout, training only.
    Dropout(Dropout),
    /// A residual block.
    Residual(Residual),
}

impl Layer {
    /// The kind as written in a file (`"conv2d"`, `"max_pool"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conv2d(_) => "conv2d",
            Self::BatchNorm(_) => "batch_norm",
            Self::Relu => "relu",
            Self::Relu6 => "relu6",
            Self::MaxPool(_) => "max_pool",
            Self::AvgPool(_) => "avg_pool",
            Self::GlobalAvgPool => "global_avg_pool",
            Self::Flatten => "flatten",
            Self::Linear(_) => "linear",
            Self::Dropout(_) => "dropout",
            Self::Residual(_) => "residual",
        }
    }
}
