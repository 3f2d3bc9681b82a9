//! Soak: runs the real `netswitch socks` binary under churn on loopback for a bounded time, then
//! checks it is back where it started.
//!
//! Usage: `soak NETSWITCH_BINARY SECONDS [SEED]` (see `scripts/soak`, which builds both).
//!
//! [`WORKERS`] clients run SOCKS5 sessions back to back until the time is up (the mix is in
//! `scenarios.rs`: echo with random sizes and client half-close, destination half-close first,
//! client resets, destination resets, refused destinations, UDP associations, aborted
//! handshakes). At the end it asserts:
//! - zero unexpected outcomes (every byte checked; refused = reply 0x05; no session stalls for
//!   [`STALL`]), and no WARN/ERROR line or panic in netswitch's log;
//! - netswitch's open fds (`/proc/PID/fd`) back to the count before the churn (within [`SETTLE`]),
//!   apart from the empty splice pipes its runtime threads keep (at most `relay::KEPT_PIPES` per
//!   thread);
//! - the connection tracker empty: on SIGTERM netswitch logs `connections=0`, then exits 0;
//! - RSS at the end at most [`RSS_BOUND_MIB`], and at most [`RSS_GROWTH_MIB`] above the RSS after
//!   the first quarter of the run (a leak grows with time; a warm heap does not).

mod peers;
mod scenarios;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scenarios::{Kind, Moved};

/// Concurrent clients.
const WORKERS: usize = 32;
/// A session that takes longer than this has stalled (an error).
const STALL: Duration = Duration::from_secs(30);
/// How long netswitch may take to close everything after the last client finished.
const SETTLE: Duration = Duration::from_secs(30);
/// Largest RSS accepted at the end of the soak.
const RSS_BOUND_MIB: u64 = 32;
/// Largest RSS growth accepted between the first quarter of the run and its end.
const RSS_GROWTH_MIB: u64 = 8;

/// Counts and unexpected outcomes, shared by the clients and the destinations.
#[derive(Debug, Default)]
pub struct Stats {
    done: [AtomicU64; Kind::ALL.len()],
    up: AtomicU64,
    down: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    /// Records an unexpected outcome (the first 20 are kept for the report).
    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 20 {
            first.push(what);
        }
    }

    fn record(&self, kind: Kind, moved: Moved) {
        self.done[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.up.fetch_add(moved.up, Ordering::Relaxed);
        self.down.fetch_add(moved.down, Ordering::Relaxed);
    }
}

/// A small xorshift generator: the soak is reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n.max(1)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(binary), Some(Ok(seconds))) = (args.get(1), args.get(2).map(|s| s.parse::<u64>())) else {
        eprintln!("usage: soak NETSWITCH_BINARY SECONDS [SEED]");
        return ExitCode::from(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("soak: start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak(binary, Duration::from_secs(seconds), seed)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failures) => {
            for failure in failures {
                eprintln!("soak FAILED: {failure}");
            }
            ExitCode::FAILURE
        }
    }
}

/// What netswitch's log showed.
#[derive(Debug, Default)]
struct LogSummary {
    lines: u64,
    info: u64,
    warnings: Vec<String>,
    warn_count: u64,
    stopping: Option<String>,
}

