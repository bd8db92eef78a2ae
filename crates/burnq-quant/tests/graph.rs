//! Any described network through conversion and the reference engine: every preset and
//! randomly generated architectures from the whole vocabulary.

use burnq_arch::Architecture;
use burnq_quant::{ConvertOptions, Normalization, convert_graph};
use burnq_testkit::graph::{random_architecture, random_graph_inputs};

fn images(n: usize, len: usize) -> Vec<u8> {
    (0..n * len)
        .map(|i| ((i * 31 + i / 97) % 256) as u8)
        .collect()
}

#[test]
fn every_preset_converts_and_runs() {
    for name in burnq_arch::arch::PRESETS {
        let arch = Architecture::preset(name).unwrap();
        let plan = arch.plan().unwrap();
        let (params, ranges) = random_graph_inputs(&plan, 7);
        for per_channel in [false, true] {
            let options = ConvertOptions {
                per_channel,
                ..ConvertOptions::uniform(8)
            };
            let graph =
                convert_graph(&arch, &params, &ranges, Normalization::MNIST, options).unwrap();
            let out = graph.forward_reference(&images(2, 784), 2).unwrap();
            assert_eq!(out.predictions.len(), 2);
            assert_eq!(out.logits_u8.len(), 2 * plan.classes());
            assert_eq!(
                graph.layers().len(),
                plan.quantization_points()
                    .iter()
                    .filter(|s| !matches!(s.op, burnq_arch::arch::Op::Residual(_)))
                    .count()
            );
        }
    }
}

#[test]
fn random_architectures_convert_and_run_at_every_width() {
    for seed in 0..60 {
        let arch = random_architecture(seed);
        let plan = arch.plan().unwrap();
        let (params, ranges) = random_graph_inputs(&plan, seed);
        let bits = 2 + (seed % 7) as u8;
        let options = ConvertOptions {
            weight_bits: bits,
            act_bits: 10 - bits.min(8),
            per_channel: seed % 2 == 0,
        };
        let graph = convert_graph(&arch, &params, &ranges, Normalization::MNIST, options)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", arch.to_json()));
        let n = 3;
        let taps = graph
            .forward_reference_taps(&images(n, plan.input.len()), n)
            .unwrap();
        assert_eq!(taps.output.predictions.len(), n);
        for (name, codes) in &taps.codes {
            let qmax = (1u32 << options.act_bits) - 1;
            assert!(
                codes.iter().all(|&q| u32::from(q) <= qmax),
                "seed {seed} {name}"
            );
        }
    }
}
