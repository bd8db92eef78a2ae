//! Conformance of the fast [`GraphEngine`]: for every kernel implementation this CPU runs, its
//! output equals [`QuantGraph::forward_reference`] bit for bit (accumulators, `u8` logits,
//! predictions) on random architectures from the whole vocabulary (half of them with per-layer
//! widths), on grouped and depthwise
//! convolutions with channel multipliers, on convolutions followed by max pools, on every preset at several batch sizes, split over
//! threads, and, for the tutorial preset, equals the tutorial [`Engine`].

mod common;

use burnq_arch::Architecture;
use burnq_arch::arch::{Conv2d, InputShape, Layer, Linear, Pool, Residual, Size2};
use burnq_quant::kernels::KernelChoice;
use burnq_quant::{
    ActivationRanges, ConvertOptions, Engine, GraphEngine, GraphWorkspace, LayerBits,
    Normalization, Output, QuantError, QuantGraph, QuantScheme, Workspace, convert, convert_graph,
    graph::layer_names,
};
use burnq_testkit::graph::{random_architecture, random_graph_inputs};
use burnq_testkit::{Rng, golden, random_network};
use common::kernels;

/// Random options: weight and activation widths in 2..=8, per tensor or per channel.
fn random_options(rng: &mut Rng) -> ConvertOptions {
    ConvertOptions {
        weight_bits: rng.range(2, 8) as u8,
        act_bits: rng.range(2, 8) as u8,
        per_channel: rng.chance(0.5),
    }
}

/// [`random_options`] with, for every other call, each convolution and linear layer of
/// `arch` on its own random weight and activation widths (per-layer widths).
fn random_scheme(rng: &mut Rng, arch: &Architecture) -> QuantScheme {
    let defaults = random_options(rng);
    if rng.chance(0.5) {
        return defaults.into();
    }
    let plan = arch.plan().unwrap();
    let names = layer_names(&plan);
    let spec: Vec<String> = names
        .iter()
        .map(|_| format!("w{}a{}", rng.range(2, 8), rng.range(2, 8)))
        .collect();
    QuantScheme::parse(defaults, &spec.join(","), &names).unwrap()
}

/// `arch` with random parameters converted as `scheme` says; every layer has the widths the
/// scheme gives it.
fn graph(arch: &Architecture, seed: u64, scheme: impl Into<QuantScheme>) -> QuantGraph {
    let scheme = scheme.into();
    let plan = arch.plan().unwrap();
    let (params, ranges) = random_graph_inputs(&plan, seed);
    let graph = convert_graph(arch, &params, &ranges, Normalization::MNIST, scheme.clone())
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", arch.name, arch.to_json()));
    for layer in graph.layers() {
        assert_eq!(layer.bits(), LayerBits::of(scheme.layer(&layer.name)));
    }
    graph
}

/// `n` random images of the graph's input codes.
fn images(graph: &QuantGraph, seed: u64, n: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let qmax = graph.input_params().qmax() as u64;
    (0..n * graph.plan().input.len())
        .map(|_| (rng.next_u64() % (qmax + 1)) as u8)
        .collect()
}

/// The first `n` images' part of `out` (of `classes` logits each).
fn prefix(out: &Output, n: usize, classes: usize) -> Output {
    Output {
        fc2_acc: out.fc2_acc[..n * classes].to_vec(),
        logits_u8: out.logits_u8[..n * classes].to_vec(),
        predictions: out.predictions[..n].to_vec(),
    }
}

/// Checks `forward` (with `workspace`, reused across graphs and kernels) and
/// `forward_parallel` with `threads` of every available kernel against the reference.
fn check(
    workspace: &mut GraphWorkspace,
    graph: &QuantGraph,
    images: &[u8],
    n: usize,
    threads: &[usize],
    what: &str,
) {
    let expected = graph.forward_reference(images, n).unwrap();
    for kernel in kernels::all() {
        let engine = GraphEngine::with_kernel(graph, kernel).unwrap();
        assert_eq!(engine.kernel(), kernel);
        let out = engine.forward(workspace, images, n).unwrap();
        assert_eq!(out, expected, "{what}, {kernel}, n = {n}");
        for &t in threads {
            let out = engine.forward_parallel(images, n, t).unwrap();
            assert_eq!(out, expected, "{what}, {kernel}, n = {n}, {t} threads");
        }
    }
}

