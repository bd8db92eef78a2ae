//! `/report`: one page per data set, built from the artifacts that exist. Plots are the SVG
//! files the commands wrote (drawn by `plot.rs`, served under `/plots/`); tables come from
//! their JSON reports; the confusion matrices and the gallery of disagreements come from
//! running the integer and float models over the test set once (then kept). A missing
//! artifact shows the command that makes it.

use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burnq_data::{DatasetKind, IMAGE_PIXELS, Split};
use serde_json::Value;

use super::ServeArgs;
use super::http::Reply;
use super::models::ModelSet;
use crate::common::DataArgs;
use crate::paths::{ArtifactDir, ArtifactsRoot, bench_reports};

/// Test images shown in the gallery of disagreements, at most.
const GALLERY: usize = 60;

/// The report pages' sources and the comparisons computed so far.
#[derive(Debug)]
pub struct Reports {
    root: ArtifactsRoot,
    datasets: Vec<DatasetKind>,
    data_dir: Option<PathBuf>,
    offline: bool,
    test_limit: Option<usize>,
    cache: Mutex<HashMap<DatasetKind, Arc<Result<Comparison, String>>>>,
}

/// The float and the integer model of a data set's folder over its test set.
#[derive(Debug)]
struct Comparison {
    images: usize,
    float_accuracy: f64,
    int_accuracy: f64,
    agreement: f64,
    /// `[label][prediction]` counts.
    confusion_float: [[u32; 10]; 10],
    confusion_int: [[u32; 10]; 10],
    disagreements: usize,
    /// (index, label, float prediction, integer prediction, pixels).
    gallery: Vec<(usize, u8, u8, u8, Vec<u8>)>,
}

