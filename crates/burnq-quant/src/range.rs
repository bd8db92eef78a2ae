//! Clipping ranges for calibration, and the signal-to-quantization-noise ratio for
//! sensitivity reports: plain math on the observed `f32` values of one tensor, no Burn.
//!
//! A range `(min, max)` feeds [`QuantParams::from_range`], which widens it to contain 0; the
//! ranges returned here are already widened, so they are also what that function covers.
//!
//! - [`min_max`]: the observed extremes, the range that clips nothing.
//! - [`percentile`]: the `(100 − p)`-th and `p`-th percentiles, which ignore the rarest
//!   outliers.
//! - [`mse`]: the range whose `bits`-bit grid minimizes the mean squared error between the
//!   values and their quantize→dequantize, found by a grid search over a histogram (see
//!   [`mse`] for the details).
//! - [`mse_step`]: the step size of a grid with a fixed zero point (LSQ's weight grids) that
//!   minimizes the same error, by a search over [`GRID`] candidate steps.
//! - [`EmaRange`]: an exponential moving average of batch min/max (calibration's `ema`
//!   estimate and QAT's running ranges).
//! - [`sqnr_db`]: `10·log10(Σ ref² / Σ (ref − approx)²)`.

use crate::{QuantError, QuantParams, params::qmax};

/// Histogram bins of [`mse`]'s search.
const BINS: usize = 2048;
/// Candidate fractions `k/GRID`, `k = 1..=GRID`, of each end of the observed range.
const GRID: usize = 100;

/// The smallest and largest of `values`, widened to contain 0 (so `(0, 0)` for no values);
/// NaNs are ignored.
pub fn min_max(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// An exponential moving average of a tensor's batch minimum and maximum:
/// `r ← decay·r + (1 − decay)·batch` (in `f32`), the first batch setting the range.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EmaRange {
    /// Current estimate of the minimum.
    pub min: f32,
    /// Current estimate of the maximum.
    pub max: f32,
    /// Batches observed.
    pub updates: usize,
}

impl EmaRange {
    /// Folds one batch's `(min, max)` in: the first batch sets the range, later ones move it
    /// by `1 − decay` of the difference.
    pub fn update(&mut self, batch_min: f32, batch_max: f32, decay: f32) {
        if self.updates == 0 {
            (self.min, self.max) = (batch_min, batch_max);
        } else {
            self.min = decay * self.min + (1.0 - decay) * batch_min;
            self.max = decay * self.max + (1.0 - decay) * batch_max;
        }
        self.updates += 1;
    }

    /// The current `(min, max)`.
    pub fn range(&self) -> (f32, f32) {
        (self.min, self.max)
    }
}

/// Errors unless `values` is non-empty and every value is finite.
fn check_values(values: &[f32]) -> Result<(), QuantError> {
    if values.is_empty() {
        return Err(QuantError::InvalidValue {
            what: "calibration values".into(),
            reason: "no values".into(),
        });
    }
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(QuantError::NonFinite {
            what: "calibration values".into(),
            index,
            value,
        }),
        None => Ok(()),
    }
}

/// The `(100 − p)`-th and `p`-th percentiles of `values`, widened to contain 0; `p` in
/// `[50, 100]` (e.g. 99.99; 100 gives [`min_max`]).
///
/// Percentiles are exact, interpolated linearly between order statistics (NumPy's default):
/// the `q`-quantile of `n` sorted values `x` is `x[i] + f·(x[i+1] − x[i])` with
/// `i + f = (n − 1)·q`. Selection runs in linear time on a copy of `values`. Errors on no
/// values, a non-finite value, or `p` outside `[50, 100]`.
pub fn percentile(values: &[f32], p: f64) -> Result<(f32, f32), QuantError> {
    check_values(values)?;
    if !(50.0..=100.0).contains(&p) {
        return Err(QuantError::InvalidValue {
            what: "percentile".into(),
            reason: format!("{p} is not in [50, 100]"),
        });
    }
    let mut sorted = values.to_vec();
    let lo = quantile(&mut sorted, 1.0 - p / 100.0);
    let hi = quantile(&mut sorted, p / 100.0);
    Ok((lo.min(0.0), hi.max(0.0)))
}

