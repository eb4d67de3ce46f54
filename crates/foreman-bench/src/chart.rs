//! The timeline chart of a workload, as a self-contained SVG: for each pass, which
//! models were resident over time (loading shown hatched; one row per model resident
//! at once, one lane per target when the pass had several), and under it every
//! request as a line from when it was sent to when it finished, coloured by model.

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

/// One bar of a residency lane: a model loading or loaded on one row.
#[derive(Debug, PartialEq)]
struct Bar {
    model: String,
    row: usize,
    from_ms: f64,
    to_ms: f64,
    loading: bool,
}

/// Turns a pass's residency events into bars, one lane per target (the events'
/// `lane`; a pass on one target has one lane without a name). Within a lane each
/// load takes the lowest row free at its start, so models resident at once sit on
/// rows of their own.
fn residency(events: &[Value], end_ms: f64) -> Vec<(Option<String>, Vec<Bar>)> {
    let mut lanes: Vec<(Option<String>, Vec<Bar>)> = Vec::new();
    // Per lane: which model holds each row, and the open bar of each model.
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    let mut open: Vec<BTreeMap<String, Bar>> = Vec::new();
    for event in events {
        let lane = event["lane"].as_str().map(str::to_string);
        let index = match lanes.iter().position(|(name, _)| *name == lane) {
            Some(index) => index,
            None => {
                lanes.push((lane, Vec::new()));
                rows.push(Vec::new());
                open.push(BTreeMap::new());
                lanes.len() - 1
            }
        };
        let at = event["at_ms"].as_f64().unwrap_or(0.0).max(0.0);
        let model = model_key(event["model"].as_str().unwrap_or(""));
        let (bars, rows, open) = (&mut lanes[index].1, &mut rows[index], &mut open[index]);
        let mut close = |open: &mut BTreeMap<String, Bar>, rows: &mut Vec<Option<String>>| {
            if let Some(mut bar) = open.remove(&model) {
                bar.to_ms = at;
                rows[bar.row] = None;
                bars.push(bar);
            }
        };
        match event["event"].as_str().unwrap_or("") {
            "load_start" => {
                // A reload starts while the old runner's bar may still be open.
                close(open, rows);
                let row = rows.iter().position(Option::is_none).unwrap_or_else(|| {
                    rows.push(None);
                    rows.len() - 1
                });
                rows[row] = Some(model.clone());
                open.insert(
                    model.clone(),
                    Bar {
                        model,
                        row,
                        from_ms: at,
                        to_ms: at,
                        loading: true,
                    },
                );
            }
            "loaded" => {
                if let Some(bar) = open.get_mut(&model) {
                    let row = bar.row;
                    bar.to_ms = at;
                    let loading = std::mem::replace(
                        bar,
                        Bar {
                            model: model.clone(),
                            row,
                            from_ms: at,
                            to_ms: at,
                            loading: false,
                        },
                    );
                    bars.push(loading);
                }
            }
            "unloaded" => close(open, rows),
            _ => {}
        }
    }
    for ((_, bars), open) in lanes.iter_mut().zip(open) {
        for (_, mut bar) in open {
            bar.to_ms = end_ms;
            bars.push(bar);
        }
    }
    lanes
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
        y += 24.0;
        for (lane, bars) in residency(pass.events, end_ms) {
            let rows = bars.iter().map(|bar| bar.row + 1).max().unwrap_or(1);
            let _ = writeln!(
                body,
                r#"<text x="4" y="{:.1}" font-size="10">{}</text>"#,
                y + 12.0,
                lane.as_deref().unwrap_or("resident")
            );
            for bar in &bars {
                let fill = if bar.loading {
                    "url(#hatch)"
                } else {
                    colour(&models, &bar.model)
                };
                let _ = writeln!(
                    body,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{LANE}" fill="{fill}" stroke="{}" />"#,
                    x(bar.from_ms),
                    y + bar.row as f64 * LANE,
                    (x(bar.to_ms) - x(bar.from_ms)).max(0.5),
                    colour(&models, &bar.model)
                );
            }
            y += rows as f64 * LANE + 4.0;
        }
        y += 4.0;
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(at_ms: f64, model: &str, event: &str, lane: Option<&str>) -> Value {
        json!({"at_ms": at_ms, "model": model, "event": event, "lane": lane})
    }

    #[test]
    fn models_resident_at_once_get_rows_of_their_own_per_lane() {
        let events = [
            event(0.0, "a:1b", "load_start", Some("t0")),
            event(10.0, "a:1b", "loaded", Some("t0")),
            event(10.0, "b:1b", "load_start", Some("t0")),
            event(20.0, "b:1b", "loaded", Some("t0")),
            event(30.0, "a:1b", "unloaded", Some("t0")),
            event(30.0, "c:1b", "load_start", Some("t0")),
            event(5.0, "c:1b", "load_start", Some("t1")),
        ];
        let lanes = residency(&events, 100.0);
        assert_eq!(lanes.len(), 2);
        let rows_of = |lane: usize| -> Vec<(String, usize, bool)> {
            lanes[lane]
                .1
                .iter()
                .map(|bar| (bar.model.clone(), bar.row, bar.loading))
                .collect()
        };
        assert_eq!(
            rows_of(0),
            vec![
                ("a:1b".into(), 0, true),
                ("b:1b".into(), 1, true),
                ("a:1b".into(), 0, false),
                ("b:1b".into(), 1, false),
                ("c:1b".into(), 0, true),
            ]
        );
        assert_eq!(lanes[1].0.as_deref(), Some("t1"));
        assert_eq!(lanes[1].1[0].to_ms, 100.0);
    }

    #[test]
    fn a_reload_closes_the_old_runners_bar() {
        let events = [
            event(0.0, "a:1b", "load_start", None),
            event(10.0, "a:1b", "loaded", None),
            event(50.0, "a:1b", "load_start", None),
        ];
        let lanes = residency(&events, 100.0);
        let bars = &lanes[0].1;
        assert_eq!(bars.len(), 3);
        assert!(bars.iter().all(|bar| bar.row == 0));
        assert_eq!((bars[1].from_ms, bars[1].to_ms), (10.0, 50.0));
    }
}
