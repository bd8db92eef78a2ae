//! The quantized tutorial network ([`QuantModel`]) and its reference forward pass:
//! conv1 1→20 k5 → ReLU → max-pool 2 → conv2 20→50 k5 → ReLU → max-pool 2 → flatten 800
//! (C, H, W order) → fc1 800→500 → ReLU → fc2 500→10.
//!
//! Each ReLU is folded into its layer's output clamp; each max-pool runs on `u8` codes and keeps
//! the parameters of its input, so layer `i + 1`'s input parameters equal layer `i`'s output
//! parameters. fc2's output parameters are the logit parameters: they only turn the fc2
//! accumulators into `u8` logits; predictions compare the accumulators themselves, scaled
//! exactly by each channel's weight scale ([`reference::predict`]).
//!
//! Each layer has its own widths ([`QuantLayer::bits`]: `weight_bits`-bit weights,
//! `output.bits()`-bit outputs, so a layer's input has its predecessor's activation width); the
//! model's [`ConvertOptions`] record the widest of them (for a model of one width, that width)
//! and the granularity. conv1 reads the 8-bit pixels when the normalization is folded, any
//! valid width otherwise.

use crate::{
    ConvertOptions, LayerKind, Normalization, QuantError, QuantLayer, QuantParams, reference,
};

/// Side of an input image, in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per input image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (fc2 outputs).
pub const NUM_CLASSES: usize = 10;

const KERNEL: usize = 5;
const CONV1_SIDE: usize = IMAGE_SIDE - KERNEL + 1; // 24
pub(crate) const POOL1_SIDE: usize = CONV1_SIDE / 2; // 12
const CONV2_SIDE: usize = POOL1_SIDE - KERNEL + 1; // 8
const POOL2_SIDE: usize = CONV2_SIDE / 2; // 4

/// Layer names and geometries of the tutorial network, in order.
pub const ARCHITECTURE: [(&str, LayerKind); 4] = [
    (
        "conv1",
        LayerKind::Conv2d {
            in_channels: 1,
            out_channels: 20,
            kernel: KERNEL,
        },
    ),
    (
        "conv2",
        LayerKind::Conv2d {
            in_channels: 20,
            out_channels: 50,
            kernel: KERNEL,
        },
    ),
    (
        "fc1",
        LayerKind::Linear {
            in_features: 50 * POOL2_SIDE * POOL2_SIDE,
            out_features: 500,
        },
    ),
    (
        "fc2",
        LayerKind::Linear {
            in_features: 500,
            out_features: NUM_CLASSES,
        },
    ),
];

/// The tutorial network's layer names, in order: the names its per-layer widths are given by.
pub fn tutorial_layer_names() -> [&'static str; 4] {
    ARCHITECTURE.map(|(name, _)| name)
}

/// The final results of a forward pass over `n` images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// fc2 accumulators `[n, 10]`, bias included (scale `S_in·S_w`, zero point 0).
    pub fc2_acc: Vec<i32>,
    /// fc2 accumulators requantized with the logit parameters, `[n, 10]`.
    pub logits_u8: Vec<u8>,
    /// The class with the largest real logit `S_in·S_w[o]·acc[o]` per row ([`reference::predict`]:
    /// the argmax of `fc2_acc` for per-tensor weights), the lowest index on ties.
    pub predictions: Vec<u8>,
}

/// Every intermediate tensor of a forward pass over `n` images (NCHW, or `[n, features]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taps {
    /// conv1 accumulators `[n, 20, 24, 24]`.
    pub conv1_acc: Vec<i32>,
    /// conv1 output codes after requantization and ReLU, `[n, 20, 24, 24]`.
    pub conv1_out: Vec<u8>,
    /// `[n, 20, 12, 12]`.
    pub pool1_out: Vec<u8>,
    /// conv2 accumulators `[n, 50, 8, 8]`.
    pub conv2_acc: Vec<i32>,
    /// `[n, 50, 8, 8]`.
    pub conv2_out: Vec<u8>,
    /// `[n, 50, 4, 4]`, which is also the flattened `[n, 800]` in C, H, W order.
    pub pool2_out: Vec<u8>,
    /// fc1 accumulators `[n, 500]`.
    pub fc1_acc: Vec<i32>,
    /// `[n, 500]`.
    pub fc1_out: Vec<u8>,
    /// fc2 accumulators, `u8` logits and predictions.
    pub output: Output,
}

