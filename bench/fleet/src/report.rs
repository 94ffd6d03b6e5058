//! The run's figures: percentiles per step and whole boot, failures by step, and the SVG of
//! phones completed over time (one line per run, so runs can share a plot).

use std::fmt::Write;
use std::time::Duration;

pub const STEPS: [&str; 6] = ["dhcp", "tftp", "dns", "https", "firmware", "syslog"];

/// One phone's result: time per completed step, the failed step with why, when it ended.
pub struct Outcome {
    pub index: usize,
    pub mac: String,
    pub steps: Vec<Duration>,
    pub failed: Option<(usize, String)>,
    pub boot: Duration,
    /// Since the start of the run.
    pub done_at: Duration,
    pub ip: Option<std::net::Ipv4Addr>,
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[k].as_secs_f64() * 1000.0
}

/// The percentile table, in milliseconds.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>7} {:>10} {:>10} {:>10}",
        "step", "ok", "p50 ms", "p95 ms", "p99 ms"
    );
    let mut rows: Vec<(&str, Vec<Duration>)> = STEPS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            (
                *name,
                outcomes
                    .iter()
                    .filter_map(|o| o.steps.get(k).copied())
                    .collect(),
            )
        })
        .collect();
    rows.push((
        "boot",
        outcomes
            .iter()
            .filter(|o| o.failed.is_none())
            .map(|o| o.boot)
            .collect(),
    ));
    for (name, mut v) in rows {
        v.sort();
        let _ = writeln!(
            s,
            "{:<10} {:>7} {:>10.1} {:>10.1} {:>10.1}",
            name,
            v.len(),
            pct(&v, 50.0),
            pct(&v, 95.0),
            pct(&v, 99.0)
        );
    }
    s
}

/// Failures counted by step, `dhcp=3 tftp=0 …` (steps with none left out), or `none`.
pub fn failures_by_step(outcomes: &[Outcome]) -> String {
    let mut counts = [0usize; STEPS.len()];
    for o in outcomes {
        if let Some((k, _)) = &o.failed {
            counts[*k] += 1;
        }
    }
    let parts: Vec<String> = STEPS
        .iter()
        .zip(counts)
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| format!("{s}={c}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" ")
    }
}

/// An SVG of phones completed over time, one step line per series (label, sorted times).
pub fn svg(title: &str, series: &[(String, Vec<f64>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 450.0;
    const L: f64 = 70.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let tmax = series
        .iter()
        .flat_map(|(_, t)| t.last().copied())
        .fold(1.0f64, f64::max);
    let nmax = series
        .iter()
        .map(|(_, t)| t.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: f64| L + t / tmax * (W - L - 20.0);
    let y = |n: f64| H - B - n / nmax * (H - B - 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{L}\" y=\"20\" font-size=\"14\">{}</text>\n",
        escape(title)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{L}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/><line x1=\"{L}\" y1=\"40\" x2=\"{L}\" y2=\"{0}\" stroke=\"black\"/>",
        H - B,
        W - 20.0
    );
    for k in 0..=5 {
        let (t, n) = (tmax * k as f64 / 5.0, nmax * k as f64 / 5.0);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t:.1}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{n:.0}</text>",
            x(t),
            H - B + 16.0,
            L - 6.0,
            y(n) + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since start</text><text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">phones fully provisioned</text>",
        (W + L) / 2.0,
        H - 12.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (label, times)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut pts = format!("{:.1},{:.1}", x(0.0), y(0.0));
        // At most ~800 points: one per pixel column is all the eye can see.
        let step = (times.len() / 800).max(1);
        for (k, t) in times.iter().enumerate() {
            if k % step == 0 || k + 1 == times.len() {
                let _ = write!(pts, " {:.1},{:.1}", x(*t), y((k + 1) as f64));
            }
        }
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{pts}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{c}\">{} ({} phones)</text>",
            L + 10.0,
            56.0 + 16.0 * i as f64,
            escape(label),
            times.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
