//! Where the CPU went: seconds of user + system time of a process (from `/proc/PID/stat`)
//! and of this process's threads grouped by name (tokio workers, librdkafka threads, the
//! latency watcher), sampled before and after a run.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// User + system seconds of a process or thread from its `stat` file.
fn stat_secs(path: &str) -> Option<(String, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces, so split after the last ')'.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the comm.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SEC))
}

/// CPU seconds of another process so far (`None` if it is not readable).
pub(crate) fn process_secs(pid: u32) -> Option<f64> {
    stat_secs(&format!("/proc/{pid}/stat")).map(|(_, secs)| secs)
}

/// CPU seconds of this process's live threads, by thread-name group.
pub(crate) fn own_threads() -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = format!("{}/stat", task.path().display());
        if let Some((comm, secs)) = stat_secs(&path) {
            *out.entry(group(&comm)).or_insert(0.0) += secs;
        }
    }
    out
}

/// CPU seconds of the whole process (threads that ended included).
pub(crate) fn own_process() -> f64 {
    stat_secs("/proc/self/stat").map_or(0.0, |(_, secs)| secs)
}

fn group(comm: &str) -> String {
    if comm.starts_with("tokio") {
        "tokio workers (pipeline, producer loop)".into()
    } else if comm.starts_with("rdk:") {
        "librdkafka threads (all clients)".into()
    } else if comm.starts_with("latency-watch") {
        "latency watcher".into()
    } else {
        "other".into()
    }
}

/// `after - before` per key.
pub(crate) fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (k.clone(), (d * 100.0).round() / 100.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_cpu_time() {
        assert!(own_process() >= 0.0);
        assert!(!own_threads().is_empty());
        assert!(process_secs(std::process::id()).is_some());
    }
}