/// The validated quantized network: layers `[conv1, conv2, fc1, fc2]` quantized as its
/// [`ConvertOptions`] say (weight and activation bit widths, per-tensor or per-channel weights).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantModel {
    options: ConvertOptions,
    layers: [QuantLayer; 4],
    input_normalization: Option<Normalization>,
}

impl QuantModel {
    /// Builds and validates a model.
    ///
    /// `input_normalization` is `Some` when that normalization was folded into conv1, whose
    /// input must then be [`QuantParams::RAW_PIXELS`]; with `None` conv1 takes any input
    /// parameters. Checks: valid `options`, names and geometries of [`ARCHITECTURE`], every
    /// [`QuantLayer::validate`] (its own bit widths, per-tensor uniformity unless
    /// `options.per_channel`, the accumulator overflow bound), that `options`' widths are the
    /// widest of the layers' ([`ConvertOptions::widest`]), and that each layer's input
    /// parameters equal the previous layer's output parameters.
    pub fn new(
        options: ConvertOptions,
        layers: [QuantLayer; 4],
        input_normalization: Option<Normalization>,
    ) -> Result<Self, QuantError> {
        options.check()?;
        for (layer, (name, kind)) in layers.iter().zip(ARCHITECTURE) {
            if layer.name != name || layer.kind != kind {
                return Err(QuantError::InvalidValue {
                    what: format!("layer {}", layer.name),
                    reason: format!("{:?}, expected {name} {kind:?}", layer.kind),
                });
            }
        }
        for pair in layers.windows(2) {
            if pair[1].input != pair[0].output {
                return Err(QuantError::InvalidValue {
                    what: format!("{} input parameters", pair[1].name),
                    reason: format!(
                        "{:?} differ from {} output parameters {:?}",
                        pair[1].input, pair[0].name, pair[0].output
                    ),
                });
            }
        }
        if let Some(norm) = input_normalization {
            norm.check()?;
            if layers[0].input != QuantParams::RAW_PIXELS {
                return Err(QuantError::InvalidValue {
                    what: "conv1 input parameters".into(),
                    reason: format!(
                        "{:?}, but a folded normalization needs raw pixels {:?}",
                        layers[0].input,
                        QuantParams::RAW_PIXELS
                    ),
                });
            }
        }
        for layer in &layers {
            layer.validate(options.per_channel)?;
        }
        check_widest(options, widest(options.per_channel, &layers))?;
        Ok(Self {
            options,
            layers,
            input_normalization,
        })
    }

    /// [`QuantModel::new`] with the options the layers span: `per_channel` and the widest
    /// of their widths.
    pub fn spanning(
        per_channel: bool,
        layers: [QuantLayer; 4],
        input_normalization: Option<Normalization>,
    ) -> Result<Self, QuantError> {
        let options = widest(per_channel, &layers);
        Self::new(options, layers, input_normalization)
    }

    /// The widest widths of the layers, and the weight granularity.
    pub fn options(&self) -> ConvertOptions {
        self.options
    }

    /// Bit width of the widest weight codes (of every layer's, unless widths differ per layer).
    pub fn weight_bits(&self) -> u8 {
        self.options.weight_bits
    }

    /// Bit width of the widest activation codes (of every layer's output, the logits
    /// included, unless widths differ per layer).
    pub fn act_bits(&self) -> u8 {
        self.options.act_bits
    }

    /// Whether some layer's widths differ from another's.
    pub fn is_mixed(&self) -> bool {
        let first = self.layers[0].bits();
        self.layers.iter().any(|l| l.bits() != first)
    }

    /// Whether each output channel has its own weight scale, zero point and multiplier.
    pub fn per_channel(&self) -> bool {
        self.options.per_channel
    }

    /// The layers, `[conv1, conv2, fc1, fc2]`.
    pub fn layers(&self) -> &[QuantLayer; 4] {
        &self.layers
    }

    /// conv1's input parameters: how image bytes are read.
    pub fn input_params(&self) -> QuantParams {
        self.layers[0].input
    }

    /// fc2's output parameters, used to produce `u8` logits.
    pub fn logit_params(&self) -> QuantParams {
        self.layers[3].output
    }

