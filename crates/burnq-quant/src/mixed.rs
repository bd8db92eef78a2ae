//! Mixed-precision search (after HAWQ/HAQ's budgeted bit allocation): given, for each layer,
//! candidate widths with their storage cost and a measured sensitivity cost, choose one
//! candidate per layer minimizing the summed cost with the summed storage within a budget.
//!
//! The summed cost models the network's loss as additive over layers (each layer's cost is
//! measured with only that layer quantized). The search is exact for that model: a dynamic
//! programme over layers that keeps, after each layer, only the partial choices no other
//! partial choice beats in both bytes and cost (the Pareto set), so it stays small for any
//! number of layers.

/// One candidate width of one layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Bytes the layer's weights take stored at this width.
    pub bytes: usize,
    /// The measured sensitivity cost (e.g. the accuracy drop with only this layer at this
    /// width, plus a tie-breaking noise term); lower is better.
    pub cost: f64,
}

/// One assignment of a candidate to every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The chosen candidate's index, per layer.
    pub picks: Vec<usize>,
    /// Σ bytes of the chosen candidates.
    pub bytes: usize,
    /// Σ cost of the chosen candidates.
    pub cost: f64,
}

/// Every assignment (one candidate per layer of `layers`) within `budget` bytes that no other
/// such assignment beats in both bytes and cost, by increasing bytes (hence decreasing cost).
/// Empty when even the smallest candidates exceed the budget or a layer has no candidate.
pub fn front(layers: &[Vec<Candidate>], budget: usize) -> Vec<Choice> {
    let mut states = vec![Choice {
        picks: Vec::new(),
        bytes: 0,
        cost: 0.0,
    }];
    for candidates in layers {
        let mut next: Vec<Choice> = states
            .iter()
            .flat_map(|s| {
                candidates.iter().enumerate().filter_map(move |(i, c)| {
                    let bytes = s.bytes.checked_add(c.bytes)?;
                    (bytes <= budget).then(|| Choice {
                        picks: s.picks.iter().copied().chain([i]).collect(),
                        bytes,
                        cost: s.cost + c.cost,
                    })
                })
            })
            .collect();
        next.sort_by(|a, b| a.bytes.cmp(&b.bytes).then(a.cost.total_cmp(&b.cost)));
        let mut best = f64::INFINITY;
        next.retain(|s| {
            let keep = s.cost < best;
            best = best.min(s.cost);
            keep
        });
        states = next;
    }
    states
}

/// The assignment of least cost within `budget` bytes ([`front`]'s last), if any.
pub fn choose(layers: &[Vec<Candidate>], budget: usize) -> Option<Choice> {
    front(layers, budget).pop()
}

/// Indices of the points `(size, accuracy)` that no other point beats, i.e. none is at most
/// as large and strictly more accurate, or strictly smaller and at least as accurate: the
/// Pareto front of accuracy against size, by increasing size.
pub fn pareto(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[b].1.total_cmp(&points[a].1))
    });
    let mut best = f64::NEG_INFINITY;
    order.retain(|&i| {
        let keep = points[i].1 > best;
        best = best.max(points[i].1);
        keep
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(bytes: usize, cost: f64) -> Candidate {
        Candidate { bytes, cost }
    }

    /// Every assignment, by brute force: the exact answer the search must find.
    fn brute_force(layers: &[Vec<Candidate>], budget: usize) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        let total: usize = layers.iter().map(Vec::len).product();
        for mut k in 0..total {
            let (mut bytes, mut cost) = (0, 0.0);
            for l in layers {
                let cand = l[k % l.len()];
                k /= l.len();
                bytes += cand.bytes;
                cost += cand.cost;
            }
            if bytes <= budget && best.is_none_or(|(_, b)| cost < b) {
                best = Some((bytes, cost));
            }
        }
        best
    }

    #[test]
    fn search_is_exact_and_within_budget() {
        // Four layers of the tutorial's sizes at 8, 4 and 2 bits, with costs that make the
        // large layer cheap to narrow and the small ones expensive.
        let sizes = [500usize, 25_000, 400_000, 5_000];
        let costs = [
            [0.0, 0.02, 0.2],
            [0.0, 0.001, 0.01],
            [0.0, 0.0005, 0.003],
            [0.0, 0.004, 0.05],
        ];
        let layers: Vec<Vec<Candidate>> = sizes
            .iter()
            .zip(costs)
            .map(|(&n, cost)| {
                [8, 4, 2]
                    .iter()
                    .zip(cost)
                    .map(|(&b, k)| c(n * b / 8, k))
                    .collect()
            })
            .collect();
        for budget in [
            0,
            107_625,
            110_000,
            120_000,
            150_000,
            250_000,
            430_500,
            1 << 30,
        ] {
            let expected = brute_force(&layers, budget);
            let got = choose(&layers, budget);
            assert_eq!(
                got.as_ref().map(|g| g.cost),
                expected.map(|e| e.1),
                "{budget}"
            );
            if let Some(g) = got {
                assert!(g.bytes <= budget);
                let bytes: usize = g.picks.iter().zip(&layers).map(|(&p, l)| l[p].bytes).sum();
                assert_eq!(bytes, g.bytes);
            }
        }
        // 2 bits everywhere is exactly a quarter of the 8-bit bytes; less fits nothing.
        assert_eq!(choose(&layers, 107_625).unwrap().picks, [2, 2, 2, 2]);
        assert!(choose(&layers, 107_624).is_none());
        // The front is increasing in bytes and strictly decreasing in cost.
        let f = front(&layers, 1 << 30);
        assert!(
            f.windows(2)
                .all(|w| w[0].bytes < w[1].bytes && w[0].cost > w[1].cost)
        );
        assert_eq!(f.last().unwrap().picks, [0, 0, 0, 0]);
    }

    #[test]
    fn pareto_keeps_the_undominated_points() {
        let points = [
            (10.0, 0.9),
            (5.0, 0.8),
            (5.0, 0.85),
            (20.0, 0.9),
            (30.0, 0.95),
            (1.0, 0.1),
        ];
        assert_eq!(pareto(&points), [5, 2, 0, 4]);
        assert!(pareto(&[]).is_empty());
    }
}
