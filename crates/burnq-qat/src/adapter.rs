//! The Burn → integer weight adapter: the float model's layers as the plain arrays the
//! converter takes ([`FloatNetwork`]), so `burnq-quant` never sees Burn.

use burnq_model::Net;
use burnq_quant::{ARCHITECTURE, FloatLayer, FloatNetwork};

use crate::QatError;

/// The float model's four layers as plain `f32` arrays (PyTorch layouts: conv OIHW, linear
/// out × in), checked against the integer network's [`ARCHITECTURE`].
pub fn float_network(model: &Net) -> Result<FloatNetwork, QatError> {
    let exported = model.export_weights();
    if exported.len() != ARCHITECTURE.len() {
        return Err(QatError::LayerOrder {
            index: exported.len().min(ARCHITECTURE.len()),
            found: exported
                .get(ARCHITECTURE.len())
                .map_or("nothing", |l| l.name),
            expected: ARCHITECTURE.get(exported.len()).map_or("nothing", |a| a.0),
        });
    }
    let mut layers = Vec::with_capacity(ARCHITECTURE.len());
    for (index, (layer, (name, kind))) in exported.into_iter().zip(ARCHITECTURE).enumerate() {
        if layer.name != name {
            return Err(QatError::LayerOrder {
                index,
                found: layer.name,
                expected: name,
            });
        }
        layers.push(FloatLayer {
            kind,
            weights: layer.weight,
            bias: layer.bias,
        });
    }
    let layers: [FloatLayer; 4] = layers
        .try_into()
        .unwrap_or_else(|_| unreachable!("the lengths were checked above"));
    FloatNetwork::new(layers).map_err(QatError::Weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burnq_model::{Device, NetConfig};

    #[test]
    fn the_tutorial_network_adapts_with_its_shapes() {
        let net = NetConfig::new().init(&Device::flex());
        let float = float_network(&net).unwrap();
        for (layer, (_, kind)) in float.layers().iter().zip(ARCHITECTURE) {
            assert_eq!(layer.kind, kind);
            assert_eq!(layer.weights.len(), kind.out_channels() * kind.fan_in());
            assert_eq!(layer.bias.len(), kind.out_channels());
        }
    }
}
