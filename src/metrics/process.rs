//! The standard `process_*` metrics (as every Prometheus client library exports them), read
//! from `/proc/self` when `/metrics` is scraped: nothing runs between scrapes, and a scrape
//! costs three small file reads and one directory listing. Elsewhere than Linux nothing is
//! written.

use std::fmt::Write;

pub(crate) const CPU_SECONDS: &str = "process_cpu_seconds_total";
pub(crate) const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
pub(crate) const VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
pub(crate) const OPEN_FDS: &str = "process_open_fds";
pub(crate) const MAX_FDS: &str = "process_max_fds";
pub(crate) const START_TIME: &str = "process_start_time_seconds";

/// What one read of `/proc/self` found; a figure that could not be read is left out.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ProcessStats {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_bytes: Option<u64>,
    pub(crate) virtual_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) max_fds: Option<u64>,
    pub(crate) start_time_seconds: Option<f64>,
}

/// Appends the process metrics to a scrape in the text format.
pub(crate) fn render(out: &mut String) {
    render_stats(&read(), out);
}

fn render_stats(stats: &ProcessStats, out: &mut String) {
    let rows: [(&str, &str, &str, Option<f64>); 6] = [
        (
            CPU_SECONDS,
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
        (
            RESIDENT_MEMORY,
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes.map(|v| v as f64),
        ),
        (
            VIRTUAL_MEMORY,
            "gauge",
            "Virtual memory size in bytes.",
            stats.virtual_bytes.map(|v| v as f64),
        ),
        (
            OPEN_FDS,
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds.map(|v| v as f64),
        ),
        (
            MAX_FDS,
            "gauge",
            "Maximum number of open file descriptors.",
            stats.max_fds.map(|v| v as f64),
        ),
        (
            START_TIME,
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stats.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in rows {
        if let Some(value) = value {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

#[cfg(target_os = "linux")]
fn read() -> ProcessStats {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| boot_time(&text));
    // SAFETY: sysconf only reads a system constant.
    let (ticks, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let mut stats = parse_stat(&stat, ticks as f64, page_size.max(0) as u64, boot_time);
    stats.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count() as u64);
    stats.max_fds = max_fds();
    stats
}

#[cfg(not(target_os = "linux"))]
fn read() -> ProcessStats {
    ProcessStats::default()
}

#[cfg(target_os = "linux")]
fn max_fds() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Reads `/proc/self/stat` (see proc(5)). The command name (field 2) is in parentheses and may
/// hold spaces, so fields are counted from the last `)`.
fn parse_stat(stat: &str, ticks: f64, page_size: u64, boot_time: Option<u64>) -> ProcessStats {
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return ProcessStats::default();
    };
    // after_name starts with field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let valid_ticks = ticks > 0.0;
    let cpu_seconds = match (field(14), field(15)) {
        (Some(user), Some(system)) if valid_ticks => Some((user + system) as f64 / ticks),
        _ => None,
    };
    let start_time_seconds = match (field(22), boot_time) {
        (Some(start), Some(boot)) if valid_ticks => Some(boot as f64 + start as f64 / ticks),
        _ => None,
    };
    ProcessStats {
        cpu_seconds,
        resident_bytes: field(24).map(|pages| pages * page_size),
        virtual_bytes: field(23),
        start_time_seconds,
        ..ProcessStats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line, with a command name that holds a space and a parenthesis.
    const STAT: &str = "4242 (kb gate) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
        250 50 0 0 20 0 3 0 123400 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 \
        17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stats = parse_stat(STAT, 100.0, 4096, Some(1_700_000_000));
        assert_eq!(stats.cpu_seconds, Some(3.0));
        assert_eq!(stats.start_time_seconds, Some(1_700_001_234.0));
        assert_eq!(stats.virtual_bytes, Some(104_857_600));
        assert_eq!(stats.resident_bytes, Some(2560 * 4096));
    }

    #[test]
    fn unreadable_figures_are_left_out() {
        assert_eq!(parse_stat("", 100.0, 4096, None), ProcessStats::default());
        let stats = parse_stat(STAT, 100.0, 4096, None);
        assert_eq!(stats.start_time_seconds, None);
        let mut text = String::new();
        render_stats(&stats, &mut text);
        assert!(!text.contains(START_TIME), "{text}");
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"
            )
        );
    }

    #[test]
    fn boot_time_is_read_from_proc_stat() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(boot_time(text), Some(1_700_000_000));
        assert_eq!(boot_time("cpu 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let stats = read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.open_fds.unwrap() > 0);
        assert!(stats.cpu_seconds.is_some());
        assert!(stats.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
