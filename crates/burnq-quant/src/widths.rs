//! Per-layer bit widths (mixed precision): each convolution and linear layer may have its own
//! weight width and its own output (activation) width, 2..=8 each.
//!
//! A layer's activation width is the width of the codes it *computes* (its output, after
//! requantization and the folded activation), which is also the width of the next layer's
//! input; the first layer reads the 8-bit pixels whatever the widths. A [`QuantScheme`] is
//! what a conversion is asked for: model-wide [`ConvertOptions`] (the widths of every layer not
//! named, and the weight granularity of all) plus widths by layer name. Each layer is then
//! quantized by the one derivation ([`crate::LayerQuantization::derive`]) under its own
//! options ([`QuantScheme::layer`]).
//!
//! The text form (`--bits-per-layer`), parsed by [`QuantScheme::parse`]: comma-separated
//! entries, either all named `name=W` or all positional (one per layer, in execution order),
//! where each width `W` is `N` (weights and activations `N` bits), `wNaM`, `wN` (weights only)
//! or `aM` (activations only); what an entry leaves out stays at the model-wide width.
//! Examples for the tutorial network: `conv1=w8a8,fc1=w2` or `8,w4a8,2,8`.

use std::collections::BTreeMap;
use std::fmt;

use crate::{ConvertOptions, QuantError, QuantLayer, params::qmax};

/// One layer's widths: weight codes and output codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct LayerBits {
    /// Bit width of the layer's weight codes, 2..=8.
    pub weight_bits: u8,
    /// Bit width of the layer's output codes (its activations), 2..=8.
    pub act_bits: u8,
}

impl fmt::Display for LayerBits {
    /// `w<W>a<A>`, e.g. `w4a8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}a{}", self.weight_bits, self.act_bits)
    }
}

impl LayerBits {
    /// The widths `options` gives every layer.
    pub fn of(options: ConvertOptions) -> Self {
        Self {
            weight_bits: options.weight_bits,
            act_bits: options.act_bits,
        }
    }
}

/// `name=w<W>a<A>` for every layer, comma-separated, in the order given: the canonical text
/// form of a model's widths ([`QuantScheme::parse`] reads it back).
pub fn bits_label<'a>(layers: impl IntoIterator<Item = &'a QuantLayer>) -> String {
    layers
        .into_iter()
        .map(|l| format!("{}={}", l.name, l.bits()))
        .collect::<Vec<_>>()
        .join(",")
}

/// A model's widths in a report: `w<W>a<A>` when every one of its `layers` has the widths of
/// its `options` (one width for the model), else [`bits_label`]'s `name=w<W>a<A>,…`.
pub fn widths_label(options: ConvertOptions, layers: &[&QuantLayer]) -> String {
    if layers.iter().all(|l| l.bits() == LayerBits::of(options)) {
        LayerBits::of(options).to_string()
    } else {
        bits_label(layers.iter().copied())
    }
}

impl ConvertOptions {
    /// The model-level options of layers with the given widths: `per_channel`, and the widest
    /// weight and activation widths among them (for a model of one width, that width). A
    /// model records these next to each layer's own widths.
    pub fn widest(
        per_channel: bool,
        weight_bits: impl IntoIterator<Item = u8>,
        act_bits: impl IntoIterator<Item = u8>,
    ) -> Self {
        Self {
            weight_bits: weight_bits.into_iter().max().unwrap_or(crate::MAX_BITS),
            act_bits: act_bits.into_iter().max().unwrap_or(crate::MAX_BITS),
            per_channel,
        }
    }
}

/// What a conversion is asked for: model-wide options and per-layer widths by layer name.
///
/// `From<ConvertOptions>` (and `From<u8>`, the uniform per-tensor scheme) gives the scheme
/// without per-layer widths, so every conversion taking `impl Into<QuantScheme>` still takes
/// plain options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantScheme {
    /// Widths of every layer not in `layers`, and the weight granularity of all.
    pub defaults: ConvertOptions,
    /// Widths of the named layers.
    pub layers: BTreeMap<String, LayerBits>,
}

impl From<ConvertOptions> for QuantScheme {
    fn from(defaults: ConvertOptions) -> Self {
        Self {
            defaults,
            layers: BTreeMap::new(),
        }
    }
}

