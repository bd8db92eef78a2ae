//! Every chart burnq draws (`training.svg`, `sweep.svg`, `throughput.svg`), drawn by one
//! plotting library: plotters, with its SVG backend (text stays text; no font files needed).
//! `cargo xtask serve`'s report page shows these files as they are.

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// `#rrggbb`.
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One chart panel: a y axis and the lines drawn against it.
#[derive(Debug, Clone)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

const PANEL_W: u32 = 520;
const PANEL_H: u32 = 380;
const FONT: &str = "sans-serif";

/// Drawing errors: the SVG goes to a `String`, so only plotters' own layout can fail.
type DrawResult = Result<(), DrawingAreaErrorKind<std::io::Error>>;

/// Renders `panels` side by side under `title`, sharing the x label; every series is a line
/// with a dot per point, named in the panel's legend.
pub fn line_panels(title: &str, x_label: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, PANEL_H + 40)).into_drawing_area();
        if let Err(e) = draw_line_panels(&root, title, x_label, panels) {
            eprintln!("warning: the chart `{title}` is incomplete: {e}");
        }
    }
    svg
}

fn draw_line_panels(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    x_label: &str,
    panels: &[Panel],
) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 20))?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (panel, area) in panels.iter().zip(&areas) {
        let series: Vec<&Series> = panel
            .series
            .iter()
            .filter(|s| !s.points.is_empty())
            .collect();
        let Some((x0, x1, y0, y1)) = bounds(&series) else {
            continue;
        };
        let integer_x = series
            .iter()
            .all(|s| s.points.iter().all(|p| p.0 == p.0.trunc()));
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let x_format = |v: &f64| match integer_x {
            true if *v != v.round() => String::new(),
            true => format!("{v:.0}"),
            false => axis_tick(*v, x1 - x0),
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(panel.y_label.as_str())
            .x_labels(if integer_x {
                ((x1 - x0).round() as usize + 1).clamp(2, 12)
            } else {
                6
            })
            .y_labels(6)
            .x_label_formatter(&x_format)
            .y_label_formatter(&|v| axis_tick(*v, y1 - y0))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(220, 220, 220))
            .draw()?;
        for s in &series {
            let color = hex(s.color);
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 2), (x + 16, y + 2)], color.filled())
                });
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
        // Falling lines (losses) leave the top right free, rising ones (accuracies) the bottom.
        let falling = series.iter().all(|s| {
            s.points.first().map(|p| p.1) >= s.points.last().map(|p| p.1) && s.points.len() > 1
        });
        chart
            .configure_series_labels()
            .position(if falling {
                SeriesLabelPosition::UpperRight
            } else {
                SeriesLabelPosition::LowerRight
            })
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
    }
    root.present()
}

/// The axes' ranges over every point, padded; a single x or y value gets a range around it.
fn bounds(series: &[&Series]) -> Option<(f64, f64, f64, f64)> {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        return None;
    }
    let (x0, x1) = if x1 - x0 < 1e-9 {
        (x0 - 0.5, x1 + 0.5)
    } else {
        let pad = (x1 - x0) * 0.04;
        (x0 - pad, x1 + pad)
    };
    let pad = if y1 - y0 < 1e-9 {
        (y0.abs() * 0.02).max(0.01)
    } else {
        (y1 - y0) * 0.08
    };
    Some((x0, x1, y0 - pad, y1 + pad))
}

/// A horizontal bar chart: one bar per `(label, value)`, top to bottom, the value printed at
/// the bar's end.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let height = 110 + 34 * bars.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        if let Err(e) = draw_bar_chart(&root, title, unit, bars) {
            eprintln!("warning: the chart `{title}` is incomplete: {e}");
        }
    }
    svg
}

fn draw_bar_chart(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    unit: &str,
    bars: &[(String, f64)],
) -> DrawResult {
    root.fill(&WHITE)?;
    let root = root.titled(title, (FONT, 18))?;
    let n = bars.len().max(1);
    let max = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max)
        .max(1e-12);
    // Bar i (from the top) sits in segment n − 1 − i: segments count from the bottom.
    let row = |i: usize| n - 1 - i;
    let mut chart = ChartBuilder::on(&root)
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(320)
        // A segmented `0..k` axis holds k + 1 segments.
        .build_cartesian_2d(0.0..max * 1.22, (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) if *k < n => {
                bars.get(n - 1 - k).map(|b| b.0.clone()).unwrap_or_default()
            }
            _ => String::new(),
        })
        .x_label_formatter(&|v| format_tick(*v))
        .label_style((FONT, 13))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(row(i))),
                (value.max(0.0), SegmentValue::Exact(row(i) + 1)),
            ],
            hex(PALETTE[i % PALETTE.len()]).filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        bar
    }))?;
    let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        Text::new(
            format!("{} {unit}", format_tick(*value)),
            (value.max(0.0) + max * 0.01, SegmentValue::CenterOf(row(i))),
            style.clone(),
        )
    }))?;
    root.present()
}

