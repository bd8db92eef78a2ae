//! How far the integer network drifts from the float one, layer by layer: the
//! signal-to-quantization-noise ratio of each quantized layer's output, dequantized,
//! against the float network's tensor at the same place.

use crate::range::sqnr_db;
use crate::{GraphTaps, QuantGraph, QuantModel, QuantOp, QuantParams, Taps};

/// SQNR (dB) of the outputs of conv1 (after pool), conv2 (after pool), fc1 and fc2
/// (the logits), each against its float counterpart.
///
/// `float` holds, for the same images in the same order, the float network's input of conv2
/// `[n, 20, 12, 12]`, input of fc1 `[n, 800]`, input of fc2 `[n, 500]` and logits `[n, 10]`.
/// Pooled and hidden codes dequantize as `S_out·(q − Z_out)`; the logits come from fc2's
/// accumulators, `S_in·S_w[o]·acc[o]`, which carry no output rounding. Errors accumulate:
/// each figure includes the noise of every layer before it.
pub fn layer_sqnr_db(model: &QuantModel, taps: &Taps, float: [&[f32]; 4]) -> [f64; 4] {
    let [conv1, conv2, fc1, fc2] = model.layers();
    let dequantize = |codes: &[u8], layer: &crate::QuantLayer| -> Vec<f32> {
        codes.iter().map(|&q| layer.output.dequantize(q)).collect()
    };
    let classes = fc2.bias.len();
    let logits: Vec<f32> = taps
        .output
        .fc2_acc
        .iter()
        .enumerate()
        .map(|(i, &acc)| {
            let scale = f64::from(fc2.input.scale()) * f64::from(fc2.weight_scales[i % classes]);
            (scale * f64::from(acc)) as f32
        })
        .collect();
    [
        sqnr_db(float[0], &dequantize(&taps.pool1_out, conv1)),
        sqnr_db(float[1], &dequantize(&taps.pool2_out, conv2)),
        sqnr_db(float[2], &dequantize(&taps.fc1_out, fc1)),
        sqnr_db(float[3], &logits),
    ]
}

/// SQNR (dB) of every quantization point of a graph (in execution order, by step name), its
/// dequantized codes against `float`'s tensor of the same name (the float network's output of
/// that step after batch norm and activation, same images, NCHW); the last layer from its
/// accumulators `S_in·S_w[o]·acc[o]`. Cumulative, as [`layer_sqnr_db`]. A point missing from
/// `float` is skipped.
pub fn graph_sqnr_db(
    graph: &QuantGraph,
    taps: &GraphTaps,
    float: &[(String, Vec<f32>)],
) -> Vec<(String, f64)> {
    fn grids(
        ops: &[QuantOp],
        steps: &[burnq_arch::arch::Step],
        out: &mut Vec<(String, QuantParams)>,
    ) {
        for (op, step) in ops.iter().zip(steps) {
            match (op, &step.op) {
                (QuantOp::Conv2d { layer, .. } | QuantOp::Linear(layer), _) => {
                    out.push((step.name.clone(), layer.output))
                }
                (QuantOp::Residual { body, add }, burnq_arch::arch::Op::Residual(inner)) => {
                    grids(body, inner, out);
                    out.push((step.name.clone(), add.output));
                }
                _ => {}
            }
        }
    }
    let mut points = Vec::new();
    grids(graph.ops(), &graph.plan().steps, &mut points);
    let last = graph.logit_layer();
    let classes = last.bias.len().max(1);
    points
        .iter()
        .filter_map(|(name, grid)| {
            let reference = &float.iter().find(|(n, _)| n == name)?.1;
            let approx: Vec<f32> = if *name == last.name {
                let s_in = f64::from(last.input.scale());
                taps.output
                    .fc2_acc
                    .iter()
                    .enumerate()
                    .map(|(i, &acc)| {
                        (s_in * f64::from(last.weight_scales[i % classes]) * f64::from(acc)) as f32
                    })
                    .collect()
            } else {
                let codes = &taps.codes.iter().find(|(n, _)| n == name)?.1;
                codes.iter().map(|&q| grid.dequantize(q)).collect()
            };
            (approx.len() == reference.len()).then(|| (name.clone(), sqnr_db(reference, &approx)))
        })
        .collect()
}
