use super::*;

fn device() -> Device {
    Device::flex().autodiff()
}

#[test]
fn weight_grids_are_symmetric_with_zero_exact() {
    assert_eq!(signed_range(2), (2.0, 1.0, 2));
    assert_eq!(signed_range(8), (128.0, 127.0, 128));
    let mut lsq = LsqState::default();
    let w = Tensor::<2>::from_floats([[0.3, -0.2, 0.0], [0.05, 0.1, -0.4]], &device());
    let (q, grids) = lsq.weights("conv1", w, None, 4, true, false).unwrap();
    assert_eq!(grids.len(), 2);
    for (row, grid) in to_vec(q).chunks(3).zip(&grids) {
        assert_eq!(grid.zero_point(), 8);
        for v in row {
            let k = v / grid.scale();
            assert!(
                (k - k.round()).abs() < 1e-4 && (-8.0..=7.0).contains(&k.round()),
                "{v}"
            );
        }
    }
}

#[test]
fn exact_weights_take_the_converters_codes() {
    // The tensor is off by a little from the converter's values; the codes are the
    // converter's, `grid.quantize(v) − Z`, and the gradient still reaches the tensor.
    let d = device();
    let exact = [0.5f32, -0.26, 0.1, 0.9];
    let w = Tensor::<2>::from_floats([[0.5, -0.24], [0.1, 0.9]], &d).require_grad();
    let mut lsq = LsqState::default();
    let (q, grids) = lsq
        .weights("fc", w.clone(), Some(&exact), 3, false, true)
        .unwrap();
    let got = to_vec(q.clone());
    for (i, &v) in exact.iter().enumerate() {
        assert_eq!(got[i], grids[0].dequantize(grids[0].quantize(v)), "{i}");
    }
    let grads = q.sum().backward();
    assert_eq!(to_vec(w.grad(&grads).unwrap()), [1.0; 4]);
}

#[test]
fn step_size_gradient_is_the_lsq_gradient() {
    let d = device();
    // One activation step size s = 1 at 2 bits (Q_P = 3), four values per image, so
    // g = 1/√(4·3). Inside the range ∂/∂s = round(x/s) − x/s; clipped above: Q_P.
    let mut lsq = LsqState::default().with_activation("a", (0.0, 3.0), 2, PointKind::Unsigned);
    let x = Tensor::<2>::from_floats([[0.4, 1.6, 2.2, 7.0]], &d);
    let y = lsq.activation("a", x, None, true);
    assert_eq!(to_vec(y.clone()), [0.0, 2.0, 2.0, 3.0]);
    let grads = y.sum().backward();
    let s = lsq.activations["a"].step.pending.clone().unwrap();
    let got = to_vec(s.grad(&grads).unwrap())[0];
    let g = 1.0 / (12.0f32).sqrt();
    let want = g * ((0.0 - 0.4) + (2.0 - 1.6) + (2.0 - 2.2) + 3.0);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // One SGD step with lr 0.1 moves s against its gradient.
    lsq.update(&grads, 0.1, 0.0);
    let s = lsq.activations["a"].step.values()[0];
    assert!((s - (1.0 - 0.1 * got)).abs() < 1e-6, "{s}");
}

#[test]
fn signed_points_without_offsets_use_the_symmetric_grid() {
    // LSQ on a signed point at 3 bits: codes v ∈ [−4, 3], Z = 4, s = max(2/4, 1.5/3) = 0.5.
    let mut lsq = LsqState::default().with_activation("p", (-2.0, 1.5), 3, PointKind::Signed);
    let grid = lsq.activation_grid("p").unwrap();
    assert_eq!((grid.scale(), grid.zero_point()), (0.5, 4));
    let x = Tensor::<2>::from_floats([[-3.0, -0.74, 0.0, 0.3, 9.0]], &device());
    let y = to_vec(lsq.activation("p", x, None, false));
    assert_eq!(y, [-2.0, -0.5, 0.0, 0.5, 1.5]);
}

/// `Σ w_i·(s·clamp((x_i − β)/s, 0, Q) + β)`: LSQ+ without the rounding, whose derivatives the
/// straight-through gradients are (plus, for `s`, the rounding term).
fn clipped_sum(x: &[f64], w: &[f64], s: f64, beta: f64, q: f64) -> f64 {
    x.iter()
        .zip(w)
        .map(|(&x, &w)| w * (s * ((x - beta) / s).clamp(0.0, q) + beta))
        .sum()
}

