//! CPU time by process, read from /proc: where the cycles of a phase went
//! (broker, database, relay, this process with its consumer). On a 2-core
//! machine the relay's throughput is bounded by the sum, so the split says
//! what to make cheaper.

use std::collections::BTreeMap;

/// Clock ticks per second of /proc/<pid>/stat on Linux.
const TICKS_PER_S: f64 = 100.0;

/// utime + stime in seconds, summed by group.
#[derive(Debug, Clone, Default)]
pub struct CpuSample(BTreeMap<&'static str, f64>);

/// The group a process belongs to, by its command name.
fn group(comm: &str, pid: u32, relay: Option<u32>) -> Option<&'static str> {
    if Some(pid) == relay {
        Some("relay")
    } else if pid == std::process::id() {
        Some("bench (publisher/consumer)")
    } else if comm == "beam.smp" {
        Some("rabbitmq")
    } else if comm == "postgres" {
        // The process title tells client backends from the server's own
        // processes (WAL writer, checkpointer, autovacuum...).
        let title = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let background = [
            "writer",
            "checkpointer",
            "autovacuum",
            "launcher",
            "collector",
        ]
        .iter()
        .any(|w| title.contains(w));
        Some(if background {
            "postgres (background)"
        } else {
            "postgres"
        })
    } else {
        None
    }
}

/// Postgres processes that exit during a phase take their CPU with them:
/// the phases measured here keep their connections open until after the
/// sample, but an autovacuum worker that ends within a phase is not counted.
pub fn sample(relay: Option<u32>) -> CpuSample {
    let mut by_group = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return CpuSample(by_group);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // comm is in parentheses and may contain spaces: split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let Some(g) = group(comm, pid, relay) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14 and stime 15 (1-based).
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (ticks(14), ticks(15)) {
            *by_group.entry(g).or_insert(0.0) += (u + s) / TICKS_PER_S;
        }
    }
    CpuSample(by_group)
}

impl CpuSample {
    /// Microseconds of CPU per event by group, between `self` and `later`.
    pub fn per_event(&self, later: &Self, events: usize) -> BTreeMap<&'static str, f64> {
        later
            .0
            .iter()
            .map(|(g, t)| {
                let before = self.0.get(g).copied().unwrap_or(0.0);
                (*g, (t - before).max(0.0) * 1e6 / events as f64)
            })
            .collect()
    }
}

/// "rabbitmq 98, postgres 40, ..." in µs per event, with the total.
pub fn describe(per_event: &BTreeMap<&'static str, f64>) -> String {
    let total: f64 = per_event.values().sum();
    let parts: Vec<String> = per_event
        .iter()
        .map(|(g, us)| format!("{g} {us:.0}"))
        .collect();
    format!("{} (total {total:.0})", parts.join(", "))
}

/// The machine's CPU time from /proc/stat: (stolen by the hypervisor, all).
/// Stolen time is what other tenants of a shared host took from this one.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let steal = fields.get(7).copied().unwrap_or(0);
    (steal, fields.iter().take(8).sum())
}

/// Percentage of the machine's CPU time stolen between two readings.
pub fn stolen_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1);
    if all == 0 {
        return 0.0;
    }
    after.0.saturating_sub(before.0) as f64 * 100.0 / all as f64
}
