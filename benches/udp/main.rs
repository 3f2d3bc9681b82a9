//! UDP relay benchmark on loopback: datagrams echoed directly, through a baseline relay (a plain
//! recv/send loop per direction, no framing) and through the real `netswitch socks` binary's
//! SOCKS5 UDP ASSOCIATE, side by side in one run, as ratios. Each relay runs in a child process
//! so its CPU time is its own; the client and the echo server are threads of this process.
//!
//! Run: `cargo bench --bench udp [-- SECTION...]`. Sections: `udp` (echo rate with 32 in flight,
//! relay CPU per datagram, loss at 60,000 datagrams/s offered, for 64 and 1,200-byte payloads),
//! run by default; `syscalls` (system calls per relayed datagram, counted by perf trace or strace) only when named.
//! TCP is the `relay` benchmark. Figures only; nothing is asserted.

#[path = "../common/mod.rs"]
#[allow(dead_code)] // shared with the relay benchmark, which uses other parts
mod common;

mod baseline;
mod client;
mod echo;
mod loss;
mod mmsg;
mod rate;
mod syscalls;

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use client::Peer;
use common::child::RelayProcess;
use common::median;
use common::procfs::cpu_ns;
use common::table::{none, number, ratio, Table};

const OWN: [&str; 2] = ["udp", "syscalls"];
const DEFAULT: [&str; 1] = ["udp"];
/// Payload sizes (the SOCKS5 header adds 10 bytes between the client and netswitch).
const SIZES: [usize; 2] = [64, 1200];
/// Echoed datagrams per rate trial, and trials (the median is reported; setups alternate).
const RATE_COUNT: u32 = 40_000;
const RATE_TRIALS: usize = 3;
/// The offered rate and duration of a loss run, and runs per figure (losses are summed).
const LOSS_RATE: f64 = 60_000.0;
const LOSS_TIME: Duration = Duration::from_secs(2);
const LOSS_TRIALS: usize = 2;

/// The IPv4 address of a loopback socket.
fn v4(address: SocketAddr) -> Result<SocketAddrV4, String> {
    match address {
        SocketAddr::V4(a) => Ok(a),
        SocketAddr::V6(a) => Err(format!("expected an IPv4 address, got {a}")),
    }
}

/// CPU nanoseconds of a relay process, or 0 for the direct path.
fn cpu(pid: Option<u32>) -> Result<u64, String> {
    pid.map_or(Ok(0), cpu_ns)
}

