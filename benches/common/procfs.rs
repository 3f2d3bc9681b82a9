//! Figures of a (child) process from /proc: RSS, CPU time and context switches summed over its
//! threads, open descriptors; and raising this process's own open-files limit.

use std::collections::BTreeMap;

/// Resident set size in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    status_field(&status, "VmRSS:").map(|kib| kib * 1024).ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// `pid`'s anonymous resident memory (`RssAnon`: heap, stacks, private dirty pages; no code or
/// other file-backed pages), in bytes.
pub fn anon_rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    status_field(&status, "RssAnon:")
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no RssAnon line in {path}"))
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| line.strip_prefix(name))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// One thread's counters.
#[derive(Debug, Clone, Copy, Default)]
struct ThreadCounters {
    cpu_ns: u64,
    switches: u64,
}

/// CPU time and context switches of every live thread of a process at one moment.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    threads: BTreeMap<u32, ThreadCounters>,
}

/// What a process spent between two [`Usage`] samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// CPU time on every thread alive at the end (threads born in between count whole).
    pub cpu_ns: u64,
    /// Voluntary plus involuntary context switches, counted the same way.
    pub switches: u64,
    /// Threads alive at the start and gone at the end: what they spent in between is missing.
    pub threads_gone: usize,
    /// Threads alive at the end.
    pub threads: usize,
}

impl Usage {
    /// Samples every thread of `pid`: run time from /proc/PID/task/TID/schedstat (nanoseconds)
    /// and voluntary + involuntary switches from /proc/PID/task/TID/status.
    pub fn sample(pid: u32) -> Result<Usage, String> {
        let dir = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("read {dir}: {e}"))?;
        let mut threads = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            // A thread may exit between the listing and the reads; it is then left out.
            let (Ok(schedstat), Ok(status)) = (
                std::fs::read_to_string(format!("{dir}/{tid}/schedstat")),
                std::fs::read_to_string(format!("{dir}/{tid}/status")),
            ) else {
                continue;
            };
            let cpu_ns = schedstat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let switches = status_field(&status, "voluntary_ctxt_switches:").unwrap_or(0)
                + status_field(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0);
            threads.insert(tid, ThreadCounters { cpu_ns, switches });
        }
        if threads.is_empty() {
            return Err(format!("no readable thread under {dir}"));
        }
        Ok(Usage { threads })
    }

    /// What the process spent from `self` (earlier) to `later`.
    pub fn until(&self, later: &Usage) -> Spent {
        let mut spent = Spent { threads: later.threads.len(), ..Spent::default() };
        for (tid, end) in &later.threads {
            let start = self.threads.get(tid).copied().unwrap_or_default();
            spent.cpu_ns += end.cpu_ns.saturating_sub(start.cpu_ns);
            spent.switches += end.switches.saturating_sub(start.switches);
        }
        spent.threads_gone = self.threads.keys().filter(|tid| !later.threads.contains_key(tid)).count();
        spent
    }
}

/// CPU nanoseconds of `pid`'s live threads now (for deltas over a busy phase).
pub fn cpu_ns(pid: u32) -> Result<u64, String> {
    Ok(Usage::sample(pid)?.threads.values().map(|t| t.cpu_ns).sum())
}

/// Open file descriptors of `pid`.
pub fn open_fds(pid: u32) -> Result<usize, String> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir).map_err(|e| format!("read {dir}: {e}"))?.count())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit (children inherit it) and returns
/// the soft limit now in force.
pub fn raise_open_files_limit() -> Result<u64, String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(format!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error()));
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(format!(
                "setrlimit(RLIMIT_NOFILE, {}) failed: {}; the soft limit stays {}",
                limit.rlim_max,
                std::io::Error::last_os_error(),
                limit.rlim_cur
            ));
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}