    /// The normalization folded into conv1, if any.
    pub fn input_normalization(&self) -> Option<Normalization> {
        self.input_normalization
    }

    /// Runs the reference engine on `n` images of 28×28 codes (`n·784` bytes, read with
    /// [`QuantModel::input_params`]; with a folded normalization these are the raw pixels).
    pub fn forward_reference(&self, images: &[u8], n: usize) -> Result<Output, QuantError> {
        Ok(self.forward_reference_taps(images, n)?.output)
    }

    /// [`QuantModel::forward_reference`], keeping every intermediate tensor.
    pub fn forward_reference_taps(&self, images: &[u8], n: usize) -> Result<Taps, QuantError> {
        let [conv1, conv2, fc1, fc2] = &self.layers;
        check_images(conv1.input, images, n)?;
        let conv1_acc = reference::conv2d(conv1, images, n, IMAGE_SIDE, IMAGE_SIDE)?;
        let conv1_out = reference::requantize(conv1, &conv1_acc, CONV1_SIDE * CONV1_SIDE)?;
        let pool1_out = reference::max_pool_2x2(&conv1_out, n * 20, CONV1_SIDE, CONV1_SIDE)?;
        let conv2_acc = reference::conv2d(conv2, &pool1_out, n, POOL1_SIDE, POOL1_SIDE)?;
        let conv2_out = reference::requantize(conv2, &conv2_acc, CONV2_SIDE * CONV2_SIDE)?;
        let pool2_out = reference::max_pool_2x2(&conv2_out, n * 50, CONV2_SIDE, CONV2_SIDE)?;
        let fc1_acc = reference::linear(fc1, &pool2_out, n)?;
        let fc1_out = reference::requantize(fc1, &fc1_acc, 1)?;
        let fc2_acc = reference::linear(fc2, &fc1_out, n)?;
        let logits_u8 = reference::requantize(fc2, &fc2_acc, 1)?;
        let requants: Vec<_> = fc2.requants().collect();
        let predictions = fc2_acc
            .chunks_exact(NUM_CLASSES)
            .filter_map(|row| reference::predict(row, &requants))
            .collect();
        Ok(Taps {
            conv1_acc,
            conv1_out,
            pool1_out,
            conv2_acc,
            conv2_out,
            pool2_out,
            fc1_acc,
            fc1_out,
            output: Output {
                fc2_acc,
                logits_u8,
                predictions,
            },
        })
    }

    /// Real logits `S_logit·(q − Z_logit)` of `u8` logits.
    pub fn dequantize_logits(&self, logits: &[u8]) -> Vec<f32> {
        let p = self.logit_params();
        logits.iter().map(|&q| p.dequantize(q)).collect()
    }

    /// Class probabilities of each `[n, 10]` row of u8 logits ([`class_probabilities`]).
    pub fn class_probabilities(&self, logits: &[u8]) -> Vec<f32> {
        class_probabilities(self.logit_params(), NUM_CLASSES, logits)
    }
}

/// The options `layers` span: `per_channel` and their widest widths.
fn widest(per_channel: bool, layers: &[QuantLayer]) -> ConvertOptions {
    ConvertOptions::widest(
        per_channel,
        layers.iter().map(|l| l.weight_bits),
        layers.iter().map(|l| l.output.bits()),
    )
}

/// Checks that a model's `declared` options are the `widest` of its layers (and adds):
/// what a model records ([`ConvertOptions::widest`]).
pub(crate) fn check_widest(
    declared: ConvertOptions,
    widest: ConvertOptions,
) -> Result<(), QuantError> {
    if widest != declared {
        return Err(QuantError::InvalidValue {
            what: "model widths".into(),
            reason: format!(
                "declared w{}a{}, but the widest layer widths are w{}a{}",
                declared.weight_bits, declared.act_bits, widest.weight_bits, widest.act_bits
            ),
        });
    }
    Ok(())
}

/// Class probabilities of each `[n, classes]` row of u8 logits on the grid `params`: the
/// softmax of the dequantized logits (float, for reporting; the prediction itself stays
/// integer).
pub fn class_probabilities(params: QuantParams, classes: usize, logits: &[u8]) -> Vec<f32> {
    let real: Vec<f32> = logits.iter().map(|&q| params.dequantize(q)).collect();
    real.chunks(classes.max(1))
        .flat_map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(move |e| e / sum)
        })
        .collect()
}

