//! The request-duration histograms (`kbgate_request_duration_seconds` and
//! `kbgate_upstream_duration_seconds`, by route), kept here rather than in the recorder.
//!
//! The exporter stores every sample and folds it into its buckets at the next upkeep or
//! scrape: two samples per request cost about 270 instructions on the request path, and the
//! samples of a busy gateway pile up between upkeeps. Here a sample is two atomic adds into
//! fixed buckets. The text is the exporter's (same names, `le` values, cumulative buckets,
//! `_sum` and `_count`), appended to its output by [`super::render`].

use super::{REQUEST_DURATION, UPSTREAM_DURATION};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Latency buckets in seconds: from a hot-tier refusal (well under 1 ms) to the default
/// upstream timeout (30 s), dense where a KB API usually answers (10-500 ms).
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// The bucket bounds in whole nanoseconds, so that a sample is placed without a float.
const BOUNDS_NANOS: [u64; BUCKETS.len()] = {
    let mut bounds = [0; BUCKETS.len()];
    let mut i = 0;
    while i < BUCKETS.len() {
        bounds[i] = (BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    bounds
};

/// The two histograms and what their `# HELP` lines say.
const FAMILIES: [(&str, &str); 2] = [
    (
        REQUEST_DURATION,
        "Time from request received to response headers sent, by route template.",
    ),
    (
        UPSTREAM_DURATION,
        "Time the knowledge base took to send response headers, by route template.",
    ),
];

/// One route's histogram of one family.
#[derive(Default)]
pub struct Latency {
    /// Samples per bucket, not cumulative (one add per sample); the last is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    pub fn record(&self, sample: Duration) {
        let nanos = u64::try_from(sample.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The series' lines: cumulative buckets, `+Inf`, `_sum`, `_count`. The count is the sum
    /// of the buckets read, so `+Inf` and `_count` agree even while requests are recorded.
    fn render(&self, name: &str, route: &str, out: &mut String) {
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le: &dyn std::fmt::Display = match BUCKETS.get(i) {
                Some(bound) => bound,
                None => &"+Inf",
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {cumulative}");
    }
}

/// Every histogram of the process by family and route (escaped), in the order rendered; one
/// per pair however many gateways a process runs (tests run several), as the recorder had it.
static SERIES: Mutex<BTreeMap<(&'static str, String), Arc<Latency>>> = Mutex::new(BTreeMap::new());

/// The histogram of `family` (one of [`REQUEST_DURATION`], [`UPSTREAM_DURATION`]) for
/// `route`, registered now if it is new. Not for the request path: callers keep the handle.
pub fn histogram(family: &'static str, route: &str) -> Arc<Latency> {
    crate::lock(&SERIES)
        .entry((family, super::escape(route)))
        .or_default()
        .clone()
}

/// Appends every registered histogram in the text format, each family under its `# HELP` and
/// `# TYPE` (a family with no series yet is left out, as the recorder left it out).
pub fn render(out: &mut String) {
    let series = crate::lock(&SERIES);
    for (family, help) in FAMILIES {
        let routes = series.iter().filter(|((f, _), _)| *f == family);
        render_family(
            family,
            help,
            routes.map(|((_, route), h)| (route.as_str(), &**h)),
            out,
        );
    }
}

fn render_family<'a>(
    family: &str,
    help: &str,
    routes: impl Iterator<Item = (&'a str, &'a Latency)>,
    out: &mut String,
) {
    let mut routes = routes.peekable();
    if routes.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} histogram");
    for (route, latency) in routes {
        latency.render(family, route, out);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    /// The samples of one route, placed on and around the bucket bounds.
    fn samples() -> Vec<Duration> {
        let mut samples = vec![
            Duration::ZERO,
            Duration::from_secs(31),
            Duration::from_secs(3600),
        ];
        for bound in BOUNDS_NANOS {
            for nanos in [bound - 1, bound, bound + 1] {
                samples.push(Duration::from_nanos(nanos));
            }
        }
        samples.extend((0..200u64).map(|i| Duration::from_micros(i * i * 37)));
        samples
    }

    /// A value of a line, and the line without it.
    fn split(line: &str) -> (&str, f64) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        (series, value.parse().unwrap())
    }

    #[test]
    fn renders_what_the_prometheus_exporter_renders_for_the_same_samples() {
        let (family, help) = FAMILIES[0];
        let routes = ["/v1/article/{id}", "/v1/search", "odd \"route\" \\ here"];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(family.into()), &BUCKETS)
            .unwrap()
            .build_recorder();
        let ours: Vec<Latency> = routes.iter().map(|_| Latency::default()).collect();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_histogram!(family, help);
            for (i, route) in routes.iter().enumerate() {
                let theirs = metrics::histogram!(family, "route" => route.to_string());
                // A different number of samples per route, so the series cannot be swapped.
                for sample in samples().into_iter().skip(i * 5) {
                    theirs.record(sample.as_secs_f64());
                    ours[i].record(sample);
                }
            }
        });
        let theirs = recorder.handle().render();
        let mut text = String::new();
        let escaped: Vec<String> = routes.iter().map(|r| super::super::escape(r)).collect();
        render_family(
            family,
            help,
            escaped.iter().map(String::as_str).zip(&ours),
            &mut text,
        );

        let mut theirs: Vec<&str> = theirs.lines().collect();
        let mut ours: Vec<&str> = text.lines().collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours.len(), theirs.len(), "{text}");
        assert_eq!(ours.len(), 3 + routes.len() * (BUCKETS.len() + 3));
        for (ours, theirs) in ours.iter().zip(&theirs) {
            if ours.contains("_sum{") {
                // Seconds summed as floats there, as nanoseconds here.
                let ((a, x), (b, y)) = (split(ours), split(theirs));
                assert_eq!(a, b);
                assert!((x - y).abs() <= x.abs() * 1e-9, "{ours} / {theirs}");
            } else {
                assert_eq!(ours, theirs);
            }
        }
    }

    #[test]
    fn a_family_without_series_is_left_out() {
        let mut text = String::new();
        render_family(REQUEST_DURATION, "help", std::iter::empty(), &mut text);
        assert_eq!(text, "");
    }
}
