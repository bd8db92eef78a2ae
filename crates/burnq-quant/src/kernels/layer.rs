//! [`PackedLayer`]: a [`QuantLayer`] prepared once for the fast kernels, in both GEMM forms.
//! Weights become `i16` offsets `q_w − Z_w[o]` (zero points subtracted here, not per product)
//! and `i8` values around a centre ([`ByteForm`], with the bounds that decide which byte GEMM
//! is exact for the layer) in the panel layouts of [`super::pack`]: a convolution's weights
//! are the GEMM's A (rows = output channels, one broadcast per channel), a linear layer's are
//! its B (columns = output features, eight per vector), so that a batch of any size, even one,
//! fills the vectors.

use super::bytes::{ByteForm, ByteIsa, ByteWeights};
use super::pack::{self, GROUP, Im2col, MR, MRB, NR, groups, offset, pairs};
use super::requant::LayerRequant;
use super::{Isa, KernelChoice, with_isa};
use crate::{LayerKind, QuantError, QuantLayer, QuantParams};

/// The GEMM form a kernel runs a layer with (see the [module docs](super)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmForm {
    /// `i16` offsets, `vpmaddwd` (or the portable loop).
    I16,
    /// `u8` codes × `i8` weights, `vpdpbusd` or `vpmaddubsw`.
    Bytes,
    /// Two-bit inputs, products looked up in per-channel tables (`vpshufb`).
    Tables,
    /// A short convolution whose whole reduction fits one `i16` sum, on pair panels built from
    /// the image (`vpmaddubsw`; [`super::direct`]); column panels whose halves are not runs of eight
    /// positions (an output width not a multiple of eight) take the byte tile.
    Direct,
}

impl GemmForm {
    /// The lowercase name: `i16`, `bytes`, `tables` or `direct`.
    pub fn name(self) -> &'static str {
        match self {
            Self::I16 => "i16",
            Self::Bytes => "bytes",
            Self::Tables => "tables",
            Self::Direct => "direct",
        }
    }
}

/// A layer in the fast kernels' layout; see the module docs. Built by [`PackedLayer::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedLayer {
    name: String,
    kind: LayerKind,
    input: QuantParams,
    weights: Weights,
    /// One bias per output channel, zero-padded to a whole column panel.
    bias: Vec<i32>,
    /// The weights in the byte form, for the byte GEMMs.
    bytes: ByteForm,
    requant: LayerRequant,
}

#[derive(Debug, Clone, PartialEq)]
enum Weights {
    /// A convolution's weights as row panels of A.
    Rows(Vec<i32>),
    /// A linear layer's weights, transposed, as column panels of B.
    Cols(Vec<i16>),
}

