//! The process metrics every Prometheus exporter publishes (`process_*`), read from
//! Linux's `/proc` at scrape time; elsewhere they are left out.

use super::exposition::{Kind, Page};

/// What `/proc` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    resident_bytes: f64,
    open_fds: f64,
    start_time_seconds: f64,
    cpu_seconds: f64,
}

/// Writes the process families, when `/proc` can be read.
pub(super) fn write(page: &mut Page) {
    let Some(stats) = read() else {
        return;
    };
    let families = [
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            stats.resident_bytes,
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            stats.open_fds,
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            stats.start_time_seconds,
        ),
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
    ];
    for (name, kind, help, value) in families {
        page.family(name, kind, help);
        page.sample(name, &[], value);
    }
}

fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let page_size = rustix::param::page_size() as f64;
    parse(&stat, &boot, ticks, page_size).map(|mut stats| {
        stats.open_fds = open_fds as f64;
        stats
    })
}

/// Reads `/proc/self/stat` (`stat`) and the boot time in `/proc/stat` (`boot`).
fn parse(stat: &str, boot: &str, ticks: f64, page_size: f64) -> Option<ProcessStats> {
    // The command name, in parentheses, may hold spaces and parentheses: the fields
    // that follow start after its last `)`, at field 3 (`state`).
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
    let boot_time: f64 = boot
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(ProcessStats {
        resident_bytes: field(24)? * page_size,
        open_fds: 0.0,
        start_time_seconds: boot_time + field(22)? / ticks,
        cpu_seconds: (field(14)? + field(15)?) / ticks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_with_an_awkward_command_name() {
        let stat = "4242 (fore man) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 700000000 3000 18446744073709551615";
        let stats = parse(stat, "cpu 1 2 3\nbtime 1700000000\n", 100.0, 4096.0).unwrap();
        assert_eq!(stats.resident_bytes, 3000.0 * 4096.0);
        assert_eq!(stats.cpu_seconds, 3.0);
        assert_eq!(stats.start_time_seconds, 1_700_000_000.0 + 123.45);
    }

    #[test]
    fn this_process_reads_back() {
        let stats = read().expect("/proc is there on Linux");
        assert!(stats.resident_bytes > 0.0);
        assert!(stats.open_fds >= 3.0);
        assert!(stats.start_time_seconds > 1_600_000_000.0);
    }
}