impl Reports {
    pub fn new(root: ArtifactsRoot, datasets: Vec<DatasetKind>, args: &ServeArgs) -> Self {
        Self {
            root,
            datasets,
            data_dir: args.data_dir.clone(),
            offline: args.offline,
            test_limit: args.test_limit,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// `/plots/<folder id>/<training|sweep>.svg` or `/plots/bench/throughput.svg`.
    pub fn plot(&self, models: &ModelSet, plot: &str) -> Reply {
        let file = match plot.rsplit_once('/') {
            Some(("bench", "throughput.svg")) => {
                Some(bench_reports(&self.root.bench_dir())[2].clone())
            }
            Some((id, name)) => self.folder(models, id).and_then(|dir| match name {
                "training.svg" => Some(dir.training_plot()),
                "sweep.svg" => Some(dir.sweep_reports()[2].clone()),
                _ => None,
            }),
            None => None,
        };
        match file.map(|f| std::fs::read(&f)) {
            Some(Ok(body)) => Reply {
                status: 200,
                content_type: "image/svg+xml",
                body,
            },
            _ => Reply::error(404, format!("no plot {plot}")),
        }
    }

    /// A served model's folder, or a data set's own folder, by id.
    fn folder(&self, models: &ModelSet, id: &str) -> Option<ArtifactDir> {
        models.get(id).map(|m| m.dir.clone()).or_else(|| {
            self.datasets
                .iter()
                .find(|d| d.dir_name() == id)
                .map(|&d| self.root.dataset(d))
        })
    }

    /// The report page of `dataset` (its name; default the first data set with artifacts).
    pub fn page(&self, models: &ModelSet, dataset: Option<&str>) -> String {
        let present: Vec<DatasetKind> = self
            .datasets
            .iter()
            .copied()
            .filter(|&d| {
                self.root.dataset(d).root().is_dir() || self.root.imported(d).root().is_dir()
            })
            .collect();
        let chosen = dataset
            .and_then(DatasetKind::from_name)
            .filter(|d| self.datasets.contains(d))
            .or(present.first().copied())
            .unwrap_or(self.datasets[0]);
        let mut html = String::new();
        let _ = write!(
            html,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>burnq · report · {d}</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
             <body><header><h1>burnq</h1><nav><a href=\"/\">Draw</a> <a href=\"/report\" class=\"here\">Report</a>",
            d = chosen.dir_name()
        );
        for d in &self.datasets {
            let _ = write!(
                html,
                " <a class=\"dataset{}\" href=\"/report?dataset={n}\">{n}</a>",
                if *d == chosen { " here" } else { "" },
                n = d.dir_name()
            );
        }
        let _ = write!(
            html,
            "</nav></header><main class=\"report\" data-dataset=\"{}\">",
            chosen.dir_name()
        );
        let dir = self.root.dataset(chosen);
        html += &self.training(&dir, chosen);
        html += &quantize_table(&dir, chosen);
        html += &self.sweep(&dir, chosen);
        html += &self.bench(chosen);
        html += &sqnr_table(&dir, chosen);
        html += &qat_table(&dir, chosen);
        html += &self.comparison_html(models, chosen);
        html += "</main><script src=\"/assets/report.js\"></script></body></html>\n";
        html
    }

    fn training(&self, dir: &ArtifactDir, d: DatasetKind) -> String {
        let mut s = section("training", "Training curves");
        if dir.training_plot().is_file() {
            if let Ok(t) = read_json(&dir.train_report()) {
                let _ = write!(
                    s,
                    "<p>{} epochs on {} images ({}): test accuracy {} after the last epoch.</p>",
                    t["epochs"],
                    t["train_images"],
                    esc(t["backend"].as_str().unwrap_or("?")),
                    pct(&t["test_accuracy"])
                );
            }
            let _ = write!(
                s,
                "<img class=\"plot\" src=\"/plots/{}/training.svg\" alt=\"training curves\">",
                d.dir_name()
            );
        } else {
            s += &missing("cargo xtask train", d);
        }
        s + "</section>"
    }

    fn sweep(&self, dir: &ArtifactDir, d: DatasetKind) -> String {
        let mut s = section("sweep", "Accuracy vs bits");
        if dir.sweep_reports()[2].is_file() {
            let _ = write!(
                s,
                "<img class=\"plot\" src=\"/plots/{}/sweep.svg\" alt=\"accuracy against bits per method\">",
                d.dir_name()
            );
        } else {
            s += &missing("cargo xtask sweep", d);
        }
        s + "</section>"
    }

    fn bench(&self, d: DatasetKind) -> String {
        let mut s = section("bench", "Throughput");
        let [json, _, svg] = bench_reports(&self.root.bench_dir());
        match read_json(&json) {
            Ok(r) if svg.is_file() => {
                let _ = write!(
                    s,
                    "<p>Measured on the {} test set, {} ({}).</p>\
                     <img class=\"plot\" src=\"/plots/bench/throughput.svg\" alt=\"throughput of every engine\">",
                    esc(r["dataset"].as_str().unwrap_or("?")),
                    esc(r["machine"]["cpu"].as_str().unwrap_or("?")),
                    esc(r["machine"]["date_utc"].as_str().unwrap_or("?")),
                );
            }
            _ => s += &missing("cargo xtask bench", d),
        }
        s + "</section>"
    }

    fn comparison_html(&self, models: &ModelSet, d: DatasetKind) -> String {
        let mut s = section("confusion", "Confusion matrices: float vs integer");
        let mut gallery = section("gallery", "Where the integer and float models disagree");
        let Some(model) = models.get(d.dir_name()) else {
            let m = missing(
                &format!(
                    "cargo xtask train --dataset {} && cargo xtask quantize",
                    d.dir_name()
                ),
                d,
            );
            return format!("{s}{m}</section>{gallery}{m}</section>");
        };
        if let (Err(e), _) | (_, Err(e)) = (&model.int, &model.float) {
            let m = format!("<p class=\"missing\">{}</p>", esc(e));
            return format!("{s}{m}</section>{gallery}{m}</section>");
        }
        let comparison = self.comparison(models, d);
        match comparison.as_ref() {
            Err(e) => {
                let m = format!(
                    "<p class=\"missing\">The {} test set could not be read: {} (pass <code>--data-dir</code> or set <code>BURNQ_DATA_DIR</code>)</p>",
                    d.dir_name(),
                    esc(e)
                );
                format!("{s}{m}</section>{gallery}{m}</section>")
            }
            Ok(c) => {
                let _ = write!(
                    s,
                    "<p>{} test images: float {:.2} %, integer {:.2} %, same prediction on {:.2} %.</p><div class=\"pair\">",
                    c.images,
                    100.0 * c.float_accuracy,
                    100.0 * c.int_accuracy,
                    100.0 * c.agreement
                );
                let names = d.class_names();
                s += &confusion("float model", &c.confusion_float, &names);
                s += &confusion("integer model", &c.confusion_int, &names);
                s += "</div></section>";
                let _ = write!(
                    gallery,
                    "<p>{} of {} test images{}. Caption: label · float · integer.</p><div class=\"gallery\">",
                    c.disagreements,
                    c.images,
                    if c.disagreements > c.gallery.len() {
                        format!(", the first {} shown", c.gallery.len())
                    } else {
                        String::new()
                    }
                );
                for (index, label, f, i, pixels) in &c.gallery {
                    let hex: String = pixels.iter().map(|p| format!("{p:02x}")).collect();
                    let _ = write!(
                        gallery,
                        "<figure class=\"digit\"><canvas width=\"28\" height=\"28\" data-pixels=\"{hex}\"></canvas>\
                         <figcaption>#{index}<br>{} · {} · <b>{}</b></figcaption></figure>",
                        esc(names[*label as usize]),
                        esc(names[*f as usize]),
                        esc(names[*i as usize])
                    );
                }
                gallery += "</div></section>";
                s + &gallery
            }
        }
    }

    /// The comparison of `d`'s float and integer models, computed on first use.
    fn comparison(&self, models: &ModelSet, d: DatasetKind) -> Arc<Result<Comparison, String>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            cache
                .entry(d)
                .or_insert_with(|| Arc::new(self.compute(models, d))),
        )
    }

