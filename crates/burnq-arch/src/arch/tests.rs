use super::*;

fn plan(name: &str) -> Plan {
    Architecture::preset(name).unwrap().plan().unwrap()
}

fn image(channels: usize, height: usize, width: usize) -> Shape {
    Shape::Image {
        channels,
        height,
        width,
    }
}

/// A description from JSON layers on the default 1×28×28 input.
fn net(layers: &str) -> Result<Plan, ArchError> {
    let text = format!(r#"{{"name": "t", "layers": [{layers}]}}"#);
    Architecture::from_json(&text, Path::new("t.json"))?.plan()
}

fn layer_error(layers: &str) -> (String, &'static str, String) {
    match net(layers) {
        Err(ArchError::Layer {
            path,
            kind,
            problem,
        }) => (path, kind, problem),
        other => panic!("expected a layer error, got {other:?}"),
    }
}

const HEAD: &str = r#"{"type": "flatten"}, {"type": "linear", "out_features": 10}"#;

#[test]
fn tutorial_preset_is_the_seed_network() {
    let plan = plan("tutorial");
    let names: Vec<_> = plan
        .quantization_points()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
    let shapes: Vec<_> = plan.steps.iter().map(|s| s.output).collect();
    assert_eq!(
        shapes,
        [
            image(20, 24, 24),
            image(20, 12, 12),
            image(50, 8, 8),
            image(50, 4, 4),
            Shape::Features(800),
            Shape::Features(500),
            Shape::Features(10),
        ]
    );
    assert_eq!(plan.params(), 431_080);
    assert_eq!(plan.macs(), 288_000 + 1_600_000 + 400_000 + 5_000);
    assert_eq!(plan.classes(), 10);
    let acts: Vec<_> = plan
        .quantization_points()
        .iter()
        .map(|s| s.activation)
        .collect();
    assert_eq!(
        acts,
        [
            Activation::Relu,
            Activation::Relu,
            Activation::Relu,
            Activation::None
        ]
    );
}

#[test]
fn lenet5_preset_shapes() {
    let plan = plan("lenet5");
    let conv = |i: usize| match &plan.steps[i].op {
        Op::Conv2d(g) => *g,
        op => panic!("{op:?}"),
    };
    assert_eq!(conv(0).padding, Size2::square(2));
    assert_eq!(plan.steps[0].output, image(6, 28, 28));
    assert_eq!(plan.steps[1].output, image(6, 14, 14));
    assert_eq!(plan.steps[2].output, image(16, 10, 10));
    assert_eq!(plan.steps[4].output, Shape::Features(400));
    assert_eq!(plan.params(), 156 + 2_416 + 48_120 + 10_164 + 850);
}

#[test]
fn mobile_preset_has_the_hard_cases() {
    let plan = plan("mobile");
    assert!(plan.params() <= 200_000, "{} parameters", plan.params());
    let flat = plan.flat_steps();
    let depthwise = flat
        .iter()
        .filter(|s| matches!(&s.op, Op::Conv2d(g) if g.is_depthwise()))
        .count();
    let residuals = flat
        .iter()
        .filter(|s| matches!(s.op, Op::Residual(_)))
        .count();
    let folded_bn = flat.iter().filter(|s| s.batch_norm.is_some()).count();
    let relu6 = flat
        .iter()
        .filter(|s| s.activation == Activation::Relu6)
        .count();
    assert_eq!((depthwise, residuals), (5, 2));
    assert_eq!(folded_bn, 1 + 5 * 3 + 1);
    assert_eq!(relu6, 1 + 5 * 2 + 1);
    let shapes: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.name.ends_with("_project") || s.name.ends_with("_add"))
        .map(|s| s.output)
        .collect();
    assert_eq!(
        shapes,
        [
            image(24, 14, 14),
            image(24, 14, 14),
            image(32, 7, 7),
            image(32, 7, 7),
            image(64, 4, 4)
        ]
    );
    assert_eq!(plan.classes(), 10);
    // A residual's body comes before its add in execution order.
    let names: Vec<_> = flat.iter().map(|s| s.name.as_str()).collect();
    let at = |n: &str| names.iter().position(|&x| x == n).unwrap();
    assert!(at("b2_project") < at("b2_add") && at("b2_add") < at("b3_expand"));
}

