//! Counting a relay's system calls: the relay is started under `perf trace -s` (tracepoints, little
//! slowdown) or, where perf cannot trace, `strace -f -c` (ptrace, much slower: fewer wakeups per
//! unit of work than at full speed). Both follow every thread and write a summary when the relay
//! exits; this reads it back as calls per system call.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The tool that counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracer {
    /// `perf trace -s -o FILE -- COMMAND`.
    Perf,
    /// `strace -f -c -o FILE -- COMMAND`.
    Strace,
}

/// A relay to be started under `tracer`, its summary written to `output`.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// The tool.
    pub tracer: Tracer,
    /// Where it writes its summary.
    pub output: PathBuf,
}

/// Calls and errors of one system call over the traced process's life.
#[derive(Debug, Clone)]
pub struct SyscallCount {
    /// System call name.
    pub name: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that failed (EAGAIN included).
    pub errors: u64,
}

fn succeeds(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`{program} {}` failed: {status}", args.join(" "))),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

impl Tracer {
    /// perf if `perf trace` works here, else strace, else why neither can be used.
    pub fn detect() -> Result<Tracer, String> {
        let scratch = output_path("probe");
        let scratch_text = scratch.to_string_lossy().into_owned();
        let perf = succeeds("perf", &["trace", "-s", "-o", &scratch_text, "--", "true"]);
        let _ = std::fs::remove_file(&scratch);
        match (perf, succeeds("strace", &["-V"])) {
            (Ok(()), _) => Ok(Tracer::Perf),
            (Err(_), Ok(())) => Ok(Tracer::Strace),
            (Err(perf), Err(strace)) => Err(format!("{perf}; {strace}")),
        }
    }

    /// The tool and options, as they would be typed.
    pub fn name(self) -> &'static str {
        match self {
            Tracer::Perf => "perf trace -s",
            Tracer::Strace => "strace -f -c",
        }
    }

    /// The program and arguments to put in front of the relay's command.
    pub fn prefix(self, output: &Path) -> (&'static str, Vec<OsString>) {
        let args = match self {
            Tracer::Perf => vec!["trace".into(), "-s".into(), "-o".into(), output.into(), "--".into()],
            Tracer::Strace => vec!["-f".into(), "-c".into(), "-o".into(), output.into(), "--".into()],
        };
        (if self == Tracer::Perf { "perf" } else { "strace" }, args)
    }
}

/// A fresh path for one summary, in the system's temporary directory.
pub fn output_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!("netswitch-bench-{}-{label}.trace", std::process::id()))
}

/// Reads `tracing`'s summary (summed over threads), most frequent call first, and removes it.
pub fn read_summary(tracing: &Tracing) -> Result<Vec<SyscallCount>, String> {
    let path = &tracing.output;
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let _ = std::fs::remove_file(path);
    let mut sums: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match tracing.tracer {
            // "syscall calls errors total min avg max stddev", one table per thread.
            Tracer::Perf if fields.len() >= 3 && fields[0].parse::<f64>().is_err() => {
                match (fields[1].parse::<u64>(), fields[2].parse::<u64>()) {
                    (Ok(calls), Ok(errors)) => Some((fields[0], calls, errors)),
                    _ => None,
                }
            }
            // "% time seconds usecs/call calls [errors] syscall", one table for all threads.
            Tracer::Strace if fields.len() >= 5 && fields[0].parse::<f64>().is_ok() => {
                let errors = if fields.len() == 6 { fields[4].parse().unwrap_or(0) } else { 0 };
                fields[3].parse::<u64>().ok().map(|calls| (fields[fields.len() - 1], calls, errors))
            }
            _ => None,
        };
        if let Some((name, calls, errors)) = parsed {
            if name != "total" {
                let sum = sums.entry(name.to_string()).or_default();
                sum.0 += calls;
                sum.1 += errors;
            }
        }
    }
    if sums.is_empty() {
        return Err(format!("no system call lines in {}: {text:?}", path.display()));
    }
    let mut counts: Vec<SyscallCount> =
        sums.into_iter().map(|(name, (calls, errors))| SyscallCount { name, calls, errors }).collect();
    counts.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(&b.name)));
    Ok(counts)
}

/// `busy` minus `idle` per system call (what the work added), most frequent first.
pub fn subtract(busy: Vec<SyscallCount>, idle: &[SyscallCount]) -> Vec<SyscallCount> {
    let mut counts: Vec<SyscallCount> = busy
        .into_iter()
        .map(|mut c| {
            if let Some(before) = idle.iter().find(|i| i.name == c.name) {
                c.calls = c.calls.saturating_sub(before.calls);
                c.errors = c.errors.saturating_sub(before.errors);
            }
            c
        })
        .filter(|c| c.calls > 0)
        .collect();
    counts.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(&b.name)));
    counts
}

/// Prints the calls per `unit` (`units` of work were done), the most frequent first, with how
/// many of them failed; calls under 0.05 per unit are summed into "other".
pub fn print_per_unit(label: &str, counts: &[SyscallCount], units: u64, unit: &str) {
    let per = |calls: u64| calls as f64 / units as f64;
    let total: u64 = counts.iter().map(|c| c.calls).sum();
    let mut parts = Vec::new();
    let mut other = 0;
    for count in counts {
        if per(count.calls) < 0.05 {
            other += count.calls;
            continue;
        }
        let failed =
            if count.errors > 0 { format!(" ({:.2} failed)", per(count.errors)) } else { String::new() };
        parts.push(format!("{} {:.2}{failed}", count.name, per(count.calls)));
    }
    if per(other) >= 0.005 {
        parts.push(format!("other {:.2}", per(other)));
    }
    println!("  {label}: {:.1} system calls per {unit}", per(total));
    println!("    {}", parts.join(", "));
}
