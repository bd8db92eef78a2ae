//! Timing one candidate engine: its batch-1 latencies, batch-64 and full-test-set throughput
//! (medians of the runs), after checking its predictions; and the candidates themselves (Burn's
//! float model, the scalar reference, the fast engine at a thread count).

use burnq_quant::{GraphEngine, GraphWorkspace, QuantError};

use super::*;

/// Latency percentiles of single-image calls, in µs (NaN when none were made).
#[derive(Debug, Clone, Copy)]
pub(super) struct Latency {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
}

impl Latency {
    /// The percentiles of `samples` (nearest rank).
    pub(super) fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            if samples.is_empty() {
                f64::NAN
            } else {
                samples[((samples.len() - 1) as f64 * p).round() as usize]
            }
        };
        Self {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
        }
    }
}

pub(super) fn float_candidate<'a>(name: &str, p: &'a Predictor) -> Candidate<'a> {
    Candidate {
        name: name.into(),
        family: "burn",
        width: None,
        threads: "all (rayon)".into(),
        chunk: 1000,
        slow: false,
        run: Box::new(move |px| Ok((p.predict(px), None))),
        single: None,
    }
}

/// The scalar reference of a model on `n` images: the tutorial's or a graph's.
pub(super) type Reference<'a> =
    &'a (dyn Fn(&[u8], usize) -> Result<burnq_quant::Output, QuantError> + Sync);

pub(super) fn reference_candidate<'a>(forward: Reference<'a>, width: &str) -> Candidate<'a> {
    Candidate {
        name: format!("burnq {width} scalar reference"),
        family: "burnq",
        width: Some(width.into()),
        threads: "1".into(),
        chunk: 1000,
        slow: true,
        run: Box::new(move |px| {
            let out = forward(px, px.len() / IMAGE_PIXELS)?;
            Ok((out.predictions, Some(out.fc2_acc)))
        }),
        single: None,
    }
}

/// A fast integer engine the bench times: the tutorial's [`Engine`] or a graph's
/// [`GraphEngine`].
pub(super) trait FastEngine: Sync {
    /// Its reusable scratch.
    type Scratch: Default;
    /// The kernel it runs.
    fn kernel(&self) -> KernelChoice;
    /// `n` images on this thread.
    fn one_thread(
        &self,
        scratch: &mut Self::Scratch,
        px: &[u8],
        n: usize,
    ) -> Result<burnq_quant::Output, QuantError>;
    /// `n` images split over `threads` threads.
    fn threads(
        &self,
        px: &[u8],
        n: usize,
        threads: usize,
    ) -> Result<burnq_quant::Output, QuantError>;
}

/// The same three calls on each engine type, whose methods have the same names.
macro_rules! fast_engine {
    ($engine:ty, $scratch:ty) => {
        impl FastEngine for $engine {
            type Scratch = $scratch;
            fn kernel(&self) -> KernelChoice {
                <$engine>::kernel(self)
            }
            fn one_thread(
                &self,
                ws: &mut $scratch,
                px: &[u8],
                n: usize,
            ) -> Result<burnq_quant::Output, QuantError> {
                self.forward(ws, px, n)
            }
            fn threads(
                &self,
                px: &[u8],
                n: usize,
                threads: usize,
            ) -> Result<burnq_quant::Output, QuantError> {
                self.forward_parallel(px, n, threads)
            }
        }
    };
}

fast_engine!(Engine, Workspace);
fast_engine!(GraphEngine, GraphWorkspace);

/// The fast engine on `threads` threads; with more than one, single images are also timed
/// on one thread (the faster gives the latency figures).
pub(super) fn engine_candidate<'a, E: FastEngine>(
    engine: &'a E,
    width: &str,
    threads: usize,
) -> Candidate<'a> {
    let mut ws = E::Scratch::default();
    let mut single_ws = E::Scratch::default();
    let outputs = |out: burnq_quant::Output| (out.predictions, Some(out.fc2_acc));
    Candidate {
        name: format!("burnq {width} ({})", engine.kernel().name()),
        family: "burnq",
        width: Some(width.into()),
        threads: threads.to_string(),
        chunk: usize::MAX,
        slow: false,
        run: Box::new(move |px| {
            let n = px.len() / IMAGE_PIXELS;
            let out = if threads == 1 {
                engine.one_thread(&mut ws, px, n)?
            } else {
                engine.threads(px, n, threads)?
            };
            Ok(outputs(out))
        }),
        single: (threads > 1).then(|| -> RunFn<'a> {
            Box::new(move |px| {
                let n = px.len() / IMAGE_PIXELS;
                Ok(outputs(engine.one_thread(&mut single_ws, px, n)?))
            })
        }),
    }
}

