//! Fixtures shared by the integration tests and benchmarks of every burnq crate, used as a
//! dev-dependency only: a small deterministic random generator, a randomly initialized float
//! network of the tutorial architecture, the golden vectors ([`golden`]), a saved model file
//! ([`model_file`]), the corruptions of the hostile-input tests ([`mutation`], [`json_edit`])
//! and whether ONNX Runtime can run here ([`onnxruntime`]).
//!
//! Like `burnq-quant`, whose tests use it, this crate knows nothing of Burn.

pub mod golden;
pub mod graph;
pub mod json_edit;
pub mod model_file;
pub mod mutation;
pub mod onnxruntime;

use burnq_quant::{ARCHITECTURE, FloatLayer, FloatNetwork};

/// The largest `|a[i] − b[i]|` of two equally long arrays (0 when empty).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "arrays of different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// SplitMix64: deterministic, good enough for test data.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[-a, a)`.
    pub fn symmetric(&mut self, a: f32) -> f32 {
        a * (2.0 * self.unit() - 1.0)
    }
}

/// The tutorial architecture with He-uniform weights `U(±√(6/fan_in))` and biases `U(±0.1)`.
pub fn random_network(seed: u64) -> FloatNetwork {
    let mut rng = Rng::new(seed);
    let layers = ARCHITECTURE.map(|(_, kind)| {
        let a = (6.0 / kind.fan_in() as f32).sqrt();
        let weights = (0..kind.out_channels() * kind.fan_in())
            .map(|_| rng.symmetric(a))
            .collect();
        let bias = (0..kind.out_channels())
            .map(|_| rng.symmetric(0.1))
            .collect();
        FloatLayer {
            kind,
            weights,
            bias,
        }
    });
    FloatNetwork::new(layers).expect("random network has the tutorial shapes")
}
