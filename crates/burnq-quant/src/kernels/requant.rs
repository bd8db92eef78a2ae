//! A layer's requantization, prepared for the kernels: the exact scalar [`Requant`] of each
//! output channel (the portable kernel and every SIMD tail use it) and the same stages as
//! per-lane constants ([`Lanes`]) for eight-lane SIMD code; for outputs of at most four codes
//! (two bits) also as thresholds ([`Steps`]), which the AVX2 pooling epilogue compares against
//! instead of running the stages (conv1 at w2a2 on Zen 5: 6.75 → 5.86 µs per image).
//!
//! The SIMD form computes, per lane, exactly [`Requant::apply`]:
//! 1. `a = sat(acc · 2^left)`, `left = clamp(shift, 0, 32)`: shift left, and where shifting
//!    back does not restore `acc`, saturate to `i32::MIN` or `i32::MAX` by the sign of `acc`;
//! 2. `x = SRDHM(a, m0) = ⌊(a·m0 + 2^30) / 2^31⌋`: gemmlowp's `(a·m0 + nudge) / 2^31`,
//!    truncating, with `nudge = 2^30` or `1 − 2^30`, is this one floor for every sign (for
//!    `a·m0 < 0`, truncation is the floor plus `(2^31 − 1)/2^31`, and `1 − 2^30 + 2^31 − 1 =
//!    2^30`); its one overflow, `a = m0 = i32::MIN`, cannot occur because `m0 ≥ 0`;
//! 3. `y = RDBP(x, right)`, `right = max(−shift, 0) ≤ 31`: `(x >> right) + (rem > thr)` with
//!    `mask = 2^right − 1`, `rem = x & mask`, `thr = (mask >> 1) + (x < 0)`;
//! 4. `q = clamp(y, act_min − Z_out, act_max − Z_out) + Z_out`, which equals
//!    `clamp(sat(y + Z_out), act_min, act_max)` for `0 ≤ Z_out ≤ 255` (if `y + Z_out` would
//!    saturate, `y` exceeds the upper bound anyway), including `act_min > act_max` (→ `act_max`).
//!
//! Hence the restrictions checked by [`LayerRequant::new`], all met by validated models:
//! `m0 ≥ 0`, `shift ≥ −31` and `0 ≤ Z_out ≤ 255`. `m0 ≥ 0` also makes requantization
//! non-decreasing in `acc`, so a max-pool may run on accumulators before it.

use crate::{QuantError, Requant};

/// Per-lane requantization constants of eight output channels (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Lanes {
    /// Q0.31 mantissa.
    pub(crate) m0: [i32; 8],
    /// Left shift, `clamp(shift, 0, 32)`.
    pub(crate) left: [i32; 8],
    /// Right shift, `max(−shift, 0)`.
    pub(crate) right: [i32; 8],
    /// `2^right − 1`.
    pub(crate) mask: [i32; 8],
    /// `mask >> 1`, the rounding threshold of a non-negative value.
    pub(crate) half: [i32; 8],
    /// `act_min − Z_out`.
    pub(crate) lo: [i32; 8],
    /// `act_max − Z_out`.
    pub(crate) hi: [i32; 8],
    /// `Z_out`.
    pub(crate) zero_point: [i32; 8],
    /// Whether some lane shifts left (`left > 0`); if none does, stage 1 is the identity.
    pub(crate) any_left: bool,
}

impl Lanes {
    /// Lanes `i < requants.len() ≤ 8` from `requants[i]`; the other lanes produce 0.
    fn new(requants: &[Requant]) -> Self {
        let mut lanes = Self::default();
        for (i, r) in requants.iter().enumerate() {
            let right = (-r.shift).max(0);
            let mask = ((1i64 << right) - 1) as i32;
            let zero_point = r.output_zero_point;
            lanes.m0[i] = r.m0;
            lanes.left[i] = r.shift.clamp(0, 32);
            lanes.right[i] = right;
            lanes.mask[i] = mask;
            lanes.half[i] = mask >> 1;
            lanes.lo[i] = i32::from(r.act_min) - zero_point;
            lanes.hi[i] = i32::from(r.act_max) - zero_point;
            lanes.zero_point[i] = zero_point;
        }
        lanes.any_left = lanes.left.iter().any(|&l| l > 0);
        lanes
    }
}

/// The requantization of every output channel of a layer, in the forms the kernels read.
/// Most codes above the lowest for which a channel's requantization runs as thresholds
/// ([`Steps`]): two-bit outputs.
pub(crate) const MAX_STEPS: usize = 3;

/// A channel's requantization as thresholds: `apply(acc) = base + #{t : acc > after[t]}`.
/// Requantization is non-decreasing in `acc` (`m0 ≥ 0`), so each code above the lowest one
/// reachable, `base = apply(i32::MIN)`, starts at one accumulator `T`, found by bisection; `after`
/// holds `T − 1` (`≥ i32::MIN` since `T > i32::MIN`), and `i32::MAX`, which no `acc` exceeds,
/// for the unused ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Steps {
    /// The lowest code, `apply(i32::MIN)`.
    pub(crate) base: i32,
    /// The last accumulator below each higher code.
    pub(crate) after: [i32; MAX_STEPS],
}