#[test]
fn offset_gradients_match_finite_differences() {
    let d = device();
    // 2 bits (Q = 3), range [−1, 2]: s = 1, Z = 1, β = −1. Six values per image, so
    // g = 1/√(6·3); (x − β)/s = −2 (clipped low), 0.3, 1.4, 2.2, 3.6 and 6 (clipped high).
    let (s0, beta0, q) = (1.0f64, -1.0f64, 3.0f64);
    let x = [-3.0f64, -0.7, 0.4, 1.2, 2.6, 5.0];
    let w = [0.5f64, -1.0, 2.0, 0.25, 1.5, -0.75];
    let mut lsq = LsqState::default().with_activation("p", (-1.0, 2.0), 2, PointKind::Offset);
    let grid = lsq.activation_grid("p").unwrap();
    assert_eq!((grid.scale(), grid.zero_point()), (1.0, 1));
    let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let input = Tensor::<2>::from_data(TensorData::new(xs.clone(), [1, 6]), &d);
    let y = lsq.activation("p", input, None, true);
    let values = to_vec(y.clone());
    for (i, &v) in xs.iter().enumerate() {
        assert_eq!(values[i], grid.dequantize(grid.quantize(v)), "value {i}");
    }
    let weights: Vec<f32> = w.iter().map(|&v| v as f32).collect();
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [1, 6]), &d);
    let grads = y.mul(weights).sum().backward();
    let a = &lsq.activations["p"];
    let grad = |t: &Option<Tensor<1>>| to_vec(t.clone().unwrap().grad(&grads).unwrap())[0];
    let (got_s, got_beta) = (
        grad(&a.step.pending),
        grad(&a.offset.as_ref().unwrap().pending),
    );
    let g = 1.0 / (6.0f64 * 3.0).sqrt();
    let h = 1e-4;
    let fd = |ds: f64, db: f64| {
        (clipped_sum(&x, &w, s0 + ds, beta0 + db, q) - clipped_sum(&x, &w, s0 - ds, beta0 - db, q))
            / (2.0 * h)
    };
    // β: 1 where clipped, 0 inside (0.5 + 1.5 − 0.75 here).
    let want_beta = g * fd(0.0, h);
    assert!((want_beta - g * (0.5 + 1.5 - 0.75)).abs() < 1e-9);
    assert!(
        (f64::from(got_beta) - want_beta).abs() < 1e-5,
        "{got_beta} vs {want_beta}"
    );
    // s: the clipped codes (0 low, Q high), plus round(c) − c inside.
    let rounding: f64 = x
        .iter()
        .zip(&w)
        .map(|(&x, &w)| {
            let c = (x - beta0) / s0;
            if (0.0..=q).contains(&c) {
                w * (c.round() - c)
            } else {
                0.0
            }
        })
        .sum();
    let want_s = g * (fd(h, 0.0) + rounding);
    assert!(
        (f64::from(got_s) - want_s).abs() < 1e-5,
        "{got_s} vs {want_s}"
    );
    // An update moves β off the grid; the forward pass snaps it back to −s·Z, so the values
    // stay those of the exported grid.
    lsq.update(&grads, 0.7, 0.0);
    let moved = lsq.activations["p"].offset.as_ref().unwrap().values()[0];
    assert!((f64::from(moved) - (beta0 - 0.7 * f64::from(got_beta))).abs() < 1e-6);
    let grid = lsq.activation_grid("p").unwrap();
    let input = Tensor::<2>::from_data(TensorData::new(xs.clone(), [1, 6]), &d);
    let values = to_vec(lsq.activation("p", input, None, false));
    for (i, &v) in xs.iter().enumerate() {
        let want = grid.dequantize(grid.quantize(v));
        assert!(
            (values[i] - want).abs() <= 1e-6 * want.abs().max(1.0),
            "value {i}"
        );
    }
}

#[test]
fn weight_steps_start_at_the_papers_or_the_least_error_step() {
    let rows = [[0.3f32, -0.2, 0.0, 0.9], [0.05, 0.1, -0.4, 0.02]];
    let w = Tensor::<2>::from_floats(rows, &device());
    let scales = |init| {
        let mut lsq = LsqState::new(init);
        let (_, grids) = lsq.weights("fc", w.clone(), None, 2, true, false).unwrap();
        grids.iter().map(|g| g.scale()).collect::<Vec<_>>()
    };
    // Paper: 2·mean|w|/√Q_P with Q_P = 1 at 2 bits.
    let paper: Vec<f32> = rows
        .iter()
        .map(|r| 2.0 * r.iter().map(|v| v.abs()).sum::<f32>() / 4.0)
        .collect();
    assert_eq!(scales(StepInit::Paper), paper);
    // MSE: the least-error step of each row on the grid s·{−2, −1, 0, 1} (zero point 2).
    let mse: Vec<f32> = rows.iter().map(|r| mse_step(r, 2, 2).unwrap()).collect();
    assert_eq!(scales(StepInit::Mse), mse);
    assert_ne!(mse, paper);
}
