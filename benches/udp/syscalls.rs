//! `syscalls` (only when named): system calls per relayed datagram of each relay, counted by
//! `perf trace -s` (or `strace -f -c` where perf cannot trace) while 20,000 64-byte datagrams are
//! echoed through it (each crosses the relay twice: out and back, so 40,000 relayed datagrams).
//! The same relay started and stopped with no traffic (for netswitch: with the association made)
//! is counted too and subtracted.

use std::time::Duration;

use crate::client::Peer;
use crate::common::child::RelayProcess;
use crate::common::trace::{
    output_path, print_per_unit, read_summary, subtract, SyscallCount, Tracer, Tracing,
};
use crate::{echo, rate, v4};

const DATAGRAMS: u32 = 20_000;

/// Runs the section and prints, per relay, its system calls per relayed datagram.
pub fn run() -> Result<(), String> {
    let tracer = match Tracer::detect() {
        Ok(tracer) => tracer,
        Err(reason) => {
            println!("\nsyscalls: skipped, neither perf trace nor strace can run: {reason}");
            return Ok(());
        }
    };
    let echo = echo::start()?;
    println!(
        "\nSystem calls per relayed datagram (one direction), {}, {DATAGRAMS} 64-byte datagrams echoed \
         with {} in flight, startup and shutdown subtracted",
        tracer.name(),
        rate::WINDOW
    );
    for name in ["baseline", "netswitch"] {
        let idle = count(tracer, name, echo, 0)?;
        let busy = count(tracer, name, echo, DATAGRAMS)?;
        print_per_unit(name, &subtract(busy, &idle), 2 * u64::from(DATAGRAMS), "datagram");
    }
    println!("  command: cargo bench --bench udp -- syscalls");
    Ok(())
}

/// Starts the relay under the tracer, echoes `datagrams` through it, stops it, reads the summary.
fn count(
    tracer: Tracer,
    name: &str,
    echo: std::net::SocketAddr,
    datagrams: u32,
) -> Result<Vec<SyscallCount>, String> {
    let tracing = Tracing { tracer, output: output_path(&format!("udp-{name}-{datagrams}")) };
    let relay = match name {
        "netswitch" => RelayProcess::netswitch(Some(&tracing))?,
        _ => RelayProcess::baseline("udp-baseline", &[echo.to_string()], Some(&tracing))?,
    };
    let peer = match name {
        "netswitch" => Peer::socks(relay.address("socks")?, v4(echo)?)?,
        _ => Peer::plain(relay.address("udp")?)?,
    };
    if datagrams > 0 {
        let (_, lost) = rate::echo_rate(&peer, 64, datagrams)?;
        if lost > 0 {
            println!("  note: {name}: {lost} of {datagrams} datagrams lost while traced");
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(peer);
    relay.stop()?;
    read_summary(&tracing)
}
