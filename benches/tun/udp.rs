//! `tun-udp`: a download at a fixed rate (loss %) and echoed datagrams per second at 64 and
//! 1,200 bytes, through the tunnel and without it.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::median;
use crate::common::table::{number, ratio, Table};
use crate::net::Path;
use crate::server::{at, UDP_BLAST, UDP_ECHO};

/// The fixed-rate download: 500 Mbit/s of 1,200-byte datagrams for 2 s (the target).
const RATE_BITS: f64 = 500e6;
const RATE_SIZE: usize = 1200;
const RATE_TIME: f64 = 2.0;
/// Echo: datagrams in flight, and how long one trial runs.
const WINDOW: usize = 64;
const ECHO_TIME: Duration = Duration::from_millis(1500);
const TRIALS: usize = 3;
/// Silence that ends a receive.
const QUIET: Duration = Duration::from_millis(300);

/// This namespace's UDP receive-buffer drops so far (/proc/net/snmp `RcvbufErrors`): the app's
/// sockets and netswitch's.
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    let index = names.split_whitespace().position(|n| n == "RcvbufErrors");
    index.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Asks the server for `count` datagrams at `rate` per second and counts the distinct ones that
/// arrive; returns the loss in percent.
fn rate_trial(path: Path, count: u64, rate: f64) -> Result<f64, String> {
    let socket = path.udp()?;
    let io = |e: std::io::Error| format!("UDP download {}: {e}", path.name());
    let mut request = Vec::new();
    request.extend_from_slice(&count.to_be_bytes());
    request.extend_from_slice(&(RATE_SIZE as u32).to_be_bytes());
    request.extend_from_slice(&(rate as u32).to_be_bytes());
    socket.send_to(&request, at(UDP_BLAST)).map_err(io)?;
    socket.set_read_timeout(Some(QUIET)).map_err(io)?;
    let mut seen = vec![false; count as usize];
    let mut buf = vec![0u8; 2048];
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(RATE_TIME * 4.0 + 5.0);
    while Instant::now() < deadline {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n >= 4 => {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if seq < seen.len() && !std::mem::replace(&mut seen[seq], true) {
                    received += 1;
                }
            }
            Ok(_) => {}
            Err(_) if received > 0 || seen.is_empty() => break,
            Err(_) => {} // the blast has not started yet
        }
    }
    Ok((count - received) as f64 * 100.0 / count as f64)
}

/// Echoed datagrams per second with [`WINDOW`] in flight for [`ECHO_TIME`].
fn echo_trial(path: Path, size: usize) -> Result<f64, String> {
    let socket = path.udp()?;
    let io = |e: std::io::Error| format!("UDP echo {}: {e}", path.name());
    socket.set_read_timeout(Some(QUIET)).map_err(io)?;
    let datagram = vec![0x42u8; size];
    let mut buf = vec![0u8; 2048];
    // Warm up: the session (and its socket) exists before the clock starts.
    socket.send_to(&datagram, at(UDP_ECHO)).map_err(io)?;
    socket.recv_from(&mut buf).map_err(io)?;
    let started = Instant::now();
    let (mut in_flight, mut echoed) = (0usize, 0u64);
    while started.elapsed() < ECHO_TIME {
        while in_flight < WINDOW {
            socket.send_to(&datagram, at(UDP_ECHO)).map_err(io)?;
            in_flight += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok(_) => {
                echoed += 1;
                in_flight -= 1;
            }
            Err(_) => in_flight = 0, // lost: send a new window
        }
    }
    Ok(echoed as f64 / started.elapsed().as_secs_f64())
}

/// Drains what is left of an echo trial (so it does not count in the next one).
fn settle() {
    std::thread::sleep(Duration::from_millis(200));
}

/// `tun-udp`.
pub fn run() -> Result<(), String> {
    let rate = RATE_BITS / (RATE_SIZE as f64 * 8.0);
    let count = (rate * RATE_TIME) as u64;
    let mut table = Table::new(
        format!(
            "UDP, paths alternating: loss of a {:.0} Mbit/s download ({RATE_SIZE} B datagrams, {RATE_TIME} s, \
             median of {TRIALS}); echoed datagrams/s with {WINDOW} in flight (median of {TRIALS} x {ECHO_TIME:?})",
            RATE_BITS / 1e6
        ),
        &["no VPN", "netswitch tun", "tun/no VPN"],
    );
    let mut losses = [Vec::new(), Vec::new()];
    let mut buffer_drops = [0u64; 2];
    for _ in 0..TRIALS {
        for (i, path) in Path::BOTH.into_iter().enumerate() {
            let before = rcvbuf_errors();
            losses[i].push(rate_trial(path, count, rate)?);
            settle();
            buffer_drops[i] += rcvbuf_errors().saturating_sub(before);
        }
    }
    let [direct, tun] = losses.map(median);
    table.row(
        format!("loss at {:.0} Mbit/s, %", RATE_BITS / 1e6),
        vec![number(direct, 2), number(tun, 2), String::from("-")],
    );
    let share = |drops: u64| number(drops as f64 * 100.0 / (count * TRIALS as u64) as f64, 2);
    table.row(
        "  in socket receive buffers, % (all trials)",
        vec![share(buffer_drops[0]), share(buffer_drops[1]), String::from("-")],
    );
    for size in [64, 1200] {
        let mut rates = [Vec::new(), Vec::new()];
        for _ in 0..TRIALS {
            for (i, path) in Path::BOTH.into_iter().enumerate() {
                rates[i].push(echo_trial(path, size)?);
                settle();
            }
        }
        let [direct, tun] = rates.map(median);
        table.row(
            format!("echo {size} B, datagrams/s"),
            vec![number(direct, 0), number(tun, 0), ratio(tun, direct)],
        );
    }
    table.print("cargo bench --bench tun -- tun-udp");
    Ok(())
}

/// A socket that sent `count` datagrams of `size` bytes to `to` as fast as it could.
pub fn flood(socket: &UdpSocket, to: std::net::SocketAddr, count: u64, size: usize) -> u64 {
    let datagram = vec![0x66u8; size];
    (0..count).filter(|_| socket.send_to(&datagram, to).is_ok()).count() as u64
}
