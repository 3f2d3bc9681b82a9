//! `tun-udp`: a download and an upload at a fixed rate (loss %) and echoed datagrams per second
//! at 64 and 1,200 bytes, through the tunnel with each stack and without it (per netswitch mode,
//! the paths alternating within each trial; the no-VPN samples of all modes pooled).

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::common::median;
use crate::common::table::{number, ratio, Table};
use crate::net::{Mode, Net, Path};
use crate::server::{at, COUNT_QUERY, UDP_BLAST, UDP_COUNT, UDP_ECHO};

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

/// A UDP counter of /proc/net/snmp (`RcvbufErrors`, `SndbufErrors`) of the namespace of
/// process `pid` (`None`: this one).
fn snmp_udp(pid: Option<u32>, name: &str) -> u64 {
    let path = pid.map_or_else(|| "/proc/net/snmp".to_string(), |pid| format!("/proc/{pid}/net/snmp"));
    let snmp = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    let index = names.split_whitespace().position(|n| n == name);
    index.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Packets tun0 dropped on the way to netswitch (its queue full: netswitch did not read in time).
/// (/proc/net/dev is this namespace's; /sys/class/net is the namespace that mounted it.)
fn tun_tx_dropped() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let Some(line) = dev.lines().find(|l| l.trim_start().starts_with("tun0:")) else { return 0 };
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop
    line.split(':')
        .nth(1)
        .and_then(|f| f.split_whitespace().nth(11))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Packets the kernel's per-CPU input backlogs dropped (/proc/net/softnet_stat, second column).
fn backlog_drops() -> u64 {
    let stat = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    stat.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|v| u64::from_str_radix(v, 16).ok())
        .sum()
}

/// Where datagrams were lost, as counters read before and after a trial.
#[derive(Debug, Clone, Copy, Default)]
struct Drops {
    /// Device namespace: socket receive buffers full (the app's and netswitch's sockets).
    device_rcvbuf: u64,
    /// Device namespace: sends dropped for lack of buffer or queue room.
    device_sndbuf: u64,
    /// tun0's queue to netswitch full.
    tun_tx: u64,
    /// Server namespace: socket receive buffers full.
    server_rcvbuf: u64,
    /// Kernel input backlogs full.
    backlog: u64,
}

impl Drops {
    fn read(server: u32) -> Drops {
        Drops {
            device_rcvbuf: snmp_udp(None, "RcvbufErrors"),
            device_sndbuf: snmp_udp(None, "SndbufErrors"),
            tun_tx: tun_tx_dropped(),
            server_rcvbuf: snmp_udp(Some(server), "RcvbufErrors"),
            backlog: backlog_drops(),
        }
    }

    fn add_since(&mut self, before: &Drops, after: &Drops) {
        self.device_rcvbuf += after.device_rcvbuf.saturating_sub(before.device_rcvbuf);
        self.device_sndbuf += after.device_sndbuf.saturating_sub(before.device_sndbuf);
        self.tun_tx += after.tun_tx.saturating_sub(before.tun_tx);
        self.server_rcvbuf += after.server_rcvbuf.saturating_sub(before.server_rcvbuf);
        self.backlog += after.backlog.saturating_sub(before.backlog);
    }