async fn soak(binary: &str, duration: Duration, seed: u64) -> Result<(), Vec<String>> {
    println!("soak: {binary} for {duration:?}, {WORKERS} clients, seed {seed}");
    let stats = Arc::new(Stats::default());
    let (peers, _refusing) =
        peers::start(stats.clone()).await.map_err(|e| vec![format!("destinations: {e}")])?;
    let (mut child, proxy, log) = start_netswitch(binary).map_err(|e| vec![e])?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, rss_before) = (fd_kinds(pid), rss_kib(pid));

    let started = Instant::now();
    let deadline = started + duration;
    let rss_peak = Arc::new(AtomicU64::new(rss_before));
    let rss_quarter = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, quarter) = (rss_peak.clone(), rss_quarter.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let rss = rss_kib(pid);
                peak.fetch_max(rss, Ordering::Relaxed);
                if started.elapsed() >= duration / 4 && quarter.load(Ordering::Relaxed) == 0 {
                    quarter.store(rss, Ordering::Relaxed);
                }
            }
        })
    };
    let workers: Vec<_> = (0..WORKERS as u64)
        .map(|i| {
            let stats = stats.clone();
            let mut rng = Rng(seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let kind = Kind::pick(&mut rng);
                    match tokio::time::timeout(STALL, scenarios::run(kind, proxy, &peers, &mut rng)).await {
                        Ok(Ok(moved)) => stats.record(kind, moved),
                        Ok(Err(error)) => stats.error(error),
                        Err(_) => stats.error(format!("{kind:?}: stalled for {STALL:?}")),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let churn = started.elapsed();
    sampler.abort();

    // Everything the clients opened is closed: netswitch must come back to its starting fds,
    // except the empty splice pipes each runtime thread keeps for the next bulk flow (at most
    // `relay::KEPT_PIPES` per thread, two fds each): a bounded cache, not a leak.
    let settling = Instant::now();
    let pipe_bound = 2 * netswitch::relay::KEPT_PIPES * thread_count(pid);
    let mut fds_after = fd_kinds(pid);
    while fds_after.leaks_against(fds_before, pipe_bound) && settling.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = fd_kinds(pid);
    }
    let settled_in = settling.elapsed();
    let rss_after = rss_kib(pid);
    let leaked = fds_after.leaks_against(fds_before, pipe_bound);
    let leftover_fds = if leaked { fd_list(pid) } else { String::new() };
    let (status, log) = stop_netswitch(&mut child, log);

    let mut failures = Vec::new();
    let sessions: u64 = stats.done.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    println!(
        "soak: {sessions} sessions in {:.1} s ({:.0}/s), seed {seed}",
        churn.as_secs_f64(),
        sessions as f64 / churn.as_secs_f64()
    );
    for kind in Kind::ALL {
        print!("  {kind:?} {}", stats.done[kind.index()].load(Ordering::Relaxed));
    }
    println!();
    println!(
        "  relayed {:.1} MiB up, {:.1} MiB down",
        stats.up.load(Ordering::Relaxed) as f64 / 1048576.0,
        stats.down.load(Ordering::Relaxed) as f64 / 1048576.0
    );
    let errors = stats.errors.load(Ordering::Relaxed);
    println!("  unexpected outcomes: {errors}");
    for error in stats.first_errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("    {error}");
    }
    if errors > 0 {
        failures.push(format!("{errors} unexpected outcomes (first ones above)"));
    }
    println!(
        "  netswitch fds: {} before, {} after, of which pipes {} before, {} after (kept splice pipes may be up to {pipe_bound} fds); waited {settled_in:?} after the last client",
        fds_before.total, fds_after.total, fds_before.pipes, fds_after.pipes
    );
    if leaked {
        failures.push(format!(
            "fds did not come back: {} before, {} after ({} pipe fds, bound {pipe_bound})\n{leftover_fds}",
            fds_before.total, fds_after.total, fds_after.pipes
        ));
    }
    let mib = |kib: u64| kib as f64 / 1024.0;
    let quarter = rss_quarter.load(Ordering::Relaxed).max(rss_before);
    println!(
        "  netswitch RSS: {:.1} MiB before, {:.1} MiB after the first quarter, peak {:.1} MiB, {:.1} MiB at the end \
         (bounds: {RSS_BOUND_MIB} MiB, +{RSS_GROWTH_MIB} MiB after the first quarter)",
        mib(rss_before),
        mib(quarter),
        mib(rss_peak.load(Ordering::Relaxed)),
        mib(rss_after)
    );
    if rss_after > RSS_BOUND_MIB * 1024 {
        failures.push(format!("RSS {:.1} MiB at the end, bound {RSS_BOUND_MIB} MiB", mib(rss_after)));
    }
    if rss_after > quarter + RSS_GROWTH_MIB * 1024 {
        failures.push(format!(
            "RSS grew {:.1} MiB after the first quarter (bound {RSS_GROWTH_MIB} MiB): a leak?",
            mib(rss_after.saturating_sub(quarter))
        ));
    }
    println!("  netswitch log: {} lines, {} INFO, {} WARN/ERROR", log.lines, log.info, log.warn_count);
    for line in &log.warnings {
        println!("    {line}");
    }
    if log.warn_count > 0 {
        failures.push(format!("{} WARN/ERROR lines in netswitch's log (first ones above)", log.warn_count));
    }
    let stopping = log.stopping.unwrap_or_default();
    println!("  on SIGTERM: {stopping}; exit {status}");
    if !stopping.contains("connections=0") {
        failures.push(format!("tracker not empty at the end: {stopping:?}"));
    }
    if status != "0" {
        failures.push(format!("netswitch exited with {status}"));
    }
    if failures.is_empty() {
        println!("soak: passed");
        Ok(())
    } else {
        Err(failures)
    }
}

/// Starts `netswitch socks` on a free loopback port and returns it with its address and the
/// thread reading its log.
fn start_netswitch(binary: &str) -> Result<(Child, SocketAddr, std::thread::JoinHandle<LogSummary>), String> {
    let mut child = Command::new(binary)
        .args(["socks", "--listen", "127.0.0.1:0", "--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {binary}: {e}"))?;
    let stderr = child.stderr.take().ok_or("no stderr pipe")?;
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut summary = LogSummary::default();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            summary.lines += 1;
            if let Some(address) = line.split("listening on ").nth(1) {
                let _ = address_tx.send(address.split_whitespace().next().unwrap_or_default().to_string());
            }
            if line.contains(" WARN ") || line.contains("ERROR") || line.contains("panicked") {
                summary.warn_count += 1;
                if summary.warnings.len() < 20 {
                    summary.warnings.push(line.clone());
                }
            } else if line.contains(" INFO ") {
                summary.info += 1;
            }
            if line.contains("stopping") {
                summary.stopping = Some(line);
            }
        }
        summary
    });
    let address = address_rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "netswitch did not log its listening address".to_string())?;
    let proxy = address.parse().map_err(|e| format!("listening address {address:?}: {e}"))?;
    println!("soak: netswitch (pid {}) listening on {proxy}", child.id());
    Ok((child, proxy, reader))
}