impl From<&ConvertOptions> for QuantScheme {
    fn from(defaults: &ConvertOptions) -> Self {
        (*defaults).into()
    }
}

impl From<u8> for QuantScheme {
    fn from(bits: u8) -> Self {
        ConvertOptions::uniform(bits).into()
    }
}

impl From<&QuantScheme> for QuantScheme {
    fn from(scheme: &QuantScheme) -> Self {
        scheme.clone()
    }
}

impl QuantScheme {
    /// The options layer `name` is quantized under: its own widths, or the defaults'.
    pub fn layer(&self, name: &str) -> ConvertOptions {
        let bits = self
            .layers
            .get(name)
            .copied()
            .unwrap_or(LayerBits::of(self.defaults));
        ConvertOptions {
            weight_bits: bits.weight_bits,
            act_bits: bits.act_bits,
            per_channel: self.defaults.per_channel,
        }
    }

    /// Checks every width (2..=8) and that every named layer is one of `names`.
    pub fn check(&self, names: &[&str]) -> Result<(), QuantError> {
        self.defaults.check()?;
        for (name, bits) in &self.layers {
            if !names.contains(&name.as_str()) {
                return Err(QuantError::InvalidBitsPerLayer {
                    spec: format!("{name}={bits}"),
                    reason: format!("no layer {name:?}; the layers are {}", names.join(", ")),
                });
            }
            qmax(bits.weight_bits)?;
            qmax(bits.act_bits)?;
        }
        Ok(())
    }

    /// Parses the text form (module docs) for a network whose convolution and linear layers
    /// are `names`, in execution order, on top of `defaults`. Errors, naming the entry, on an
    /// empty or malformed entry, a width outside 2..=8, an unknown or repeated layer name, a
    /// mix of named and positional entries, and a positional list of the wrong length.
    pub fn parse(defaults: ConvertOptions, spec: &str, names: &[&str]) -> Result<Self, QuantError> {
        let fail = |reason: String| QuantError::InvalidBitsPerLayer {
            spec: spec.to_owned(),
            reason,
        };
        if spec.trim().is_empty() {
            return Err(fail(
                "empty: expected name=W entries or one width per layer".into(),
            ));
        }
        let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
        let named = entries.iter().filter(|e| e.contains('=')).count();
        if named != 0 && named != entries.len() {
            return Err(fail(
                "mixes named (name=W) and positional entries; use one form".into(),
            ));
        }
        if named == 0 && entries.len() != names.len() {
            return Err(fail(format!(
                "{} positional entries for {} layers ({})",
                entries.len(),
                names.len(),
                names.join(", ")
            )));
        }
        let base = LayerBits::of(defaults);
        let mut layers = BTreeMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let (name, widths) = match entry.split_once('=') {
                Some((name, widths)) => (name.trim(), widths.trim()),
                None => (names[i], *entry),
            };
            let bits = parse_widths(widths, base)
                .map_err(|reason| fail(format!("entry {entry:?}: {reason}")))?;
            if layers.insert(name.to_owned(), bits).is_some() {
                return Err(fail(format!("layer {name:?} is given twice")));
            }
        }
        let scheme = Self { defaults, layers };
        scheme.check(names).map_err(|e| match e {
            QuantError::InvalidBitsPerLayer { reason, .. } => fail(reason),
            other => fail(other.to_string()),
        })?;
        Ok(scheme)
    }
}

