//! The standard Prometheus `process_*` series, read from `/proc/self` on each
//! scrape (a handful of small reads, no background task) and appended to
//! the recorder's text.
//!
//! They are written as text rather than through the `metrics` facade: its
//! counters are integers, and `process_cpu_seconds_total` is a fractional
//! counter. On systems without `/proc` the block is empty.

use std::fmt::Write as _;

/// `USER_HZ`, the unit of the CPU times in `/proc/<pid>/stat`. The kernel
/// fixes it at 100 for user space on every architecture Rust targets
/// (`sysconf(_SC_CLK_TCK)` answers 100), and reading it would need `unsafe`.
const TICKS_PER_SECOND: f64 = 100.0;

/// The process series as Prometheus text, or `""` without `/proc`.
pub(crate) fn render() -> String {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let sample = Sample {
        stat: stat.as_deref().and_then(parse_stat),
        status: status.as_deref().map(parse_status).unwrap_or_default(),
        max_fds: limits.as_deref().and_then(max_open_files),
        boot_time,
        open_fds,
    };
    sample.text()
}

/// What one scrape read.
#[derive(Debug, Default)]
struct Sample {
    stat: Option<Stat>,
    status: Status,
    max_fds: Option<f64>,
    /// Seconds since the epoch at boot (`btime` in `/proc/stat`).
    boot_time: Option<f64>,
    open_fds: Option<f64>,
}

/// The fields used from `/proc/self/stat`.
#[derive(Debug, PartialEq)]
struct Stat {
    /// User plus system CPU time, in ticks.
    cpu_ticks: u64,
    /// Start time in ticks after boot.
    start_ticks: u64,
}

/// The fields used from `/proc/self/status`, in bytes or a count.
#[derive(Debug, Default, PartialEq)]
struct Status {
    resident: Option<f64>,
    virtual_size: Option<f64>,
    threads: Option<f64>,
}

impl Sample {
    fn text(&self) -> String {
        let mut out = String::new();
        let mut series = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
        };
        series(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.stat
                .as_ref()
                .map(|s| s.cpu_ticks as f64 / TICKS_PER_SECOND),
        );
        series(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds,
        );
        series(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds,
        );
        series(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.status.virtual_size,
        );
        series(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.status.resident,
        );
        series(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.stat
                .as_ref()
                .zip(self.boot_time)
                .map(|(s, boot)| boot + s.start_ticks as f64 / TICKS_PER_SECOND),
        );
        series(
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            self.status.threads,
        );
        out
    }
}

/// `utime + stime` and `starttime` of `/proc/<pid>/stat`. The command name
/// (field 2) is in parentheses and may hold spaces and `)`, so fields are
/// counted from the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)? + field(15)?,
        start_ticks: field(22)?,
    })
}

fn parse_status(s: &str) -> Status {
    let mut out = Status::default();
    for line in s.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let mut words = value.split_whitespace();
        let number = words.next().and_then(|n| n.parse::<f64>().ok());
        // Sizes are in kB (KiB) whatever the page size.
        let kib = number
            .filter(|_| words.next() == Some("kB"))
            .map(|n| n * 1024.0);
        match key {
            "VmRSS" => out.resident = kib,
            "VmSize" => out.virtual_size = kib,
            "Threads" => out.threads = number,
            _ => {}
        }
    }
    out
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`.
fn max_open_files(s: &str) -> Option<f64> {
    let line = s.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn boot_time(s: &str) -> Option<f64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
        250 75 0 0 20 0 9 0 123456 1000000 2500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Some(Stat {
                cpu_ticks: 325,
                start_ticks: 123456
            })
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
    }

    #[test]
    fn status_sizes_are_kib() {
        let s = "Name:\tportcullis\nVmSize:\t  200 kB\nVmRSS:\t   10 kB\nThreads:\t9\n";
        assert_eq!(
            parse_status(s),
            Status {
                resident: Some(10240.0),
                virtual_size: Some(204800.0),
                threads: Some(9.0),
            }
        );
    }

    #[test]
    fn limits_and_boot_time() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
            Max processes             63541                63541                processes \n\
            Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            max_open_files("Max open files unlimited unlimited files"),
            None
        );
        assert_eq!(boot_time("cpu 1 2 3\nbtime 1700000000\n"), Some(1.7e9));
    }

    #[test]
    fn exact_text_for_a_sample() {
        let sample = Sample {
            stat: parse_stat(STAT),
            status: parse_status("VmRSS:\t10 kB\n"),
            max_fds: Some(1024.0),
            boot_time: Some(1_700_000_000.0),
            open_fds: Some(12.0),
        };
        assert_eq!(
            sample.text(),
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3.25\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds 12\n\
             # HELP process_max_fds Maximum number of open file descriptors.\n\
             # TYPE process_max_fds gauge\nprocess_max_fds 1024\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 10240\n\
             # HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n\
             # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700001234.56\n"
        );
    }

    /// On Linux every series is there and plausible for this very process.
    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_on_linux() {
        let text = render();
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_threads",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name}: {text}");
        }
        let start = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("start time");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        // This process started a moment ago.
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }
}
