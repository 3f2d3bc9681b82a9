//! `tun-bulk` (1 and 4 streams each way, Gbit/s) and `tun-conn` (connections per second, RTT
//! p50/p99), through the tunnel with each stack and without it: per netswitch mode, the no-VPN
//! path and the tunnel alternate within each trial; the no-VPN samples of all modes are pooled.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::common::table::{number, ratio, Table};
use crate::common::{median, percentile};
use crate::net::{Mode, Net, Path};
use crate::server::{at, ECHO, SINK, SOURCE};

const MIB: u64 = 1 << 20;
/// Trials per figure (the median is reported).
const TRIALS: usize = 3;
/// (upload?, streams, bytes per stream).
const SHAPES: [(bool, usize, u64); 4] =
    [(true, 1, 512 * MIB), (false, 1, 512 * MIB), (true, 4, 128 * MIB), (false, 4, 128 * MIB)];
/// How long one connections-per-second trial runs.
const CONN_TIME: Duration = Duration::from_millis(1500);
/// Round trips per RTT sample set (after 200 to warm up).
const PINGS: usize = 3000;

/// Moves `bytes` over one connection: up to the sink (done when it answers the count) or down
/// from the source (done at its end).
fn stream(path: Path, upload: bool, bytes: u64) -> Result<(), String> {
    let io = |e: std::io::Error| format!("bulk {}: {e}", path.name());
    if upload {
        let mut stream = path.connect(at(SINK))?;
        let buf = vec![0xa5u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            stream.write_all(&buf[..n]).map_err(io)?;
            left -= n as u64;
        }
        stream.shutdown(Shutdown::Write).map_err(io)?;
        let mut count = [0u8; 8];
        stream.read_exact(&mut count).map_err(io)?;
        if u64::from_be_bytes(count) != bytes {
            return Err(format!("the sink counted {} of {bytes} bytes", u64::from_be_bytes(count)));
        }
    } else {
        let mut stream = path.connect(at(SOURCE))?;
        stream.write_all(&bytes.to_be_bytes()).map_err(io)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match stream.read(&mut buf).map_err(io)? {
                0 => break,
                n => got += n as u64,
            }
        }
        if got != bytes {
            return Err(format!("the source sent {got} of {bytes} bytes"));
        }
    }
    Ok(())
}

/// Gbit/s of `streams` parallel streams of `bytes` each.
fn bulk_trial(path: Path, upload: bool, streams: usize, bytes: u64) -> Result<f64, String> {
    let started = Instant::now();
    let workers: Vec<_> =
        (0..streams).map(|_| std::thread::spawn(move || stream(path, upload, bytes))).collect();
    for worker in workers {
        worker.join().map_err(|_| "a bulk stream panicked".to_string())??;
    }
    Ok((streams as u64 * bytes * 8) as f64 / started.elapsed().as_secs_f64() / 1e9)
}

/// Column names: no VPN, each mode, then each mode's ratio to no VPN.
fn columns(modes: &[Mode], extra: &[&str]) -> Vec<String> {
    let mut columns = vec![String::from("no VPN")];
    columns.extend(modes.iter().map(|m| m.name().to_string()));
    columns.extend(modes.iter().map(|m| format!("{}/no VPN", m.name())));
    for suffix in extra {
        columns.extend(modes.iter().map(|m| format!("{}{suffix}", m.name())));
    }
    columns
}