/// [`check`] on the architectures `arch(seed)` for `seeds`, each with random options (from
/// seed `salt + seed`) and `batch.0..=batch.1` images, every tenth also on `threads` threads.
fn check_architectures(
    seeds: std::ops::Range<u64>,
    salt: u64,
    arch: impl Fn(u64) -> Architecture,
    batch: (usize, usize),
    threads: usize,
) {
    let mut workspace = GraphWorkspace::new();
    for seed in seeds {
        let mut rng = Rng::new(salt + seed);
        let arch = arch(seed);
        let scheme = random_scheme(&mut rng, &arch);
        let graph = graph(&arch, seed, scheme.clone());
        let n = rng.range(batch.0, batch.1);
        let threads: &[usize] = if seed % 10 == 0 { &[threads] } else { &[] };
        let what = format!("{} seed {seed} {scheme:?}", arch.name);
        check(
            &mut workspace,
            &graph,
            &images(&graph, seed, n),
            n,
            threads,
            &what,
        );
    }
}

#[test]
fn random_architectures_match_reference() {
    check_architectures(0..120, 1000, random_architecture, (0, 9), 3);
}

fn conv(
    out_channels: usize,
    kernel: [usize; 2],
    stride: usize,
    padding: usize,
    groups: usize,
) -> Layer {
    Layer::Conv2d(Conv2d {
        name: None,
        in_channels: None,
        out_channels,
        kernel: Size2 {
            h: kernel[0],
            w: kernel[1],
        },
        stride: Size2::square(stride),
        padding: Size2::square(padding),
        groups,
        bias: true,
    })
}

/// A flatten and a linear layer of 2 to 10 classes.
fn classifier(rng: &mut Rng) -> [Layer; 2] {
    let linear = Linear {
        name: None,
        in_features: None,
        out_features: rng.range(2, 10),
        bias: true,
    };
    [Layer::Flatten, Layer::Linear(linear)]
}

/// Grouped convolutions (several channels per group), depthwise ones with channel
/// multipliers, strides and padding, wide convolutions, residual blocks of grouped
/// convolutions, every pool.
fn grouped_architecture(seed: u64) -> Architecture {
    let mut rng = Rng::new(seed);
    let c = rng.range(1, 4);
    let (h, w) = (rng.range(5, 10), rng.range(5, 10));
    let m = rng.range(1, 3);
    let c1 = c * m;
    let g2 = [1, c, c1][rng.range(0, 2)];
    let c2 = g2 * rng.range(1, 3);
    let c3 = 8 * rng.range(3, 4);
    let mut layers = vec![
        // Depthwise with multiplier m (an ordinary convolution if c = 1).
        conv(
            c1,
            [rng.range(2, 3), rng.range(2, 3)],
            rng.range(1, 2),
            1,
            c,
        ),
        Layer::Relu6,
        conv(c2, [3, 2], 1, 1, g2),
        Layer::Relu,
        Layer::Residual(Residual {
            name: None,
            layers: vec![
                conv(c2, [3, 3], 1, 1, [1, g2][rng.range(0, 1)]),
                Layer::Relu,
            ],
        }),
        // Wide enough for im2col's row-by-row copies, whole or per group, with padding.
        conv(c3, [3, 3], rng.range(1, 2), 1, 1),
        Layer::Residual(Residual {
            name: None,
            layers: vec![conv(c3, [3, 3], 1, 1, rng.range(1, 2)), Layer::Relu],
        }),
        // Depthwise on 24 or 32 channels, multiplier 1 or 2: whole register blocks and a tail.
        conv(c3 * rng.range(1, 2), [3, 3], rng.range(1, 2), 1, c3),
    ];
    let pool = Pool {
        kernel: Size2::square(2),
        stride: Some(Size2::square(rng.range(1, 2))),
    };
    layers.push(match rng.range(0, 2) {
        0 => Layer::MaxPool(pool),
        1 => Layer::AvgPool(pool),
        _ => Layer::GlobalAvgPool,
    });
    layers.extend(classifier(&mut rng));
    Architecture {
        name: format!("grouped-{seed}"),
        input: InputShape {
            channels: c,
            height: h,
            width: w,
        },
        layers,
    }
}

