//! Prometheus's text exposition format (version 0.0.4), written by hand: a page of
//! families, each a `# HELP` and `# TYPE` line followed by its samples.
//!
//! Why not the `prometheus-client` crate: foreman publishes a fixed, small set of
//! families whose values mostly already live elsewhere (the store, the targets'
//! inventories, the scheduler's published load) and are read at scrape time, so a
//! registry of live metric objects would only be copied into; the format itself is a
//! few lines of escaping and number formatting. The test suite parses the output with
//! a real Prometheus parser (`tests/python/parse_metrics.py`).

use std::fmt::Write as _;

/// One histogram's buckets, count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending.
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last holds those over every bound.
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            count: 0,
            sum: 0.0,
        }
    }

    /// A histogram read from elsewhere: `buckets` per bound (not cumulative), then one
    /// over every bound.
    pub fn from_parts(
        bounds: &'static [f64],
        buckets: Vec<u64>,
        count: u64,
        sum: f64,
    ) -> Histogram {
        debug_assert_eq!(buckets.len(), bounds.len() + 1);
        Histogram {
            bounds,
            buckets,
            count,
            sum,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// What a family is, in the `# TYPE` line.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A page being written.
#[derive(Debug, Default)]
pub struct Page {
    text: String,
}

impl Page {
    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(value));
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram of the family.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let mut cumulative = 0;
        for (index, in_bucket) in histogram.buckets.iter().enumerate() {
            cumulative += in_bucket;
            let bound = histogram
                .bounds
                .get(index)
                .map_or_else(|| "+Inf".to_string(), |bound| number(*bound));
            let _ = write!(self.text, "{name}_bucket");
            write_labels(&mut self.text, labels, Some(&bound));
            let _ = writeln!(self.text, " {cumulative}");
        }
        let _ = write!(self.text, "{name}_sum");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", number(histogram.sum));
        let _ = write!(self.text, "{name}_count");
        write_labels(&mut self.text, labels, None);
        let _ = writeln!(self.text, " {}", histogram.count);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn write_labels(text: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    text.push('{');
    let mut first = true;
    for (name, value) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            text.push(',');
        }
        first = false;
        text.push_str(name);
        text.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => text.push_str("\\\\"),
                '"' => text.push_str("\\\""),
                '\n' => text.push_str("\\n"),
                c => text.push(c),
            }
        }
        text.push('"');
    }
    text.push('}');
}

/// A sample value as Prometheus reads it: integers without a fraction, `+Inf`, `NaN`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_cumulative_buckets() {
        let mut page = Page::default();
        page.family("x_total", Kind::Counter, "Things.\nMore.");
        page.sample("x_total", &[("model", "a\"b\\c\nd")], 3.0);
        static BOUNDS: [f64; 2] = [0.5, 1.0];
        let mut histogram = Histogram::new(&BOUNDS);
        for value in [0.25, 0.75, 0.75, 5.0] {
            histogram.observe(value);
        }
        page.family("t_seconds", Kind::Histogram, "Time.");
        page.histogram("t_seconds", &[("m", "a")], &histogram);
        assert_eq!(
            page.finish(),
            "# HELP x_total Things.\\nMore.\n# TYPE x_total counter\n\
             x_total{model=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP t_seconds Time.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{m=\"a\",le=\"0.5\"} 1\n\
             t_seconds_bucket{m=\"a\",le=\"1\"} 3\n\
             t_seconds_bucket{m=\"a\",le=\"+Inf\"} 4\n\
             t_seconds_sum{m=\"a\"} 6.75\n\
             t_seconds_count{m=\"a\"} 4\n"
        );
    }
}
