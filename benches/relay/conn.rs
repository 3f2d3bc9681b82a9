//! `conn`: connection rate and setup latency. One connection is: connect, for SOCKS the greeting
//! and the CONNECT (each waiting for its reply), then a 1-byte echo through to the server, then
//! close. The rate runs 16 such clients in parallel; the latency runs them one at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::block_in_place;

use crate::client::{echo, open, Route};
use crate::common::procfs::cpu_ns;
use crate::common::table::{none, number, ratio, Table};
use crate::common::{median, percentile};
use crate::server::Server;
use crate::{bounded, Relays, Setup};

const SETUPS: [Setup; 4] = [Setup::Direct, Setup::Baseline, Setup::BaselineSocks, Setup::Netswitch];
/// Clients in parallel for the rate.
const PARALLEL: usize = 16;
/// Connections per rate round per setup; rounds alternate the setups, round 0 is a warm-up.
const RATE_CONNECTIONS: usize = 2000;
const RATE_ROUNDS: usize = 3;
/// Sequential connections per latency round per setup; round 0 is a warm-up.
const LATENCY_CONNECTIONS: usize = 200;
const LATENCY_ROUNDS: usize = 10;
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the section and prints its table.
pub async fn run(server: &Server) -> Result<(), String> {
    let relays = block_in_place(|| Relays::start(server))?;
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut cpu_per_connection: [Vec<f64>; 4] = Default::default();
    for round in 0..=RATE_ROUNDS {
        for (i, setup) in SETUPS.into_iter().enumerate() {
            server.settle().await?;
            let count = if round == 0 { RATE_CONNECTIONS / 4 } else { RATE_CONNECTIONS };
            let pid = relays.pid(setup);
            let cpu_before = pid.map(cpu_ns).transpose()?;
            let per_second = rate(relays.route(setup)?, count).await?;
            if round > 0 {
                rates[i].push(per_second);
                if let (Some(pid), Some(before)) = (pid, cpu_before) {
                    let spent = cpu_ns(pid)?.saturating_sub(before);
                    cpu_per_connection[i].push(spent as f64 / 1e3 / count as f64);
                }
            }
        }
    }
    let mut replies: [Vec<f64>; 4] = Default::default();
    let mut echoes: [Vec<f64>; 4] = Default::default();
    for round in 0..=LATENCY_ROUNDS {
        for (i, setup) in SETUPS.into_iter().enumerate() {
            server.settle().await?;
            let (reply, first_echo) = latencies(relays.route(setup)?).await?;
            if round > 0 {
                replies[i].extend(reply);
                echoes[i].extend(first_echo);
            }
        }
    }

    let mut table = Table::new(
        format!(
            "Connections: {PARALLEL} clients in parallel, median of {RATE_ROUNDS} rounds of {RATE_CONNECTIONS}; \
             latency: {} sequential; setups alternating",
            LATENCY_CONNECTIONS * LATENCY_ROUNDS
        ),
        &["direct", "baseline", "base+socks", "netswitch", "ns/base", "ns/base+socks"],
    );
    let row = |table: &mut Table, label: &str, v: [f64; 4], decimals: usize| {
        let cells = v.iter().map(|&x| if x.is_nan() { none() } else { number(x, decimals) });
        let mut cells: Vec<String> = cells.collect();
        cells.push(ratio(v[3], v[1]));
        cells.push(ratio(v[3], v[2]));
        table.row(label, cells);
    };
    row(&mut table, "connections/s", rates.map(median), 0);
    let cpu = cpu_per_connection.map(median);
    row(&mut table, "relay CPU µs per connection", cpu, 1);
    for p in [50, 99] {
        let v = replies.each_mut().map(|r| percentile(r, p));
        row(&mut table, &format!("setup p{p} µs, connect → CONNECT reply"), v, 0);
    }
    for p in [50, 99] {
        let v = echoes.each_mut().map(|r| percentile(r, p));
        row(&mut table, &format!("setup p{p} µs, connect → first echoed byte"), v, 0);
    }
    table.print("cargo bench --bench relay -- conn");
    println!(
        "  baseline: copy_bidirectional forward, no handshake; base+socks: the same behind a minimal \
         SOCKS5 (no auth, IPv4, reply 0.0.0.0:0); netswitch: `netswitch socks`, SOCKS5 CONNECT"
    );
    relays.print_logs();
    block_in_place(|| relays.stop())
}

/// Connections per second: `count` connections by [`PARALLEL`] clients.
async fn rate(route: Route, count: usize) -> Result<f64, String> {
    let tickets = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..PARALLEL)
        .map(|_| {
            let tickets = tickets.clone();
            tokio::spawn(async move {
                while tickets.fetch_add(1, Ordering::Relaxed) < count {
                    let mut opened = open(route).await?;
                    echo(&mut opened.stream, b"E").await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    bounded(ROUND_TIMEOUT, "connection rate round", async {
        for client in clients {
            client.await.map_err(|e| format!("client task failed: {e}"))??;
        }
        Ok(())
    })
    .await?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One round of sequential connections: (µs to the CONNECT reply, for SOCKS only; µs to the first
/// echoed byte).
async fn latencies(route: Route) -> Result<(Vec<f64>, Vec<f64>), String> {
    let (mut replies, mut echoes) = (Vec::new(), Vec::new());
    for _ in 0..LATENCY_CONNECTIONS {
        let mut opened = open(route).await?;
        echo(&mut opened.stream, b"E").await?;
        echoes.push(opened.started.elapsed().as_secs_f64() * 1e6);
        if let Some(reply) = opened.reply {
            replies.push(reply.as_secs_f64() * 1e6);
        }
    }
    Ok((replies, echoes))
}
