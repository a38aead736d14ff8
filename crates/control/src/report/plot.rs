//! The throughput-over-time plot of a pass, as inline SVG for the HTML report and the
//! admin pages: a moving average over buckets of about 2 s (a pass's timeline holds
//! many samples a tenth of a second apart, too jagged to read), ticks at 1, 2 or 5
//! times a power of ten, gridlines, the pass's average and, when one is set, the
//! throttle limit. A short start-up burst does not squeeze the rest of the plot: the
//! y-axis ends near a high percentile of the buckets and clipped buckets are marked.
//!
//! Pure: numbers in, markup out; it writes no text it was given, so the result needs
//! no escaping.

use mailferry_core::report::Sample;
use std::fmt::Write;

/// The bucket width of long passes, in seconds.
const BUCKET_S: f64 = 2.0;
/// Buckets at least, for passes too short for 2 s buckets.
const MIN_BUCKETS: f64 = 10.0;

/// One bucket: its end (s since the pass started) and its rate (MB/s).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// End of the bucket, seconds since the pass started.
    pub t: f64,
    /// Megabytes (10^6 bytes) per second acknowledged during the bucket.
    pub mb_per_s: f64,
}

/// Cumulative bytes at `t`, interpolated between samples (sorted by time).
fn bytes_at(samples: &[Sample], t: f64) -> f64 {
    let i = samples.partition_point(|s| s.t <= t);
    match (i.checked_sub(1).map(|j| &samples[j]), samples.get(i)) {
        (None, _) => 0.0,
        (Some(a), None) => a.bytes as f64,
        (Some(a), Some(b)) if b.t > a.t => {
            a.bytes as f64 + (b.bytes as f64 - a.bytes as f64) * (t - a.t) / (b.t - a.t)
        }
        (Some(a), Some(_)) => a.bytes as f64,
    }
}

/// The pass's timeline as buckets of about 2 s (shorter passes: a tenth of the pass).
pub fn buckets(samples: &[Sample]) -> Vec<Bucket> {
    let mut s: Vec<Sample> = samples
        .iter()
        .filter(|s| s.t.is_finite() && s.t >= 0.0)
        .cloned()
        .collect();
    s.sort_by(|a, b| a.t.total_cmp(&b.t));
    let end = s.last().map_or(0.0, |l| l.t);
    if end <= 0.0 {
        return Vec::new();
    }
    let width = if end >= BUCKET_S * MIN_BUCKETS {
        BUCKET_S
    } else {
        end / MIN_BUCKETS
    };
    // Less a hair: float error must not add an empty last bucket.
    let n = ((end / width) - 1e-9).ceil().max(1.0) as usize;
    (0..n)
        .map(|i| {
            let (t0, t1) = (i as f64 * width, ((i + 1) as f64 * width).min(end));
            let rate = if t1 > t0 {
                (bytes_at(&s, t1) - bytes_at(&s, t0)) / 1e6 / (t1 - t0)
            } else {
                0.0
            };
            Bucket {
                t: t1,
                mb_per_s: rate.max(0.0),
            }
        })
        .collect()
}

/// The smallest 1, 2 or 5 times a power of ten at least `x` (x > 0).
pub fn nice_step(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|s| *s >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * p)
}

