//! Calibration over real MNIST images with a freshly initialized network.

use burn::module::Param;
use burn::prelude::*;
use burnq_calib::{CalibError, CalibrationMethod, CalibrationSettings, TAP_NAMES, calibrate};
use burnq_data::locate::test_locator;
use burnq_data::{DatasetKind, ImageSet, Split};
use burnq_model::{Net, NetConfig};

fn setup() -> (Net, ImageSet, Device) {
    let d = Device::flex();
    d.seed(11);
    let mut set = ImageSet::load(&test_locator(), DatasetKind::Mnist, Split::Test).unwrap();
    set.truncate(300);
    (NetConfig::new().init(&d), set, d)
}

fn settings(samples: usize, batch_size: usize) -> CalibrationSettings {
    CalibrationSettings {
        samples,
        batch_size,
        method: CalibrationMethod::MeanMinmax,
        act_bits: 4,
        ..Default::default()
    }
}

#[test]
fn records_every_tap_with_consistent_ranges() {
    let (net, set, d) = setup();
    let cal = calibrate(&net, &set, settings(250, 64), &d).unwrap();
    assert_eq!(
        (cal.samples, cal.batch_size, cal.split.as_str()),
        (250, 64, "test")
    );
    let names: Vec<_> = cal.taps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, TAP_NAMES);
    for (name, s) in &cal.taps {
        assert_eq!(s.batches, 4, "{name}");
        // Every estimate contains 0 or lies inside the observed range, widened to contain 0.
        for method in CalibrationMethod::ALL {
            let (lo, hi) = s.range(method);
            assert!(
                lo <= hi && lo >= s.min.min(0.0) && hi <= s.max.max(0.0),
                "{name} {method:?}: {lo} {hi} vs {s:?}"
            );
        }
        assert!(
            s.min <= s.mean_min && s.mean_min <= s.mean_max && s.mean_max <= s.max,
            "{name}: {s:?}"
        );
    }
    // The input range is exactly the normalized pixel range of the first 250 images.
    let norm = DatasetKind::Mnist.normalization();
    let pixels = &set.pixels[..250 * 784];
    let lo = norm.apply(*pixels.iter().min().unwrap());
    let hi = norm.apply(*pixels.iter().max().unwrap());
    let ranges = cal.ranges(CalibrationMethod::Minmax);
    assert_eq!(ranges.input, (lo, hi));
    // After ReLU and max-pool nothing is negative.
    assert!(ranges.conv2_input.0 >= 0.0);
    assert!(ranges.fc2_input.0 >= 0.0);
    assert!(ranges.logits.0 < 0.0 || ranges.logits.1 > 0.0);
    cal.validate(std::path::Path::new("in-memory")).unwrap();
}

#[test]
fn refuses_empty_short_and_non_finite_calibration() {
    let (mut net, set, d) = setup();
    assert!(matches!(
        calibrate(&net, &set, settings(0, 64), &d),
        Err(CalibError::Empty)
    ));
    assert!(matches!(
        calibrate(&net, &set, settings(10, 0), &d),
        Err(CalibError::ZeroBatch)
    ));
    let err = calibrate(&net, &set, settings(1000, 64), &d).unwrap_err();
    assert!(
        matches!(
            err,
            CalibError::NotEnoughSamples {
                requested: 1000,
                available: 300,
                ..
            }
        ),
        "{err}"
    );

    let shape = net.fc2.weight.val().dims();
    net.fc2.weight = Param::from_tensor(Tensor::full(shape, f32::NAN, &d));
    let err = calibrate(&net, &set, settings(10, 10), &d).unwrap_err();
    assert!(
        matches!(&err, CalibError::NonFinite { tap } if tap == "logits"),
        "{err}"
    );
}

