//! The benchmarks' command line: `cargo bench [--bench NAME] -- [SECTION...] [--window SECONDS]
//! [--churn SECONDS] [--stack system|userspace]`.

use std::time::Duration;

use super::ALL_SECTIONS;

/// Idle window of the wakeup measurement when `--window` is not given (the issue asks for 30 s;
/// 10 s keeps the default `cargo bench` run short).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What one benchmark binary was asked to do.
pub struct Args {
    /// The sections of this binary to run, in this binary's order.
    pub sections: Vec<&'static str>,
    /// Whether sections were named on the command line (else the binary's defaults run).
    pub named: bool,
    /// How long the idle wakeup measurement watches each process.
    pub window: Duration,
    /// `--churn SECONDS` (the tun benchmark): open and close connections through the tunnel for
    /// that long instead of the default sections.
    pub churn: Option<Duration>,
    /// `--stack system|userspace` (the tun benchmark): only that TCP stack's columns (and the
    /// stack the churn runs on); `None`: both.
    pub stack: Option<&'static str>,
}

/// The values `--stack` takes.
pub const STACKS: [&str; 2] = ["system", "userspace"];

impl Args {
    /// Parses this process's arguments. `own` lists this binary's sections in run order;
    /// `default` those that run when none is named. Cargo's own `--bench` is ignored; section
    /// names that belong to the other binary are accepted and skipped.
    pub fn parse(own: &[&'static str], default: &[&'static str]) -> Result<Args, String> {
        let mut named = Vec::new();
        let mut window = DEFAULT_WINDOW;
        let mut churn = None;
        let mut stack = None;
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if arg == "--churn" {
                let text = args.next().ok_or("--churn needs a number of seconds")?;
                churn = Some(parse_window(&text).map_err(|e| e.replace("--window", "--churn"))?);
                continue;
            }
            if arg == "--stack" {
                let text = args.next().ok_or("--stack needs system or userspace")?;
                let known = STACKS.iter().find(|s| **s == text);
                stack = Some(*known.ok_or_else(|| format!("--stack: {text:?} is not system or userspace"))?);
                continue;
            }
            let window_text = match arg.strip_prefix("--window") {
                Some("") => Some(args.next().ok_or("--window needs a number of seconds")?),
                Some(rest) if rest.starts_with('=') => Some(rest[1..].to_string()),
                _ => None,
            };
            match (window_text, arg.as_str()) {
                (Some(text), _) => window = parse_window(&text)?,
                (None, "--bench") => {}
                (None, section) if ALL_SECTIONS.contains(&section) => named.push(arg),
                (None, _) => {
                    return Err(format!(
                        "unknown argument {arg:?}; sections: {}; options: --window SECONDS, --churn SECONDS, \
                         --stack system|userspace",
                        ALL_SECTIONS.join(" ")
                    ))
                }
            }
        }
        let sections = if named.is_empty() {
            default.to_vec()
        } else {
            own.iter().copied().filter(|s| named.iter().any(|n| n == s)).collect()
        };
        Ok(Args { sections, named: !named.is_empty(), window, churn, stack })
    }

    /// Whether `section` was selected.
    pub fn wants(&self, section: &str) -> bool {
        self.sections.contains(&section)
    }

    /// The `--window` option as it would be typed, empty when it is the default.
    pub fn window_flag(&self) -> String {
        if self.window == DEFAULT_WINDOW {
            String::new()
        } else {
            format!(" --window {}", self.window.as_secs())
        }
    }
}

fn parse_window(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!("--window: {text:?} is not a whole number of seconds above 0")),
    }
}

/// Whether cargo started this binary as a benchmark (`cargo bench` passes `--bench`;
/// `cargo test --all-targets` runs it without, and then it only says so).
pub fn started_by_cargo_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The start both benchmark binaries share. Started as a child (`--child MODE ARGS…`), runs
/// `run_child` for `child_mode` and exits; outside `cargo bench`, or with none of its own
/// sections named, says so and returns `None`; a bad command line exits with status 2. Else
/// returns the parsed arguments and prints the header line for `bench`.
pub fn start(
    bench: &str,
    child_mode: &str,
    run_child: fn(&[String]) -> Result<(), String>,
    own: &[&'static str],
    default: &[&'static str],
) -> Option<Args> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(super::child::CHILD_FLAG) {
        let outcome = match argv.get(2).map(String::as_str) {
            Some(mode) if mode == child_mode => run_child(&argv[3..]),
            other => Err(format!("unknown child mode {other:?}")),
        };
        if let Err(e) = outcome {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        return None;
    }
    if !started_by_cargo_bench() {
        println!(
            "benchmark not run: use `cargo bench --bench {bench}` (built and started by cargo test only)"
        );
        return None;
    }
    let args = match Args::parse(own, default) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if args.sections.is_empty() {
        println!("{bench} benchmark: no section of its own named (its sections: {})", own.join(" "));
        return None;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "=== {bench} benchmark: loopback; relays in child processes; {} CPUs; load average {} ===",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Some(args)
}