/// A table whose columns are `columns`.
fn table(title: String, columns: &[String]) -> Table {
    Table::new(title, &columns.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `tun-bulk`: each shape without the VPN and through netswitch in each of `modes` (netswitch
/// restarted in between).
pub fn bulk(net: &mut Net, modes: &[Mode]) -> Result<(), String> {
    let table_columns = columns(modes, &[]);
    let mut table = table(
        format!(
            "Bulk TCP, Gbit/s, median of {TRIALS} trials per netswitch stack, paths alternating (no VPN \
             pooled); tun0 MTU {}; system = the kernel's TCP, tun0 offloads on unless \"no offload\"; \
             userspace = smoltcp, tun0 offloads on unless \"no offload\"",
            crate::net::TUN_MTU
        ),
        &table_columns,
    );
    // [shape][no VPN, then one per mode]
    let mut samples: Vec<Vec<Vec<f64>>> = SHAPES.iter().map(|_| vec![Vec::new(); modes.len() + 1]).collect();
    for (m, mode) in modes.iter().enumerate() {
        net.switch(*mode)?;
        for (shape, (upload, streams, bytes)) in SHAPES.into_iter().enumerate() {
            for _ in 0..TRIALS {
                samples[shape][0].push(bulk_trial(Path::Direct, upload, streams, bytes)?);
                samples[shape][m + 1].push(bulk_trial(Path::Tun, upload, streams, bytes)?);
            }
        }
    }
    for ((upload, streams, bytes), samples) in SHAPES.into_iter().zip(samples) {
        let medians: Vec<f64> = samples.into_iter().map(median).collect();
        let label = format!("{} {streams} x {} MiB", if upload { "upload" } else { "download" }, bytes / MIB);
        let mut cells: Vec<String> = medians.iter().map(|v| number(*v, 2)).collect();
        cells.extend(medians[1..].iter().map(|v| ratio(*v, medians[0])));
        table.row(label, cells);
    }
    table.print(&crate::command("tun-bulk", modes));
    Ok(())
}

/// Connections per second, one at a time: connect, one byte echoed, close.
fn conn_trial(path: Path) -> Result<f64, String> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < CONN_TIME {
        let mut stream = path.connect(at(ECHO))?;
        stream.write_all(b"c").map_err(|e| format!("conn {}: {e}", path.name()))?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).map_err(|e| format!("conn {}: {e}", path.name()))?;
        count += 1;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Round-trip times of one byte on one connection (TCP_NODELAY), microseconds.
fn rtt(path: Path) -> Result<Vec<f64>, String> {
    let mut stream = path.connect(at(ECHO))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    let mut samples = Vec::with_capacity(PINGS);
    for i in 0..PINGS + 200 {
        let started = Instant::now();
        stream.write_all(b"p").map_err(|e| format!("rtt {}: {e}", path.name()))?;
        stream.read_exact(&mut byte).map_err(|e| format!("rtt {}: {e}", path.name()))?;
        if i >= 200 {
            samples.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    Ok(samples)
}

/// `tun-conn`: per mode, trials of connections/s and RTTs alternating the no-VPN path and the
/// tunnel.
pub fn conn(net: &mut Net, modes: &[Mode]) -> Result<(), String> {
    // [no VPN, then one per mode]
    let mut rates = vec![Vec::new(); modes.len() + 1];
    let mut rtts = vec![Vec::new(); modes.len() + 1];
    for (m, mode) in modes.iter().enumerate() {
        net.switch(*mode)?;
        for _ in 0..TRIALS {
            for (i, path) in [(0, Path::Direct), (m + 1, Path::Tun)] {
                rates[i].push(conn_trial(path)?);
                rtts[i].extend(rtt(path)?);
            }
        }
    }
    let table_columns = columns(modes, &[" - no VPN"]);
    let mut table = table(
        format!(
            "Connections and latency, paths alternating (no VPN pooled): connections/s one at a time \
             (connect, 1 byte echoed, close; median of {TRIALS} x {CONN_TIME:?} per stack); RTT of 1 \
             byte, {} round trips per stack; \"- no VPN\": added us",
            TRIALS * PINGS
        ),
        &table_columns,
    );
    let rates: Vec<f64> = rates.into_iter().map(median).collect();
    let mut cells: Vec<String> = rates.iter().map(|v| number(*v, 0)).collect();
    cells.extend(rates[1..].iter().map(|v| ratio(*v, rates[0])));
    cells.extend(modes.iter().map(|_| String::from("-")));
    table.row("connections/s", cells);
    for p in [50, 99] {
        let at: Vec<f64> = rtts.iter_mut().map(|samples| percentile(samples, p)).collect();
        let mut cells: Vec<String> = at.iter().map(|v| number(*v, 0)).collect();
        cells.extend(at[1..].iter().map(|v| ratio(*v, at[0])));
        cells.extend(at[1..].iter().map(|v| number(v - at[0], 0)));
        table.row(format!("RTT p{p}, us"), cells);
    }
    table.print(&crate::command("tun-conn", modes));
    Ok(())
}

/// Length of one churn window.
const CHURN_WINDOW: Duration = Duration::from_secs(10);
/// A connect slower than this is a stall.
const STALL: Duration = Duration::from_secs(1);
/// How long the no-VPN reference churns.
const CHURN_REFERENCE: Duration = Duration::from_secs(30);

/// What one churn run saw: connections/s per window, the slowest connect and the stalls.
struct Churn {
    windows: Vec<f64>,
    slowest: Duration,
    stalls: u64,
    failures: u64,
    connections: u64,
}

/// Connects, echoes one byte and closes, one connection after another over `path` for
/// `duration`; a failed connection is counted and the churn goes on.
fn churn_run(path: Path, duration: Duration, print: bool) -> Churn {
    let mut churn =
        Churn { windows: Vec::new(), slowest: Duration::ZERO, stalls: 0, failures: 0, connections: 0 };
    let started = Instant::now();
    while started.elapsed() < duration {
        let window = Instant::now();
        let (mut count, mut slowest) = (0u64, Duration::ZERO);
        while window.elapsed() < CHURN_WINDOW {
            let connecting = Instant::now();
            let stream = path.connect(at(ECHO));
            let took = connecting.elapsed();
            slowest = slowest.max(took);
            churn.stalls += u64::from(took > STALL);
            let echoed = stream.and_then(|mut stream| {
                stream.write_all(b"c").map_err(|e| e.to_string())?;
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).map_err(|e| e.to_string())
            });
            match echoed {
                Ok(()) => count += 1,
                Err(_) => churn.failures += 1,
            }
        }
        let rate = count as f64 / window.elapsed().as_secs_f64();
        churn.windows.push(rate);
        churn.connections += count;
        churn.slowest = churn.slowest.max(slowest);
        if print {
            println!(
                "  {:>4} s  {}: {} connections/s, slowest connect {:.1} ms",
                started.elapsed().as_secs(),
                path.name(),
                number(rate, 0),
                slowest.as_secs_f64() * 1e3
            );
        }
    }
    churn
}

/// `--churn SECONDS`: connection churn through the tunnel (netswitch running in `mode`) for
/// `duration`, then the no-VPN reference for 30 s.
pub fn churn(duration: Duration, mode: Mode) -> Result<(), String> {
    println!(
        "churn through the tunnel ({} stack) for {} s (connect, 1 byte echoed, close; one at a time):",
        mode.stack(),
        duration.as_secs()
    );
    let tun = churn_run(Path::Tun, duration, true);
    println!("reference without the VPN for {} s:", CHURN_REFERENCE.as_secs());
    let direct = churn_run(Path::Direct, CHURN_REFERENCE, true);
    let mut table = Table::new(
        format!(
            "Connection churn: {} s through the tunnel ({} stack), {} s without the VPN; per {} s window",
            duration.as_secs(),
            mode.stack(),
            CHURN_REFERENCE.as_secs(),
            CHURN_WINDOW.as_secs()
        ),
        &["no VPN", "netswitch tun", "tun/no VPN"],
    );
    let lowest = |w: &[f64]| w.iter().copied().fold(f64::INFINITY, f64::min);
    let (d, t) = (median(direct.windows.clone()), median(tun.windows.clone()));
    table.row("connections/s, median window", vec![number(d, 0), number(t, 0), ratio(t, d)]);
    let (dl, tl) = (lowest(&direct.windows), lowest(&tun.windows));
    table.row("connections/s, lowest window", vec![number(dl, 0), number(tl, 0), ratio(tl, dl)]);
    let ms = |c: &Churn| number(c.slowest.as_secs_f64() * 1e3, 1);
    table.row("slowest connect, ms", vec![ms(&direct), ms(&tun), String::from("-")]);
    let count = |v: u64| number(v as f64, 0);
    table.row("stalls (connect > 1 s)", vec![count(direct.stalls), count(tun.stalls), String::from("-")]);
    table.row("failed connections", vec![count(direct.failures), count(tun.failures), String::from("-")]);
    table.row("connections", vec![count(direct.connections), count(tun.connections), String::from("-")]);
    let stack = if mode == Mode::Userspace { " --stack userspace" } else { "" };
    table.print(&format!("cargo bench --bench tun -- --churn {}{stack}", duration.as_secs()));
    Ok(())
}