/// One entry's widths: `N`, `wNaM`, `wN` or `aM`, the missing one from `base`.
fn parse_widths(text: &str, base: LayerBits) -> Result<LayerBits, String> {
    let number = |digits: &str, what: &str| -> Result<u8, String> {
        let bits: u8 = digits
            .parse()
            .map_err(|_| format!("{what} width {digits:?} is not a number"))?;
        qmax(bits).map_err(|_| format!("{what} width {bits} outside 2..=8"))?;
        Ok(bits)
    };
    if text.is_empty() {
        return Err("no width (expected N, wNaM, wN or aM)".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let bits = number(text, "the")?;
        return Ok(LayerBits {
            weight_bits: bits,
            act_bits: bits,
        });
    }
    let (weights, acts) = match text.strip_prefix('w') {
        Some(rest) => match rest.split_once('a') {
            Some((w, a)) => (Some(w), Some(a)),
            None => (Some(rest), None),
        },
        None => match text.strip_prefix('a') {
            Some(a) => (None, Some(a)),
            None => return Err(format!("{text:?} is not N, wNaM, wN or aM")),
        },
    };
    Ok(LayerBits {
        weight_bits: weights.map_or(Ok(base.weight_bits), |w| number(w, "weight"))?,
        act_bits: acts.map_or(Ok(base.act_bits), |a| number(a, "activation"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 4] = ["conv1", "conv2", "fc1", "fc2"];

    fn bits(weight_bits: u8, act_bits: u8) -> LayerBits {
        LayerBits {
            weight_bits,
            act_bits,
        }
    }

    #[test]
    fn named_and_positional_forms() {
        let defaults = ConvertOptions::uniform(8);
        let named = QuantScheme::parse(defaults, "conv2=w4a8, fc1=w2 ,fc2=a6", &NAMES).unwrap();
        assert_eq!(named.layer("conv1"), defaults);
        assert_eq!(LayerBits::of(named.layer("conv2")), bits(4, 8));
        assert_eq!(LayerBits::of(named.layer("fc1")), bits(2, 8));
        assert_eq!(LayerBits::of(named.layer("fc2")), bits(8, 6));
        let positional = QuantScheme::parse(defaults, "8,w4a8,2,a3", &NAMES).unwrap();
        assert_eq!(LayerBits::of(positional.layer("conv1")), bits(8, 8));
        assert_eq!(LayerBits::of(positional.layer("conv2")), bits(4, 8));
        assert_eq!(LayerBits::of(positional.layer("fc1")), bits(2, 2));
        assert_eq!(LayerBits::of(positional.layer("fc2")), bits(8, 3));
        let per_channel = ConvertOptions {
            per_channel: true,
            ..ConvertOptions::uniform(4)
        };
        let s = QuantScheme::parse(per_channel, "fc1=w2", &NAMES).unwrap();
        assert!(s.layer("fc1").per_channel);
        assert_eq!(LayerBits::of(s.layer("fc1")), bits(2, 4));
        assert_eq!(bits(2, 4).to_string(), "w2a4");
    }

    #[test]
    fn bad_specs_are_clear_errors() {
        let defaults = ConvertOptions::uniform(8);
        for (spec, needle) in [
            ("", "empty"),
            ("conv1=", "no width"),
            ("conv1=w9", "weight width 9 outside 2..=8"),
            ("conv1=a1", "activation width 1 outside 2..=8"),
            ("8,8,8", "3 positional entries for 4 layers"),
            ("conv1=4,8", "mixes named"),
            (
                "conv3=4",
                "no layer \"conv3\"; the layers are conv1, conv2, fc1, fc2",
            ),
            ("fc1=4,fc1=2", "given twice"),
            ("fc1=x4", "is not N, wNaM, wN or aM"),
            ("fc1=wa", "weight width \"\" is not a number"),
            ("fc1=w4a", "activation width \"\" is not a number"),
            ("fc1=300", "is not a number"),
        ] {
            let err = QuantScheme::parse(defaults, spec, &NAMES).unwrap_err();
            let message = err.to_string();
            assert!(
                matches!(err, QuantError::InvalidBitsPerLayer { .. }),
                "{spec}"
            );
            assert!(message.contains(needle), "{spec}: {message}");
        }
    }

    #[test]
    fn labels_name_each_layer_only_when_widths_differ() {
        let kind = crate::LayerKind::Linear {
            in_features: 1,
            out_features: 1,
        };
        let mut a = crate::test_support::unit_layer(kind, vec![1], 0, vec![0], 0);
        a.name = "a".into();
        let mut b = a.clone();
        b.name = "b".into();
        let eight = ConvertOptions::uniform(8);
        assert_eq!(widths_label(eight, &[&a, &b]), "w8a8");
        b.weight_bits = 3;
        assert_eq!(widths_label(eight, &[&a, &b]), "a=w8a8,b=w3a8");
        assert_eq!(bits_label([&a, &b]), "a=w8a8,b=w3a8");
    }

    #[test]
    fn widest_spans_the_layers() {
        let o = ConvertOptions::widest(true, [2, 4, 3], [8, 2]);
        assert_eq!((o.weight_bits, o.act_bits, o.per_channel), (4, 8, true));
    }
}