impl Steps {
    /// The thresholds of `r`, if its codes over all accumulators span at most [`MAX_STEPS`]
    /// codes above the lowest.
    fn new(r: &Requant) -> Option<Self> {
        let base = i32::from(r.apply(i32::MIN));
        let levels = usize::try_from(i32::from(r.apply(i32::MAX)) - base).ok()?;
        if levels > MAX_STEPS {
            return None;
        }
        let mut after = [i32::MAX; MAX_STEPS];
        for (code, slot) in (base + 1..).zip(after.iter_mut().take(levels)) {
            // apply(lo) < code ≤ apply(hi), so the step lies in (lo, hi].
            let (mut lo, mut hi) = (i64::from(i32::MIN), i64::from(i32::MAX));
            while hi - lo > 1 {
                let mid = (lo + hi).div_euclid(2);
                // `mid` lies strictly between two `i32`s.
                if i32::from(r.apply(mid as i32)) >= code {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            *slot = lo as i32;
        }
        Some(Self { base, after })
    }

    /// The code of `acc`, by the definition the SIMD code follows.
    #[cfg(test)]
    fn apply(&self, acc: i32) -> i32 {
        self.base + self.after.iter().filter(|&&t| acc > t).count() as i32
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerRequant {
    /// One exact scalar stage per channel.
    pub(crate) scalar: Vec<Requant>,
    /// Per channel, its constants in all eight lanes (for a run of one channel's values).
    pub(crate) splat: Vec<Lanes>,
    /// Per group of eight consecutive channels, one channel per lane (for a row of all the
    /// channels); padded to an even number of groups, a whole column panel.
    pub(crate) groups: Vec<Lanes>,
    /// Per channel, its thresholds, if every channel has them ([`Steps`]).
    pub(crate) steps: Option<Vec<Steps>>,
}

impl LayerRequant {
    /// Prepares `requants`, which must satisfy the module's restrictions.
    pub(crate) fn new(layer: &str, requants: Vec<Requant>) -> Result<Self, QuantError> {
        for (o, r) in requants.iter().enumerate() {
            if r.m0 < 0 || r.shift < -31 || !(0..=255).contains(&r.output_zero_point) {
                return Err(QuantError::InvalidValue {
                    what: format!("{layer} requantization"),
                    reason: format!(
                        "channel {o}: the fast kernels need m0 ≥ 0, shift ≥ −31 and a zero point in [0, 255], got {r:?}"
                    ),
                });
            }
        }
        let splat = requants.iter().map(|r| Lanes::new(&[*r; 8])).collect();
        let mut groups: Vec<Lanes> = requants.chunks(8).map(Lanes::new).collect();
        groups.resize(groups.len().next_multiple_of(2), Lanes::default());
        Ok(Self {
            steps: requants.iter().map(Steps::new).collect(),
            scalar: requants,
            splat,
            groups,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requant(m0: i32, shift: i32, output_zero_point: i32) -> Requant {
        Requant {
            m0,
            shift,
            output_zero_point,
            act_min: 3,
            act_max: 200,
        }
    }

    #[test]
    fn lane_constants() {
        let prepared =
            LayerRequant::new("t", vec![requant(1 << 30, -3, 10), requant(0, 40, 0)]).unwrap();
        let g = &prepared.groups[0];
        assert_eq!(prepared.groups.len(), 2);
        assert_eq!((g.left[0], g.right[0], g.mask[0], g.half[0]), (0, 3, 7, 3));
        assert_eq!((g.lo[0], g.hi[0], g.zero_point[0]), (-7, 190, 10));
        assert_eq!((g.left[1], g.right[1]), (32, 0));
        assert!(g.any_left && !prepared.splat[0].any_left);
        assert_eq!(g.m0[2..], [0; 6]);
        assert_eq!(prepared.splat[0].mask, [7; 8]);
        let r31 = LayerRequant::new("t", vec![requant(1 << 30, -31, 0)]).unwrap();
        assert_eq!(r31.splat[0].mask[0], i32::MAX);
    }

    /// Thresholds give exactly the stages' code at both sides of every step, at the ends of
    /// `i32` and between: for every combination of mantissas, shifts (left and right), zero
    /// points and output ranges of at most four codes (always thresholds) or more (thresholds
    /// only where the whole `i32` range maps to at most four codes).
    #[test]
    fn thresholds_equal_the_stages_at_every_step() {
        let mut checked = 0;
        for m0 in [0, 1 << 30, (1 << 30) + 12_345, i32::MAX] {
            for shift in [-31, -20, -8, -1, 0, 1, 5, 31, 32] {
                for output_zero_point in [0, 1, 3, 128, 255] {
                    for (act_min, act_max) in [(0, 3), (1, 3), (0, 1), (2, 2), (3, 0), (0, 255)] {
                        let r = Requant {
                            m0,
                            shift,
                            output_zero_point,
                            act_min,
                            act_max,
                        };
                        let span = i32::from(r.apply(i32::MAX)) - i32::from(r.apply(i32::MIN));
                        let Some(steps) = Steps::new(&r) else {
                            assert!(span > MAX_STEPS as i32, "{r:?}");
                            continue;
                        };
                        let mut probes = vec![i32::MIN, -1, 0, 1, i32::MAX, 1 << 20, -(1 << 20)];
                        for &t in &steps.after {
                            probes.extend([t, t.saturating_add(1), t.saturating_sub(1)]);
                        }
                        for acc in probes {
                            assert_eq!(steps.apply(acc), i32::from(r.apply(acc)), "{r:?} at {acc}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(
            checked > 900,
            "only {checked} requantizations had thresholds"
        );
    }

    #[test]
    fn unsupported_stages_are_errors() {
        for bad in [
            requant(-1, 0, 0),
            requant(1 << 30, -32, 0),
            requant(1 << 30, 0, 256),
            requant(1 << 30, 0, -1),
        ] {
            assert!(matches!(
                LayerRequant::new("t", vec![bad]),
                Err(QuantError::InvalidValue { .. })
            ));
        }
    }
}