/// The first code of `codes` above `qmax`, if any: none when `qmax ≥ 255`, else the maximum
/// first (a fold that vectorizes), the offending code only if there is one.
pub(crate) fn code_above(codes: &[u8], qmax: i32) -> Option<u8> {
    if qmax >= i32::from(u8::MAX) || i32::from(codes.iter().fold(0, |m: u8, &q| m.max(q))) <= qmax {
        return None;
    }
    codes.iter().copied().find(|&q| i32::from(q) > qmax)
}

/// Checks that `images` holds `n` images of 28×28 codes, each at most `input`'s `qmax`: the
/// precondition of every engine's forward pass.
pub(crate) fn check_images(input: QuantParams, images: &[u8], n: usize) -> Result<(), QuantError> {
    let expected = n.checked_mul(IMAGE_PIXELS);
    if expected != Some(images.len()) {
        return Err(QuantError::ShapeMismatch {
            what: format!("input images [{n}, 1, {IMAGE_SIDE}, {IMAGE_SIDE}]"),
            expected: expected.unwrap_or(usize::MAX),
            found: images.len(),
        });
    }
    let qmax_in = input.qmax();
    if let Some(q) = code_above(images, qmax_in) {
        return Err(QuantError::CodeAboveQmax {
            what: "input images".into(),
            code: q,
            qmax: qmax_in,
            bits: input.bits(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        convert,
        fixedpoint::quantize_multiplier,
        test_support::{pattern_network, pattern_ranges},
    };

    fn model() -> QuantModel {
        convert(
            &pattern_network(),
            &pattern_ranges(),
            Normalization::MNIST,
            8,
        )
        .unwrap()
    }

    fn images(n: usize) -> Vec<u8> {
        (0..n * IMAGE_PIXELS)
            .map(|i| ((i * 31 + i / 97) % 256) as u8)
            .collect()
    }

    #[test]
    fn forward_shapes_and_consistency() {
        let model = model();
        let n = 3;
        let taps = model.forward_reference_taps(&images(n), n).unwrap();
        assert_eq!(taps.conv1_acc.len(), n * 20 * 24 * 24);
        assert_eq!(taps.conv1_out.len(), n * 20 * 24 * 24);
        assert_eq!(taps.pool1_out.len(), n * 20 * 12 * 12);
        assert_eq!(taps.conv2_acc.len(), n * 50 * 8 * 8);
        assert_eq!(taps.conv2_out.len(), n * 50 * 8 * 8);
        assert_eq!(taps.pool2_out.len(), n * 800);
        assert_eq!(taps.fc1_acc.len(), n * 500);
        assert_eq!(taps.fc1_out.len(), n * 500);
        let out = &taps.output;
        assert_eq!((out.fc2_acc.len(), out.logits_u8.len()), (n * 10, n * 10));
        assert_eq!(out.predictions.len(), n);
        let probs = model.class_probabilities(&out.logits_u8);
        for row in probs.chunks(10) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        for (row, &p) in out.fc2_acc.chunks(10).zip(&out.predictions) {
            let p = usize::from(p);
            assert_eq!(row.iter().max(), Some(&row[p]));
            assert!(row[..p].iter().all(|&v| v < row[p]));
        }
        // ReLU folded into the clamp: no output code below the zero point.
        let z = model.layers()[0].output.zero_point();
        assert!(taps.conv1_out.iter().all(|&q| i32::from(q) >= z));
        assert_eq!(model.forward_reference(&images(n), n).unwrap(), taps.output);
        // Images are independent of their batch.
        let second = model
            .forward_reference(&images(n)[IMAGE_PIXELS..2 * IMAGE_PIXELS], 1)
            .unwrap();
        assert_eq!(second.fc2_acc, out.fc2_acc[10..20]);
        let real = model.dequantize_logits(&out.logits_u8);
        let p = model.logit_params();
        assert_eq!(
            real[0],
            p.scale() * (i32::from(out.logits_u8[0]) - p.zero_point()) as f32
        );
    }

    #[test]
    fn forward_checks_input() {
        let model = model();
        assert!(matches!(
            model.forward_reference(&images(2)[1..], 2),
            Err(QuantError::ShapeMismatch {
                expected: 1568,
                found: 1567,
                ..
            })
        ));
        assert!(matches!(
            model.forward_reference(&[], usize::MAX),
            Err(QuantError::ShapeMismatch { .. })
        ));
        let empty = model.forward_reference(&[], 0).unwrap();
        assert!(empty.predictions.is_empty());
        // A 4-bit input rejects codes above 15.
        let [mut conv1, conv2, fc1, fc2] = model.layers().clone();
        conv1.input = QuantParams::new(1.0 / 15.0, 0, 4).unwrap();
        let m = f64::from(conv1.input.scale()) * f64::from(conv1.weight_scales[0])
            / f64::from(conv1.output.scale());
        let (m0, shift) = quantize_multiplier(m).unwrap();
        conv1.m0.fill(m0);
        conv1.shift.fill(shift);
        let four_bit_input =
            QuantModel::new(model.options(), [conv1, conv2, fc1, fc2], None).unwrap();
        let dark = vec![15; IMAGE_PIXELS];
        assert!(four_bit_input.forward_reference(&dark, 1).is_ok());
        assert!(matches!(
            four_bit_input.forward_reference(&images(1), 1),
            Err(QuantError::CodeAboveQmax {
                qmax: 15,
                bits: 4,
                ..
            })
        ));
    }

    #[test]
    fn new_checks_structure() {
        let model = model();
        let norm = model.input_normalization();
        let rebuild = |edit: fn(&mut [QuantLayer; 4])| {
            let mut layers = model.layers().clone();
            edit(&mut layers);
            QuantModel::new(model.options(), layers, norm)
        };
        assert_eq!(rebuild(|_| ()).unwrap(), model);
        assert!(matches!(
            rebuild(|l| l.swap(2, 3)),
            Err(QuantError::InvalidValue { .. })
        ));
        assert!(matches!(
            rebuild(|l| l[1].name = "conv9".into()),
            Err(QuantError::InvalidValue { .. })
        ));
        assert!(matches!(
            rebuild(|l| l[2].input = QuantParams::new(0.5, 0, 8).unwrap()),
            Err(QuantError::InvalidValue { what, .. }) if what.contains("fc1 input")
        ));
        assert!(matches!(
            rebuild(|l| l[3].bias[0] = i32::MAX),
            Err(QuantError::AccumulatorOverflow { .. })
        ));
        let mut layers = model.layers().clone();
        layers[0].input = QuantParams::new(1.0 / 255.0, 1, 8).unwrap();
        assert!(matches!(
            QuantModel::new(model.options(), layers, norm),
            Err(QuantError::InvalidValue { what, .. }) if what.contains("conv1 input")
        ));
        let with = |options| QuantModel::new(options, model.layers().clone(), norm);
        assert!(matches!(
            with(ConvertOptions::uniform(4)),
            Err(QuantError::InvalidValue { .. })
        ));
        assert!(matches!(
            with(ConvertOptions::uniform(1)),
            Err(QuantError::InvalidBits { bits: 1 })
        ));
        // Per-tensor layers are valid per-channel models too.
        let per_channel = ConvertOptions {
            per_channel: true,
            ..model.options()
        };
        assert_eq!(with(per_channel).unwrap().options(), per_channel);
    }

    #[test]
    fn independent_bit_widths() {
        let options = ConvertOptions {
            weight_bits: 3,
            act_bits: 7,
            per_channel: true,
        };
        let model = convert(
            &pattern_network(),
            &pattern_ranges(),
            Normalization::MNIST,
            options,
        )
        .unwrap();
        assert_eq!((model.weight_bits(), model.act_bits()), (3, 7));
        assert!(model.per_channel());
        assert_eq!(model.input_params().bits(), 8);
        for layer in &model.layers()[1..] {
            assert_eq!((layer.input.bits(), layer.output.bits()), (7, 7));
        }
        let taps = model.forward_reference_taps(&images(2), 2).unwrap();
        for codes in [&taps.conv1_out, &taps.fc1_out, &taps.output.logits_u8] {
            assert!(codes.iter().all(|&q| q <= 127));
        }
        // The widths are not interchangeable.
        let swapped = ConvertOptions {
            weight_bits: 7,
            act_bits: 3,
            ..options
        };
        assert!(
            QuantModel::new(swapped, model.layers().clone(), Some(Normalization::MNIST)).is_err()
        );
    }
}
