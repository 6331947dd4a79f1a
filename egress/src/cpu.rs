//! The machine's idle cores between two readings of `/proc/stat` (Linux; unknown elsewhere),
//! for the job core's re-add decision.

/// Reads the machine's idle time; [`IdleMeter::idle_cores`] gives the idle cores since the
/// previous reading.
#[derive(Default)]
pub struct IdleMeter {
    last: Option<(u64, u64)>,
}

/// (idle + iowait ticks, all ticks) summed over the cores, from `/proc/stat`'s `cpu` line.
fn read_stat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((idle, v.iter().sum()))
}

impl IdleMeter {
    /// Idle cores averaged since the last call; `None` on the first call or where `/proc/stat`
    /// cannot be read.
    pub fn idle_cores(&mut self) -> Option<f64> {
        let now = read_stat()?;
        let last = self.last.replace(now)?;
        let total = now.1.saturating_sub(last.1);
        if total == 0 {
            return None;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Some(now.0.saturating_sub(last.0) as f64 / total as f64 * cores)
    }
}
