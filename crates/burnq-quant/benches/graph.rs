//! Criterion benchmarks of the graph engine ([`GraphEngine`]) on every preset
//! (`burnq_arch::arch::PRESETS`) with random parameters, 8-bit weights and activations per
//! tensor, `n = 1000` images, one thread, for each kernel this CPU runs; and, for comparison,
//! the tutorial [`Engine`] on the same workload (group `graph n=1000 tutorial-engine`).
//! Throughput is images per second. Run with
//! `cargo bench -p burnq-quant --bench graph -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::time::Duration;

use burnq_arch::Architecture;
use burnq_quant::kernels::KernelChoice;
use burnq_quant::{
    ActivationRanges, ConvertOptions, Engine, GraphEngine, GraphWorkspace, IMAGE_PIXELS,
    Normalization, Workspace, convert, convert_graph,
};
use burnq_testkit::graph::random_graph_inputs;
use criterion::{Criterion, Throughput};

/// Images per forward pass.
const N: usize = 1000;

/// `len` pseudo-random codes.
fn codes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = burnq_testkit::Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn available() -> Vec<KernelChoice> {
    KernelChoice::ALL
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
}

fn presets(c: &mut Criterion) {
    let options = ConvertOptions::uniform(8);
    for name in burnq_arch::arch::PRESETS {
        let arch = Architecture::preset(name).unwrap();
        let plan = arch.plan().unwrap();
        let (params, ranges) = random_graph_inputs(&plan, 1);
        let graph = convert_graph(&arch, &params, &ranges, Normalization::MNIST, options).unwrap();
        let images = codes(3, N * plan.input.len());
        let mut group = c.benchmark_group(format!("graph n={N} {name}"));
        group.throughput(Throughput::Elements(N as u64));
        for kernel in available() {
            let engine = GraphEngine::with_kernel(&graph, kernel).unwrap();
            let mut workspace = GraphWorkspace::new();
            group.bench_function(kernel.name(), |b| {
                b.iter(|| black_box(engine.forward(&mut workspace, &images, N).unwrap()))
            });
        }
        group.finish();
    }
}

/// The tutorial [`Engine`] on a converted random tutorial network, for comparison with the
/// `tutorial` preset's figures.
fn tutorial_engine(c: &mut Criterion) {
    let ranges = ActivationRanges {
        input: (-0.43, 2.83),
        conv2_input: (0.0, 4.0),
        fc1_input: (0.0, 6.0),
        fc2_input: (0.0, 6.0),
        logits: (-8.0, 8.0),
    };
    let model = convert(
        &burnq_testkit::random_network(1),
        &ranges,
        Normalization::MNIST,
        8,
    )
    .unwrap();
    let images = codes(3, N * IMAGE_PIXELS);
    let mut group = c.benchmark_group(format!("graph n={N} tutorial-engine"));
    group.throughput(Throughput::Elements(N as u64));
    for kernel in available() {
        let engine = Engine::with_kernel(&model, kernel).unwrap();
        let mut workspace = Workspace::new();
        group.bench_function(kernel.name(), |b| {
            b.iter(|| black_box(engine.forward(&mut workspace, &images, N).unwrap()))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    presets(&mut c);
    tutorial_engine(&mut c);
    c.final_summary();
}
