//! `cargo xtask serve`: a local web server (on `tiny_http`) with a drawing pad answered by
//! the integer engine beside the float model (`/`), a results page per data set built from
//! the artifacts that exist (`/report`), and a JSON API (`/api/predict`, `/api/models`,
//! `/healthz`). Every page, script and style sheet is compiled into the binary.
//!
//! Robustness: a body over [`ServeArgs::max_body`] is answered 413 before it is read, a body
//! that is not a picture 400 with a JSON error that names the problem, an unknown model 404;
//! each request is handled under `catch_unwind`, so a panic in a handler becomes a 500 and
//! the server keeps serving.

mod api;
mod http;
mod models;
mod report;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use burnq_data::DatasetKind;

use crate::paths::ArtifactsRoot;

use models::ModelSet;
use report::Reports;

/// Flags of `cargo xtask serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TCP port (0: any free port; the start line names the one chosen).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on (127.0.0.1: this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Serve only this data set's models and report (default: every data set found).
    #[arg(long, value_parser = crate::common::parse_dataset)]
    pub dataset: Option<DatasetKind>,
    /// Network architecture: burnq has one, the tutorial network (`lenet`).
    #[arg(long, default_value = "lenet", value_parser = ["lenet"])]
    pub arch: String,
    /// An artifacts folder laid out like the project's (default: artifacts/).
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Folder holding mnist/ and fashion-mnist/ for the report's confusion matrices (else
    /// $BURNQ_DATA_DIR, then artifacts/data/, then a download).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download missing data files.
    #[arg(long)]
    pub offline: bool,
    /// Test images the report's confusion matrices and gallery use (default: all).
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Largest request body accepted, in bytes; larger ones are answered 413.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    pub max_body: usize,
    /// Threads answering requests.
    #[arg(long, default_value_t = 16)]
    pub threads: usize,
    /// Stop when standard input closes (for tests: the server ends with the process that
    /// started it).
    #[arg(long, hide = true)]
    pub exit_on_stdin_eof: bool,
}

/// The default body limit: 2 MiB (a 280×280 drawing is ~10 KB as PNG).
pub const DEFAULT_MAX_BODY: usize = 2 << 20;

/// The largest picture decoded, in pixels (2048×2048).
pub const MAX_PICTURE_PIXELS: usize = 2048 * 2048;

/// What every handler reads: the models, the reports, the limits.
#[derive(Debug)]
pub struct State {
    pub models: ModelSet,
    pub reports: Reports,
    pub max_body: usize,
    /// A route that panics, to test that a panicking handler leaves the server serving
    /// (only with `BURNQ_SERVE_TEST_PANIC=1`).
    pub panic_route: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let root = ArtifactsRoot::new(args.artifacts.as_deref());
    let datasets: Vec<DatasetKind> = match args.dataset {
        Some(d) => vec![d],
        None => DatasetKind::ALL.to_vec(),
    };
    let models = ModelSet::discover(&root, &datasets);
    let reports = Reports::new(root.clone(), datasets, &args);
    let state = Arc::new(State {
        models,
        reports,
        max_body: args.max_body,
        panic_route: std::env::var_os("BURNQ_SERVE_TEST_PANIC").is_some_and(|v| v == "1"),
    });
    // A panicking handler answers 500 (`http::handle`); the log gets one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("burnq serve: a request handler panicked: {info}");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the server's threads")?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = http::bind(&runtime, addr).with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let summary = state.models.summary();
    println!(
        "burnq serve: http://{local}/ (report: http://{local}/report) from {}; {}",
        crate::common::display_path(root.root()),
        if summary.is_empty() {
            "no models found (run `cargo xtask train` and `cargo xtask quantize`)".to_string()
        } else {
            format!("models: {}", summary.join(", "))
        }
    );
    std::io::stdout().flush().ok();
    if args.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut line = String::new();
            let stdin = std::io::stdin();
            while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            std::process::exit(0);
        });
    }
    runtime.block_on(http::serve(listener, state));
    Ok(())
}