fn udp_section() -> Result<(), String> {
    let echo = echo::start()?;
    let baseline = RelayProcess::baseline("udp-baseline", &[echo.to_string()], None)?;
    let netswitch = RelayProcess::netswitch(None)?;
    let peers = [
        Peer::plain(echo)?,
        Peer::plain(baseline.address("udp")?)?,
        Peer::socks(netswitch.address("socks")?, v4(echo)?)?,
    ];
    let pids = [None, Some(baseline.pid()), Some(netswitch.pid())];
    for peer in &peers {
        rate::echo_rate(peer, 64, 2_000)?; // warm-up
    }

    let mut table = Table::new(
        format!(
            "UDP echo through each setup: rate with {} in flight (median of {RATE_TRIALS} x {}), loss at \
             {} datagrams/s offered for {} s ({LOSS_TRIALS} runs summed); relay CPU from schedstat",
            rate::WINDOW,
            number(f64::from(RATE_COUNT), 0),
            number(LOSS_RATE, 0),
            LOSS_TIME.as_secs()
        ),
        &["direct", "baseline", "netswitch", "ns/direct", "base/direct", "ns/base"],
    );
    let mut cpu_rows = Vec::new();
    let mut notes = Vec::new();
    for size in SIZES {
        let mut rates: [Vec<f64>; 3] = Default::default();
        let (mut cpu_spent, mut lost) = ([0u64; 3], [0u32; 3]);
        for _ in 0..RATE_TRIALS {
            for (i, peer) in peers.iter().enumerate() {
                let before = cpu(pids[i])?;
                let (per_second, missing) = rate::echo_rate(peer, size, RATE_COUNT)?;
                cpu_spent[i] += cpu(pids[i])?.saturating_sub(before);
                rates[i].push(per_second);
                lost[i] += missing;
            }
        }
        let [direct, base, ours] = rates.map(median);
        let label = format!("datagrams/s, {} B", number(size as f64, 0));
        let cells = vec![number(direct, 0), number(base, 0), number(ours, 0)];
        table.row(label, [cells, vec![ratio(ours, direct), ratio(base, direct), ratio(ours, base)]].concat());
        if lost.iter().any(|&l| l > 0) {
            notes.push(format!(
                "  note: {size} B rate runs lost {lost:?} datagrams (direct, baseline, netswitch)"
            ));
        }
        let per_datagram = cpu_spent.map(|ns| ns as f64 / 1e3 / f64::from(RATE_COUNT * RATE_TRIALS as u32));
        cpu_rows
            .push((format!("relay CPU µs per echoed datagram, {} B", number(size as f64, 0)), per_datagram));
    }
    for (label, v) in cpu_rows {
        table.row(label, vec![none(), number(v[1], 2), number(v[2], 2), none(), none(), ratio(v[2], v[1])]);
    }
    for size in SIZES {
        let (mut sent, mut received, mut errors, mut cpu_spent) =
            ([0u64; 3], [0u64; 3], [0u64; 3], [0u64; 3]);
        for _ in 0..LOSS_TRIALS {
            for (i, peer) in peers.iter().enumerate() {
                let before = cpu(pids[i])?;
                let run = loss::paced(peer, size, LOSS_RATE, LOSS_TIME)?;
                cpu_spent[i] += cpu(pids[i])?.saturating_sub(before);
                sent[i] += run.sent;
                received[i] += run.received;
                errors[i] += run.send_errors;
            }
        }
        let percent = |i: usize| 100.0 * sent[i].saturating_sub(received[i]) as f64 / sent[i] as f64;
        let loss = [percent(0), percent(1), percent(2)];
        let label = format!("loss % at {} /s offered, {} B", number(LOSS_RATE, 0), number(size as f64, 0));
        let cells = loss.iter().map(|&l| number(l, 2)).collect::<Vec<_>>();
        table.row(label, [cells, vec![none(), none(), ratio(loss[2], loss[1])]].concat());
        let busy = cpu_spent.map(|ns| 100.0 * ns as f64 / (LOSS_TIME.as_nanos() as f64 * LOSS_TRIALS as f64));
        let label = format!("relay CPU % at {} /s, {} B", number(LOSS_RATE, 0), number(size as f64, 0));
        table.row(
            label,
            vec![none(), number(busy[1], 0), number(busy[2], 0), none(), none(), ratio(busy[2], busy[1])],
        );
        if loss[0] > 1.0 {
            notes.push(format!(
                "  note: {size} B: the direct path itself lost {:.1} %: this machine could not carry the \
                 offered rate at the time (load); the relays' loss is bounded below by it",
                loss[0]
            ));
        }
        if errors.iter().any(|&e| e > 0) {
            notes.push(format!(
                "  note: {size} B paced runs: send errors {errors:?} (direct, baseline, netswitch)"
            ));
        }
    }
    table.print("cargo bench --bench udp -- udp");
    println!(
        "  baseline: this benchmark's executable in udp-baseline mode (tokio, recv/send per datagram, no \
         framing); netswitch: `netswitch socks`, SOCKS5 UDP ASSOCIATE (10-byte header client-side)"
    );
    for note in notes {
        println!("{note}");
    }
    let (count, first) = netswitch.log_lines();
    if count > 0 {
        println!("  netswitch wrote {count} log lines after startup, first: {}", first.join(" | "));
    }
    drop(peers);
    baseline.stop()?;
    netswitch.stop()
}

fn main() {
    let Some(args) = common::args::start("udp", "udp-baseline", baseline::run, &OWN, &DEFAULT) else {
        return;
    };
    for section in &args.sections {
        let outcome = match *section {
            "udp" => udp_section(),
            "syscalls" => syscalls::run(),
            other => Err(format!("no section {other}")),
        };
        if let Err(e) = outcome {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
