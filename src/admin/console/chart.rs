//! Usage pictures made on the server as SVG: a stacked bar chart of requests per bucket split by
//! how they ended, and a small inline bar strip for the key list. No script draws anything.

use crate::keys::history::HourCounts;
use maud::{Markup, html};

/// How the requests of one bucket ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Bar {
    /// What the bar is (an hour or a day), shown in its tooltip.
    pub label: String,
    /// Forwarded, and the KB answered 2xx or 3xx.
    pub answered: u64,
    /// Forwarded, and the KB answered 4xx or 5xx.
    pub kb_error: u64,
    /// Refused by kbgate, or failed on the way (502, 504).
    pub refused: u64,
}

impl Bar {
    pub(super) fn of(label: String, counts: &HourCounts) -> Bar {
        let answered = counts.upstream[0] + counts.upstream[1];
        let kb_error = counts.upstream[2] + counts.upstream[3];
        Bar {
            label,
            answered,
            kb_error,
            refused: counts.requests.saturating_sub(answered + kb_error),
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.answered + self.kb_error + self.refused
    }
}

const WIDTH: u64 = 720;
const HEIGHT: u64 = 200;
/// The series, bottom to top: (CSS class, legend text).
const SERIES: [(&str, &str); 3] = [
    ("answered", "answered (2xx/3xx)"),
    ("kb-error", "KB error (4xx/5xx)"),
    ("refused", "refused or failed at the gateway"),
];

/// The stacked bar chart of `bars`, scaled to the busiest bucket, with a legend and a text
/// summary for screen readers.
pub(super) fn usage_chart(bars: &[Bar]) -> Markup {
    let max = bars.iter().map(Bar::total).max().unwrap_or(0).max(1);
    let total: u64 = bars.iter().map(Bar::total).sum();
    let slot = WIDTH / (bars.len() as u64).max(1);
    let width = slot.saturating_sub(1).max(1);
    let summary = format!(
        "{total} requests over {} buckets; the busiest had {max}.",
        bars.len()
    );
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(summary)
                preserveAspectRatio="none" {
                @for (i, bar) in bars.iter().enumerate() {
                    @for (class, legend, value, y, h) in segments(bar, max) {
                        rect class=(class) x=(i as u64 * slot) y=(y) width=(width) height=(h) {
                            title { (bar.label) ": " (value) " " (legend) }
                        }
                    }
                }
            }
            figcaption {
                (summary)
                ul.legend {
                    @for (class, legend) in SERIES {
                        li { span class={ "swatch " (class) } {} (legend) }
                    }
                }
            }
        }
    }
}

/// The stacked segments of `bar`, bottom up: (class, legend, value, y, height), empty ones
/// left out.
fn segments(bar: &Bar, max: u64) -> Vec<(&'static str, &'static str, u64, u64, u64)> {
    let mut top = HEIGHT;
    let values = [bar.answered, bar.kb_error, bar.refused];
    let mut out = Vec::new();
    for (value, (class, legend)) in values.into_iter().zip(SERIES) {
        if value > 0 {
            let y = top.saturating_sub((value * HEIGHT).div_ceil(max));
            out.push((class, legend, value, y, top - y));
            top = y;
        }
    }
    out
}

/// A small strip of bars, one per value (requests per day in the key list).
pub(super) fn sparkline(values: &[u64], label: &str) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (8 * values.len() as u64, 20u64);
    html! {
        svg.spark viewBox={ "0 0 " (w) " " (h) } width=(w) height=(h) role="img" aria-label=(label) {
            @for (i, value) in values.iter().enumerate() {
                @let bar = (value * h).div_ceil(max);
                rect x=(i as u64 * 8) y=(h - bar) width="6" height=(bar) {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, answered: u64, kb_error: u64, refused: u64) -> Bar {
        Bar {
            label: label.into(),
            answered,
            kb_error,
            refused,
        }
    }

    #[test]
    fn bars_split_by_outcome_and_scale_to_the_busiest() {
        let svg = usage_chart(&[bar("h0", 10, 0, 0), bar("h1", 2, 1, 2), bar("<b>", 0, 0, 0)])
            .into_string();
        // The busiest bar fills the height; a 2-of-10 segment is a fifth of it.
        assert!(
            svg.contains(r#"class="answered" x="0" y="0" width="239" height="200""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="answered" x="240" y="160" width="239" height="40""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="kb-error" x="240" y="140" width="239" height="20""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="refused" x="240" y="100" width="239" height="40""#),
            "{svg}"
        );
        assert!(svg.contains("15 requests over 3 buckets; the busiest had 10."));
        // An empty bucket draws nothing; labels are text.
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn no_usage_draws_an_empty_chart() {
        let svg = usage_chart(&[]).into_string();
        assert!(svg.contains("0 requests over 0 buckets"));
        assert_eq!(svg.matches("<rect").count(), 0);
        let spark = sparkline(&[0, 0, 3], "3 requests").into_string();
        assert_eq!(spark.matches("<rect").count(), 3);
        assert!(spark.contains(r#"y="0" width="6" height="20""#));
    }

    #[test]
    fn a_bar_from_hour_counts() {
        let mut counts = HourCounts::empty(0);
        counts.requests = 10;
        counts.upstream = [5, 1, 2, 1];
        let bar = Bar::of("x".into(), &counts);
        assert_eq!((bar.answered, bar.kb_error, bar.refused), (6, 3, 1));
    }
}