/// Single-image latencies (µs) of `run` over `calls` calls after 20 untimed ones.
pub(super) fn latencies(run: &mut RunFn, set: &ImageSet, calls: usize) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(calls);
    for i in 0..calls + 20 {
        let img = set.image(i % set.len());
        let start = Instant::now();
        run(img)?;
        if i >= 20 {
            out.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(out)
}

/// Verifies `c` on the whole test set, then times it. `references` holds the scalar
/// reference's fc2 accumulators per width (the first row of a width without one sets it).
pub(super) fn measure(
    c: &mut Candidate,
    set: &ImageSet,
    args: &BenchArgs,
    references: &mut HashMap<String, Vec<i32>>,
) -> anyhow::Result<Row> {
    let whole_set = |c: &mut Candidate| -> anyhow::Result<(f64, RunOutput)> {
        let start = Instant::now();
        let (mut pred, mut acc) = (Vec::new(), None::<Vec<i32>>);
        for chunk in set
            .pixels
            .chunks(c.chunk.saturating_mul(IMAGE_PIXELS).max(IMAGE_PIXELS))
        {
            let (p, a) = (c.run)(chunk)?;
            pred.extend(p);
            if let Some(a) = a {
                acc.get_or_insert_with(Vec::new).extend(a);
            }
        }
        Ok((
            set.len() as f64 / start.elapsed().as_secs_f64(),
            (pred, acc),
        ))
    };
    // Verify before timing.
    let (first_rate, (pred, acc)) = whole_set(c)?;
    let correct = pred.iter().zip(&set.labels).filter(|(p, l)| p == l).count();
    let accuracy = correct as f64 / set.len() as f64;
    let key = c.width.clone().unwrap_or_default();
    let bit_exact = match (acc, references.get(&key)) {
        (Some(acc), None) => {
            references.insert(key, acc);
            Some(true)
        }
        // The reference may cover only the first images.
        (Some(acc), Some(reference)) => {
            let k = reference.len().min(acc.len());
            Some(acc[..k] == reference[..k])
        }
        (None, _) => None,
    };
    anyhow::ensure!(
        bit_exact != Some(false),
        "{} differs from the scalar reference",
        c.name
    );

    let (calls, b64_images, runs) = if c.slow {
        (args.latency_calls.min(200), 1280.min(set.len()), 1)
    } else {
        (args.latency_calls, set.len(), args.runs.max(1))
    };
    let mut latency = Latency::of(latencies(&mut c.run, set, calls)?);
    let mut latency_threads = c.threads.clone();
    if let Some(single) = c.single.as_mut() {
        let one = Latency::of(latencies(single, set, calls)?);
        if one.p50 < latency.p50 {
            latency = one;
            latency_threads = "1".into();
        }
    }

    let mut b64 = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        for chunk in set.pixels[..b64_images * IMAGE_PIXELS].chunks(64 * IMAGE_PIXELS) {
            (c.run)(chunk)?;
        }
        b64.push(b64_images as f64 / start.elapsed().as_secs_f64());
    }
    let mut full = vec![first_rate];
    for _ in 1..runs {
        full.push(whole_set(c)?.0);
    }
    Ok(Row {
        engine: c.name.clone(),
        family: c.family,
        width: c.width.clone(),
        threads: c.threads.clone(),
        latency_threads,
        accuracy,
        agreement_with_burn_f32: f64::NAN,
        bit_exact_with_reference: bit_exact,
        latency_p50_us: latency.p50,
        latency_p90_us: latency.p90,
        latency_p99_us: latency.p99,
        batch64_images_per_s: median(b64),
        full_test_images_per_s: median(full),
        speedup_vs_burn_f32: 0.0,
        gmac_per_s: 0.0,
        batch64_images: b64_images,
        note: None,
        predictions: pred,
    })
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
