//! `tun-bulk` (1 and 4 streams each way, Gbit/s) and `tun-conn` (connections per second, RTT
//! p50/p99), through the tunnel and without it, the paths alternating within each trial.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::common::table::{number, ratio, Table};
use crate::common::{median, percentile};
use crate::net::{Net, Path};
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

/// `tun-bulk`: each shape without the VPN and through netswitch with the device's offloads off,
/// then again with them on (netswitch restarted in between; the no-VPN samples of both halves
/// pooled).
pub fn bulk(net: &mut Net) -> Result<(), String> {
    let mut table = Table::new(
        format!(
            "Bulk TCP, Gbit/s, median of {TRIALS} trials per netswitch run, paths alternating; tun0 MTU {}",
            crate::net::TUN_MTU
        ),
        &["no VPN", "tun no offload", "tun offload", "no-offload/no VPN", "offload/no VPN"],
    );
    // [shape][no VPN, tun without offloads, tun with offloads]
    let mut samples: Vec<[Vec<f64>; 3]> = SHAPES.iter().map(|_| Default::default()).collect();
    for (column, offload) in [(1, false), (2, true)] {
        if net.offload() != offload {
            net.restart(offload)?;
        }
        for (shape, (upload, streams, bytes)) in SHAPES.into_iter().enumerate() {
            for _ in 0..TRIALS {
                samples[shape][0].push(bulk_trial(Path::Direct, upload, streams, bytes)?);
                samples[shape][column].push(bulk_trial(Path::Tun, upload, streams, bytes)?);
            }
        }
    }
    for ((upload, streams, bytes), samples) in SHAPES.into_iter().zip(samples) {
        let [direct, plain, offload] = samples.map(median);
        let label = format!("{} {streams} x {} MiB", if upload { "upload" } else { "download" }, bytes / MIB);
        table.row(
            label,
            vec![
                number(direct, 2),
                number(plain, 2),
                number(offload, 2),
                ratio(plain, direct),
                ratio(offload, direct),
            ],
        );
    }
    table.print("cargo bench --bench tun -- tun-bulk");
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

/// `tun-conn`.
pub fn conn() -> Result<(), String> {
    let mut rates = [Vec::new(), Vec::new()];
    let mut rtts = [Vec::new(), Vec::new()];
    for _ in 0..TRIALS {
        for (i, path) in Path::BOTH.into_iter().enumerate() {
            rates[i].push(conn_trial(path)?);
            rtts[i].extend(rtt(path)?);
        }
    }
    let [direct, tun] = rates.map(median);
    let [mut rtt_direct, mut rtt_tun] = rtts;
    let mut table = Table::new(
        format!(
            "Connections and latency, paths alternating: connections/s one at a time (connect, 1 byte \
             echoed, close; median of {TRIALS} x {CONN_TIME:?}); RTT of 1 byte, {} round trips",
            TRIALS * PINGS
        ),
        &["no VPN", "netswitch tun", "tun/no VPN", "tun - no VPN"],
    );
    table
        .row("connections/s", vec![number(direct, 0), number(tun, 0), ratio(tun, direct), String::from("-")]);
    for p in [50, 99] {
        let (d, t) = (percentile(&mut rtt_direct, p), percentile(&mut rtt_tun, p));
        table.row(format!("RTT p{p}, us"), vec![number(d, 0), number(t, 0), ratio(t, d), number(t - d, 0)]);
    }
    table.print("cargo bench --bench tun -- tun-conn");
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

/// `--churn SECONDS`: connection churn through the tunnel for `duration`, then the no-VPN
/// reference for 30 s.
pub fn churn(duration: Duration) -> Result<(), String> {
    println!(
        "churn through the tunnel for {} s (connect, 1 byte echoed, close; one at a time):",
        duration.as_secs()
    );
    let tun = churn_run(Path::Tun, duration, true);
    println!("reference without the VPN for {} s:", CHURN_REFERENCE.as_secs());
    let direct = churn_run(Path::Direct, CHURN_REFERENCE, true);
    let mut table = Table::new(
        format!(
            "Connection churn: {} s through the tunnel, {} s without the VPN; per {} s window",
            duration.as_secs(),
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
    table.print(&format!("cargo bench --bench tun -- --churn {}", duration.as_secs()));
    Ok(())
}