    fn compute(&self, models: &ModelSet, d: DatasetKind) -> Result<Comparison, String> {
        let model = models.get(d.dir_name()).ok_or("no model")?;
        let data = DataArgs {
            dataset: d,
            data_dir: self.data_dir.clone(),
            offline: self.offline,
        };
        let set = data
            .load_limited(Split::Test, self.test_limit)
            .map_err(|e| format!("{e:#}"))?;
        let int = model.int.as_ref().map_err(Clone::clone)?;
        let int_pred = int
            .engine
            .forward_parallel(&set.pixels, set.len(), 0)
            .map_err(|e| e.to_string())?
            .predictions;
        let mut float_pred = Vec::with_capacity(set.len());
        let predictor = model.float.as_ref().map_err(Clone::clone)?;
        for chunk in set.pixels.chunks(1000 * IMAGE_PIXELS) {
            let p = predictor.lock().unwrap_or_else(|e| e.into_inner());
            float_pred.extend(p.predict(chunk));
        }
        let mut c = Comparison {
            images: set.len(),
            float_accuracy: 0.0,
            int_accuracy: 0.0,
            agreement: 0.0,
            confusion_float: [[0; 10]; 10],
            confusion_int: [[0; 10]; 10],
            disagreements: 0,
            gallery: Vec::new(),
        };
        let (mut fc, mut ic) = (0usize, 0usize);
        for (k, &label) in set.labels.iter().enumerate() {
            let (f, i) = (
                usize::from(float_pred[k]) % 10,
                usize::from(int_pred[k]) % 10,
            );
            let l = label as usize % 10;
            c.confusion_float[l][f] += 1;
            c.confusion_int[l][i] += 1;
            fc += usize::from(f == l);
            ic += usize::from(i == l);
            if f != i {
                c.disagreements += 1;
                if c.gallery.len() < GALLERY {
                    c.gallery
                        .push((k, label, f as u8, i as u8, set.image(k).to_vec()));
                }
            }
        }
        let n = set.len().max(1) as f64;
        c.float_accuracy = fc as f64 / n;
        c.int_accuracy = ic as f64 / n;
        c.agreement = (set.len() - c.disagreements) as f64 / n;
        Ok(c)
    }
}

fn section(id: &str, title: &str) -> String {
    format!("<section id=\"{id}\"><h2>{}</h2>", esc(title))
}

/// The command that makes a missing artifact of data set `d`.
fn missing(command: &str, d: DatasetKind) -> String {
    format!(
        "<p class=\"missing\">Not made yet: run <code>{} --dataset {}</code></p>",
        esc(command),
        d.dir_name()
    )
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn quantize_table(dir: &ArtifactDir, d: DatasetKind) -> String {
    let mut s = section("quantize", "Float vs integer (cargo xtask quantize)");
    let r = match read_json(&dir.quantize_report()) {
        Ok(r) => r,
        Err(_) => return s + &missing("cargo xtask quantize", d) + "</section>",
    };
    let _ = write!(
        s,
        "<p>w{}a{} {}, calibration {} on {} {} images; {} test images; model file {} bytes (float {} bytes).</p>\
         <table class=\"data\"><thead><tr><th>engine</th><th>accuracy</th><th>agreement with float</th></tr></thead><tbody>",
        r["weight_bits"],
        r["act_bits"],
        if r["per_channel"].as_bool() == Some(true) {
            "per channel"
        } else {
            "per tensor"
        },
        esc(r["calibration"].as_str().unwrap_or("?")),
        r["calib_samples"],
        esc(r["calib_split"].as_str().unwrap_or("?")),
        r["test_images"],
        r["int_model_bytes"],
        r["float_model_bytes"],
    );
    for row in r["results"].as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(row["engine"].as_str().unwrap_or("?")),
            pct(&row["accuracy"]),
            pct(&row["agreement_with_float"])
        );
    }
    s + "</tbody></table></section>"
}