#[test]
fn grouped_and_depthwise_convolutions_match_reference() {
    let (mut grouped, mut multiplied) = (0, 0);
    let mut workspace = GraphWorkspace::new();
    for seed in 0..60 {
        let mut rng = Rng::new(2000 + seed);
        let arch = grouped_architecture(seed);
        for step in arch.plan().unwrap().steps {
            if let burnq_arch::arch::Op::Conv2d(g) = step.op {
                grouped += usize::from(g.groups > 1 && g.in_channels > g.groups);
                multiplied += usize::from(g.is_depthwise() && g.out_channels > g.in_channels);
            }
        }
        let options = random_options(&mut rng);
        let graph = graph(&arch, seed, options);
        let n = rng.range(1, 7);
        let what = format!("grouped seed {seed} {options:?}");
        check(
            &mut workspace,
            &graph,
            &images(&graph, seed, n),
            n,
            &[],
            &what,
        );
    }
    assert!(
        grouped >= 10 && multiplied >= 10,
        "{grouped} grouped, {multiplied} multiplied"
    );
}

/// Convolutions followed by a 2×2, stride-2 max pool (the engine runs them per image in CHW
/// order, on the tutorial engine's kernels): 1 to 4 input channels, square kernels 1 to 5,
/// padding 0 to 2 on each axis (less than the kernel), 1 to 24 output channels (a part of one byte panel of 10 rows,
/// several panels and a part), odd and even output sides (rows of 8 or not), two such blocks
/// in a row, a residual block of the NHWC layout after them.
fn conv_pool_architecture(seed: u64) -> Architecture {
    let mut rng = Rng::new(seed);
    let input = InputShape {
        channels: rng.range(1, 4),
        height: rng.range(5, 19),
        width: rng.range(5, 19),
    };
    let pool = Pool {
        kernel: Size2::square(2),
        stride: None,
    };
    // A convolution and its pool on an `h × w` input: the layers and the output's sides.
    let block = |rng: &mut Rng, h: usize, w: usize| {
        let k = rng.range(1, 5.min(h).min(w));
        let (ph, pw) = (rng.range(0, 2.min(k - 1)), rng.range(0, 2.min(k - 1)));
        let Layer::Conv2d(mut cv) = conv(rng.range(1, 24), [k, k], 1, 0, 1) else {
            unreachable!()
        };
        cv.padding = Size2 { h: ph, w: pw };
        let out = cv.out_channels;
        let conv_side = |side: usize, pad: usize| side + 2 * pad + 1 - k;
        let sides = (conv_side(h, ph) / 2, conv_side(w, pw) / 2);
        (Layer::Conv2d(cv), out, sides)
    };
    let (cv, mut c, (h, w)) = block(&mut rng, input.height, input.width);
    let mut layers = vec![cv, Layer::Relu, Layer::MaxPool(pool)];
    if h.min(w) >= 3 && rng.chance(0.7) {
        let (cv, out, _) = block(&mut rng, h, w);
        layers.extend([cv, Layer::MaxPool(pool)]);
        c = out;
    }
    if rng.chance(0.3) {
        layers.push(Layer::Residual(Residual {
            name: None,
            layers: vec![conv(c, [1, 1], 1, 0, 1), Layer::Relu],
        }));
    }
    layers.extend(classifier(&mut rng));
    Architecture {
        name: format!("conv-pool-{seed}"),
        input,
        layers,
    }
}

#[test]
fn convolutions_with_max_pools_match_reference() {
    check_architectures(0..60, 4000, conv_pool_architecture, (1, 4), 2);
}

