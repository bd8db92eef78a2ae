//! The golden vectors (`shared/golden/mnist-int8-per-tensor-64.safetensors`, see its README):
//! an independent implementation's parameters, inputs and every intermediate tensor.
//!
//! The file is found in `$BURNQ_GOLDEN_DIR`, else in the repository's sibling `shared/golden/`.
//! A missing file fails the test that reads it.

use std::path::PathBuf;

use burnq_quant::{
    ARCHITECTURE, ConvertOptions, LayerKind, QuantLayer, QuantModel, QuantParams,
    quantize_multiplier,
};
use safetensors::{Dtype, SafeTensors};

/// The golden file's name.
pub const FILE: &str = "mnist-int8-per-tensor-64.safetensors";
/// Images in the golden file.
pub const N: usize = 64;

fn path() -> PathBuf {
    let dir = std::env::var_os("BURNQ_GOLDEN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/golden"),
        PathBuf::from,
    );
    dir.join(FILE)
}

/// The golden file's bytes; panics with a hint if it cannot be read.
pub fn read() -> Vec<u8> {
    let path = path();
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is required but unreadable ({e}); set BURNQ_GOLDEN_DIR to the folder holding {FILE}",
            path.display()
        )
    })
}

/// The golden model ([`Golden::model`] of the file [`read`] returns).
pub fn model() -> QuantModel {
    Golden::parse(&read()).model()
}

/// Typed access to the golden tensors; every accessor checks the dtype.
#[derive(Debug)]
pub struct Golden<'a>(SafeTensors<'a>);

impl<'a> Golden<'a> {
    /// Parses the bytes [`read`] returned.
    pub fn parse(bytes: &'a [u8]) -> Self {
        Self(SafeTensors::deserialize(bytes).expect("golden file parses"))
    }

    fn bytes(&self, name: &str, dtype: Dtype) -> &[u8] {
        let view = self
            .0
            .tensor(name)
            .unwrap_or_else(|e| panic!("golden tensor {name}: {e}"));
        assert_eq!(view.dtype(), dtype, "golden tensor {name} dtype");
        view.data()
    }

    pub fn u8s(&self, name: &str) -> Vec<u8> {
        self.bytes(name, Dtype::U8).to_vec()
    }

    pub fn i32s(&self, name: &str) -> Vec<i32> {
        self.bytes(name, Dtype::I32)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn i64s_as_i32(&self, name: &str) -> Vec<i32> {
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

    pub fn f64s(&self, name: &str) -> Vec<f64> {
        self.bytes(name, Dtype::F64)
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn scalar_i32(&self, name: &str) -> i32 {
        self.i64s_as_i32(name)[0]
    }

    /// The golden predictions.
    pub fn predictions(&self) -> Vec<u8> {
        self.i64s_as_i32("out.pred")
            .iter()
            .map(|&p| u8::try_from(p).unwrap())
            .collect()
    }

    /// The golden model. fc2 has no output parameters in the file (its accumulators are the
    /// result); `u8` logits need some, so they cover the range of the golden logits.
    pub fn model(&self) -> QuantModel {
        let logits = self.f64s("out.logits");
        let (lo, hi) = logits
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let logit_params = QuantParams::from_range(lo as f32, hi as f32, 8).unwrap();
        let layers = ARCHITECTURE
            .map(|(name, kind)| self.layer(name, kind, (name == "fc2").then_some(logit_params)));
        QuantModel::new(ConvertOptions::uniform(8), layers, None)
            .expect("golden parameters validate")
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
            weight_bits: bits,
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