impl PackedLayer {
    /// Packs `layer`. Besides [`QuantLayer::check_shapes`], the fast kernels need: at least one
    /// input and one output channel, weight zero points in `[0, 255]` (so offsets fit `i16`),
    /// the worst-case accumulator bound ([`QuantLayer::check_accumulator_bound`], so `i32`
    /// sums are exact for every input code `≤ qmax_in`), and requantization with `m0 ≥ 0`,
    /// `shift ≥ −31` and an output zero point in `[0, 255]`. Validated layers meet them all.
    pub fn new(layer: &QuantLayer) -> Result<Self, QuantError> {
        layer.check_shapes()?;
        let invalid = |reason: String| QuantError::InvalidValue {
            what: layer.name.clone(),
            reason,
        };
        let (fan_in, out) = (layer.kind.fan_in(), layer.kind.out_channels());
        if fan_in == 0 || out == 0 {
            return Err(invalid(format!(
                "the fast kernels need at least one input and output channel, not {:?}",
                layer.kind
            )));
        }
        if let Some(z) = layer
            .weight_zero_points
            .iter()
            .find(|z| !(0..=255).contains(*z))
        {
            return Err(invalid(format!("weight zero point {z} outside [0, 255]")));
        }
        layer.check_accumulator_bound()?;
        let w =
            |o: usize, k: usize| offset(layer.weights[o * fan_in + k], layer.weight_zero_points[o]);
        let weights = match layer.kind {
            LayerKind::Conv2d { .. } => {
                let mut rows = Vec::new();
                pack::pack_rows(out, fan_in, w, &mut rows);
                Weights::Rows(rows)
            }
            LayerKind::Linear { .. } => Weights::Cols(pack::pack_cols(out, fan_in, |k, o| w(o, k))),
        };
        let mut bias = layer.bias.clone();
        bias.resize(out.next_multiple_of(NR), 0);
        Ok(Self {
            name: layer.name.clone(),
            kind: layer.kind,
            input: layer.input,
            weights,
            bias,
            bytes: ByteForm::new(layer),
            requant: LayerRequant::new(&layer.name, layer.requants().collect())?,
        })
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's geometry.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// The input's quantization parameters.
    pub fn input(&self) -> QuantParams {
        self.input
    }

    pub(crate) fn out_channels(&self) -> usize {
        self.kind.out_channels()
    }

    pub(crate) fn fan_in(&self) -> usize {
        self.kind.fan_in()
    }

    /// `i16` offsets in one column panel of the im2col matrix (or of this layer's B).
    pub(crate) fn panel_len(&self) -> usize {
        pairs(self.fan_in()) * 2 * NR
    }

    /// Row panel `i` of a convolution's weights.
    pub(crate) fn row_panel(&self, i: usize) -> &[i32] {
        let len = pairs(self.fan_in()) * MR;
        match &self.weights {
            Weights::Rows(rows) => &rows[i * len..][..len],
            Weights::Cols(_) => panic!("{} is not a convolution", self.name),
        }
    }

    /// Column panel `j` of a linear layer's transposed weights.
    pub(crate) fn col_panel(&self, j: usize) -> &[i16] {
        let len = self.panel_len();
        match &self.weights {
            Weights::Cols(cols) => &cols[j * len..][..len],
            Weights::Rows(_) => panic!("{} is not a linear layer", self.name),
        }
    }

    /// The GEMM form `kernel` runs this layer with; an error if this CPU cannot run `kernel`.
    pub fn gemm_form(&self, kernel: KernelChoice) -> Result<GemmForm, QuantError> {
        Ok(with_isa!(kernel, |isa| match isa.bytes(&self.bytes) {
            None => GemmForm::I16,
            Some(b) if b.tables(&self.bytes).is_some() => GemmForm::Tables,
            Some(b) if b.direct(&self.bytes).is_some() => GemmForm::Direct,
            Some(_) => GemmForm::Bytes,
        }))
    }

    /// The byte form of the weights.
    pub(crate) fn byte_form(&self) -> &ByteForm {
        &self.bytes
    }

    /// Bytes in one byte column panel of the im2col matrix (or of this layer's B).
    pub(crate) fn byte_panel_len(&self) -> usize {
        groups(self.fan_in()) * GROUP * NR
    }

    /// Byte row panel `i` of a convolution's weights.
    pub(crate) fn byte_row_panel(&self, i: usize) -> &[i32] {
        let len = groups(self.fan_in()) * MRB;
        match &self.bytes.weights {
            ByteWeights::Rows(rows) => &rows[i * len..][..len],
            ByteWeights::Cols(_) => panic!("{} is not a convolution", self.name),
        }
    }

    /// Byte column panel `j` of a linear layer's transposed weights.
    pub(crate) fn byte_col_panel(&self, j: usize) -> &[u8] {
        let len = self.byte_panel_len();
        match &self.bytes.weights {
            ByteWeights::Cols(cols) => &cols[j * len..][..len],
            ByteWeights::Rows(_) => panic!("{} is not a linear layer", self.name),
        }
    }

    /// The biases, zero-padded to a multiple of `NR`.
    pub(crate) fn bias(&self) -> &[i32] {
        &self.bias
    }

    pub(crate) fn requant(&self) -> &LayerRequant {
        &self.requant
    }

    /// The im2col plan of this convolution on `height × width` inputs; an error for a linear
    /// layer or an image smaller than the kernel.
    pub(crate) fn conv_plan(&self, height: usize, width: usize) -> Result<Im2col, QuantError> {
        let LayerKind::Conv2d {
            in_channels,
            kernel,
            ..
        } = self.kind
        else {
            return Err(self.wrong_kind("conv2d"));
        };
        if kernel > height || kernel > width {
            return Err(QuantError::ImageTooSmall {
                layer: self.name.clone(),
                height,
                width,
                kernel,
            });
        }
        Ok(Im2col::new(in_channels, kernel, height, width))
    }

    /// Errors unless this is a linear layer.
    pub(crate) fn check_linear(&self) -> Result<(), QuantError> {
        match self.kind {
            LayerKind::Linear { .. } => Ok(()),
            LayerKind::Conv2d { .. } => Err(self.wrong_kind("linear")),
        }
    }

    fn wrong_kind(&self, op: &'static str) -> QuantError {
        QuantError::WrongLayerKind {
            layer: self.name.clone(),
            kind: self.kind,
            op,
        }
    }
}
