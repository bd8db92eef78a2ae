//! Criterion benchmarks of the integer kernels at the tutorial network's real shapes, the
//! reference engine against each fast kernel this CPU runs, in multiply-accumulates per second
//! (`Throughput::Elements(MACs)`), of the requantization, and of the whole network (batch 64
//! and 10 000, 1 and 2 threads; batch 1 latency), and a per-layer breakdown of the engine's
//! stages per bit width and kernel (`breakdown …`: a convolution's im2col + GEMM alone, then
//! fused with its requantization and max-pool, the difference being that pass; the linear
//! layers at the engine's batch of 48 and on one image's row) with the whole network on 10 000 images (2 threads) and
//! on one image. Run with `cargo bench -p burnq-quant`; filter with a regex, e.g.
//! `cargo bench -p burnq-quant -- breakdown`.

use std::time::Duration;

use burnq_quant::kernels::{self, KernelChoice, PackedLayer};
use burnq_quant::{
    ActivationRanges, Engine, IMAGE_PIXELS, LayerKind, Normalization, QuantLayer, QuantModel,
    Workspace, convert, reference,
};
use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use std::hint::black_box;

/// Batch of the linear layers and of the whole-network runs.
const BATCH: usize = 64;
/// A large batch, run with the selected kernel only.
const LARGE: usize = 10_000;

fn model() -> QuantModel {
    model_bits(8)
}

/// The benchmark model with `bits`-bit weights and activations (per tensor).
fn model_bits(bits: u8) -> QuantModel {
    let ranges = ActivationRanges {
        // The MNIST-normalized pixel range; conversion does not read it.
        input: (-0.43, 2.83),
        conv2_input: (0.0, 4.0),
        fc1_input: (0.0, 6.0),
        fc2_input: (0.0, 6.0),
        logits: (-8.0, 8.0),
    };
    convert(
        &burnq_testkit::random_network(1),
        &ranges,
        Normalization::MNIST,
        bits,
    )
    .unwrap()
}

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

/// One layer's accumulators: the reference and every fast kernel, `n` inputs of `side²`
/// pixels per channel (`side = 0` for a linear layer).
fn layer(c: &mut Criterion, layer: &QuantLayer, n: usize, side: usize) {
    let (in_per_item, macs) = match layer.kind {
        LayerKind::Conv2d {
            in_channels,
            out_channels,
            kernel,
        } => {
            let out_side = side - kernel + 1;
            let macs = out_channels * out_side * out_side * in_channels * kernel * kernel;
            (in_channels * side * side, macs)
        }
        LayerKind::Linear {
            in_features,
            out_features,
        } => (in_features, in_features * out_features),
    };
    let input = codes(2, n * in_per_item);
    let packed = PackedLayer::new(layer).unwrap();
    let run = |kernel| match layer.kind {
        LayerKind::Conv2d { .. } => kernels::conv2d(kernel, &packed, &input, n, side, side),
        LayerKind::Linear { .. } => kernels::linear(kernel, &packed, &input, n),
    };
    let reference = || match layer.kind {
        LayerKind::Conv2d { .. } => reference::conv2d(layer, &input, n, side, side),
        LayerKind::Linear { .. } => reference::linear(layer, &input, n),
    };
    let mut group = c.benchmark_group(format!("{} n={n}", layer.name));
    group.throughput(Throughput::Elements((n * macs) as u64));
    group.bench_function("reference", |b| b.iter(|| black_box(reference().unwrap())));
    for kernel in available() {
        assert_eq!(run(kernel).unwrap(), reference().unwrap());
        group.bench_function(kernel.name(), |b| {
            b.iter(|| black_box(run(kernel).unwrap()))
        });
    }
    group.finish();
}

/// Requantization of one image's conv1 accumulators (20 × 576 values), scalar and SIMD.
fn requantize(c: &mut Criterion, conv1: &QuantLayer) {
    let input = codes(4, IMAGE_PIXELS);
    let acc = reference::conv2d(conv1, &input, 1, 28, 28).unwrap();
    let packed = PackedLayer::new(conv1).unwrap();
    let mut group = c.benchmark_group("requantize conv1 n=1");
    group.throughput(Throughput::Elements(acc.len() as u64));
    group.bench_function("reference", |b| {
        b.iter(|| black_box(reference::requantize(conv1, &acc, 576).unwrap()))
    });
    for kernel in available() {
        group.bench_function(kernel.name(), |b| {
            b.iter(|| black_box(kernels::requantize(kernel, &packed, &acc, 576).unwrap()))
        });
    }
    group.finish();
}

fn layers(c: &mut Criterion) {
    let model = model();
    let [conv1, conv2, fc1, fc2] = model.layers();
    layer(c, conv1, 1, 28);
    layer(c, conv2, 1, 12);
    layer(c, fc1, BATCH, 0);
    layer(c, fc1, 1, 0);
    layer(c, fc2, BATCH, 0);
    requantize(c, conv1);
}