/// Sends SIGTERM, waits for the exit and the end of the log. Returns the exit status.
fn stop_netswitch(child: &mut Child, log: std::thread::JoinHandle<LogSummary>) -> (String, LogSummary) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory-safety preconditions; pid is our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = match child.wait() {
        Ok(status) => status.code().map_or_else(|| format!("{status}"), |c| c.to_string()),
        Err(error) => format!("wait failed: {error}"),
    };
    (status, log.join().unwrap_or_default())
}

/// How many fds a process has open, and how many of them are pipe ends.
#[derive(Debug, Clone, Copy)]
struct FdKinds {
    total: usize,
    pipes: usize,
}

impl FdKinds {
    /// Whether these fds, counted after the churn, hold more than `before` did: any extra fd that
    /// is not a pipe, or more pipe fds than the splice pools may keep (`pipe_bound`).
    fn leaks_against(self, before: FdKinds, pipe_bound: usize) -> bool {
        let others = |kinds: FdKinds| kinds.total - kinds.pipes;
        others(self) > others(before) || self.pipes > before.pipes + pipe_bound
    }
}

fn fd_kinds(pid: u32) -> FdKinds {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return FdKinds { total: 0, pipes: 0 } };
    let mut kinds = FdKinds { total: 0, pipes: 0 };
    for entry in dir.flatten() {
        kinds.total += 1;
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().starts_with("pipe:") {
            kinds.pipes += 1;
        }
    }
    kinds
}

/// How many threads `pid` runs (each runtime thread may keep splice pipes).
fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(1, |dir| dir.count())
}

/// The open fds of `pid` and what they are (the first 40), for a failure report.
fn fd_list(pid: u32) -> String {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return String::new() };
    let mut lines: Vec<String> = dir
        .flatten()
        .map(|entry| {
            let target =
                std::fs::read_link(entry.path()).map(|p| p.display().to_string()).unwrap_or_default();
            format!("    fd {} -> {target}", entry.file_name().to_string_lossy())
        })
        .collect();
    lines.sort();
    let total = lines.len();
    lines.truncate(40);
    if total > lines.len() {
        lines.push(format!("    ... {} more", total - lines.len()));
    }
    lines.join("\n")
}

/// `VmRSS` of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