    fn describe(&self) -> String {
        format!(
            "dev rcvbuf {} sndbuf {}, tun0 tx {}, srv rcvbuf {}, backlog {}",
            self.device_rcvbuf, self.device_sndbuf, self.tun_tx, self.server_rcvbuf, self.backlog
        )
    }
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

/// Sends `count` datagrams at `rate` per second to the server's counter (trial `trial`) and
/// asks it how many distinct ones arrived; returns the loss in percent.
fn upload_trial(path: Path, trial: u32, count: u64, rate: f64) -> Result<f64, String> {
    let socket = path.udp()?;
    let io = |e: std::io::Error| format!("UDP upload {}: {e}", path.name());
    let mut datagram = vec![0x44u8; RATE_SIZE];
    datagram[..4].copy_from_slice(&trial.to_be_bytes());
    // The first datagram opens the session; then the clock starts.
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(count);
        while sent < due {
            datagram[4..8].copy_from_slice(&(sent as u32).to_be_bytes());
            let _ = socket.send_to(&datagram, at(UDP_COUNT));
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    std::thread::sleep(QUIET);
    socket.set_read_timeout(Some(QUIET)).map_err(io)?;
    let mut query = [0u8; 8];
    query[..4].copy_from_slice(&trial.to_be_bytes());
    query[4..].copy_from_slice(&COUNT_QUERY.to_be_bytes());
    let mut answer = [0u8; 8];
    for _ in 0..10 {
        socket.send_to(&query, at(UDP_COUNT)).map_err(io)?;
        if let Ok((8, _)) = socket.recv_from(&mut answer) {
            let received = u64::from_be_bytes(answer).min(count);
            return Ok((count - received) as f64 * 100.0 / count as f64);
        }
    }
    Err(format!("UDP upload {}: the server did not answer the count query", path.name()))
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

/// The rows, in order: loss each way, then echo at each size.
const DIRECTIONS: [&str; 2] = ["download", "upload"];
const ECHO_SIZES: [usize; 2] = [64, 1200];

/// `tun-udp`.
pub fn run(net: &mut Net, modes: &[Mode]) -> Result<(), String> {
    let rate = RATE_BITS / (RATE_SIZE as f64 * 8.0);
    let count = (rate * RATE_TIME) as u64;
    let server = net.server_pid()?;
    let columns = modes.len() + 1; // no VPN, then one per mode
                                   // [row: DIRECTIONS then ECHO_SIZES][column]
    let mut samples = vec![vec![Vec::new(); columns]; DIRECTIONS.len() + ECHO_SIZES.len()];
    // [direction][column]
    let mut drops = vec![vec![Drops::default(); columns]; DIRECTIONS.len()];
    let mut trial = 0u32;
    for (m, mode) in modes.iter().enumerate() {
        net.switch(*mode)?;
        let paths = [(0, Path::Direct), (m + 1, Path::Tun)];
        for (d, direction) in DIRECTIONS.into_iter().enumerate() {
            for _ in 0..TRIALS {
                for (column, path) in paths {
                    let before = Drops::read(server);
                    trial += 1;
                    samples[d][column].push(match direction {
                        "download" => rate_trial(path, count, rate)?,
                        _ => upload_trial(path, trial, count, rate)?,
                    });
                    settle();
                    drops[d][column].add_since(&before, &Drops::read(server));
                }
            }
        }
        for (e, size) in ECHO_SIZES.into_iter().enumerate() {
            for _ in 0..TRIALS {
                for (column, path) in paths {
                    samples[DIRECTIONS.len() + e][column].push(echo_trial(path, size)?);
                    settle();
                }
            }
        }
    }
    let mut names = vec![String::from("no VPN")];
    names.extend(modes.iter().map(|m| m.name().to_string()));
    let mut header = names.clone();
    header.extend(modes.iter().map(|m| format!("{}/no VPN", m.name())));
    let mut table = Table::new(
        format!(
            "UDP, paths alternating (no VPN pooled over the stacks' runs): loss at {:.0} Mbit/s \
             ({RATE_SIZE} B datagrams, {RATE_TIME} s, median of {TRIALS} per stack) down and up, and \
             where the kernel counted drops (all trials); echoed datagrams/s with {WINDOW} in flight \
             (median of {TRIALS} x {ECHO_TIME:?} per stack)",
            RATE_BITS / 1e6
        ),
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let all = |l: &Vec<f64>| l.iter().map(|v| number(*v, 2)).collect::<Vec<_>>().join(" ");
    let mut notes = Vec::new();
    for (row, samples) in samples.iter().enumerate() {
        let medians: Vec<f64> = samples.iter().cloned().map(median).collect();
        let (label, mut cells) = match DIRECTIONS.get(row) {
            Some(direction) => {
                for (column, name) in names.iter().enumerate() {
                    notes.push(format!(
                        "  {direction} {name}: losses {}; kernel drops: {}",
                        all(&samples[column]),
                        drops[row][column].describe()
                    ));
                }
                let cells: Vec<String> = medians.iter().map(|v| number(*v, 2)).collect();
                (format!("{direction} loss at {:.0} Mbit/s, %", RATE_BITS / 1e6), cells)
            }
            None => {
                let size = ECHO_SIZES[row - DIRECTIONS.len()];
                (format!("echo {size} B, datagrams/s"), medians.iter().map(|v| number(*v, 0)).collect())
            }
        };
        let loss = row < DIRECTIONS.len();
        cells.extend(
            medians[1..].iter().map(|v| if loss { String::from("-") } else { ratio(*v, medians[0]) }),
        );
        table.row(label, cells);
    }
    table.print(&crate::command("tun-udp", modes));
    for note in notes {
        println!("{note}");
    }
    Ok(())
}

/// A socket that sent `count` datagrams of `size` bytes to `to` as fast as it could.
pub fn flood(socket: &UdpSocket, to: std::net::SocketAddr, count: u64, size: usize) -> u64 {
    let datagram = vec![0x66u8; size];
    (0..count).filter(|_| socket.send_to(&datagram, to).is_ok()).count() as u64
}