#[test]
fn presets_round_trip_through_json_and_files() {
    let dir = tempfile::tempdir().unwrap();
    for name in PRESETS {
        let arch = Architecture::preset(name).unwrap();
        assert_eq!(arch.name, name);
        let json = arch.to_json();
        assert_eq!(
            Architecture::from_json(&json, Path::new("x")).unwrap(),
            arch
        );
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, &json).unwrap();
        assert_eq!(Architecture::load(path.to_str().unwrap()).unwrap(), arch);
    }
    assert!(Architecture::preset("resnet50").is_none());
}

#[test]
fn the_shipped_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/my_net.toml");
    let plan = Architecture::load(path).unwrap().plan().unwrap();
    assert_eq!(plan.classes(), 10);
}

#[test]
fn sizes_accept_a_number_or_a_pair() {
    let plan = net(&format!(
        r#"{{"type": "conv2d", "out_channels": 4, "kernel": [3, 5], "stride": [1, 2], "padding": [1, 0]}}, {HEAD}"#
    ))
    .unwrap();
    assert_eq!(plan.steps[0].output, image(4, 28, 12));
}

#[test]
fn mismatches_name_the_layer() {
    let stated = format!(
        r#"{{"type": "conv2d", "out_channels": 20, "kernel": 5}}, {{"type": "relu"}},
           {{"type": "max_pool", "kernel": 2}},
           {{"type": "conv2d", "in_channels": 16, "out_channels": 8, "kernel": 3}}, {HEAD}"#
    );
    let err = net(&stated).unwrap_err();
    assert_eq!(
        err.to_string(),
        "layer 4 (conv2d): expects 16 input channels, its input has 20"
    );
    let (path, kind, problem) = layer_error(
        r#"{"type": "flatten"}, {"type": "linear", "in_features": 700, "out_features": 10}"#,
    );
    assert_eq!((path.as_str(), kind), ("2", "linear"));
    assert_eq!(problem, "expects 700 input features, its input has 784");
}

