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

mod files {
    use super::*;
    use burnq_quant::{QuantError, QuantGraph, load_graph, save, save_graph};
    use burnq_testkit::model_file::{load_err, rewrite, rewrite_signed};

    fn graph(name: &str, options: ConvertOptions) -> QuantGraph {
        let arch = Architecture::preset(name).unwrap();
        let (params, ranges) = random_graph_inputs(&arch.plan().unwrap(), 11);
        convert_graph(
            &arch,
            &params,
            &ranges,
            Normalization::FASHION_MNIST,
            options,
        )
        .unwrap()
    }

    fn edit_meta(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
        rewrite_signed(path, |_, m| {
            let mut meta: serde_json::Value = serde_json::from_str(&m["meta"]).unwrap();
            edit(&mut meta);
            m.insert("meta".into(), meta.to_string());
        });
    }

    #[test]
    fn graphs_round_trip_at_every_width() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.safetensors");
        for (seed, name) in ["tutorial", "lenet5", "mobile"].iter().enumerate() {
            for bits in [2u8, 5, 8] {
                let options = ConvertOptions {
                    weight_bits: bits,
                    act_bits: 8,
                    per_channel: seed % 2 == 0,
                };
                let g = graph(name, options);
                save_graph(&g, &path).unwrap();
                let back = load_graph(&path).unwrap();
                assert!(back == g, "{name} w{bits}");
                let x = images(2, 784);
                assert_eq!(
                    back.forward_reference(&x, 2).unwrap(),
                    g.forward_reference(&x, 2).unwrap()
                );
            }
        }
        // Random architectures (every op kind) round trip too.
        for seed in 0..20 {
            let arch = random_architecture(seed);
            let (params, ranges) = random_graph_inputs(&arch.plan().unwrap(), seed);
            let g = convert_graph(&arch, &params, &ranges, Normalization::MNIST, 4).unwrap();
            save_graph(&g, &path).unwrap();
            assert!(load_graph(&path).unwrap() == g, "seed {seed}");
        }
    }

    #[test]
    fn tutorial_files_load_as_the_tutorial_graph() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let model = burnq_testkit::model_file::model(ConvertOptions::uniform(8));
        save(&model, &path).unwrap();
        let g = load_graph(&path).unwrap();
        assert!(g == QuantGraph::from_tutorial(&model).unwrap());
        assert_eq!(g.architecture().name, "tutorial");
    }

    #[test]
    fn graph_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let g = graph("mobile", ConvertOptions::uniform(8));
        let reset = || save_graph(&g, &path).unwrap();
        let bad = |path: &std::path::Path, needle: &str| match load_graph(path).unwrap_err() {
            QuantError::BadMetadata { reason, .. } => {
                assert!(reason.contains(needle), "{reason}")
            }
            QuantError::InvalidModel { source, .. } => {
                assert!(source.to_string().contains(needle), "{source}")
            }
            other => panic!("{needle}: {other}"),
        };
        reset();
        edit_meta(&path, |m| {
            m["pads"].as_object_mut().unwrap().remove("b1_dw");
        });
        bad(&path, "no padding code for \"b1_dw\"");
        reset();
        edit_meta(&path, |m| {
            m["adds"]["ghost"] = m["adds"]["b2_add"].clone();
        });
        bad(&path, "ghost");
        reset();
        edit_meta(&path, |m| {
            m["adds"]["b2_add"]["scale"] = serde_json::json!(-1.0);
        });
        bad(&path, "b2_add");
        reset();
        edit_meta(&path, |m| {
            m["architecture"]["layers"][0]["out_channels"] = serde_json::json!(17);
        });
        assert!(matches!(
            load_err(&path),
            QuantError::InvalidModel { .. }
                | QuantError::BadMetadata { .. }
                | QuantError::WrongShape { .. }
        ));
        reset();
        edit_meta(&path, |m| {
            m["architecture"]["layers"][1] = serde_json::json!({"type": "relu"});
        });
        bad(&path, "architecture");
        reset();
        edit_meta(&path, |m| {
            m["layers"][3]["m0"][0] = serde_json::json!(5);
        });
        assert!(matches!(
            load_graph(&path),
            Err(QuantError::InvalidModel { .. })
        ));
        reset();
        rewrite(&path, |t, _| t[0].3[0] ^= 1);
        assert!(matches!(
            load_graph(&path),
            Err(QuantError::ChecksumMismatch { .. })
        ));
    }
}
