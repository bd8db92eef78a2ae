//! Golden check against an independent implementation of the same integer arithmetic
//! (`shared/golden/mnist-int8-per-tensor-64.safetensors`, see its README): build the layers
//! from its `qm.*` parameters, run the reference engine from its `out.q_in`, and compare every
//! intermediate tensor exactly. A missing file fails the test.

use burnq_quant::{IMAGE_PIXELS, load, save};
use burnq_testkit::golden::{self, Golden, N};

#[test]
fn reference_engine_matches_golden_vectors() {
    let bytes = golden::read();
    let g = Golden::parse(&bytes);
    let model = g.model();
    let logits = g.f64s("out.logits");
    let logit_params = model.logit_params();

    let q_in = g.u8s("out.q_in");
    assert_eq!(q_in.len(), N * IMAGE_PIXELS);
    let taps = model.forward_reference_taps(&q_in, N).unwrap();
    assert_eq!(taps.conv1_acc, g.i32s("out.conv1_acc"), "conv1_acc");
    assert_eq!(taps.conv1_out, g.u8s("out.conv1_out"), "conv1_out");
    assert_eq!(taps.pool1_out, g.u8s("out.pool1_out"), "pool1_out");
    assert_eq!(taps.conv2_acc, g.i32s("out.conv2_acc"), "conv2_acc");
    assert_eq!(taps.conv2_out, g.u8s("out.conv2_out"), "conv2_out");
    assert_eq!(taps.pool2_out, g.u8s("out.pool2_out"), "pool2_out");
    assert_eq!(taps.fc1_acc, g.i32s("out.fc1_acc"), "fc1_acc");
    assert_eq!(taps.fc1_out, g.u8s("out.fc1_out"), "fc1_out");
    assert_eq!(taps.output.fc2_acc, g.i32s("out.fc2_acc"), "fc2_acc");
    assert_eq!(taps.output.predictions, g.predictions(), "pred");

    // The golden logits are fc2_acc · s_b; the u8 logits are within about one step of them.
    let deq = model.dequantize_logits(&taps.output.logits_u8);
    let worst = deq
        .iter()
        .zip(&logits)
        .map(|(&q, &f)| (f64::from(q) - f).abs() / f64::from(logit_params.scale()))
        .fold(0.0, f64::max);
    assert!(worst <= 1.0, "u8 logits off by {worst} steps");

    // The file format keeps the non-folded golden model bit for bit.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("golden.burnq.safetensors");
    save(&model, &file).unwrap();
    let loaded = load(&file).unwrap();
    assert_eq!(loaded, model);
    assert_eq!(loaded.forward_reference(&q_in, N).unwrap(), taps.output);
}