/// The whole network on `n` images with `engine`, `threads` threads (1: `forward_into`).
fn bench_engine(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    engine: &Engine,
    n: usize,
    threads: usize,
) {
    let images = codes(3, n * IMAGE_PIXELS);
    let mut workspace = Workspace::new();
    let mut out = engine.forward(&mut workspace, &images, n).unwrap();
    group.bench_function(name, |b| {
        b.iter(|| {
            if threads == 1 {
                engine
                    .forward_into(&mut workspace, &images, n, &mut out)
                    .unwrap();
            } else {
                out = engine.forward_parallel(&images, n, threads).unwrap();
            }
            black_box(&out);
        })
    });
}

fn network(c: &mut Criterion) {
    let model = model();
    let macs: usize = model
        .layers()
        .iter()
        .zip([24 * 24, 8 * 8, 1, 1])
        .map(|(l, positions)| l.weights.len() * positions)
        .sum();
    let images = codes(3, BATCH * IMAGE_PIXELS);
    let mut group = c.benchmark_group(format!("network n={BATCH}"));
    group.throughput(Throughput::Elements((BATCH * macs) as u64));
    group.bench_function("reference", |b| {
        b.iter(|| black_box(model.forward_reference(&images, BATCH).unwrap()))
    });
    for kernel in available() {
        let engine = Engine::with_kernel(&model, kernel).unwrap();
        for threads in [1, 2] {
            let name = format!("{kernel} {threads} thread(s)");
            bench_engine(&mut group, &name, &engine, BATCH, threads);
        }
    }
    group.finish();
    let best = Engine::new(&model).unwrap();
    let mut group = c.benchmark_group(format!("network n={LARGE}"));
    group.throughput(Throughput::Elements((LARGE * macs) as u64));
    for threads in [1, 2] {
        let name = format!("{} {threads} thread(s)", best.kernel());
        bench_engine(&mut group, &name, &best, LARGE, threads);
    }
    group.finish();
    let mut group = c.benchmark_group("network n=1");
    group.throughput(Throughput::Elements(macs as u64));
    for kernel in available() {
        let engine = Engine::with_kernel(&model, kernel).unwrap();
        bench_engine(&mut group, kernel.name(), &engine, 1, 1);
    }
    group.finish();
}

/// Per bit width and kernel: each engine stage per image (conv1 and conv2 on one image, as
/// the engine runs them; fc1 and fc2 on the engine's batch of 48, so divide by 48), then the
/// whole network on 10 000 images with 2 threads and on one image.
fn breakdown(c: &mut Criterion) {
    const FC_BATCH: usize = 48;
    for bits in [8, 4, 2] {
        let model = model_bits(bits);
        let [conv1, conv2, fc1, fc2] = model
            .layers()
            .each_ref()
            .map(|l| PackedLayer::new(l).unwrap());
        let image = codes(5, IMAGE_PIXELS);
        // Real intermediate codes, so every layer sees in-range inputs.
        let reference = |layer: &PackedLayer, input: &[u8], n, side| {
            kernels::conv2d_requant_pool(KernelChoice::Generic, layer, input, n, side, side)
                .unwrap()
        };
        let pool1 = reference(&conv1, &image, 1, 28);
        let images = codes(6, FC_BATCH * IMAGE_PIXELS);
        let pool1_batch = reference(&conv1, &images, FC_BATCH, 28);
        let features = reference(&conv2, &pool1_batch, FC_BATCH, 12);
        let hidden =
            kernels::linear_requant(KernelChoice::Generic, &fc1, &features, FC_BATCH).unwrap();
        let large = codes(3, LARGE * IMAGE_PIXELS);
        for kernel in available() {
            let mut group = c.benchmark_group(format!("breakdown w{bits}a{bits} {kernel}"));
            for (name, layer, input, side) in
                [("conv1", &conv1, &image, 28), ("conv2", &conv2, &pool1, 12)]
            {
                group.bench_function(format!("{name} gemm"), |b| {
                    b.iter(|| black_box(kernels::conv2d(kernel, layer, input, 1, side, side)))
                });
                group.bench_function(format!("{name} fused"), |b| {
                    b.iter(|| {
                        black_box(kernels::conv2d_requant_pool(
                            kernel, layer, input, 1, side, side,
                        ))
                    })
                });
            }
            for n in [1, FC_BATCH] {
                group.bench_function(format!("fc1 n={n}"), |b| {
                    let rows = &features[..n * fc1.kind().fan_in()];
                    b.iter(|| black_box(kernels::linear_requant(kernel, &fc1, rows, n).unwrap()))
                });
            }
            group.bench_function("fc2 n=48", |b| {
                b.iter(|| black_box(kernels::linear(kernel, &fc2, &hidden, FC_BATCH).unwrap()))
            });
            let engine = Engine::with_kernel(&model, kernel).unwrap();
            group.bench_function("network n=10000 2 threads", |b| {
                b.iter(|| black_box(engine.forward_parallel(&large, LARGE, 2).unwrap()))
            });
            bench_engine(&mut group, "network n=1", &engine, 1, 1);
            group.finish();
        }
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    layers(&mut c);
    network(&mut c);
    breakdown(&mut c);
    c.final_summary();
}
