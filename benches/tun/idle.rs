//! `tun-idle`: netswitch's resident memory per idle TUN connection (its two sockets' user-space
//! state, the relay task and the NAT entry) at 1,000 and 9,000 connections (10,000 would take
//! netswitch past this machine's hard limit of 20,000 open files: two sockets each), and after a
//! UDP flood from 5,000 sources plus 200,000 datagrams from one.

use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::common::procfs::{open_fds, rss_bytes};
use crate::common::table::{number, Table};
use crate::net::{Net, Path};
use crate::server::{at, HOLD, UDP_DISCARD};

const STEPS: [usize; 2] = [1000, 9000];
const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// UDP flood: distinct sources (one datagram each), then one source's datagrams.
const FLOOD_SOURCES: usize = 5000;
const FLOOD_DATAGRAMS: u64 = 200_000;

/// Waits until netswitch holds `fds` descriptors or more (each connection: the accepted socket and
/// the outbound one), at most 30 s; then lets it settle.
fn wait_fds(pid: u32, fds: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while open_fds(pid)? < fds {
        if Instant::now() > deadline {
            return Err(format!("netswitch has {} descriptors, expected {fds}", open_fds(pid)?));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// `tun-idle`.
pub fn run(net: &Net) -> Result<(), String> {
    let pid = net.netswitch_pid();
    let mut table = Table::new(
        "netswitch tun's memory: RSS per idle TUN connection (accepted socket + outbound socket + \
         relay task + NAT entry; kernel socket buffers not included), and RSS under a UDP flood",
        &["netswitch RSS, MiB", "per connection, KiB"],
    );
    let (base_rss, base_fds) = (rss_bytes(pid)?, open_fds(pid)?);
    table.row("before", vec![number(base_rss as f64 / MIB, 1), String::from("-")]);
    let mut held: Vec<TcpStream> = Vec::new();
    for step in STEPS {
        while held.len() < step {
            held.push(Path::Tun.connect(at(HOLD))?);
        }
        wait_fds(pid, base_fds + 2 * step)?;
        let rss = rss_bytes(pid)?;
        let per = (rss.saturating_sub(base_rss)) as f64 / step as f64 / KIB;
        table.row(
            format!("{} idle connections", number(step as f64, 0)),
            vec![number(rss as f64 / MIB, 1), number(per, 2)],
        );
    }
    drop(held);
    std::thread::sleep(Duration::from_secs(3)); // NAT entries linger 2 s
    let after_close = rss_bytes(pid)?;
    table.row("all closed (3 s later)", vec![number(after_close as f64 / MIB, 1), String::from("-")]);

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
    table.row(
        format!(
            "UDP flood: peak ({} sources + {} datagrams of 1,200 B)",
            number(FLOOD_SOURCES as f64, 0),
            number(sent as f64, 0)
        ),
        vec![number(peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / MIB, 1), String::from("-")],
    );
    table.row("UDP flood: 1 s after", vec![number(after as f64 / MIB, 1), String::from("-")]);
    drop(sources);
    table.print("cargo bench --bench tun -- tun-idle");
    Ok(())
}
