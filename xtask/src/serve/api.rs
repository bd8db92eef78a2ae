//! The routes: pages, embedded assets, plots from the artifacts, and the JSON API.

use burnq_data::IMAGE_PIXELS;
use burnq_data::digit::digit_from_bytes;
use serde_json::json;

use super::http::{Reply, Request};
use super::models::Answer;
use super::{MAX_PICTURE_PIXELS, State};

const DRAW_HTML: &str = include_str!("assets/draw.html");
const DRAW_JS: &str = include_str!("assets/draw.js");
const REPORT_JS: &str = include_str!("assets/report.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// Answers one request.
pub fn route(state: &State, req: &Request) -> Reply {
    let get = req.method == "GET" || req.method == "HEAD";
    match req.path.as_str() {
        "/api/predict" if req.method == "POST" => predict(state, req),
        "/api/predict" => Reply::error(
            405,
            format!(
                "{} /api/predict: send the picture with POST (a PNG, a PGM or 784 raw bytes)",
                req.method
            ),
        ),
        _ if !get => Reply::error(405, format!("{} is not allowed here: use GET", req.method)),
        "/" | "/index.html" => Reply::text("text/html; charset=utf-8", DRAW_HTML),
        "/report" => Reply::text(
            "text/html; charset=utf-8",
            state.reports.page(&state.models, req.param("dataset")),
        ),
        "/assets/draw.js" => Reply::text("text/javascript; charset=utf-8", DRAW_JS),
        "/assets/report.js" => Reply::text("text/javascript; charset=utf-8", REPORT_JS),
        "/assets/style.css" => Reply::text("text/css; charset=utf-8", STYLE_CSS),
        "/api/models" => Reply::json(
            200,
            &json!({
                "models": state.models.models.iter().map(|m| m.info()).collect::<Vec<_>>(),
                "default": state.models.default_model().map(|m| m.id.clone()),
                "max_body_bytes": state.max_body,
            }),
        ),
        "/healthz" => Reply::json(
            200,
            &json!({ "status": "ok", "models": state.models.models.len() }),
        ),
        "/__panic" if state.panic_route => panic!("a test asked this handler to panic"),
        path => match path.strip_prefix("/plots/") {
            Some(plot) => state.reports.plot(&state.models, plot),
            None => Reply::error(404, format!("no page at {path}")),
        },
    }
}

/// `POST /api/predict[?model=ID]`: a PNG, PGM or 784 raw bytes in; both models' answers out.
fn predict(state: &State, req: &Request) -> Reply {
    let model = match req.param("model") {
        Some(id) => match state.models.get(id) {
            Some(m) => m,
            None => {
                return Reply::error(
                    404,
                    format!("unknown model `{id}`: /api/models lists the models served"),
                );
            }
        },
        None => match state.models.default_model() {
            Some(m) => m,
            None => {
                return Reply::error(
                    404,
                    "no models found: run `cargo xtask train` and `cargo xtask quantize`",
                );
            }
        },
    };
    let pixels = match picture(&req.body) {
        Ok(p) => p,
        Err(message) => return Reply::error(400, message),
    };
    let integer = model.integer(&pixels);
    let float = model.float(&pixels);
    if let (Err(i), Err(f)) = (&integer, &float) {
        return Reply::error(503, format!("model `{}` cannot answer: {i}; {f}", model.id));
    }
    let names = model.dataset.class_names();
    let answer = |a: &Answer| {
        json!({
            "class": a.class,
            "name": names[a.class],
            "probabilities": a.probabilities,
            "logits_u8": a.logits_u8,
            "latency_us": a.latency_us,
        })
    };
    Reply::json(
        200,
        &json!({
            "model": model.id,
            "dataset": model.dataset.dir_name(),
            "description": model.describe(),
            "classes": names,
            "image": pixels,
            "integer": integer.as_ref().ok().map(answer),
            "integer_error": integer.as_ref().err(),
            "float": float.as_ref().ok().map(answer),
            "float_error": float.as_ref().err(),
        }),
    )
}

/// The 784 pixels of a request body: a PNG or PGM made MNIST-like exactly as `cargo xtask
/// predict` does, or 784 raw bytes taken as they are; else a message naming the problem.
pub fn picture(body: &[u8]) -> Result<Vec<u8>, String> {
    let signature =
        body.starts_with(b"\x89PNG") || body.starts_with(b"P5") || body.starts_with(b"P2");
    if signature {
        digit_from_bytes(body, MAX_PICTURE_PIXELS)
            .map_err(|e| format!("not a readable PNG or PGM picture: {e}"))
    } else if body.len() == IMAGE_PIXELS {
        Ok(body.to_vec())
    } else if body.is_empty() {
        Err("empty body: send a PNG, a PGM (P2/P5) or 784 raw bytes (a 28×28 image)".into())
    } else {
        Err(format!(
            "not an image: {} bytes that are neither a PNG, nor a PGM (P2/P5), nor 784 raw bytes (a 28×28 image)",
            body.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_pictures_raw_pixels_or_named_errors() {
        assert_eq!(picture(&[7; 784]).unwrap(), vec![7; 784]);
        assert!(picture(&[7; 783]).unwrap_err().contains("783 bytes"));
        assert!(picture(b"").unwrap_err().contains("empty body"));
        assert!(picture(b"P5\n2 2\n255\n\x01").unwrap_err().contains("PGM"));
        let mut pgm = b"P5\n10 10\n255\n".to_vec();
        pgm.extend([255u8; 100]);
        pgm[13 + 45] = 0;
        assert_eq!(picture(&pgm).unwrap().len(), 784);
        let huge = b"P5\n5000 5000\n255\n";
        assert!(picture(huge).unwrap_err().contains("5000×5000"));
    }
}