/// The top of the y-axis and its tick step: about five ticks up to a high percentile
/// of the rates (the 90th), or to the peak when no bucket stands far above the others.
pub fn y_axis(rates: &[f64], also: &[f64]) -> (f64, f64) {
    let mut sorted: Vec<f64> = rates.iter().copied().filter(|r| r.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let peak = sorted.last().copied().unwrap_or(0.0);
    let high = sorted
        .get(((sorted.len() as f64 * 0.9).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    // A burst well above the rest (more than 1.5 times the 90th percentile) is clipped.
    let reach = if peak > high * 1.5 { high * 1.2 } else { peak };
    let reach = also
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(reach, f64::max)
        .max(1e-3);
    let step = nice_step(reach / 5.0);
    ((reach / step).ceil() * step, step)
}

fn mb_text(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{v:.decimals$}")
}

/// A duration in seconds with two significant digits below 10 s (`0.0074`, `2`).
fn secs_text(s: f64) -> String {
    if s >= 10.0 || s <= 0.0 {
        return format!("{s:.0}");
    }
    let decimals = (1 - s.log10().floor() as i64).max(0) as usize;
    let t = format!("{s:.decimals$}");
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

/// The plot of a pass's timeline; `limit` is the throttle in bytes per second, if set.
pub fn svg(samples: &[Sample], limit: Option<u64>) -> String {
    let b = buckets(samples);
    let (w, h, left, right, top, bottom) = (640.0, 260.0, 52.0, 16.0, 28.0, 34.0);
    let end = b.last().map_or(1.0, |l| l.t).max(1e-3);
    let total_mb = samples.iter().map(|s| s.bytes).max().unwrap_or(0) as f64 / 1e6;
    let avg = if b.is_empty() { 0.0 } else { total_mb / end };
    let limit_mb = limit.map(|l| l as f64 / 1e6);
    let rates: Vec<f64> = b.iter().map(|b| b.mb_per_s).collect();
    let peak = rates.iter().copied().fold(0.0, f64::max);
    // The limit is drawn only if it is within reach of the data (else it is named).
    let limit_in_plot = limit_mb.filter(|l| *l <= peak.max(avg) * 3.0);
    let also: Vec<f64> = [Some(avg), limit_in_plot].into_iter().flatten().collect();
    let (y_top, y_step) = y_axis(&rates, &also);
    let x_step = nice_step(end / 6.0);
    let x = |t: f64| left + (w - left - right) * t / end;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v.min(y_top) / y_top);
    let mut o = format!(
        "<svg class=\"plot\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"Throughput over {end:.1} s: average {avg:.1} MB/s, peak {peak:.1} MB/s\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    // Gridlines and ticks.
    let mut v = 0.0;
    while v <= y_top + y_step * 1e-6 {
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{x2:.1}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#e1e4e8\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" text-anchor=\"end\" fill=\"#444\">{label}</text>",
            x2 = w - right,
            yv = y(v),
            tx = left - 6.0,
            ty = y(v) + 4.0,
            label = mb_text(v, y_step)
        );
        v += y_step;
    }
    let mut t = 0.0;
    while t <= end + x_step * 1e-6 {
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{top}\" y2=\"{1:.1}\" stroke=\"#eef0f2\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\" fill=\"#444\">{3}s</text>",
            x(t),
            h - bottom,
            h - bottom + 15.0,
            mb_text(t, x_step)
        );
        t += x_step;
    }
    let _ = write!(
        o,
        "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1:.1}\" y2=\"{0:.1}\" stroke=\"#444\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0:.1}\" stroke=\"#444\"/>\
         <text x=\"{left}\" y=\"14\" fill=\"#1b1f24\">MB/s acknowledged (moving average over {2} s)</text>",
        h - bottom,
        w - right,
        secs_text(end / b.len().max(1) as f64),
    );
    // Legend on the right of the title: average, limit.
    let mut legend = format!("<tspan fill=\"#57606a\">— average {avg:.1} MB/s</tspan>");
    if let Some(l) = limit_mb {
        let where_ = if limit_in_plot.is_some() {
            ""
        } else {
            " (above the plot)"
        };
        let _ = write!(
            legend,
            "<tspan fill=\"#a40e26\" dx=\"12\">— throttle {l:.1} MB/s{where_}</tspan>"
        );
    }
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"14\" text-anchor=\"end\">{legend}</text>",
        w - right
    );
    if !b.is_empty() {
        let pts: Vec<String> = std::iter::once(format!("{:.1},{:.1}", x(0.0), y(b[0].mb_per_s)))
            .chain(
                b.iter()
                    .map(|p| format!("{:.1},{:.1}", x(p.t), y(p.mb_per_s))),
            )
            .collect();
        let _ = write!(
            o,
            "<polyline class=\"rate\" fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        );
        for p in b.iter().filter(|p| p.mb_per_s > y_top) {
            let (cx, cy) = (x(p.t), y(y_top));
            let _ = write!(
                o,
                "<path class=\"clipped\" d=\"M{:.1},{:.1} l-5,8 h10 z\" fill=\"#bf8700\"><title>clipped: {:.1} MB/s</title></path>",
                cx,
                cy - 2.0,
                p.mb_per_s
            );
        }
        let _ = write!(
            o,
            "<line class=\"average\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#57606a\" stroke-dasharray=\"6 4\"/>",
            w - right,
            y(avg)
        );
    }
    if let Some(l) = limit_in_plot {
        let _ = write!(
            o,
            "<line class=\"limit\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#a40e26\" stroke-dasharray=\"2 3\" stroke-width=\"1.5\"/>",
            w - right,
            y(l)
        );
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests;