fn sqnr_table(dir: &ArtifactDir, d: DatasetKind) -> String {
    let mut s = section("sqnr", "Per-layer SQNR");
    let quant = read_json(&dir.quantize_report()).ok();
    let sens = read_json(&dir.sensitivity_reports().0).ok();
    let Some(quant) = quant else {
        return s + &missing("cargo xtask quantize", d) + "</section>";
    };
    s += "<table class=\"data\"><thead><tr><th>layer</th><th>SQNR of the integer output (dB, cumulative)</th>\
          <th>accuracy with only this layer quantized</th></tr></thead><tbody>";
    for (k, layer) in quant["layers"].as_array().into_iter().flatten().enumerate() {
        let only = sens
            .as_ref()
            .map(|s| pct(&s["layers"][k]["accuracy_only_this_layer"]))
            .unwrap_or_else(|| "–".into());
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{only}</td></tr>",
            esc(layer["name"].as_str().unwrap_or("?")),
            layer["sqnr_db"]
                .as_f64()
                .map_or("–".into(), |v| format!("{v:.1}"))
        );
    }
    s += "</tbody></table>";
    if sens.is_none() {
        s += &missing("cargo xtask sensitivity", d);
    }
    s + "</section>"
}

fn qat_table(dir: &ArtifactDir, d: DatasetKind) -> String {
    let mut s = section("qat", "Quantization-aware training runs");
    let runs = dir.qat_runs();
    if runs.is_empty() {
        return s + &missing("cargo xtask qat --weight-bits 4 --act-bits 4", d) + "</section>";
    }
    s += "<table class=\"data\"><thead><tr><th>run</th><th>epochs</th><th>float start</th>\
          <th>fake-quant</th><th>integer</th><th>integer = fake-quant</th></tr></thead><tbody>";
    for run in runs {
        let name = run
            .root()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match read_json(&run.qat_report()) {
            Ok(r) => {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&name),
                    r["epochs"],
                    pct(&r["float_accuracy"]),
                    pct(&r["fake_quant_accuracy"]),
                    pct(&r["integer_accuracy"]),
                    pct(&r["integer_vs_fake_quant_agreement"])
                );
            }
            Err(e) => {
                let _ = write!(
                    s,
                    "<tr><td>{}</td><td colspan=\"5\">{}</td></tr>",
                    esc(&name),
                    esc(&e)
                );
            }
        }
    }
    s + "</tbody></table></section>"
}

fn confusion(title: &str, m: &[[u32; 10]; 10], names: &[&str; 10]) -> String {
    let mut s = format!(
        "<table class=\"confusion\"><caption>{} (rows: label, columns: prediction)</caption><thead><tr><th></th>",
        esc(title)
    );
    for n in names {
        let _ = write!(s, "<th>{}</th>", esc(n));
    }
    s += "</tr></thead><tbody>";
    for (l, row) in m.iter().enumerate() {
        let total = row.iter().sum::<u32>().max(1) as f64;
        let _ = write!(s, "<tr><th>{}</th>", esc(names[l]));
        for (p, &count) in row.iter().enumerate() {
            let alpha = f64::from(count) / total;
            let _ = write!(
                s,
                "<td class=\"{}\" style=\"background: rgba({}, {alpha:.3})\">{count}</td>",
                if l == p { "hit" } else { "miss" },
                if l == p { "44, 160, 44" } else { "214, 39, 40" }
            );
        }
        s += "</tr>";
    }
    s + "</tbody></table>"
}

/// A fraction in 0..1 as a percentage, `–` when absent.
fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("–".into(), |f| format!("{:.2} %", 100.0 * f))
}

/// Text escaped for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
