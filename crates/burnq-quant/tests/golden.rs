//! Golden check against an independent implementation of the same integer arithmetic
//! (`shared/golden/mnist-int8-per-tensor-64.safetensors`, see its README): build the layers
//! from its `qm.*` parameters, run the reference engine from its `out.q_in`, and compare every
//! intermediate tensor exactly.
//!
//! The file is found in `$BURNQ_GOLDEN_DIR`, else in the repository's sibling `shared/golden/`.
//! A missing file fails the test.

use std::path::PathBuf;

use burnq_quant::{
    ARCHITECTURE, IMAGE_PIXELS, LayerKind, QuantLayer, QuantModel, QuantParams, load,
    quantize_multiplier, save,
};
use safetensors::{Dtype, SafeTensors};

const FILE: &str = "mnist-int8-per-tensor-64.safetensors";
const N: usize = 64;

fn golden_path() -> PathBuf {
    let dir = std::env::var_os("BURNQ_GOLDEN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        PathBuf::from,
    );
    dir.join(FILE)
}

/// Typed access to the golden tensors; every accessor checks the dtype.
struct Golden<'a>(SafeTensors<'a>);

impl Golden<'_> {
    fn bytes(&self, name: &str, dtype: Dtype) -> &[u8] {
        let view = self
            .0
            .tensor(name)
            .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
        assert_eq!(view.dtype(), dtype, "golden tensor {name} dtype");
        view.data()
    }

    fn u8s(&self, name: &str) -> Vec<u8> {
        self.bytes(name, Dtype::U8).to_vec()
    }

    fn i32s(&self, name: &str) -> Vec<i32> {
        self.bytes(name, Dtype::I32)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn i64s_as_i32(&self, name: &str) -> Vec<i32> {
        self.bytes(name, Dtype::I64)
            .chunks_exact(8)
            .map(|c| {
                let v = i64::from_le_bytes(c.try_into().unwrap());
                i32::try_from(v).unwrap_or_else(|_| panic!("{name}: {v} does not fit i32"))
            })
            .collect()
    }

    fn f32s(&self, name: &str) -> Vec<f32> {
        self.bytes(name, Dtype::F32)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn f64s(&self, name: &str) -> Vec<f64> {
        self.bytes(name, Dtype::F64)
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn scalar_i32(&self, name: &str) -> i32 {
        self.i64s_as_i32(name)[0]
    }

    /// The golden layer `name`; `logits` supplies the output parameters fc2 lacks there.
    fn layer(&self, name: &str, kind: LayerKind, logits: Option<QuantParams>) -> QuantLayer {
        let t = |field: &str| format!("qm.{name}.{field}");
        let bits = self.scalar_i32("qm.num_bits") as u8;
        let input =
            QuantParams::new(self.f32s(&t("s_in"))[0], self.scalar_i32(&t("z_in")), bits).unwrap();
        let weight_scales = self.f32s(&t("s_w"));
        let out = kind.out_channels();
        let (output, m0, shift, act_min, act_max) = match logits {
            None => (
                QuantParams::new(
                    self.f32s(&t("s_out"))[0],
                    self.scalar_i32(&t("z_out")),
                    bits,
                )
                .unwrap(),
                self.i64s_as_i32(&t("m0")),
                self.i64s_as_i32(&t("shift")),
                self.scalar_i32(&t("act_min")) as u8,
                self.scalar_i32(&t("act_max")) as u8,
            ),
            Some(p) => {
                let m =
                    f64::from(input.scale()) * f64::from(weight_scales[0]) / f64::from(p.scale());
                let (m0, shift) = quantize_multiplier(m).unwrap();
                (p, vec![m0; out], vec![shift; out], 0, p.qmax() as u8)
            }
        };
        QuantLayer {
            name: name.to_owned(),
            kind,
            weights: self.u8s(&t("q_w")),
            weight_zero_points: self.i64s_as_i32(&t("z_w")),
            weight_scales,
            bias: self.i64s_as_i32(&t("q_b")),
            input,
            output,
            m0,
            shift,
            act_min,
            act_max,
        }
    }
}

#[test]
fn reference_engine_matches_golden_vectors() {
    let path = golden_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is required but unreadable ({e}); set BURNQ_GOLDEN_DIR to the folder holding {FILE}",
            path.display()
        )
    });
    let g = Golden(SafeTensors::deserialize(&bytes).expect("golden file parses"));

    // fc2 has no output parameters in the golden file (its accumulators are the result);
    // u8 logits need some, so take the range of the golden logits.
    let logits = g.f64s("out.logits");
    let (lo, hi) = logits
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let logit_params = QuantParams::from_range(lo as f32, hi as f32, 8).unwrap();
    let layers = ARCHITECTURE
        .map(|(name, kind)| g.layer(name, kind, (name == "fc2").then_some(logit_params)));
    let model = QuantModel::new(8, layers, None).expect("golden parameters validate");

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
    let pred: Vec<usize> = g
        .i64s_as_i32("out.pred")
        .iter()
        .map(|&p| usize::try_from(p).unwrap())
        .collect();
    assert_eq!(taps.output.predictions, pred, "pred");

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
