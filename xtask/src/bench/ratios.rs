//! The ratios a bench run prints: burnq's saved model against each ONNX Runtime row and the
//! best one (each side at its best thread count, and at equal thread counts), every width
//! against the saved model, and batch-1 latency likewise.

use super::*;

/// The ratios of this run: burnq's saved model against each ONNX Runtime row and the best,
/// each width against the saved model, at each thread count; batch-1 latency likewise.
pub(super) fn ratios(rows: &[Row], main_width: &str, threads: usize) -> Vec<Ratio> {
    let mut out = Vec::new();
    let measured = |r: &&Row| r.full_test_images_per_s.is_finite();
    let label = |r: &Row| format!("{} ×{}", r.engine, r.threads);
    let mut push = |ratio: String, value: f64, num: &Row, den: &Row| {
        out.push(Ratio {
            ratio,
            value,
            numerator: label(num),
            denominator: label(den),
        })
    };
    // The headline: each side at its best thread count (a loaded machine may favour one).
    fn fastest(rows: Vec<&Row>) -> Option<&Row> {
        rows.into_iter().max_by(|a, b| {
            a.full_test_images_per_s
                .total_cmp(&b.full_test_images_per_s)
        })
    }
    fn quickest(rows: Vec<&Row>) -> Option<&Row> {
        rows.into_iter()
            .min_by(|a, b| a.latency_p50_us.total_cmp(&b.latency_p50_us))
    }
    let main_rows = || -> Vec<&Row> {
        rows.iter()
            .filter(measured)
            .filter(|r| is_fast_engine(r, main_width))
            .collect()
    };
    let ort_rows = || -> Vec<&Row> {
        rows.iter()
            .filter(measured)
            .filter(|r| r.family == "onnxruntime")
            .collect()
    };
    if let (Some(main), Some(ort)) = (fastest(main_rows()), fastest(ort_rows())) {
        push(
            format!(
                "burnq {main_width} / best ONNX Runtime, each at its best thread count, img/s full test set"
            ),
            main.full_test_images_per_s / ort.full_test_images_per_s,
            main,
            ort,
        );
    }
    if let (Some(main), Some(ort)) = (quickest(main_rows()), quickest(ort_rows())) {
        push(
            format!("best ONNX Runtime batch-1 p50 / burnq {main_width}'s, each at its best"),
            ort.latency_p50_us / main.latency_p50_us,
            ort,
            main,
        );
    }
    let mut counts = vec![threads];
    if threads > 1 {
        counts.push(1);
    }
    for t in counts {
        let t_label = t.to_string();
        let at_t = |r: &&Row| r.threads == t_label;
        let burnq = |w: &str| {
            rows.iter()
                .filter(measured)
                .filter(at_t)
                .find(|r| is_fast_engine(r, w))
        };
        let Some(main) = burnq(main_width) else {
            continue;
        };
        let ort: Vec<&Row> = rows
            .iter()
            .filter(measured)
            .filter(at_t)
            .filter(|r| r.family == "onnxruntime")
            .collect();
        if let Some(best) = ort.iter().max_by(|a, b| {
            a.full_test_images_per_s
                .total_cmp(&b.full_test_images_per_s)
        }) {
            push(
                format!(
                    "burnq {main_width} / best ONNX Runtime, img/s full test set, {t} thread(s)"
                ),
                main.full_test_images_per_s / best.full_test_images_per_s,
                main,
                best,
            );
        }
        for r in &ort {
            push(
                format!(
                    "burnq {main_width} / {}, img/s full test set, {t} thread(s)",
                    r.engine
                ),
                main.full_test_images_per_s / r.full_test_images_per_s,
                main,
                r,
            );
        }
        if let Some(best) = ort
            .iter()
            .min_by(|a, b| a.latency_p50_us.total_cmp(&b.latency_p50_us))
        {
            push(
                format!("best ONNX Runtime batch-1 p50 / burnq {main_width}'s, {t} thread(s)"),
                best.latency_p50_us / main.latency_p50_us,
                best,
                main,
            );
        }
        for r in rows.iter().filter(measured).filter(at_t) {
            if r.family == "burnq"
                && !std::ptr::eq(r, main)
                && burnq(r.width.as_deref().unwrap_or("")).is_some_and(|b| std::ptr::eq(b, r))
            {
                push(
                    format!(
                        "burnq {} / burnq {main_width}, img/s full test set, {t} thread(s)",
                        r.width.as_deref().unwrap_or("?")
                    ),
                    r.full_test_images_per_s / main.full_test_images_per_s,
                    r,
                    main,
                );
            }
        }
        if t == threads
            && let Some(burn) = rows.first().filter(measured)
        {
            push(
                format!("burnq {main_width} / {}, img/s full test set", burn.engine),
                main.full_test_images_per_s / burn.full_test_images_per_s,
                main,
                burn,
            );
        }
    }
    out
}

/// Whether `r` is burnq's fast engine (not the scalar reference, not the forced generic kernel
/// of the saved model) at width `width`.
pub(super) fn is_fast_engine(r: &Row, width: &str) -> bool {
    r.family == "burnq"
        && r.width.as_deref() == Some(width)
        && !r.engine.contains("reference")
        && !r.engine.contains("(generic)")
}
