//! `idle`: what an idle relay costs. RSS of a fresh process, and the anonymous part of it (what
//! is left without the binary's and libraries' code pages, which are clean and shared); RSS per idle relayed connection at
//! 1,000 and 9,000 (the relay's VmRSS before and after opening them, after a warm-up of 8
//! connections); CPU time and context switches (all threads, /proc/PID/task/*) of the idle
//! process over the window, with 0 and with 1,000 idle connections. Both relays are watched
//! during the same window.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::block_in_place;

use crate::client::{echo, open, Route};
use crate::common::args::Args;
use crate::common::procfs::{anon_rss_bytes, open_fds, raise_open_files_limit, rss_bytes, Spent, Usage};
use crate::common::table::{number, ratio, Table};
use crate::server::Server;
use crate::{bounded, log_note, wait_async, Relays, Setup};

const SMALL: usize = 1_000;
const LARGE: usize = 9_000;
/// Clients opening idle connections in parallel.
const OPENERS: usize = 32;
/// What each idle connection sends once (mode byte `E` first) and gets back.
const MESSAGE: &[u8] = b"Ehello, idle connection";
const RELAYS: [Setup; 2] = [Setup::Baseline, Setup::Netswitch];
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the section and prints its table.
pub async fn run(server: &Server, args: &Args) -> Result<(), String> {
    let window = args.window;
    let fds = raise_open_files_limit();
    let relays = block_in_place(|| Relays::start(server))?;
    let pids = RELAYS.map(|s| relays.pid(s).unwrap_or(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fresh = [rss_bytes(pids[0])?, rss_bytes(pids[1])?];
    let fresh_anon = [anon_rss_bytes(pids[0])?, anon_rss_bytes(pids[1])?];
    let idle_empty = watch(pids, window).await?;

    let mut per_connection = Vec::new();
    let mut fds_note = Vec::new();
    let mut notes = Vec::new();
    let mut held = Vec::new();
    let mut before = [0; 2];
    for setup in RELAYS {
        warm_up(server, relays.route(setup)?).await?;
    }
    for (i, setup) in RELAYS.into_iter().enumerate() {
        before[i] = rss_bytes(pids[i])?;
        fds_note.push(open_fds(pids[i])?);
        held.push(open_idle(relays.route(setup)?, SMALL).await?);
    }
    wait_async(OPEN_TIMEOUT, "every idle connection at the server", || server.live() == 2 * SMALL).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, pid) in pids.into_iter().enumerate() {
        per_connection.push((rss_bytes(pid)? as f64 - before[i] as f64) / SMALL as f64);
    }
    let idle_full = watch(pids, window).await?;
    drop(held);
    server.settle().await?;
    for (i, pid) in pids.into_iter().enumerate() {
        let start = fds_note[i];
        let settled =
            wait_async(Duration::from_secs(5), "", || open_fds(pid).is_ok_and(|n| n <= start)).await;
        if settled.is_err() {
            notes.push(format!(
                "  note: {} holds {} fds after closing, {start} before",
                RELAYS[i].name(),
                open_fds(pid)?
            ));
        }
    }

    notes.extend(log_note(&relays.netswitch));
    block_in_place(|| relays.stop())?;

    // Fresh processes, so memory kept from the 1,000 does not hide part of the 9,000.
    let mut large = [f64::NAN; 2];
    let large_note = match fds {
        Ok(limit) if limit >= 2 * LARGE as u64 + 300 => {
            let relays = block_in_place(|| Relays::start(server))?;
            let pids = RELAYS.map(|s| relays.pid(s).unwrap_or(0));
            for setup in RELAYS {
                warm_up(server, relays.route(setup)?).await?;
            }
            for (i, setup) in RELAYS.into_iter().enumerate() {
                let before = rss_bytes(pids[i])?;
                let held = open_idle(relays.route(setup)?, LARGE).await?;
                wait_async(OPEN_TIMEOUT, "every idle connection at the server", || server.live() == LARGE)
                    .await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                large[i] = (rss_bytes(pids[i])? as f64 - before as f64) / LARGE as f64;
                drop(held);
                server.settle().await?;
            }
            notes.extend(log_note(&relays.netswitch));
            block_in_place(|| relays.stop())?;
            None
        }
        Ok(limit) => Some(format!("open files limit {limit} < {} needed", 2 * LARGE + 300)),
        Err(e) => Some(e),
    };

    let seconds = window.as_secs();
    let mut table = Table::new(
        format!("Idle relay: RSS (VmRSS), and CPU and context switches of all threads over {seconds} s"),
        &["baseline", "netswitch", "ns/base"],
    );
    let pair = |table: &mut Table, label: String, v: [f64; 2], decimals: usize| {
        table.row(label, vec![number(v[0], decimals), number(v[1], decimals), ratio(v[1], v[0])]);
    };
    pair(&mut table, "RSS of a fresh process, KiB".into(), fresh.map(|b| b as f64 / 1024.0), 0);
    pair(
        &mut table,
        "  of it anonymous (no code pages), KiB".into(),
        fresh_anon.map(|b| b as f64 / 1024.0),
        0,
    );
    let small = [per_connection[0], per_connection[1]];
    pair(&mut table, format!("RSS per idle relayed connection at {}, B", number(SMALL as f64, 0)), small, 0);
    pair(&mut table, format!("RSS per idle relayed connection at {}, B", number(LARGE as f64, 0)), large, 0);
    for (count, spent) in [(0, idle_empty), (SMALL, idle_full)] {
        let n = number(count as f64, 0);
        pair(
            &mut table,
            format!("idle, {n} conns: CPU ms in {seconds} s"),
            spent.map(|s| s.cpu_ns as f64 / 1e6),
            1,
        );
        let per_second = spent.map(|s| s.switches as f64 / window.as_secs_f64());
        pair(&mut table, format!("idle, {n} conns: context switches/s"), per_second, 1);
    }
    table.print(&format!("cargo bench --bench relay -- idle{}", args.window_flag()));
    let size = |path: std::io::Result<std::path::PathBuf>| {
        path.and_then(std::fs::metadata).map_or("?".into(), |m| number(m.len() as f64 / 1048576.0, 1))
    };
    println!(
        "  baseline: this benchmark's executable ({} MiB file) in tcp-baseline mode, tokio multi-thread \
         runtime, copy_bidirectional; netswitch: target/release/netswitch ({} MiB file) socks",
        size(std::env::current_exe()),
        size(crate::common::child::netswitch_binary().map_err(std::io::Error::other))
    );
    println!(
        "  threads at the end of the windows: baseline {}, netswitch {}",
        idle_full[0].threads, idle_full[1].threads
    );
    for (name, spent) in [("0", idle_empty), ("1,000", idle_full)] {
        for (i, s) in spent.iter().enumerate() {
            if s.threads_gone > 0 {
                println!(
                    "  note: {name} conns: {} thread(s) of {} exited in the window (their share is missing)",
                    s.threads_gone,
                    RELAYS[i].name()
                );
            }
        }
    }
    if let Some(reason) = large_note {
        println!("  {} connections skipped: {reason}", number(LARGE as f64, 0));
    }
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// CPU time and context switches of both processes over the same `window`.
async fn watch(pids: [u32; 2], window: Duration) -> Result<[Spent; 2], String> {
    let start = [Usage::sample(pids[0])?, Usage::sample(pids[1])?];
    tokio::time::sleep(window).await;
    let end = [Usage::sample(pids[0])?, Usage::sample(pids[1])?];
    Ok([start[0].until(&end[0]), start[1].until(&end[1])])
}

/// 8 connections opened, echoed and closed, so lazily built state exists before measuring.
async fn warm_up(server: &Server, route: Route) -> Result<(), String> {
    for _ in 0..8 {
        let mut opened = open(route).await?;
        echo(&mut opened.stream, MESSAGE).await?;
    }
    server.settle().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Opens `count` connections along `route`, each after one echo exchange, and holds them.
async fn open_idle(route: Route, count: usize) -> Result<Vec<TcpStream>, String> {
    let tickets = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let openers: Vec<_> = (0..OPENERS)
        .map(|_| {
            let (tickets, held) = (tickets.clone(), held.clone());
            tokio::spawn(async move {
                while tickets.fetch_add(1, Ordering::Relaxed) < count {
                    let mut opened = open(route).await?;
                    echo(&mut opened.stream, MESSAGE).await?;
                    held.lock().await.push(opened.stream);
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    bounded(OPEN_TIMEOUT, "opening idle connections", async {
        for opener in openers {
            opener.await.map_err(|e| format!("opener task failed: {e}"))??;
        }
        Ok(())
    })
    .await?;
    let mut held = held.lock().await;
    Ok(std::mem::take(&mut *held))
}
