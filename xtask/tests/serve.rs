//! `cargo xtask serve` as a person and as a client would meet it, on a small model trained
//! here (one short epoch): the JSON API and its errors, a bounded load test, request-level
//! fuzzing, and headless Chromium drawing a 7 on the page over WebDriver.
//!
//! The tests share one trained model and run one at a time (the load test's figures would
//! be disturbed by the others).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::http::{Conn, Response, base64_decode, request};
use common::{command, xtask_ok};

/// The artifacts folder with `mnist/` trained and quantized, made once.
fn artifacts() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("mnist");
        let out = out.to_str().unwrap();
        xtask_ok(&[
            "train",
            "--epochs",
            "1",
            "--train-limit",
            "6000",
            "--test-limit",
            "500",
            "--lr",
            "0.05",
            "--offline",
            "--out",
            out,
        ]);
        xtask_ok(&[
            "quantize",
            "--calib-samples",
            "200",
            "--test-limit",
            "500",
            "--offline",
            "--out",
            out,
        ]);
        xtask_ok(&[
            "sweep",
            "--bits",
            "4,8",
            "--qat-epochs",
            "0",
            "--test-limit",
            "300",
            "--offline",
            "--out",
            out,
        ]);
        dir
    })
    .path()
}

/// One test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `xtask serve`, stopped when dropped (and, should the test process die, when
/// its standard input closes).
struct Server {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
    start_line: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut args = vec![
            "serve",
            "--port",
            "0",
            "--offline",
            "--test-limit",
            "1000",
            "--exit-on-stdin-eof",
            "--artifacts",
            artifacts().to_str().unwrap(),
        ];
        args.extend(extra);
        let mut child = command(&args)
            .env("BURNQ_SERVE_TEST_PANIC", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in the start line `{line}`"));
        Self {
            child,
            _stdin: stdin,
            addr,
            start_line: line,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn healthy(&self) -> bool {
        request(self.addr, "GET", "/healthz", b"").is_ok_and(|r| r.status == 200)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test image `i` of MNIST (784 raw bytes) and its label.
fn test_image(i: usize) -> (Vec<u8>, u8) {
    static SET: OnceLock<burnq_data::ImageSet> = OnceLock::new();
    let set = SET.get_or_init(|| {
        burnq_data::ImageSet::load(
            &burnq_data::locate::test_locator(),
            burnq_data::DatasetKind::Mnist,
            burnq_data::Split::Test,
        )
        .unwrap()
    });
    (set.image(i).to_vec(), set.labels[i])
}

/// Test image `i` as a 280×280 PNG, dark ink on white like the drawing pad.
fn test_png(i: usize) -> Vec<u8> {
    let (pixels, _) = test_image(i);
    let big: Vec<u8> = (0..280 * 280)
        .map(|k| 255 - pixels[(k / 280 / 10) * 28 + (k % 280) / 10])
        .collect();
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, 280, 280);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header().unwrap().write_image_data(&big).unwrap();
    }
    png_bytes
}

#[test]
fn the_api_answers_and_names_what_is_wrong() {
    let _serial = serial();
    let server = Server::start(&[]);
    assert!(
        server
            .start_line
            .contains("mnist (integer w8a8 per-tensor + float)"),
        "{}",
        server.start_line
    );
    let models = request(server.addr, "GET", "/api/models", b"")
        .unwrap()
        .json();
    assert_eq!(models["default"], "mnist");
    assert_eq!(models["models"][0]["weight_bits"], 8);

    // The same digit as raw pixels and as a picture: the raw bytes are classified as they
    // are; the PNG is made MNIST-like first, as `cargo xtask predict` does.
    let (pixels, label) = test_image(0);
    let raw = request(server.addr, "POST", "/api/predict", &pixels).unwrap();
    assert_eq!(raw.status, 200, "{}", raw.text());
    let raw = raw.json();
    assert_eq!(raw["integer"]["class"], u64::from(label), "{raw}");
    assert_eq!(raw["image"].as_array().unwrap().len(), 784);
    let probabilities: Vec<f64> = raw["integer"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .collect();
    assert_eq!(probabilities.len(), 10);
    assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-3);
    assert!(raw["integer"]["latency_us"].as_f64().unwrap() > 0.0);
    assert_eq!(raw["float"]["class"], u64::from(label));
    let png = request(
        server.addr,
        "POST",
        "/api/predict?model=mnist",
        &test_png(0),
    )
    .unwrap();
    assert_eq!(png.status, 200, "{}", png.text());
    let expected = burnq_data::digit::digit_from_bytes(&test_png(0), 1 << 20).unwrap();
    let seen: Vec<u8> = png.json()["image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u8)
        .collect();
    assert_eq!(seen, expected, "the server's 28×28 image is predict's");

    let cases: [(&str, &str, &[u8], u16, &str); 7] = [
        ("POST", "/api/predict", b"hello", 400, "not an image"),
        ("POST", "/api/predict", b"", 400, "empty body"),
        ("POST", "/api/predict", b"P5\n2000 2000\n255\n", 400, "PGM"),
        (
            "POST",
            "/api/predict",
            b"\x89PNG\r\n\x1a\n\0\0\0",
            400,
            "PNG",
        ),
        (
            "POST",
            "/api/predict?model=mnist%2Fnone",
            &pixels,
            404,
            "unknown model `mnist/none`",
        ),
        ("GET", "/api/predict", b"", 405, "POST"),
        ("GET", "/nowhere", b"", 404, "no page"),
    ];
    for (method, path, body, status, message) in cases {
        let r = request(server.addr, method, path, body).unwrap();
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(message), "{method} {path}: {error}");
    }
    // Over the limit: refused on its Content-Length, before the body is read.
    let mut conn = Conn::open(server.addr, Duration::from_secs(10)).unwrap();
    let head = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n\x89PNG";
    let r = conn.raw(head).unwrap().expect("an answer");
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("2097152 bytes")
    );
    // Over the limit without a length (chunked): refused once the limit is passed.
    let mut conn = Conn::open(server.addr, Duration::from_secs(10)).unwrap();
    let mut chunked =
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..40 {
        chunked.extend(b"10000\r\n");
        chunked.extend(vec![b'x'; 0x10000]);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let r = conn.raw(&chunked).unwrap().expect("an answer");
    assert_eq!(r.status, 413, "{}", r.text());

    // A handler that panics answers 500, and the server goes on.
    let r = request(server.addr, "GET", "/__panic", b"").unwrap();
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(server.healthy());
    let again = request(server.addr, "POST", "/api/predict", &pixels).unwrap();
    assert_eq!(again.status, 200);

    let page = request(server.addr, "GET", "/", b"").unwrap();
    assert!(page.text().contains("<canvas id=\"pad\""));
    let js = request(server.addr, "GET", "/assets/draw.js", b"").unwrap();
    assert!(js.text().contains("/api/predict"));
    let report = request(server.addr, "GET", "/report", b"").unwrap().text();
    for needle in [
        "/plots/mnist/training.svg",
        "/plots/mnist/sweep.svg",
        "table class=\"confusion\"",
        "cargo xtask bench --dataset mnist",
    ] {
        assert!(report.contains(needle), "the report lacks {needle}");
    }
    let svg = request(server.addr, "GET", "/plots/mnist/training.svg", b"").unwrap();
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    for path in [
        "/plots/../../etc/passwd",
        "/plots/mnist/model.bpk",
        "/plots/nope/training.svg",
    ] {
        assert_eq!(
            request(server.addr, "GET", path, b"").unwrap().status,
            404,
            "{path}"
        );
    }
}

/// 20,000 `/api/predict` requests over 16 keep-alive connections, one in ten malformed:
/// every good one answered 200 with a class, every bad one 4xx; bounded in time too.
#[test]
fn load_test_good_and_malformed_requests() {
    let _serial = serial();
    let server = Server::start(&[]);
    const TOTAL: usize = 20_000;
    const CONNECTIONS: usize = 16;
    const TIME_LIMIT: Duration = Duration::from_secs(240);
    let png = test_png(1);
    let bodies: Vec<Vec<u8>> = (0..50).map(|i| test_image(i).0).collect();
    let started = Instant::now();
    let results: Vec<(Vec<f64>, usize, Vec<String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|w| {
                let (png, bodies, addr) = (&png, &bodies, server.addr);
                scope.spawn(move || {
                    let mut latencies = Vec::new();
                    let mut bad_ok = 0;
                    let mut failures = Vec::new();
                    let mut conn = Conn::open(addr, Duration::from_secs(30)).unwrap();
                    for k in (w..TOTAL).step_by(CONNECTIONS) {
                        if started.elapsed() > TIME_LIMIT {
                            break;
                        }
                        if k % 10 == 9 {
                            match malformed(addr, &mut conn, k / 10) {
                                Ok(s) if (400..500).contains(&s) => bad_ok += 1,
                                other => failures.push(format!("bad request {k}: {other:?}")),
                            }
                            continue;
                        }
                        let body: &[u8] = if k % 2 == 0 { png } else { &bodies[k % 50] };
                        let t = Instant::now();
                        let r = conn.request(
                            "POST",
                            "/api/predict",
                            &[("Content-Type", "image/png")],
                            body,
                        );
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        match r {
                            Ok(r) if r.status == 200 && r.json()["integer"]["class"].is_u64() => {}
                            Ok(r) => failures.push(format!(
                                "good request {k}: {} {}",
                                r.status,
                                r.text()
                            )),
                            Err(e) => {
                                failures.push(format!("good request {k}: {e}"));
                                conn = Conn::open(addr, Duration::from_secs(30)).unwrap();
                            }
                        }
                    }
                    (latencies, bad_ok, failures)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
    let bad: usize = results.iter().map(|r| r.1).sum();
    let failures: Vec<&String> = results.iter().flat_map(|r| r.2.iter()).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let done = latencies.len() + bad + failures.len();
    let summary = serde_json::json!({
        "requests": done,
        "good": latencies.len(),
        "bad_answered_4xx": bad,
        "failures": failures.len(),
        "connections": CONNECTIONS,
        "seconds": seconds,
        "requests_per_second": done as f64 / seconds,
        "good_latency_ms": { "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0) },
        "cpu": cpu_name(),
    });
    eprintln!("load test: {summary}");
    save_artifact("load-test.json", summary.to_string().as_bytes());
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        done >= TOTAL / 4,
        "only {done} requests in {seconds:.0} s: the server is far too slow"
    );
    assert!(
        server.healthy(),
        "the server is unhealthy after the load test"
    );
}

/// One malformed request of kind `k % 6`; its status.
fn malformed(addr: SocketAddr, conn: &mut Conn, k: usize) -> std::io::Result<u16> {
    let keep = |r: std::io::Result<Response>| r.map(|r| r.status);
    match k % 6 {
        0 => keep(conn.request("POST", "/api/predict", &[], b"not a picture at all")),
        1 => keep(conn.request("POST", "/api/predict?model=nope", &[], &[0; 784])),
        2 => keep(conn.request("GET", "/api/predict", &[], b"")),
        3 => keep(conn.request("POST", "/api/predict", &[], b"P5\n28 28\n255\nshort")),
        // These end their connection: sent on a fresh one.
        4 => Conn::open(addr, Duration::from_secs(30))?
            .raw(b"POST /api/predict HTTP/1.1\r\nContent-Length: 99999999\r\n\r\nxx")
            .map(|r| r.map_or(0, |r| r.status)),
        _ => Conn::open(addr, Duration::from_secs(30))?
            .raw(b"GARBAGE \x01\x02 HTTP/9.9\r\n\r\n")
            .map(|r| r.map_or(0, |r| r.status)),
    }
}

/// Requests with arbitrary methods, targets, headers and bodies (300 generated cases): each
/// is answered (or its connection closed) within the timeout, never with a 5xx, and the
/// server stays healthy.
#[test]
fn fuzzed_requests_never_panic_or_hang() {
    use proptest::prelude::*;
    let _serial = serial();
    let server = Server::start(&[]);
    let png = test_png(2);
    let methods = vec![
        "GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "P\u{0}ST", "",
    ];
    let paths = vec![
        "/api/predict",
        "/api/predict?model=mnist",
        "/api/predict?model=%ff%00",
        "/api/predict?model",
        "/",
        "/report?dataset=%00",
        "/report?dataset=fashion-mnist",
        "/plots/mnist/../x",
        "/api/models",
        "/healthz",
        "*",
        "http://x/api/predict",
        "/%",
        "",
    ];
    let cases = (
        proptest::sample::select(methods),
        proptest::sample::select(paths),
        proptest::collection::vec(header(), 0..6),
        0usize..3,
        proptest::collection::vec(any::<u8>(), 0..3000),
        any::<(usize, u8)>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&cases, |(method, path, headers, body_kind, tail, flip)| {
            let mut body = match body_kind {
                0 => Vec::new(),
                1 => png.clone(),
                _ => b"P5\n28 28\n255\n".to_vec(),
            };
            body.extend(&tail);
            if !body.is_empty() {
                let i = flip.0 % body.len();
                body[i] ^= flip.1;
            }
            let mut bytes = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
            for h in &headers {
                bytes.extend(h);
                bytes.extend(b"\r\n");
            }
            bytes.extend(b"\r\n");
            bytes.extend(&body);
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            let mut conn = Conn::open(server.addr, Duration::from_secs(15)).unwrap();
            let answer = conn.raw(&bytes);
            prop_assert!(
                answer.is_ok(),
                "no answer within 15 s ({answer:?}) to {shown:?}"
            );
            if let Ok(Some(r)) = answer {
                prop_assert!(r.status < 500, "{} for {shown:?}: {}", r.status, r.text());
            }
            prop_assert!(server.healthy(), "unhealthy after {shown:?}");
            Ok(())
        })
        .unwrap();
}

/// A header line: well-formed or not.
fn header() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        any::<u64>().prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        (0u64..5000).prop_map(|n| format!("Content-Length: {n}").into_bytes()),
        Just(b"Content-Length: -1".to_vec()),
        Just(b"Content-Length: 99999999999999999999999".to_vec()),
        Just(b"Transfer-Encoding: chunked".to_vec()),
        Just(b"Expect: 100-continue".to_vec()),
        Just(b"Expect: nonsense".to_vec()),
        Just(b"Connection: close".to_vec()),
        Just(b"Content-Type: image/png".to_vec()),
        Just(format!("X-Long: {}", "a".repeat(20_000)).into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// The CPU's name from /proc/cpuinfo.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `artifacts/serve/<name>` in the project (git-ignored): screenshots and load figures.
fn save_artifact(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/serve");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Headless Chromium draws a 7 on the pad with pointer strokes and reads the integer
/// model's answer off the page, then opens the report; screenshots of both pages go to
/// `artifacts/serve/`. Needs `chromium` and `chromedriver` (Debian: `apt-get install
/// chromium chromium-driver`); without them it says SKIPPED, unless
/// `BURNQ_REQUIRE_CHROMIUM=1` (set by `.ci/run`) makes that a failure.
#[test]
fn chromium_draws_a_seven_and_opens_the_report() {
    let Some((chromium, chromedriver)) = browser() else {
        let required = std::env::var_os("BURNQ_REQUIRE_CHROMIUM").is_some_and(|v| v == "1");
        assert!(
            !required,
            "BURNQ_REQUIRE_CHROMIUM=1 but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED: chromium or chromedriver not found (apt-get install chromium chromium-driver, or set BURNQ_CHROMIUM / BURNQ_CHROMEDRIVER)"
        );
        return;
    };
    let _serial = serial();
    let server = Server::start(&[]);
    let wd = WebDriver::start(&chromium, &chromedriver);
    wd.go(&server.url("/"));
    wait_for(
        &wd,
        "the model list",
        "return document.querySelectorAll('#model option').length > 0",
    );

    // A 7: the bar from left to right, then, from its right end, the stroke down and left.
    // Offsets from the canvas's centre, in CSS pixels (the pad is 280×280).
    let pad = wd.find("#pad");
    draw(
        &wd,
        &pad,
        "mouse",
        &[&[(-75, -90), (80, -90)], &[(80, -90), (-15, 105)]],
    );
    wait_for(
        &wd,
        "the answer to the last stroke",
        "return document.body.dataset.busy === '0' && document.getElementById('int-class').dataset.class !== ''",
    );
    let answer = wd.execute(
        "return ['int-class', 'float-class', 'int-latency', 'status'].map(id => { \
           const e = document.getElementById(id); return e.dataset.class || e.textContent; })",
    );
    let shot = save_artifact("draw.png", &wd.screenshot());
    eprintln!("drawing pad: {answer} (screenshot {})", shot.display());
    assert_eq!(answer[0], "7", "the integer model read {answer}");
    assert!(answer[2].as_str().unwrap().contains("µs"), "{answer}");
    let seen = wd.execute(
        "const d = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data; \
         let lit = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 128) lit++; return lit;",
    );
    assert!(
        seen.as_u64().unwrap() > 20,
        "the 28×28 image shown has {seen} bright pixels"
    );
    // Clear, then a 1 with a finger (touch pointer events).
    wd.click("#clear");
    assert_eq!(
        wd.execute("return document.getElementById('int-class').dataset.class"),
        ""
    );
    draw(&wd, &pad, "touch", &[&[(5, -105), (-5, 105)]]);
    wait_for(
        &wd,
        "the answer to the touch stroke",
        "return document.body.dataset.busy === '0' && document.getElementById('int-class').dataset.class !== ''",
    );
    let one = wd.execute("return document.getElementById('int-class').dataset.class");
    assert_eq!(one, "1", "a touch-drawn vertical stroke read as {one}");

    wd.go(&server.url("/report"));
    wait_for(
        &wd,
        "the report's plots",
        "return document.readyState === 'complete' && [...document.images].every(i => i.complete)",
    );
    let report = wd.execute(
        "const plots = [...document.querySelectorAll('img.plot')]; return { \
           plots: plots.length, \
           drawn: plots.filter(i => i.naturalWidth > 0).length, \
           tables: document.querySelectorAll('table.data').length, \
           confusion: document.querySelectorAll('table.confusion').length, \
           gallery: document.querySelectorAll('.gallery canvas').length, \
           missing: [...document.querySelectorAll('p.missing')].map(p => p.textContent), \
           height: document.documentElement.scrollHeight }",
    );
    eprintln!("report: {report}");
    assert_eq!(report["plots"], 2, "training and sweep plots: {report}");
    assert_eq!(
        report["drawn"], report["plots"],
        "a plot did not load: {report}"
    );
    assert!(report["tables"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["confusion"], 2, "{report}");
    assert!(
        report["missing"].to_string().contains("cargo xtask bench"),
        "{report}"
    );
    let height = report["height"].as_u64().unwrap().clamp(600, 6000);
    wd.call(
        "POST",
        &wd.path("/window/rect"),
        serde_json::json!({"width": 1280, "height": height + 140}),
    );
    let shot = save_artifact("report.png", &wd.screenshot());
    eprintln!("report screenshot {}", shot.display());
    assert!(server.healthy());
}

/// Draws `strokes` on the element `pad` with a pointer of `pointer_type` (`mouse`, `touch`):
/// each stroke is a polyline of offsets from the element's centre, in CSS pixels, walked in
/// 16 moves per segment.
fn draw(wd: &WebDriver, pad: &serde_json::Value, pointer_type: &str, strokes: &[&[(i64, i64)]]) {
    let mut actions = Vec::new();
    let move_to = |(x, y): (i64, i64), duration: u64| serde_json::json!({"type": "pointerMove", "origin": pad, "x": x, "y": y, "duration": duration});
    for stroke in strokes {
        actions.push(move_to(stroke[0], 0));
        actions.push(serde_json::json!({"type": "pointerDown", "button": 0}));
        for pair in stroke.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let steps = 16;
            for s in 1..=steps {
                let at = |p: i64, q: i64| p + (q - p) * s / steps;
                actions.push(move_to((at(a.0, b.0), at(a.1, b.1)), 15));
            }
        }
        actions.push(serde_json::json!({"type": "pointerUp", "button": 0}));
    }
    wd.call(
        "POST",
        &wd.path("/actions"),
        serde_json::json!({"actions": [{
            "type": "pointer", "id": pointer_type, "parameters": {"pointerType": pointer_type},
            "actions": actions
        }]}),
    );
    wd.call("DELETE", &wd.path("/actions"), serde_json::Value::Null);
}

/// Polls `script` (returning a boolean) for up to 30 s.
fn wait_for(wd: &WebDriver, what: &str, script: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if wd.execute(script) == serde_json::Value::Bool(true) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("waited 30 s for {what}");
}

/// `chromium` and `chromedriver`: `$BURNQ_CHROMIUM` / `$BURNQ_CHROMEDRIVER`, else on `PATH`.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| {
                let path = std::env::var_os("PATH").unwrap_or_default();
                std::env::split_paths(&path)
                    .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
                    .find(|p| p.is_file())
            })
            .filter(|p| p.is_file())
    };
    Some((
        find("BURNQ_CHROMIUM", &["chromium", "chromium-browser"])?,
        find("BURNQ_CHROMEDRIVER", &["chromedriver"])?,
    ))
}

/// A chromedriver process and one headless Chromium session, spoken to in the W3C WebDriver
/// protocol (JSON over HTTP) with the test's own HTTP client.
struct WebDriver {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl WebDriver {
    fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", chromedriver.display()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut wd = Self {
            driver,
            addr,
            session: String::new(),
        };
        let start = Instant::now();
        while !request(addr, "GET", "/status", b"")
            .is_ok_and(|r| r.status == 200 && r.json()["value"]["ready"] == true)
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let session = wd.call(
            "POST",
            "/session",
            serde_json::json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    ],
                },
            }}}),
        );
        wd.session = session["sessionId"].as_str().unwrap().to_string();
        wd
    }

    /// `/session/<id><rest>`.
    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// A WebDriver command; its `value`, or a panic naming the WebDriver error.
    fn call(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        let body = if method == "POST" {
            body.to_string()
        } else {
            String::new()
        };
        let r = Conn::open(self.addr, Duration::from_secs(60))
            .and_then(|mut c| {
                c.request(
                    method,
                    path,
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                )
            })
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let mut json = r.json();
        assert_eq!(r.status, 200, "WebDriver {method} {path}: {json}");
        json["value"].take()
    }

    fn go(&self, url: &str) {
        self.call(
            "POST",
            &self.path("/url"),
            serde_json::json!({ "url": url }),
        );
    }

    fn execute(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            &self.path("/execute/sync"),
            serde_json::json!({"script": script, "args": []}),
        )
    }

    /// The element reference of the first match of a CSS selector.
    fn find(&self, css: &str) -> serde_json::Value {
        self.call(
            "POST",
            &self.path("/element"),
            serde_json::json!({"using": "css selector", "value": css}),
        )
    }

    /// Clicks the first match of a CSS selector.
    fn click(&self, css: &str) {
        let element = self.find(css);
        let id = element["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap();
        self.call(
            "POST",
            &self.path(&format!("/element/{id}/click")),
            serde_json::json!({}),
        );
    }

    /// A PNG of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        let shot = self.call("GET", &self.path("/screenshot"), serde_json::Value::Null);
        base64_decode(shot.as_str().unwrap())
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = Conn::open(self.addr, Duration::from_secs(20))
                .and_then(|mut c| c.request("DELETE", &self.path(""), &[], b""));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
