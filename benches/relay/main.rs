//! TCP relay benchmark on loopback: the direct path (no relay), a baseline relay
//! (`tokio::io::copy_bidirectional`, also behind a minimal hand-written SOCKS5) and the real
//! `netswitch socks` binary, side by side in one run, as ratios. Each relay runs in a child
//! process so its CPU time, context switches and RSS are its own; the clients and the server run
//! in this process (tokio, 2 workers).
//!
//! Run: `cargo bench --bench relay [-- SECTION... [--window SECONDS]]`. Sections: `bulk`
//! (throughput, Gbit/s per relay CPU core), `conn` (connections/s, setup latency), `idle` (RSS of
//! a fresh process and per idle connection at 1,000 and 9,000, CPU and context switches of an
//! idle process over the window), all three by default; `syscalls` (system calls per connection,
//! counted by perf trace or strace) only when named. UDP is the `udp` benchmark. Figures only; nothing is asserted.

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the udp benchmark, which uses other parts
mod common;

mod baseline;
mod bulk;
mod client;
mod conn;
mod idle;
mod server;
mod syscalls;

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use client::Route;
use common::args::Args;
use common::child::RelayProcess;
use common::trace::Tracing;
use server::Server;

/// This binary's sections in run order, and those run when none is named.
const OWN: [&str; 4] = ["bulk", "conn", "idle", "syscalls"];
const DEFAULT: [&str; 3] = ["bulk", "conn", "idle"];

/// One way from the client to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// No relay.
    Direct,
    /// The baseline relay's plain forward (copy_bidirectional, no handshake).
    Baseline,
    /// The baseline relay behind its minimal SOCKS5 handshake.
    BaselineSocks,
    /// `netswitch socks`, SOCKS5 CONNECT.
    Netswitch,
}

impl Setup {
    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::Baseline => "baseline",
            Setup::BaselineSocks => "base+socks",
            Setup::Netswitch => "netswitch",
        }
    }

    /// Which of the server's listeners the setup ends at.
    fn server_index(self) -> usize {
        self as usize
    }
}

/// The IPv4 address of a loopback listener (the server binds 127.0.0.1).
pub fn v4(address: SocketAddr) -> Result<SocketAddrV4, String> {
    match address {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(format!("expected an IPv4 address, got {a}")),
    }
}

/// Both relays, started for one section.
pub struct Relays {
    pub baseline: RelayProcess,
    pub netswitch: RelayProcess,
    targets: Vec<SocketAddr>,
}

impl Relays {
    /// Starts the baseline (forwarding to the server's `Baseline` listener) and netswitch.
    /// Blocks until both listen; call it with `block_in_place`.
    pub fn start(server: &Server) -> Result<Relays, String> {
        Ok(Relays {
            baseline: start_baseline(server, None)?,
            netswitch: RelayProcess::netswitch(None)?,
            targets: server.addresses.clone(),
        })
    }

    /// How a client of `setup` reaches the server.
    pub fn route(&self, setup: Setup) -> Result<Route, String> {
        let target = self.targets[setup.server_index()];
        Ok(match setup {
            Setup::Direct => Route::Direct(target),
            Setup::Baseline => Route::Forward(self.baseline.address("forward")?),
            Setup::BaselineSocks => {
                Route::Socks { proxy: self.baseline.address("socks")?, target: v4(target)? }
            }
            Setup::Netswitch => Route::Socks { proxy: self.netswitch.address("socks")?, target: v4(target)? },
        })
    }

    /// The relay process of `setup` (none for direct).
    pub fn pid(&self, setup: Setup) -> Option<u32> {
        match setup {
            Setup::Direct => None,
            Setup::Baseline | Setup::BaselineSocks => Some(self.baseline.pid()),
            Setup::Netswitch => Some(self.netswitch.pid()),
        }
    }

    /// Prints netswitch's log lines after startup (warnings, errors), if there were any.
    pub fn print_logs(&self) {
        if let Some(note) = log_note(&self.netswitch) {
            println!("{note}");
        }
    }

    /// Stops both (blocking; call it with `block_in_place`).
    pub fn stop(self) -> Result<(), String> {
        self.baseline.stop()?;
        self.netswitch.stop()
    }
}

/// Starts the baseline relay forwarding to the server's `Baseline` listener.
pub fn start_baseline(server: &Server, tracing: Option<&Tracing>) -> Result<RelayProcess, String> {
    let target = server.addresses[Setup::Baseline.server_index()];
    RelayProcess::baseline("tcp-baseline", &[target.to_string()], tracing)
}

/// A note on a relay's log lines after startup, if there were any.
pub fn log_note(relay: &RelayProcess) -> Option<String> {
    let (count, first) = relay.log_lines();
    (count > 0).then(|| {
        format!("  {} wrote {count} log lines after startup, first: {}", relay.name, first.join(" | "))
    })
}

/// Polls `done` every 5 ms until it holds or `limit` has passed.
pub async fn wait_async(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Bounds `work` by `limit`.
pub async fn bounded<T>(
    limit: Duration,
    what: &str,
    work: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, work).await.map_err(|_| format!("{what}: timed out after {limit:?}"))?
}

async fn run(args: Args) -> Result<(), String> {
    let server = Server::start(4).await?;
    for section in &args.sections {
        match *section {
            "bulk" => bulk::run(&server).await?,
            "conn" => conn::run(&server).await?,
            "idle" => idle::run(&server, &args).await?,
            "syscalls" => syscalls::run(&server).await?,
            other => return Err(format!("no section {other}")),
        }
    }
    Ok(())
}

fn main() {
    let Some(args) = common::args::start("relay", "tcp-baseline", baseline::run, &OWN, &DEFAULT) else {
        return;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot build the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(async { tokio::spawn(run(args)).await }) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: benchmark task failed: {e}");
            std::process::exit(1);
        }
    }
}