/// The `q`-quantile (`q` in `[0, 1]`) of non-empty `values`, which it reorders.
fn quantile(values: &mut [f32], q: f64) -> f32 {
    let h = (values.len() - 1) as f64 * q;
    let i = (h.floor() as usize).min(values.len() - 1);
    let (_, &mut below, above) = values.select_nth_unstable_by(i, f32::total_cmp);
    let next = above.iter().copied().fold(f32::INFINITY, f32::min);
    let f = h - i as f64;
    if f == 0.0 || above.is_empty() {
        return below;
    }
    (f64::from(below) + f * (f64::from(next) - f64::from(below))) as f32
}

/// The clipping range, widened to contain 0, whose `bits`-bit asymmetric grid
/// ([`QuantParams::from_range`]) minimizes the mean squared error between `values` and
/// their quantize→dequantize.
///
/// The search:
/// 1. A histogram of `values` over their observed range `[min, max]` (widened to contain 0),
///    2048 equal bins.
/// 2. Candidates `(a·min, b·max)` for fractions `a, b` in `{1/100, 2/100, …, 1}`: both ends
///    shrink for a tensor with values of both signs (10⁴ candidates), only the nonzero end
///    for a one-signed tensor such as a ReLU output (100 candidates).
/// 3. Each candidate's error is estimated in `O(bins)`: values are taken as uniform within
///    their bin, and the squared error `e(x) = (x − Q(x))²` is integrated exactly over each
///    bin — the clipped tails `(x − L)²` below the lowest grid point `L` and `(x − H)²` above
///    the highest `H`, and between them the periodic rounding error, whose integral over one
///    step `S` is `S³/12`.
/// 4. The best estimate's exact error over all `values` is compared with the exact error of
///    the full range `[min, max]`, and the better one is returned (the full range on ties), so
///    the result is never worse than min/max.
///
/// Errors on no values, a non-finite value or an invalid bit width.
pub fn mse(values: &[f32], bits: u8) -> Result<(f32, f32), QuantError> {
    check_values(values)?;
    qmax(bits)?;
    let (min, max) = min_max(values);
    if min == max {
        return Ok((min, max));
    }
    let full = QuantParams::from_range(min, max, bits)?;
    let histogram = Histogram::new(values, min, max);
    // The fractions k/GRID of one end; only the whole end (k = GRID) when it is 0.
    let fractions = |end: f32| {
        let first = if end == 0.0 { GRID } else { 1 };
        (first..=GRID).map(move |k| (f64::from(end) * k as f64 / GRID as f64) as f32)
    };
    let mut best = (histogram.estimate(&full), (min, max));
    for lo in fractions(min) {
        for hi in fractions(max) {
            let Ok(params) = QuantParams::from_range(lo, hi, bits) else {
                continue;
            };
            let error = histogram.estimate(&params);
            if error < best.0 {
                best = (error, (lo, hi));
            }
        }
    }
    let (lo, hi) = best.1;
    let candidate = QuantParams::from_range(lo, hi, bits)?;
    if quantization_mse(values, &candidate) < quantization_mse(values, &full) {
        Ok((lo, hi))
    } else {
        Ok((min, max))
    }
}

/// The step size `s` of the `bits`-bit grid `s·(q − zero_point)` that minimizes the mean of
/// `(v − dequantize(quantize(v)))²` over `values`: among `s_k = s_max·k/GRID`,
/// `k = 1..=GRID`, where `s_max = max(−min/Z, max/(2^bits − 1 − Z))` is the least step whose
/// grid clips nothing (a side with no codes is ignored). `None` when the values are empty,
/// not all finite or all 0, or `zero_point` is not a code of `bits`.
pub fn mse_step(values: &[f32], bits: u8, zero_point: i32) -> Option<f32> {
    check_values(values).ok()?;
    let top = qmax(bits).ok()?;
    let (min, max) = min_max(values);
    let below = (zero_point > 0).then(|| -min / zero_point as f32);
    let above = (zero_point < top).then(|| max / (top - zero_point) as f32);
    let s_max = below.into_iter().chain(above).fold(0.0f32, f32::max);
    (1..=GRID)
        .filter_map(|k| {
            let s = s_max * k as f32 / GRID as f32;
            let grid = QuantParams::new(s, zero_point, bits).ok()?;
            Some((quantization_mse(values, &grid), s))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, s)| s)
}

/// The mean of `(v − dequantize(quantize(v)))²` over `values`, in `f64`.
fn quantization_mse(values: &[f32], params: &QuantParams) -> f64 {
    let sum: f64 = values
        .iter()
        .map(|&v| (f64::from(v) - f64::from(params.dequantize(params.quantize(v)))).powi(2))
        .sum();
    sum / values.len() as f64
}

