//! `tun-idle`: netswitch's resident memory per idle TUN connection at 1,000 and 9,000
//! connections, and after a UDP flood from 5,000 sources plus 200,000 datagrams from one, with
//! each stack, each in a fresh netswitch. An idle connection holds, with the system stack, the
//! accepted socket and the outbound one, the relay task and the NAT entry (9,000 is the most that
//! fits this machine's hard limit of 20,000 open files: two sockets each); with the userspace
//! stack, its smoltcp socket (rings released when idle), the outbound socket and the relay task.

use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::procfs::{open_fds, rss_bytes};
use crate::common::table::{number, Table};
use crate::net::Mode;
use crate::net::{Net, Path};
use crate::server::{at, HOLD, UDP_DISCARD};

const STEPS: [usize; 2] = [1000, 9000];
const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// UDP flood: distinct sources (one datagram each), then one source's datagrams.
const FLOOD_SOURCES: usize = 5000;
const FLOOD_DATAGRAMS: u64 = 200_000;
/// How long connections sit idle before RSS is read.
const SETTLE: Duration = Duration::from_secs(3);

/// Waits until netswitch holds `fds` descriptors or more, at most 30 s; then lets it settle
/// longer than the userspace stack's ring release (2 s idle).
fn wait_fds(pid: u32, fds: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid)? < fds {
        if Instant::now() > deadline {
            return Err(format!("netswitch has {} descriptors, expected {fds}", open_fds(pid)?));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(SETTLE);
    Ok(())
}

/// What one stack's netswitch showed: the table's rows (RSS, MiB; per connection, KiB), and
/// how many flood datagrams were sent.
struct Figures {
    rows: Vec<(f64, Option<f64>)>,
    flood_sent: u64,
}

/// `tun-idle`: each stack in a fresh netswitch.
pub fn run(net: &mut Net, modes: &[Mode]) -> Result<(), String> {
    let mut figures = Vec::new();
    for mode in modes {
        net.fresh(*mode)?;
        figures.push(measure(net.netswitch_pid(), *mode)?);
    }
    let mut header = Vec::new();
    for mode in modes {
        header.push(format!("{} RSS, MiB", mode.name()));
        header.push(format!("{} per conn., KiB", mode.name()));
    }
    let mut table = Table::new(
        format!(
            "netswitch tun's memory, a fresh netswitch per stack: RSS per idle TUN connection \
             ({SETTLE:?} idle; kernel socket buffers not included), and RSS under a UDP flood"
        ),
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let mut labels = vec![String::from("before")];
    labels.extend(STEPS.iter().map(|step| format!("{} idle connections", number(*step as f64, 0))));
    labels.push(String::from("all closed (3 s later)"));
    labels.push(format!(
        "UDP flood: peak ({} sources + {} datagrams of 1,200 B)",
        number(FLOOD_SOURCES as f64, 0),
        number(FLOOD_DATAGRAMS as f64, 0)
    ));
    labels.push(String::from("UDP flood: 1 s after"));
    for (row, label) in labels.into_iter().enumerate() {
        let mut cells = Vec::new();
        for stack in &figures {
            let (rss, per) = stack.rows[row];
            cells.push(number(rss / MIB, 1));
            cells.push(per.map_or_else(|| String::from("-"), |per| number(per / KIB, 2)));
        }
        table.row(label, cells);
    }
    table.print(&crate::command("tun-idle", modes));
    for (mode, stack) in modes.iter().zip(&figures) {
        println!("  flood, {}: {} of {FLOOD_DATAGRAMS} datagrams sent", mode.name(), stack.flood_sent);
    }
    Ok(())
}

/// One netswitch's figures (`pid`, running in `mode`).
fn measure(pid: u32, mode: Mode) -> Result<Figures, String> {
    let mut rows = Vec::new();
    let (base_rss, base_fds) = (rss_bytes(pid)?, open_fds(pid)?);
    rows.push((base_rss as f64, None));
    let mut held: Vec<TcpStream> = Vec::new();
    for step in STEPS {
        while held.len() < step {
            held.push(Path::Tun.connect(at(HOLD))?);
        }
        wait_fds(pid, base_fds + mode.fds_per_connection() * step)?;
        let rss = rss_bytes(pid)?;
        rows.push((rss as f64, Some(rss.saturating_sub(base_rss) as f64 / step as f64)));
    }
    drop(held);
    std::thread::sleep(Duration::from_secs(3)); // NAT entries linger 2 s
    rows.push((rss_bytes(pid)? as f64, None));
    // The UDP flood: many sources, then one source as fast as it can.
    let sources: Vec<UdpSocket> = (0..FLOOD_SOURCES).map(|_| Path::Tun.udp()).collect::<Result<_, _>>()?;
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (watch_peak, stop) = (peak.clone(), std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let watch_stop = stop.clone();
    let watcher = std::thread::spawn(move || {
        while !watch_stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(rss) = rss_bytes(pid) {
                watch_peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    for socket in &sources {
        let _ = socket.send_to(&[0x77u8; 1200], at(UDP_DISCARD));
    }
    let sent = crate::udp::flood(&sources[0], at(UDP_DISCARD), FLOOD_DATAGRAMS, 1200);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watcher.join();
    let after = rss_bytes(pid)?;
    rows.push((peak.load(std::sync::atomic::Ordering::Relaxed) as f64, None));
    rows.push((after as f64, None));
    drop(sources);
    Ok(Figures { rows, flood_sent: sent })
}
