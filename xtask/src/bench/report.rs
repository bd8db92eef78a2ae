//! Writing a bench run out: `report.json`, `report.md` (the tables and notes) and the
//! throughput chart, each atomically.

use super::*;

pub(super) fn write_outputs(report: &Report, args: &BenchArgs) -> anyhow::Result<()> {
    let out = args.out.clone().unwrap_or_else(crate::paths::bench_dir);
    std::fs::create_dir_all(&out)?;
    let table = markdown(
        &[
            "engine",
            "threads",
            "accuracy",
            "bit-exact",
            "lat. threads",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "img/s b64",
            "img/s full",
            "× Burn f32",
            "GMAC/s",
        ],
        &report
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.engine.clone(),
                    r.threads.clone(),
                    fmt(r.accuracy, |a| format!("{:.2}%", 100.0 * a)),
                    r.bit_exact_with_reference
                        .map_or("n/a".into(), |b| if b { "yes".into() } else { "NO".into() }),
                    r.latency_threads.clone(),
                    fmt(r.latency_p50_us, |v| format!("{v:.0}")),
                    fmt(r.latency_p90_us, |v| format!("{v:.0}")),
                    fmt(r.latency_p99_us, |v| format!("{v:.0}")),
                    fmt(r.batch64_images_per_s, |v| format!("{v:.0}")),
                    fmt(r.full_test_images_per_s, |v| format!("{v:.0}")),
                    fmt(r.speedup_vs_burn_f32, |v| format!("{v:.2}")),
                    fmt(r.gmac_per_s, |v| format!("{v:.2}")),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let ratios = markdown(
        &["ratio (this run)", "value", "numerator", "denominator"],
        &report
            .ratios
            .iter()
            .map(|r| {
                vec![
                    r.ratio.clone(),
                    format!("{:.2}×", r.value),
                    r.numerator.clone(),
                    r.denominator.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let candidates = if report.onnxruntime_int8_candidates.is_empty() {
        String::new()
    } else {
        let rows: Vec<Vec<String>> = report
            .onnxruntime_int8_candidates
            .iter()
            .map(|c| {
                let chosen = report.onnxruntime_int8_choice.as_deref() == Some(c.config.as_str());
                vec![
                    format!("{}{}", c.config, if chosen { " (timed)" } else { "" }),
                    c.accuracy
                        .map_or("—".into(), |a| format!("{:.2}%", 100.0 * a)),
                    c.full_test_images_per_s
                        .map_or("—".into(), |v| format!("{v:.0}")),
                    c.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        format!(
            "\nONNX Runtime's quantize_static configurations (one pass, {} threads):\n\n{}",
            report.threads,
            markdown(&["configuration", "accuracy", "img/s full", "error"], &rows)
        )
    };
    let layers = layer_table(report);
    let m = &report.machine;
    let header = format!(
        "# burnq benchmark\n\n{} · {} logical cores · features {} · kernel {} · {} · Burn {}{} · {}\n\n\
         {} test images of {}, {} MACs/image, medians of {} runs (the scalar reference: batch-64 on \
         its first 1280 images, one full-set run, 200 latency calls).\n\
         Model files: float {} bytes, integer {} bytes; weights in memory: float {} bytes, integer {} bytes.\n\n",
        m.cpu,
        m.logical_cores,
        m.features.join(" "),
        report.kernel,
        m.rustc,
        m.burn,
        report
            .onnxruntime
            .as_ref()
            .map_or(String::new(), |v| format!(" · {v}")),
        m.date_utc,
        report.test_images,
        report.dataset,
        report.macs_per_image,
        report.runs,
        report.float_model_bytes,
        report.int_model_bytes,
        report.float_weight_bytes,
        report.int_weight_bytes,
    );
    let notes: String = report.notes.iter().map(|n| format!("- {n}\n")).collect();
    let md = format!("{header}{table}\n{ratios}{candidates}{layers}\n{notes}");
    println!("\n{md}");
    let [json_path, md_path, svg_path] = crate::paths::bench_reports(&out);
    write_json_atomic(report, &json_path)?;
    write_atomic(&md_path, md.as_bytes())?;
    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
        .filter(|r| r.full_test_images_per_s.is_finite())
        .map(|r| {
            (
                format!("{} ×{}", r.engine, r.threads),
                r.full_test_images_per_s,
            )
        })
        .collect();
    let svg = bar_chart(
        &format!("Throughput on the {} test set ({})", report.dataset, m.cpu),
        "img/s",
        &bars,
    );
    write_atomic(&svg_path, svg.as_bytes())?;
    println!("wrote:");
    for f in [json_path, md_path, svg_path] {
        println!("  {}", display_path(&f));
    }
    Ok(())
}

/// The per-layer breakdown as a table, with each stage's share of its width's total, or
/// nothing when there is none.
fn layer_table(report: &Report) -> String {
    if report.layers.is_empty() {
        return String::new();
    }
    let total = |width: &str| -> f64 {
        report
            .layers
            .iter()
            .filter(|l| l.width == width)
            .map(|l| l.us_per_image)
            .sum()
    };
    let rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .map(|l| {
            vec![
                l.width.clone(),
                l.layer.clone(),
                l.stage.into(),
                l.gemm.into(),
                format!("{:.2}", l.us_per_image),
                format!("{:.0}%", 100.0 * l.us_per_image / total(&l.width)),
                l.gmac_per_s().map_or("—".into(), |g| format!("{g:.1}")),
                match (l.instruction, l.share_of_limit) {
                    (Some(name), Some(share)) => format!("{:.0}% of {name}", 100.0 * share),
                    _ => "—".into(),
                },
            ]
        })
        .collect();
    format!(
        "\nThe fast engine per layer and stage ({} kernel, 1 thread, {} test images per call, \
         median of {LAYER_RUNS} calls; µs per image):\n\n{}{}",
        report.kernel,
        layers::BATCH,
        markdown(
            &[
                "width",
                "layer",
                "stage",
                "GEMM",
                "µs/image",
                "share",
                "GMAC/s",
                "of the limit"
            ],
            &rows
        ),
        limits_line(report)
    )
}

/// The measured instruction limits the last column divides by, as one sentence.
fn limits_line(report: &Report) -> String {
    let Some(limits) = &report.instruction_limits else {
        return String::new();
    };
    let each: Vec<String> = limits
        .instructions
        .iter()
        .map(|l| {
            format!(
                "{} {:.2}/cycle × {} products = {:.0} GMAC/s",
                l.instruction, l.per_cycle, l.products, l.gmacs
            )
        })
        .collect();
    format!(
        "\nLimits of one core, measured in this run (`burnq_quant::kernels::limits`: {} \
         independent instructions per loop, the fastest of three): clock {:.2} GHz (dependent \
         adds); {}.\n",
        burnq_quant::kernels::limits::CHAINS,
        limits.clock_ghz,
        each.join("; ")
    )
}

/// `value` formatted as `format` does, or `—` when it was not measured.
fn fmt(value: f64, format: impl Fn(f64) -> String) -> String {
    if value.is_finite() {
        format(value)
    } else {
        "—".into()
    }
}