/// Counts of values in equal bins over `[start, start + width·counts.len()]`, the empty bins
/// dropped.
#[derive(Debug)]
struct Histogram {
    start: f64,
    width: f64,
    /// `(bin index, count)` of every non-empty bin.
    bins: Vec<(usize, u64)>,
    total: u64,
}

impl Histogram {
    /// [`BINS`] bins over `[min, max]`, `min < max`; every value must lie within.
    fn new(values: &[f32], min: f32, max: f32) -> Self {
        let (start, width) = (
            f64::from(min),
            (f64::from(max) - f64::from(min)) / BINS as f64,
        );
        let mut counts = vec![0u64; BINS];
        for &v in values {
            let i = ((f64::from(v) - start) / width) as usize;
            counts[i.min(BINS - 1)] += 1;
        }
        let bins = counts
            .into_iter()
            .enumerate()
            .filter(|&(_, c)| c > 0)
            .collect();
        Self {
            start,
            width,
            bins,
            total: values.len() as u64,
        }
    }

    /// The mean squared quantization error under `params`, values uniform within each bin
    /// (see [`mse`], step 3).
    fn estimate(&self, params: &QuantParams) -> f64 {
        let s = f64::from(params.scale());
        let z = f64::from(params.zero_point());
        let (low, high) = (-z * s, (f64::from(params.qmax()) - z) * s);
        // ∫ of (u − round(u))² from −1/2 to u: 1/12 per whole step, then the partial step.
        let sawtooth = |u: f64| {
            let n = (u + 0.5).floor();
            let v = u - n;
            n / 12.0 + (v * v * v + 0.125) / 3.0
        };
        let cube = |x: f64| x * x * x;
        let sum: f64 = self
            .bins
            .iter()
            .map(|&(i, count)| {
                let a = self.start + i as f64 * self.width;
                let b = a + self.width;
                let mut integral = 0.0;
                if a < low {
                    integral += (cube(b.min(low) - low) - cube(a - low)) / 3.0;
                }
                if b > high {
                    integral += (cube(b - high) - cube(a.max(high) - high)) / 3.0;
                }
                let (mid_a, mid_b) = (a.max(low), b.min(high));
                if mid_a < mid_b {
                    integral += s * s * s * (sawtooth(mid_b / s) - sawtooth(mid_a / s));
                }
                count as f64 * integral / self.width
            })
            .sum();
        sum / self.total as f64
    }
}

