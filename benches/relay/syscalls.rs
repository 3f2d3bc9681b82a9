//! `syscalls` (only when named): system calls per connection of each relay, counted by
//! `perf trace -s` (or `strace -f -c` where perf cannot trace) over 1,000 sequential connections
//! (connect, handshake, 1-byte echo, close). The same relay started and stopped with no
//! connection is counted too and subtracted, so startup and shutdown do not count.

use std::time::Duration;

use tokio::task::block_in_place;

use crate::client::{echo, open, Route};
use crate::common::child::RelayProcess;
use crate::common::trace::{
    output_path, print_per_unit, read_summary, subtract, SyscallCount, Tracer, Tracing,
};
use crate::server::Server;
use crate::{start_baseline, v4, Setup};

const CONNECTIONS: usize = 1_000;

/// Runs the section and prints, per relay, its system calls per connection.
pub async fn run(server: &Server) -> Result<(), String> {
    let tracer = match Tracer::detect() {
        Ok(tracer) => tracer,
        Err(reason) => {
            println!("\nsyscalls: skipped, neither perf trace nor strace can run: {reason}");
            return Ok(());
        }
    };
    println!(
        "\nSystem calls per connection, {}, {CONNECTIONS} sequential connections (connect, handshake, \
         1-byte echo, close), startup and shutdown subtracted",
        tracer.name()
    );
    for setup in [Setup::Baseline, Setup::BaselineSocks, Setup::Netswitch] {
        let idle = count(server, tracer, setup, 0).await?;
        let busy = count(server, tracer, setup, CONNECTIONS).await?;
        print_per_unit(setup.name(), &subtract(busy, &idle), CONNECTIONS as u64, "connection");
    }
    println!("  command: cargo bench --bench relay -- syscalls");
    Ok(())
}

/// Starts `setup`'s relay under the tracer, makes `connections` connections, stops it, reads the
/// summary.
async fn count(
    server: &Server,
    tracer: Tracer,
    setup: Setup,
    connections: usize,
) -> Result<Vec<SyscallCount>, String> {
    let tracing = Tracing { tracer, output: output_path(&format!("{}-{connections}", setup.name())) };
    let relay = block_in_place(|| match setup {
        Setup::Netswitch => RelayProcess::netswitch(Some(&tracing)),
        _ => start_baseline(server, Some(&tracing)),
    })?;
    let route = match setup {
        Setup::Baseline => Route::Forward(relay.address("forward")?),
        _ => Route::Socks { proxy: relay.address("socks")?, target: v4(server.addresses[setup as usize])? },
    };
    for _ in 0..connections {
        let mut opened = open(route).await?;
        echo(&mut opened.stream, b"E").await?;
    }
    server.settle().await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    block_in_place(|| relay.stop())?;
    read_summary(&tracing)
}