#[test]
fn invalid_layers_are_typed_errors() {
    let cases = [
        (
            r#"{"type": "conv2d", "out_channels": 4, "kernel": 29}"#,
            "1",
            "larger than its padded input",
        ),
        (
            r#"{"type": "conv2d", "out_channels": 0, "kernel": 3}"#,
            "1",
            "must be > 0",
        ),
        (
            r#"{"type": "conv2d", "out_channels": 4, "kernel": 3, "stride": 0}"#,
            "1",
            "must be > 0",
        ),
        (
            r#"{"type": "conv2d", "out_channels": 4, "kernel": 3, "padding": 3}"#,
            "1",
            "smaller than the kernel",
        ),
        (
            r#"{"type": "conv2d", "out_channels": 6, "kernel": 3}, {"type": "conv2d", "out_channels": 4, "kernel": 3, "groups": 3}"#,
            "2",
            "must divide",
        ),
        (r#"{"type": "batch_norm"}"#, "1", "must directly follow"),
        (
            r#"{"type": "max_pool", "kernel": 2}, {"type": "batch_norm"}"#,
            "2",
            "must directly follow",
        ),
        (
            r#"{"type": "max_pool", "kernel": 2}, {"type": "relu"}"#,
            "2",
            "must directly follow",
        ),
        (r#"{"type": "max_pool", "kernel": 30}"#, "1", "larger than"),
        (
            r#"{"type": "linear", "out_features": 10}"#,
            "1",
            "add a flatten",
        ),
        (
            r#"{"type": "flatten"}, {"type": "flatten"}"#,
            "2",
            "needs an image input",
        ),
        (r#"{"type": "dropout", "p": 1.0}"#, "1", "[0, 1)"),
        (
            r#"{"type": "conv2d", "out_channels": 4, "kernel": 3}, {"type": "batch_norm", "eps": 0.0}"#,
            "2",
            "eps",
        ),
        (
            r#"{"type": "residual", "layers": []}"#,
            "1",
            "has no layers",
        ),
        (
            r#"{"type": "residual", "layers": [{"type": "conv2d", "out_channels": 2, "kernel": 1}]}"#,
            "1",
            "needs the same shape",
        ),
        (
            r#"{"type": "residual", "layers": [{"type": "conv2d", "out_channels": 1, "kernel": 1}, {"type": "relu6"}, {"type": "relu"}]}"#,
            "1.3",
            "must directly follow",
        ),
    ];
    for (layers, at, needle) in cases {
        let (path, _, problem) = layer_error(&format!("{layers}, {HEAD}"));
        assert_eq!(path, at, "{layers}");
        assert!(problem.contains(needle), "{layers}: {problem}");
    }
}

#[test]
fn invalid_networks_are_typed_errors() {
    let cases = [
        ("", "has no layers"),
        (
            r#"{"type": "conv2d", "out_channels": 4, "kernel": 3}"#,
            "must be a linear layer",
        ),
        (
            &format!(r#"{HEAD}, {{"type": "relu"}}"#),
            "no batch norm or activation",
        ),
        (
            r#"{"type": "flatten"}, {"type": "linear", "out_features": 1}"#,
            "at least 2",
        ),
        (
            r#"{"type": "flatten"}, {"type": "linear", "name": "fc", "out_features": 5}, {"type": "linear", "name": "fc", "out_features": 10}"#,
            "two layers are named \"fc\"",
        ),
    ];
    for (layers, needle) in cases {
        match net(layers) {
            Err(ArchError::Network { problem, .. }) => {
                assert!(problem.contains(needle), "{layers}: {problem}")
            }
            other => panic!("{layers}: {other:?}"),
        }
    }
    let empty_input =
        r#"{"name": "t", "input": {"channels": 1, "height": 0, "width": 28}, "layers": []}"#;
    let arch = Architecture::from_json(empty_input, Path::new("t.json")).unwrap();
    assert!(
        matches!(arch.plan(), Err(ArchError::Network { problem, .. }) if problem.contains("empty side"))
    );
}

#[test]
fn files_that_do_not_parse_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let negative = write(
        "neg.toml",
        "name = \"n\"\n[[layers]]\ntype = \"conv2d\"\nout_channels = -4\nkernel = 3\n",
    );
    let err = Architecture::load(&negative).unwrap_err();
    assert!(matches!(err, ArchError::Toml { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("neg.toml") && text.contains("`-4`, expected usize"),
        "{text}"
    );
    let unknown = write("u.json", r#"{"name": "u", "layers": [{"type": "conv3d"}]}"#);
    let err = Architecture::load(&unknown).unwrap_err();
    assert!(
        matches!(err, ArchError::Json { .. }) && err.to_string().contains("conv3d"),
        "{err}"
    );
    let extra = write(
        "x.json",
        r#"{"name": "x", "layers": [{"type": "max_pool", "kernel": 2, "sride": 2}]}"#,
    );
    assert!(
        Architecture::load(&extra)
            .unwrap_err()
            .to_string()
            .contains("sride")
    );
    let missing = dir.path().join("absent.toml");
    assert!(matches!(
        Architecture::load(missing.to_str().unwrap()),
        Err(ArchError::Read { .. })
    ));
    let err = Architecture::load("resnet50").unwrap_err();
    assert!(
        err.to_string().contains("tutorial, lenet5, mobile"),
        "{err}"
    );
    let invalid = write("bad.json", r#"{"name": "b", "layers": [{"type": "relu"}]}"#);
    assert!(matches!(
        Architecture::load(&invalid),
        Err(ArchError::Layer { .. })
    ));
}