/// A described network (mobile: batch norm, ReLU6, depthwise convolutions, residual adds) is
/// calibrated at every quantization point, in execution order, and its ranges convert.
#[test]
fn described_networks_are_calibrated_at_every_quantization_point() {
    use burnq_arch::Architecture;
    use burnq_arch::arch::Activation;
    use burnq_model::ArchNet;

    let (_, set, d) = setup();
    let arch = Architecture::preset("mobile").unwrap();
    let plan = arch.plan().unwrap();
    let model = ArchNet::init_seeded(&plan, burnq_arch::Normalization::MNIST, 5, &d);
    let cal = burnq_calib::calibrate_arch(&model, &arch.name, &set, settings(100, 50), &d).unwrap();
    assert_eq!(cal.architecture, "mobile");
    let points = plan.quantization_points();
    let names: Vec<_> = cal.taps.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<_> = points.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, expected);
    let ranges = cal.point_ranges(&plan, CalibrationMethod::Minmax).unwrap();
    for step in &points {
        let (lo, hi) = ranges[&step.name];
        assert!(lo <= hi, "{}", step.name);
        match step.activation {
            Activation::Relu => assert!(lo >= 0.0, "{}", step.name),
            Activation::Relu6 => assert!(lo >= 0.0 && hi <= 6.0, "{} {lo} {hi}", step.name),
            Activation::None => {}
        }
    }
    let params = model.float_params().unwrap();
    let graph =
        burnq_quant::convert_graph(&arch, &params, &ranges, burnq_arch::Normalization::MNIST, 8)
            .unwrap();
    assert_eq!(graph.layers().len(), 18);
    // A calibration missing a point is refused by name.
    let mut partial = cal.clone();
    partial.taps.retain(|(n, _)| n != "b2_add");
    assert!(matches!(
        partial.point_ranges(&plan, CalibrationMethod::Minmax),
        Err(CalibError::MissingTap { tap, .. }) if tap == "b2_add"
    ));
}

/// With per-layer widths, each tap's MSE range is searched at the width its layer quantizes
/// it to (`tutorial_widths`, `plan_widths`), the others at the model-wide width: the
/// calibration equals, tap for tap, the uniform calibration at that tap's width.
#[test]
fn mse_ranges_are_searched_at_each_layers_own_width() {
    use burnq_quant::graph::layer_names;
    use burnq_quant::{ConvertOptions, QuantScheme, tutorial_layer_names};
    use std::collections::BTreeMap;

    let (net, set, d) = setup();
    let scheme = |spec, names: &[&str]| {
        let defaults = ConvertOptions {
            weight_bits: 8,
            act_bits: 8,
            per_channel: false,
        };
        QuantScheme::parse(defaults, spec, names).unwrap()
    };
    let uniform = |bits| CalibrationSettings {
        method: CalibrationMethod::Mse,
        act_bits: bits,
        ..settings(250, 64)
    };
    // fc1's output is fc2's input.
    let mixed = uniform(5).tutorial_widths(&scheme("fc1=a2", &tutorial_layer_names()));
    assert_eq!(mixed.act_bits, 8);
    assert_eq!(mixed.point_bits, BTreeMap::from([("fc2_in".to_owned(), 2)]));
    let got = calibrate(&net, &set, mixed, &d).unwrap();
    let (eight, two) = (
        calibrate(&net, &set, uniform(8), &d).unwrap(),
        calibrate(&net, &set, uniform(2), &d).unwrap(),
    );
    assert_ne!(eight.taps[3].1.mse_max, two.taps[3].1.mse_max);
    for (i, (tap, stats)) in got.taps.iter().enumerate() {
        let want = if tap == "fc2_in" { &two } else { &eight };
        assert_eq!(stats, &want.taps[i].1, "{tap}");
    }

    // A described network: each quantization point at its step's width.
    let arch = burnq_arch::Architecture::preset("lenet5").unwrap();
    let plan = arch.plan().unwrap();
    let names = layer_names(&plan);
    let settings = uniform(8).plan_widths(&plan, &scheme("w8a8,w8a3,8,8,8", &names));
    assert_eq!(
        settings.point_bits,
        BTreeMap::from([(names[1].to_owned(), 3)])
    );
    assert_eq!(settings.bits_of(names[0]), 8);
}
