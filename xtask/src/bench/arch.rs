//! `cargo xtask bench --arch NAME|FILE`: a described network's engines in one run — Burn's
//! f32 forward of the float model, burnq's scalar reference and the fast graph engine (the
//! portable kernel and the best one, on one and all threads) of its saved integer model —
//! each verified on the test set, then timed as the tutorial's bench times them; written to
//! `artifacts/bench/<arch>/`. ONNX Runtime is timed on the tutorial network only.

use burnq_arch::Architecture;
use burnq_model::ArchNet;
use burnq_model::checkpoint::load_arch_net;
use burnq_model::data::ImageBatcher;
use burnq_quant::GraphEngine;

use super::*;

fn float_arch_candidate<'a>(
    model: &'a ArchNet,
    batcher: &'a ImageBatcher,
    device: &'a burnq_model::Device,
) -> Candidate<'a> {
    Candidate {
        name: "Burn f32 (flex)".into(),
        family: "burn",
        width: None,
        threads: "all (rayon)".into(),
        chunk: 1000,
        slow: false,
        run: Box::new(move |px| {
            let logits = model.forward(batcher.images(px, device));
            let classes = logits.argmax(1).into_data();
            let classes: Vec<u8> = classes.iter::<i64>().map(|c| c as u8).collect();
            Ok((classes, None))
        }),
        single: None,
    }
}

pub(super) fn run_arch(mut args: BenchArgs, arch: &Architecture) -> anyhow::Result<()> {
    let plan = arch.plan()?;
    anyhow::ensure!(
        plan.input.len() == IMAGE_PIXELS,
        "the bench runs 1×28×28 images; {} takes {}",
        arch.name,
        plan.input
    );
    let models = ArtifactDir::for_arch(args.models.as_deref(), args.data.dataset, &arch.name)?;
    let (float_path, quant_path) = (models.float_model(), models.quant_model());
    let graph = burnq_quant::load_graph(&quant_path).with_context(|| {
        format!(
            "loading the integer model (`cargo xtask quantize --arch {}` writes it)",
            arch.name
        )
    })?;
    anyhow::ensure!(
        graph.plan() == &plan,
        "{} holds another network than {}",
        display_path(&quant_path),
        arch.name
    );
    let set = args
        .data
        .load_test_limited(args.test_limit, "--test-limit")?;
    let norm = args.data.dataset.normalization();
    let device = BackendChoice::Flex.device()?;
    let (_, model) = load_arch_net(&float_path, norm, &device)?;
    let batcher = ImageBatcher::new(norm);
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let kernel = KernelChoice::selected()?;
    let width = burnq_quant::widths_label(graph.options(), &graph.layers());
    let generic = GraphEngine::with_kernel(&graph, KernelChoice::Generic)?;
    let best = GraphEngine::with_kernel(&graph, kernel)?;
    let reference = |px: &[u8], n| graph.forward_reference(px, n);
    let mut candidates = vec![
        float_arch_candidate(&model, &batcher, &device),
        reference_candidate(&reference, &width),
    ];
    if kernel != KernelChoice::Generic {
        candidates.push(engine_candidate(&generic, &width, 1));
    }
    candidates.push(engine_candidate(&best, &width, 1));
    if threads > 1 {
        candidates.push(engine_candidate(&best, &width, threads));
    }
    let mut references = HashMap::new();
    let mut rows = Vec::new();
    let bar = crate::common::progress_bar(
        candidates.len() as u64,
        "bench [{bar:30}] {pos}/{len} {msg}",
    );
    for mut c in candidates {
        bar.set_message(c.name.clone());
        rows.push(measure(&mut c, &set, &args, &mut references)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let macs = plan.macs() as u64;
    let base = rows[0].full_test_images_per_s;
    let burn_predictions = rows[0].predictions.clone();
    for r in &mut rows {
        r.speedup_vs_burn_f32 = r.full_test_images_per_s / base;
        r.gmac_per_s = r.full_test_images_per_s * macs as f64 / 1e9;
        r.agreement_with_burn_f32 = crate::pipeline::agreement(&r.predictions, &burn_predictions);
    }
    let weight_bytes: usize = graph
        .layers()
        .iter()
        .map(|l| l.stored_weight_bytes() + 4 * l.bias.len())
        .sum();
    let ratios = ratios(&rows, &width, threads);
    let report = Report {
        machine: MachineInfo::detect(),
        kernel: kernel.name().into(),
        dataset: format!("{} ({})", args.data.dataset.dir_name(), arch.name),
        test_images: set.len(),
        runs: args.runs,
        macs_per_image: macs,
        float_model_bytes: std::fs::metadata(&float_path)?.len(),
        int_model_bytes: std::fs::metadata(&quant_path)?.len(),
        float_weight_bytes: 4 * plan.params() as u64,
        int_weight_bytes: weight_bytes as u64,
        threads,
        rows,
        ratios,
        onnxruntime: None,
        onnxruntime_int8_candidates: Vec::new(),
        onnxruntime_int8_choice: None,
        layers: Vec::new(),
        instruction_limits: None,
        notes: vec![format!(
            "{}: {} parameters, {} MAC per image; ONNX Runtime is timed on the tutorial network \
             only (`cargo xtask export-onnx --arch {} --verify` runs this network under it)",
            arch.name,
            plan.params(),
            macs,
            arch.name
        )],
    };
    if args.out.is_none() {
        args.out = Some(crate::paths::bench_dir().join(&arch.name));
    }
    write_outputs(&report, &args)
}