const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// `#rrggbb` as a colour (black when malformed).
fn hex(color: &str) -> RGBColor {
    let c = |i: usize| {
        color
            .get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    RGBColor(c(1), c(3), c(5))
}

/// A tick of an axis spanning `span`: every tick of one axis with the same decimals.
fn axis_tick(v: f64, span: f64) -> String {
    let decimals = match span {
        s if s >= 20.0 => 0,
        s if s >= 2.0 => 1,
        s if s >= 0.2 => 2,
        _ => 3,
    };
    format!("{v:.decimals$}")
}

fn format_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The elements `<tag …/>` whose attributes mention `color` (plotters writes `#RRGGBB`).
    fn elements<'a>(svg: &'a str, tag: &str, color: &str) -> Vec<&'a str> {
        let color = color.to_uppercase();
        svg.split(&format!("<{tag} "))
            .skip(1)
            .filter_map(|e| e.split("/>").next())
            .filter(|e| e.contains(&format!("\"{color}\"")))
            .collect()
    }

    /// The width of every `<rect>` filled with `color`.
    fn widths(svg: &str, color: &str) -> Vec<f64> {
        elements(svg, "rect", color)
            .iter()
            .filter_map(|r| r.split("width=\"").nth(1)?.split('"').next()?.parse().ok())
            .collect()
    }

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split("</text>").next())
            .map(|t| t.trim().to_string())
            .collect()
    }

    #[test]
    fn bar_chart_scales_bars_to_the_largest() {
        let svg = bar_chart(
            "speed",
            "img/s",
            &[("a <engine>".into(), 50.0), ("b".into(), 100.0)],
        );
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        let (a, b) = (widths(&svg, PALETTE[0]), widths(&svg, PALETTE[1]));
        assert_eq!((a.len(), b.len()), (1, 1), "{svg}");
        assert!((b[0] / a[0] - 2.0).abs() < 0.05, "bars {a:?} {b:?}");
        let texts = texts(&svg);
        for t in [
            "100 img/s",
            "50 img/s",
            "a &lt;engine&gt;",
            "b",
            "speed",
            "img/s",
        ] {
            assert!(texts.iter().any(|x| x == t), "{t} missing from {texts:?}");
        }
    }

    #[test]
    fn draws_every_series_and_label() {
        let svg = line_panels(
            "t <1>",
            "epoch",
            &[
                Panel {
                    y_label: "loss".into(),
                    series: vec![
                        Series {
                            name: "train".into(),
                            color: "#1f77b4",
                            points: vec![(1.0, 0.5), (2.0, 0.25)],
                        },
                        Series {
                            name: "skipped".into(),
                            color: "#ff7f0e",
                            points: Vec::new(),
                        },
                    ],
                },
                Panel {
                    y_label: "accuracy".into(),
                    series: vec![Series {
                        name: "one epoch".into(),
                        color: "#2ca02c",
                        points: vec![(1.0, 95.2)],
                    }],
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(elements(&svg, "polyline", "#1f77b4").len(), 1, "{svg}");
        assert_eq!(elements(&svg, "circle", "#1f77b4").len(), 2, "{svg}");
        assert_eq!(elements(&svg, "circle", "#2ca02c").len(), 1, "{svg}");
        let texts = texts(&svg);
        for t in [
            "t &lt;1&gt;",
            "loss",
            "accuracy",
            "train",
            "one epoch",
            "epoch",
        ] {
            assert!(texts.iter().any(|x| x == t), "{t} missing from {texts:?}");
        }
        assert!(
            !texts.iter().any(|t| t == "skipped"),
            "an empty series has no legend entry"
        );
        // A single point gets a range around it, with whole epochs on x.
        assert!(texts.iter().any(|t| t == "1"), "{texts:?}");
        assert!(
            !texts.iter().any(|t| t == "1.25" || t == "1.50"),
            "{texts:?}"
        );
        assert!(texts.iter().any(|t| t == "95.0") && texts.iter().any(|t| t == "96.0"));
    }
}
