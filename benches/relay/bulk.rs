//! `bulk`: throughput of 4 parallel and single streams, upload and download, through each setup,
//! and the relays' Gbit/s per CPU core (bytes moved over the relay process's CPU time).

use std::time::Instant;

use tokio::task::block_in_place;

use crate::client::{transfer, Direction};
use crate::common::median;
use crate::common::procfs::cpu_ns;
use crate::common::table::{none, number, ratio, Table};
use crate::server::Server;
use crate::{bounded, Relays, Setup};

const MIB: u64 = 1024 * 1024;
/// Throughput trials per figure (the median is reported); the setups alternate within a trial.
const TRIALS: usize = 5;
const SETUPS: [Setup; 3] = [Setup::Direct, Setup::Baseline, Setup::Netswitch];
/// (direction, parallel streams, bytes per stream): 256 MiB per trial each.
const SHAPES: [(Direction, usize, u64); 4] = [
    (Direction::Upload, 4, 64 * MIB),
    (Direction::Download, 4, 64 * MIB),
    (Direction::Download, 1, 256 * MIB),
    (Direction::Upload, 1, 256 * MIB),
];
const TRIAL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// What one shape measured: MiB/s per trial and, per relay, bytes moved and CPU spent.
#[derive(Default)]
struct Samples {
    mib_s: [Vec<f64>; 3],
    cpu_ns: [u64; 3],
    bytes: u64,
}

/// Runs the section and prints its table.
pub async fn run(server: &Server) -> Result<(), String> {
    let relays = block_in_place(|| Relays::start(server))?;
    let mut table = Table::new(
        format!(
            "Bulk throughput, MiB/s, median of {TRIALS} trials, setups alternating; relay CPU from \
             /proc/PID/task/*/schedstat"
        ),
        &["direct", "baseline", "netswitch", "ns/direct", "base/direct", "ns/base"],
    );
    let mut efficiency = Vec::new();
    for (direction, streams, per_stream) in SHAPES {
        let samples = measure(server, &relays, direction, streams, per_stream).await?;
        let [direct, base, ours] = samples.mib_s.map(median);
        let label =
            format!("{} {streams} x {} MiB", format!("{direction:?}").to_lowercase(), per_stream / MIB);
        table.row(
            &label,
            vec![
                number(direct, 0),
                number(base, 0),
                number(ours, 0),
                ratio(ours, direct),
                ratio(base, direct),
                ratio(ours, base),
            ],
        );
        let per_core = |i: usize| samples.bytes as f64 * 8.0 / samples.cpu_ns[i] as f64;
        efficiency.push((label, per_core(1), per_core(2)));
    }
    for (label, base, ours) in efficiency {
        table.row(
            format!("Gbit/s per relay CPU core, {label}"),
            vec![none(), number(base, 2), number(ours, 2), none(), none(), ratio(ours, base)],
        );
    }
    table.print("cargo bench --bench relay -- bulk");
    relays.print_logs();
    block_in_place(|| relays.stop())
}

async fn measure(
    server: &Server,
    relays: &Relays,
    direction: Direction,
    streams: usize,
    per_stream: u64,
) -> Result<Samples, String> {
    let mut samples = Samples::default();
    for _ in 0..TRIALS {
        for (i, setup) in SETUPS.into_iter().enumerate() {
            server.settle().await?;
            let route = relays.route(setup)?;
            let pid = relays.pid(setup);
            let cpu_before = pid.map(cpu_ns).transpose()?;
            let started = Instant::now();
            let tasks: Vec<_> =
                (0..streams).map(|_| tokio::spawn(transfer(route, direction, per_stream))).collect();
            bounded(TRIAL_TIMEOUT, "throughput trial", async {
                for task in tasks {
                    task.await.map_err(|e| format!("transfer task failed: {e}"))??;
                }
                Ok(())
            })
            .await?;
            let seconds = started.elapsed().as_secs_f64();
            if let (Some(pid), Some(before)) = (pid, cpu_before) {
                samples.cpu_ns[i] += cpu_ns(pid)?.saturating_sub(before);
            }
            samples.mib_s[i].push((streams as u64 * per_stream) as f64 / MIB as f64 / seconds);
        }
        samples.bytes += streams as u64 * per_stream;
    }
    Ok(samples)
}
