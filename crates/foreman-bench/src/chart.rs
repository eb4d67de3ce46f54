//! The timeline chart of a workload, as a self-contained SVG: for each pass, which
//! model was resident over time (loading shown hatched), and under it every request
//! as a line from when it was sent to when it finished, coloured by model.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::driver::Record;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 90.0;
const LANE: f64 = 22.0;
const MAX_REQUEST_LINES: usize = 400;
const PALETTE: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// One pass to draw.
pub struct PassTimeline<'a> {
    pub label: &'a str,
    pub records: &'a [Record],
    pub events: &'a [Value],
}

fn colour(models: &BTreeMap<String, usize>, model: &str) -> &'static str {
    let key = model_key(model);
    PALETTE[models.get(&key).copied().unwrap_or(0) % PALETTE.len()]
}

/// Listings show `:latest`; requests may not: compare on one form.
fn model_key(model: &str) -> String {
    let lower = model.to_ascii_lowercase();
    if lower.rsplit('/').next().unwrap_or(&lower).contains(':') {
        lower
    } else {
        lower + ":latest"
    }
}

/// Renders the passes one above the other on a shared time axis.
pub fn render(title: &str, passes: &[PassTimeline]) -> String {
    let mut models = BTreeMap::new();
    for pass in passes {
        for record in pass.records {
            let next = models.len();
            models.entry(model_key(&record.model)).or_insert(next);
        }
    }
    let end_ms = passes
        .iter()
        .flat_map(|p| p.records.iter().map(|r| r.done_ms))
        .fold(1.0, f64::max);
    let x = |ms: f64| LEFT + (ms / end_ms) * (WIDTH - LEFT - 10.0);
    let mut svg = String::new();
    let mut y = 30.0;
    let mut body = String::new();
    for pass in passes {
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-size="12" font-weight="bold">{}</text>"#,
            y + 14.0,
            pass.label
        );
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-size="10">resident</text>"#,
            y + 36.0
        );
        let mut loading: BTreeMap<String, f64> = BTreeMap::new();
        let mut loaded: BTreeMap<String, f64> = BTreeMap::new();
        let lane_y = y + 24.0;
        for event in pass.events {
            let at = event["at_ms"].as_f64().unwrap_or(0.0).max(0.0);
            let model = model_key(event["model"].as_str().unwrap_or(""));
            match event["event"].as_str().unwrap_or("") {
                "load_start" => {
                    loading.insert(model, at);
                }
                "loaded" => {
                    if let Some(from) = loading.remove(&model) {
                        let _ = writeln!(
                            body,
                            r#"<rect x="{:.1}" y="{lane_y:.1}" width="{:.1}" height="{LANE}" fill="url(#hatch)" stroke="{}" />"#,
                            x(from),
                            (x(at) - x(from)).max(0.5),
                            colour(&models, &model)
                        );
                    }
                    loaded.insert(model, at);
                }
                "unloaded" => {
                    if let Some(from) = loaded.remove(&model) {
                        let _ = writeln!(
                            body,
                            r#"<rect x="{:.1}" y="{lane_y:.1}" width="{:.1}" height="{LANE}" fill="{}" />"#,
                            x(from),
                            (x(at) - x(from)).max(0.5),
                            colour(&models, &model)
                        );
                    }
                }
                _ => {}
            }
        }
        for (model, from) in loaded {
            let _ = writeln!(
                body,
                r#"<rect x="{:.1}" y="{lane_y:.1}" width="{:.1}" height="{LANE}" fill="{}" />"#,
                x(from),
                (x(end_ms) - x(from)).max(0.5),
                colour(&models, &model)
            );
        }
        y = lane_y + LANE + 8.0;
        let _ = writeln!(
            body,
            r#"<text x="4" y="{:.1}" font-size="10">requests</text>"#,
            y + 10.0
        );
        let shown: Vec<&Record> = pass.records.iter().take(MAX_REQUEST_LINES).collect();
        let step = (200.0 / shown.len().max(1) as f64).clamp(0.5, 4.0);
        for (index, record) in shown.iter().enumerate() {
            let line_y = y + index as f64 * step;
            let stroke = if record.ok() {
                colour(&models, &record.model)
            } else {
                "#000000"
            };
            let _ = writeln!(
                body,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{line_y:.1}" y2="{line_y:.1}" stroke="{stroke}" stroke-opacity="0.35" stroke-width="{:.1}" />"#,
                x(record.sent_ms),
                x(record.done_ms - record.target_total_ms.min(record.latency_ms())),
                step.max(1.0)
            );
            let _ = writeln!(
                body,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{line_y:.1}" y2="{line_y:.1}" stroke="{stroke}" stroke-width="{:.1}" />"#,
                x(record.done_ms - record.target_total_ms.min(record.latency_ms())),
                x(record.done_ms),
                step.max(1.0)
            );
        }
        y += shown.len() as f64 * step + 30.0;
    }
    let mut legend_x = LEFT;
    for (model, index) in &models {
        let _ = writeln!(
            body,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="12" height="12" fill="{}" /><text x="{:.1}" y="{:.1}" font-size="11">{model}</text>"#,
            y,
            PALETTE[index % PALETTE.len()],
            legend_x + 16.0,
            y + 10.0
        );
        legend_x += 30.0 + 7.0 * model.len() as f64;
    }
    let _ = writeln!(
        body,
        r#"<text x="{LEFT}" y="{:.1}" font-size="10">0 s</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{:.1} s</text>"#,
        y + 30.0,
        WIDTH - 10.0,
        y + 30.0,
        end_ms / 1000.0
    );
    let height = y + 40.0;
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r##"<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#ffffff"/><line x1="0" y1="0" x2="0" y2="6" stroke="#888" stroke-width="3"/></pattern></defs>"##
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white" /><text x="4" y="16" font-size="14" font-weight="bold">{title}: resident model (hatched: loading) and requests (faint: waiting, solid: at the target)</text>"#
    );
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}