#[test]
fn presets_match_reference_at_every_batch_size() {
    const MAX: usize = 49;
    for (i, name) in burnq_arch::arch::PRESETS.into_iter().enumerate() {
        let arch = Architecture::preset(name).unwrap();
        for per_channel in [false, true] {
            let bits = if per_channel { 8 } else { 4 + i as u8 };
            let options = ConvertOptions {
                weight_bits: bits,
                act_bits: bits,
                per_channel,
            };
            let graph = graph(&arch, 7 + i as u64, options);
            let classes = graph.plan().classes();
            let len = graph.plan().input.len();
            let all = images(&graph, 11, MAX);
            let expected = graph.forward_reference(&all, MAX).unwrap();
            for kernel in kernels::all() {
                let engine = GraphEngine::with_kernel(&graph, kernel).unwrap();
                let mut workspace = GraphWorkspace::new();
                for n in [0, 1, 2, 7, MAX] {
                    let images = &all[..n * len];
                    let want = prefix(&expected, n, classes);
                    let what = format!("{name} {options:?} {kernel} n = {n}");
                    let out = engine.forward(&mut workspace, images, n).unwrap();
                    assert_eq!(out, want, "{what}");
                    for threads in [1, 3] {
                        let parallel = engine.forward_parallel(images, n, threads).unwrap();
                        assert_eq!(parallel, out, "{what}, {threads} threads");
                    }
                }
            }
        }
    }
}

/// Ranges of the right order of magnitude for [`random_network`].
const RANGES: ActivationRanges = ActivationRanges {
    input: (-0.43, 2.83),
    conv2_input: (0.0, 4.0),
    fc1_input: (0.0, 6.0),
    fc2_input: (0.0, 6.0),
    logits: (-8.0, 8.0),
};

#[test]
fn tutorial_graph_equals_tutorial_engine() {
    let mut models = vec![golden::model()];
    for seed in 0..6 {
        let mut rng = Rng::new(3000 + seed);
        let options = random_options(&mut rng);
        models.push(
            convert(
                &random_network(seed),
                &RANGES,
                Normalization::MNIST,
                options,
            )
            .unwrap(),
        );
    }
    for (m, model) in models.iter().enumerate() {
        let graph = QuantGraph::from_tutorial(model).unwrap();
        let n = 13;
        let images = images(&graph, m as u64, n);
        for kernel in kernels::all() {
            let tutorial = Engine::with_kernel(model, kernel)
                .unwrap()
                .forward(&mut Workspace::new(), &images, n)
                .unwrap();
            let out = GraphEngine::with_kernel(&graph, kernel)
                .unwrap()
                .forward(&mut GraphWorkspace::new(), &images, n)
                .unwrap();
            assert_eq!(out, tutorial, "model {m}, {kernel}");
        }
    }
}

#[test]
fn bad_input_is_the_reference_error() {
    let arch = Architecture::preset("lenet5").unwrap();
    let options = ConvertOptions {
        weight_bits: 8,
        act_bits: 8,
        per_channel: false,
    };
    let graph = graph(&arch, 1, options);
    let engine = GraphEngine::with_kernel(&graph, KernelChoice::Generic).unwrap();
    let len = graph.plan().input.len();
    let short = vec![0; 2 * len - 1];
    let err = engine
        .forward(&mut GraphWorkspace::new(), &short, 2)
        .unwrap_err();
    assert!(matches!(err, QuantError::ShapeMismatch { .. }), "{err}");
    let reference = graph.forward_reference(&short, 2).unwrap_err();
    assert_eq!(err.to_string(), reference.to_string());
    let parallel = engine.forward_parallel(&short, 2, 2).unwrap_err();
    assert_eq!(parallel.to_string(), reference.to_string());
    let mut above = vec![0; len];
    above[len / 2] = 255;
    let graph4 = self::graph(
        &arch,
        1,
        ConvertOptions {
            act_bits: 4,
            ..options
        },
    );
    // The input grid is raw pixels whatever the widths: 255 is a valid code there.
    assert!(
        GraphEngine::with_kernel(&graph4, KernelChoice::Generic)
            .unwrap()
            .forward(&mut GraphWorkspace::new(), &above, 1)
            .is_ok()
    );
}
