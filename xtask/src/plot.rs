//! Small hand-written SVG charts (no plotting dependency): line panels side by side.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One chart panel: a y axis and the lines drawn against it.
#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 280.0;
const MARGIN: f64 = 72.0;

/// Renders `panels` side by side under `title`, sharing the x label.
pub fn line_panels(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let width = panels.len() as f64 * (PANEL_W + MARGIN) + MARGIN;
    let height = PANEL_H + 2.5 * MARGIN;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = MARGIN + i as f64 * (PANEL_W + MARGIN);
        draw_panel(&mut svg, panel, left, 1.2 * MARGIN, x_label);
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, panel: &Panel, left: f64, top: f64, x_label: &str) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    let sx = |x: f64| left + (x - x0) / (x1 - x0) * PANEL_W;
    let sy = |y: f64| top + PANEL_H - (y - y0) / (y1 - y0) * PANEL_H;
    let _ = writeln!(
        svg,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{PANEL_W}\" height=\"{PANEL_H}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for k in 0..=4 {
        let y = y0 + (y1 - y0) * f64::from(k) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{py}\" y2=\"{py}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left + PANEL_W,
            left - 4.0,
            sy(y) + 4.0,
            format_tick(y),
            py = sy(y)
        );
        let x = x0 + (x1 - x0) * f64::from(k) / 4.0;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            sx(x),
            top + PANEL_H + 16.0,
            format_tick(x)
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 {} {})\">{}</text>",
        left + PANEL_W / 2.0,
        top + PANEL_H + 34.0,
        escape(x_label),
        left - 56.0,
        top + PANEL_H / 2.0,
        left - 56.0,
        top + PANEL_H / 2.0,
        escape(&panel.y_label)
    );
    for (j, s) in panel.series.iter().enumerate() {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" "),
            c = s.color
        );
        for &(x, y) in &s.points {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                sx(x),
                sy(y),
                s.color
            );
        }
        let ly = top + 16.0 + 16.0 * j as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{c}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            left + PANEL_W - 150.0,
            ly - 4.0,
            left + PANEL_W - 134.0,
            ly,
            escape(&s.name),
            c = s.color
        );
    }
}

/// A horizontal bar chart: one bar per `(label, value)`, value printed at the bar's end.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let label_w = 330.0;
    let bar_w = 420.0;
    let row_h = 30.0;
    let top = 48.0;
    let width = label_w + bar_w + 140.0;
    let height = top + row_h * bars.len() as f64 + 40.0;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-12);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"26\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        width / 2.0,
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let w = (value / max * bar_w).max(1.0);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{} {}</text>",
            label_w - 8.0,
            y + row_h * 0.62,
            escape(label),
            y + 4.0,
            row_h - 8.0,
            PALETTE[i % PALETTE.len()],
            label_w + w + 6.0,
            y + row_h * 0.62,
            format_tick(*value),
            escape(unit)
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{label_w}\" x2=\"{label_w}\" y1=\"{}\" y2=\"{}\" stroke=\"#333\"/>",
        top - 4.0,
        top + row_h * bars.len() as f64
    );
    svg.push_str("</svg>\n");
    svg
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

fn format_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_chart_scales_bars_to_the_largest() {
        let svg = bar_chart("speed", "img/s", &[("a".into(), 50.0), ("b".into(), 100.0)]);
        assert!(
            svg.contains("width=\"210.0\"") && svg.contains("width=\"420.0\""),
            "{svg}"
        );
        assert!(svg.contains(">100 img/s<") && svg.contains(">a<"));
    }

    #[test]
    fn draws_every_series_and_label() {
        let svg = line_panels(
            "t <1>",
            "epoch",
            &[Panel {
                y_label: "loss".into(),
                series: vec![Series {
                    name: "train".into(),
                    color: "#1f77b4",
                    points: vec![(1.0, 0.5), (2.0, 0.25)],
                }],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("t &lt;1&gt;") && svg.contains(">loss<") && svg.contains(">train<"));
    }
}
