//! The relays under test, each in a child process: the real `netswitch socks` binary, or this
//! benchmark's own executable started in a baseline mode (`--child MODE ARGS`). Optionally under
//! a tracer that counts system calls. A relay is stopped (SIGTERM, then SIGKILL) when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::trace::Tracing;

/// How long a relay has to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a relay has to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// First argument of this executable's child modes.
pub const CHILD_FLAG: &str = "--child";

/// Log lines a relay wrote after it started listening (netswitch's stderr).
#[derive(Debug, Default)]
struct Log {
    count: usize,
    first: Vec<String>,
}

/// One relay process.
pub struct RelayProcess {
    /// Short name used in tables ("baseline", "netswitch").
    pub name: &'static str,
    started: Child,
    pid: u32,
    listen: Vec<(String, SocketAddr)>,
    log: Arc<Mutex<Log>>,
    stopped: bool,
}

/// The `netswitch` binary cargo built for this benchmark, if the `cli` feature was on.
pub fn netswitch_binary() -> Result<PathBuf, String> {
    let path = option_env!("CARGO_BIN_EXE_netswitch")
        .ok_or("the netswitch binary was not built (feature \"cli\" off)")?;
    let path = PathBuf::from(path);
    if !path.exists() {
        return Err(format!("{} does not exist", path.display()));
    }
    Ok(path)
}

/// The command, wrapped in the tracer when `tracing` is given.
fn command(program: &Path, args: &[String], tracing: Option<&Tracing>) -> Command {
    match tracing {
        Some(tracing) => {
            let (tool, prefix) = tracing.tracer.prefix(&tracing.output);
            let mut command = Command::new(tool);
            command.args(prefix).arg(program).args(args);
            command
        }
        None => {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }
}

impl RelayProcess {
    /// Starts `netswitch socks --listen 127.0.0.1:0` and waits for its "listening on ADDR" log
    /// line; the address is then `address("socks")`.
    pub fn netswitch(tracing: Option<&Tracing>) -> Result<RelayProcess, String> {
        let binary = netswitch_binary()?;
        let args = ["socks", "--listen", "127.0.0.1:0"].map(String::from);
        let mut started = command(&binary, &args, tracing)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start {} socks: {e}", binary.display()))?;
        let stderr = started.stderr.take().ok_or("netswitch stderr not captured")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let (tx, rx) = mpsc::channel();
        let keep = log.clone();
        std::thread::spawn(move || {
            let mut startup = Vec::new();
            let mut lines = BufReader::new(stderr).lines();
            for line in lines.by_ref() {
                let Ok(line) = line else { break };
                if let Some(address) = line.split("listening on ").nth(1) {
                    let address = address.split_whitespace().next().unwrap_or("").parse();
                    let listening = address.is_ok();
                    let _ = tx.send(address.map_err(|_| line.clone()));
                    if listening {
                        break;
                    }
                }
                startup.push(line);
                if startup.len() > 20 {
                    startup.remove(0);
                }
            }
            let _ = tx.send(Err(startup.join(" | ")));
            for line in lines {
                let Ok(line) = line else { break };
                if let Ok(mut log) = keep.lock() {
                    log.count += 1;
                    if log.first.len() < 5 {
                        log.first.push(line);
                    }
                }
            }
        });
        let mut relay = RelayProcess {
            name: "netswitch",
            pid: started.id(),
            started,
            listen: Vec::new(),
            log,
            stopped: false,
        };
        let address = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(address)) => address,
            Ok(Err(lines)) => return Err(format!("netswitch printed no 'listening on ADDR' line: {lines}")),
            Err(_) => {
                return Err(format!("netswitch printed no 'listening on ADDR' line in {START_TIMEOUT:?}"))
            }
        };
        relay.listen.push(("socks".into(), address));
        relay.find_tracee(tracing.is_some())?;
        Ok(relay)
    }

    /// Starts this executable as `--child MODE ARGS...`; the child prints `LISTEN NAME ADDR` lines
    /// then `READY` on stdout.
    pub fn baseline(mode: &str, args: &[String], tracing: Option<&Tracing>) -> Result<RelayProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this benchmark's binary: {e}"))?;
        let mut all = vec![CHILD_FLAG.to_string(), mode.to_string()];
        all.extend_from_slice(args);
        let mut started = command(&exe, &all, tracing)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start {} {CHILD_FLAG} {mode}: {e}", exe.display()))?;
        let stdout = started.stdout.take().ok_or("child stdout not captured")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let log = Arc::new(Mutex::new(Log::default()));
        let mut relay = RelayProcess {
            name: "baseline",
            pid: started.id(),
            started,
            listen: Vec::new(),
            log,
            stopped: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|_| format!("baseline {mode} did not print READY"))?;
            if line == "READY" {
                break;
            }
            let mut words = line.split_whitespace();
            if let (Some("LISTEN"), Some(name), Some(address)) = (words.next(), words.next(), words.next()) {
                let address = address.parse().map_err(|_| format!("baseline {mode}: bad line {line:?}"))?;
                relay.listen.push((name.to_string(), address));
            }
        }
        relay.find_tracee(tracing.is_some())?;
        Ok(relay)
    }

    /// Under a tracer, the relay is the tracer's only child: measure and signal that one.
    fn find_tracee(&mut self, traced: bool) -> Result<(), String> {
        if !traced {
            return Ok(());
        }
        let path = format!("/proc/{0}/task/{0}/children", self.pid);
        let children = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
        self.pid = children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .ok_or_else(|| format!("tracer {} has no child in {path}", self.pid))?;
        Ok(())
    }

    /// The relay's process id (under a tracer: the traced relay, not the tracer).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The address the relay listens on for `name` ("socks", "forward", "udp").
    pub fn address(&self, name: &str) -> Result<SocketAddr, String> {
        self.listen
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("{} has no {name} listener", self.name))
    }

    /// How many log lines the relay wrote after it started listening, and the first few.
    pub fn log_lines(&self) -> (usize, Vec<String>) {
        self.log.lock().map(|log| (log.count, log.first.clone())).unwrap_or_default()
    }

    /// SIGTERM to the relay, then waits for the started process (a tracer writes its summary when
    /// the relay has exited); SIGKILL after [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<(), String> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<(), String> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // SAFETY: kill(2) with a pid this process started (or the tracer's child of it).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.started.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    // SAFETY: as above; the relay first (under a tracer it is not `started`).
                    unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                    let _ = self.started.kill();
                    let _ = self.started.wait();
                    return Err(format!("{} did not exit within {STOP_TIMEOUT:?} of SIGTERM", self.name));
                }
            }
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: {e}");
        }
    }
}