/// Signal-to-quantization-noise ratio in decibels, `10·log10(Σ ref² / Σ (ref − approx)²)`
/// (sums in `f64`): `+∞` when `approx` equals `reference` (no noise), `−∞` when `reference`
/// is all zeros but `approx` is not, NaN if a value is NaN.
///
/// # Panics
/// If the slices differ in length.
pub fn sqnr_db(reference: &[f32], approx: &[f32]) -> f64 {
    assert_eq!(
        reference.len(),
        approx.len(),
        "sqnr_db needs slices of equal length"
    );
    let (signal, noise) =
        reference
            .iter()
            .zip(approx)
            .fold((0.0f64, 0.0f64), |(signal, noise), (&r, &a)| {
                let (r, a) = (f64::from(r), f64::from(a));
                (signal + r * r, noise + (r - a) * (r - a))
            });
    if noise == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (signal / noise).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_starts_at_the_first_batch_then_moves_by_one_minus_decay() {
        let mut r = EmaRange::default();
        r.update(-1.0, 2.0, 0.9);
        assert_eq!((r.range(), r.updates), ((-1.0, 2.0), 1));
        r.update(-3.0, 4.0, 0.9);
        // −1 then 0.9·(−1) + 0.1·(−3) = −1.2; 2 then 0.9·2 + 0.1·4 = 2.2 (f32).
        assert_eq!(r.range(), (-0.9 + 0.1 * -3.0, 0.9 * 2.0 + 0.1 * 4.0));
        r.update(5.0, 5.0, 1.0);
        assert_eq!(
            (r.range(), r.updates),
            ((-0.9 + 0.1 * -3.0, 0.9 * 2.0 + 0.1 * 4.0), 3)
        );
    }

    #[test]
    fn ema_ranges_converge_on_a_stationary_input() {
        let mut r = EmaRange::default();
        r.update(-10.0, 10.0, 0.9);
        for _ in 0..200 {
            r.update(-1.0, 2.0, 0.9);
        }
        assert!(
            (r.min + 1.0).abs() < 1e-4 && (r.max - 2.0).abs() < 1e-4,
            "{r:?}"
        );
        assert_eq!(r.updates, 201);
    }

    /// SplitMix64 values: uniform in `[0, 1)` and standard normal (Box–Muller).
    struct Rng(u64);

    impl Rng {
        fn unit(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }

        fn normal(&mut self) -> f64 {
            let (u, v) = (1.0 - self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        }
    }

    /// The integers `from..=to` as `f32`, in a scrambled order.
    fn shuffled(from: i32, to: i32) -> Vec<f32> {
        let mut values: Vec<f32> = (from..=to).map(|v| v as f32).collect();
        let mut rng = Rng(3);
        for i in (1..values.len()).rev() {
            values.swap(i, (rng.unit() * (i + 1) as f64) as usize);
        }
        values
    }

    #[test]
    fn mse_step_of_known_values() {
        // Codes 0..=3 with Z = 2: the grid is s·{−2, −1, 0, 1}. Values ±1 and ±0.1: s = 1
        // represents −1, 0 (≈ ±0.1) and 1 exactly, the least error of the search
        // (s_max = max(1/2, 1/1) = 1).
        let values = [1.0, -1.0, 0.1, -0.1];
        assert_eq!(mse_step(&values, 2, 2), Some(1.0));
        // One outlier among many small values: clipping it (s = 0.1, error 0.9² once) beats
        // covering it (s = 1, error 0.1² on 999 values).
        let mut values = vec![0.1f32; 999];
        values.push(1.0);
        let s = mse_step(&values, 2, 2).unwrap();
        assert!((s - 0.1).abs() < 1e-6, "{s}");
        assert_eq!(mse_step(&[0.0, 0.0], 2, 2), None);
        assert_eq!(mse_step(&[], 2, 2), None);
        assert_eq!(mse_step(&[1.0], 2, 4), None);
    }

    #[test]
    fn min_max_contains_zero() {
        assert_eq!(min_max(&[2.0, 5.0, 3.0]), (0.0, 5.0));
        assert_eq!(min_max(&[-2.0, -5.0]), (-5.0, 0.0));
        assert_eq!(min_max(&[-1.0, f32::NAN, 4.0]), (-1.0, 4.0));
        assert_eq!(min_max(&[]), (0.0, 0.0));
    }

    #[test]
    fn percentiles_of_known_distributions() {
        // 0..=10000: the q-quantile is 10000·q.
        let values = shuffled(0, 10_000);
        let (lo, hi) = percentile(&values, 99.0).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 9900.0).abs() < 1e-3, "{hi}");
        assert_eq!(percentile(&values, 100.0).unwrap(), (0.0, 10_000.0));
        assert_eq!(percentile(&values, 50.0).unwrap(), (0.0, 5000.0));
        // −5000..=5000 at 99.99: positions 1 and 9999 of 10001, exactly −4999 and 4999.
        let (lo, hi) = percentile(&shuffled(-5000, 5000), 99.99).unwrap();
        assert!(
            (lo + 4999.0).abs() < 1e-2 && (hi - 4999.0).abs() < 1e-2,
            "{lo} {hi}"
        );
        // Interpolation: the 75th percentile of [1, 2, 3, 4, 5, 6] is at position 3.75.
        let (_, hi) = percentile(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0], 75.0).unwrap();
        assert_eq!(hi, 4.75);
        // All positive: widened to 0.
        assert_eq!(percentile(&shuffled(100, 200), 99.0).unwrap().0, 0.0);
        // A standard normal sample: the 97.5th percentile is about 1.96.
        let mut rng = Rng(11);
        let normal: Vec<f32> = (0..200_000).map(|_| rng.normal() as f32).collect();
        let (lo, hi) = percentile(&normal, 97.5).unwrap();
        assert!(
            (lo + 1.96).abs() < 0.03 && (hi - 1.96).abs() < 0.03,
            "{lo} {hi}"
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        for p in [49.9, 100.1, f64::NAN] {
            assert!(percentile(&[1.0], p).is_err(), "{p}");
        }
        assert!(percentile(&[], 99.0).is_err());
        assert!(matches!(
            percentile(&[1.0, f32::INFINITY], 99.0),
            Err(QuantError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            mse(&[1.0, f32::NAN], 8),
            Err(QuantError::NonFinite { index: 1, .. })
        ));
        assert!(mse(&[], 8).is_err());
        assert!(matches!(
            mse(&[1.0], 9),
            Err(QuantError::InvalidBits { bits: 9 })
        ));
        assert_eq!(mse(&[0.0, 0.0], 4).unwrap(), (0.0, 0.0));
    }

    #[test]
    fn histogram_estimate_matches_exact_error() {
        let mut rng = Rng(5);
        let values: Vec<f32> = (0..100_000).map(|_| rng.normal() as f32).collect();
        let (min, max) = min_max(&values);
        let histogram = Histogram::new(&values, min, max);
        for (lo, hi, bits) in [(min, max, 8), (min, max, 2), (-1.5, 2.0, 4), (-0.5, 0.5, 3)] {
            let params = QuantParams::from_range(lo, hi, bits).unwrap();
            let (estimate, exact) = (
                histogram.estimate(&params),
                quantization_mse(&values, &params),
            );
            assert!(
                (estimate - exact).abs() <= 0.02 * exact,
                "[{lo}, {hi}] at {bits} bits: {estimate} vs {exact}"
            );
        }
    }

    #[test]
    fn mse_range_is_never_worse_than_min_max() {
        let mut rng = Rng(7);
        let samples: [Vec<f32>; 3] = [
            (0..20_000).map(|_| rng.unit() as f32 * 4.0 - 1.0).collect(),
            (0..20_000).map(|_| rng.normal().max(0.0) as f32).collect(),
            (0..20_000).map(|_| -(rng.normal().abs() as f32)).collect(),
        ];
        for values in &samples {
            let (min, max) = min_max(values);
            for bits in 2..=8 {
                let (lo, hi) = mse(values, bits).unwrap();
                assert!(min <= lo && lo <= 0.0 && 0.0 <= hi && hi <= max);
                let chosen = QuantParams::from_range(lo, hi, bits).unwrap();
                let full = QuantParams::from_range(min, max, bits).unwrap();
                assert!(quantization_mse(values, &chosen) <= quantization_mse(values, &full));
            }
        }
    }

    #[test]
    fn mse_range_clips_heavy_tails() {
        // A Gaussian bulk with rare, huge outliers of both signs.
        let mut rng = Rng(9);
        let mut values: Vec<f32> = (0..100_000).map(|_| rng.normal() as f32).collect();
        values.extend([-60.0, 45.0, 80.0]);
        for bits in [2, 4, 6] {
            let (lo, hi) = mse(&values, bits).unwrap();
            let chosen = QuantParams::from_range(lo, hi, bits).unwrap();
            let full = QuantParams::from_range(-60.0, 80.0, bits).unwrap();
            let (chosen, full) = (
                quantization_mse(&values, &chosen),
                quantization_mse(&values, &full),
            );
            println!("{bits} bits: [{lo}, {hi}], MSE {chosen} vs {full}");
            // At most half of either end: the outliers are clipped (at 6 bits the optimum still
            // reaches part-way towards them, about [−3.6, 28.8]).
            assert!(hi < 40.0 && lo > -30.0, "{bits} bits: [{lo}, {hi}]");
            assert!(chosen < 0.5 * full, "{bits} bits: {chosen} vs {full}");
        }
    }

    #[test]
    fn sqnr_hand_cases() {
        assert_eq!(sqnr_db(&[1.0, -2.0], &[1.0, -2.0]), f64::INFINITY);
        assert_eq!(sqnr_db(&[], &[]), f64::INFINITY);
        // Signal 25, noise 0.25: a ratio of 100, 20 dB.
        assert!((sqnr_db(&[3.0, 4.0], &[3.0, 3.5]) - 20.0).abs() < 1e-12);
        // Signal 1, noise 1: 0 dB; noise 10× the signal: −10 dB.
        assert_eq!(sqnr_db(&[1.0, 0.0], &[0.0, 0.0]), 0.0);
        assert!((sqnr_db(&[1.0], &[1.0 + 10f32.sqrt()]) + 10.0).abs() < 1e-6);
        assert_eq!(sqnr_db(&[0.0, 0.0], &[0.5, 0.0]), f64::NEG_INFINITY);
        assert!(sqnr_db(&[f32::NAN], &[0.0]).is_nan());
    }

    #[test]
    #[should_panic(expected = "equal length")]
    fn sqnr_needs_equal_lengths() {
        sqnr_db(&[1.0], &[1.0, 2.0]);
    }
}
