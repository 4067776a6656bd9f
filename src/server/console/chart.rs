//! Charts as SVG drawn on the server: a few lines and bars with a labelled axis, so the
//! console needs no chart library and no script to show them. Every text in a chart is
//! XML-escaped here, since the SVG reaches the page as markup.

use std::fmt::Write;

use chrono::NaiveDate;

use crate::history::{Counters, MessageState};

const W: f64 = 720.0;
const H: f64 = 200.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 24.0;
const TOP: f64 = 10.0;
/// Colours of the series, in order (sent, delivered, failed / other).
const COLOURS: [&str; 4] = ["#2563eb", "#16a34a", "#dc2626", "#9ca3af"];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round ceiling for the y axis, divisible by 4 so its five labels are whole.
fn nice_max(max: u64) -> u64 {
    let max = max.max(4);
    let mag = 10u64.pow(max.ilog10());
    let top = [1, 2, 4, 5, 10]
        .into_iter()
        .map(|step| step * mag)
        .find(|t| *t >= max)
        .unwrap_or(10 * mag);
    top.div_ceil(4) * 4
}

fn frame(out: &mut String, max: u64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" class="chart"><title>{}</title>"#,
        escape(title)
    );
    for i in 0..=4 {
        let y = TOP + (H - TOP - BOTTOM) * f64::from(i) / 4.0;
        let v = max * (4 - i) as u64 / 4;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{W}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e5e7eb\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#6b7280\">{v}</text>",
            LEFT - 4.0,
            y + 3.0
        );
    }
}

/// The series' names, each with its colour.
fn legend(out: &mut String, names: &[&str], colours: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let x = LEFT + 8.0 + i as f64 * 120.0;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            TOP,
            colours[i % colours.len()],
            x + 14.0,
            TOP + 9.0,
            escape(name)
        );
    }
}

/// One line per column of `series` (buckets in time order), with `from`/`to` under
/// the axis.
pub fn lines(series: &[[u64; 3]], names: &[&str], from: &str, to: &str) -> String {
    let max = nice_max(
        series
            .iter()
            .flat_map(|b| b.iter().copied())
            .max()
            .unwrap_or(0),
    );
    let mut out = String::new();
    frame(&mut out, max, "Messages over time");
    let n = series.len().max(2) - 1;
    let plot_h = H - TOP - BOTTOM;
    for col in 0..3 {
        let points: Vec<String> = series
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let x = LEFT + (W - LEFT) * i as f64 / n as f64;
                let y = TOP + plot_h * (1.0 - b[col] as f64 / max as f64);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke-width=\"2\" stroke=\"{}\" points=\"{}\"/>",
            COLOURS[col],
            points.join(" ")
        );
    }
    legend(&mut out, names, &COLOURS);
    let _ = write!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\" font-size=\"10\" fill=\"#6b7280\">{}</text><text x=\"{W}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"#6b7280\">{}</text></svg>",
        H - 6.0,
        escape(from),
        H - 6.0,
        escape(to)
    );
    out
}

/// Stacked bars per day: delivered/sent, failed (errors), other.
pub fn stacked_days(days: &[(NaiveDate, Counters)]) -> String {
    let parts = |c: &Counters| -> [u64; 3] {
        let ok = c.get(MessageState::Sent) + c.get(MessageState::Delivered);
        let bad = MessageState::ALL
            .into_iter()
            .filter(|s| s.is_error())
            .map(|s| c.get(s))
            .sum();
        [ok, bad, c.total() - ok - bad]
    };
    let max = nice_max(days.iter().map(|(_, c)| c.total()).max().unwrap_or(0));
    let mut out = String::new();
    frame(&mut out, max, "Messages per day by outcome");
    let colours = [COLOURS[0], COLOURS[2], COLOURS[3]];
    let slot = (W - LEFT) / days.len().max(1) as f64;
    let plot_h = H - TOP - BOTTOM;
    for (i, (day, c)) in days.iter().enumerate() {
        let x = LEFT + slot * i as f64 + 1.0;
        let mut y = TOP + plot_h;
        for (k, v) in parts(c).into_iter().enumerate() {
            let h = plot_h * v as f64 / max as f64;
            y -= h;
            if v > 0 {
                let colour = colours[k];
                let _ = write!(
                    out,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{colour}\"><title>{day}: {v}</title></rect>",
                    (slot - 2.0).max(1.0)
                );
            }
        }
        // Every 7th day and the last, not so close that they overlap.
        let last = i + 1 == days.len();
        if last || (i % 7 == 0 && days.len() - i > 4) {
            let (x, anchor) = if last { (W, "end") } else { (x, "start") };
            let _ = write!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#6b7280\">{}</text>",
                H - 6.0,
                day.format("%m-%d")
            );
        }
    }
    legend(&mut out, &["sent/delivered", "errors", "other"], &colours);
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0), 4);
        assert_eq!(nice_max(7), 12);
        assert_eq!(nice_max(13), 20);
        assert_eq!(nice_max(4_100), 5_000);
    }

    #[test]
    fn chart_text_is_escaped() {
        let svg = lines(&[[1, 0, 0], [2, 1, 0]], &["<b>"], "<from>", "to");
        assert!(svg.contains("&lt;b&gt;") && svg.contains("&lt;from&gt;"));
        assert!(!svg.contains("<b>"));
    }
}
