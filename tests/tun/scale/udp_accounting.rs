//! A long UDP echo through the tunnel with every datagram accounted for: what did not come back
//! is in exactly one stage's drop counter.

use std::io::{ErrorKind, Read};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use netswitch::TransportProtocol;

use super::server::SNMP;
use crate::{blocking, connect, pattern, server, server::UDP_ECHO, udp_roundtrip, Device};

/// Datagrams in flight at most (sent and neither answered nor given up).
const WINDOW: usize = 64;
/// Silence after which the datagrams in flight are given up (they may still come late).
const GIVE_UP: Duration = Duration::from_millis(200);

/// What the app saw.
#[derive(Debug, Default)]
struct Echo {
    sent: u64,
    received: u64,
    duplicates: u64,
    corrupted: u64,
    send_errors: u64,
}

/// The drop and traffic counters of every stage at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Stages {
    /// tun0's transmit drops: the kernel's queue towards netswitch was full.
    tun_queue_drops: u64,
    /// Datagrams netswitch handed to a session, and those it dropped (queue full, no budget).
    queued: u64,
    dropped_udp: u64,
    /// The session's datagrams sent to the server, received from it, and dropped either way.
    session_up: u64,
    session_down: u64,
    session_drops: u64,
    /// This namespace's UDP receive errors (netswitch's socket and the app's), and the server's.
    device_in_errors: u64,
    server_in: u64,
    server_in_errors: u64,
    server_out: u64,
}

/// The UDP counters of /proc/net/snmp text: (InDatagrams, InErrors, OutDatagrams).
fn udp_snmp(snmp: &str) -> (u64, u64, u64) {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return (0, 0, 0) };
    let field = |name: &str| {
        let index = names.split_whitespace().position(|n| n == name);
        index.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("InDatagrams"), field("InErrors"), field("OutDatagrams"))
}

/// tun0's transmit drops from /proc/net/dev (this namespace's).
fn tun_queue_drops() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = dev.lines().find(|l| l.trim_start().starts_with("tun0:")).expect("tun0 in /proc/net/dev");
    let fields: Vec<u64> =
        line.split(':').nth(1).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    fields[11] // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop
}

fn stages(device: &Device, port: u16) -> Stages {
    let counters = device.tun.counters();
    let session = device
        .netswitch
        .manager()
        .list()
        .into_iter()
        .find(|c| c.protocol == TransportProtocol::Udp && c.metadata.source.map(|s| s.port()) == Some(port))
        .expect("the app socket's UDP session");
    let mut snmp = String::new();
    connect(SNMP).unwrap().read_to_string(&mut snmp).unwrap();
    let (server_in, server_in_errors, server_out) = udp_snmp(&snmp);
    let (_, device_in_errors, _) = udp_snmp(&std::fs::read_to_string("/proc/net/snmp").unwrap());
    Stages {
        tun_queue_drops: tun_queue_drops(),
        queued: counters.udp_datagrams,
        dropped_udp: counters.dropped_udp,
        session_up: session.packets_up,
        session_down: session.packets_down,
        session_drops: session.drops,
        device_in_errors,
        server_in,
        server_in_errors,
        server_out,
    }
}

/// `count` datagrams of `size` bytes with sequence numbers, at most [`WINDOW`] in flight.
fn echo(socket: &UdpSocket, size: usize, count: usize) -> Echo {
    let to = server(UDP_ECHO);
    socket.set_read_timeout(Some(GIVE_UP)).unwrap();
    let mut seen = vec![false; count];
    let mut echo = Echo::default();
    let (mut next, mut written_off) = (0usize, 0u64);
    let mut buf = vec![0u8; 2048];
    // The pattern depends on the sequence number's low byte: built once (fast in a debug build).
    let templates: Vec<Vec<u8>> = (0..=255u8).map(|low| pattern(size, low)).collect();
    let mut datagram = vec![0u8; size];
    let mut expected = |seq: usize| {
        datagram.copy_from_slice(&templates[seq % 256]);
        datagram[..4].copy_from_slice(&(seq as u32).to_be_bytes());
        datagram.clone()
    };
    loop {
        while next < count && echo.sent - echo.received.min(echo.sent) - written_off < WINDOW as u64 {
            match socket.send_to(&expected(next), to) {
                Ok(_) => echo.sent += 1,
                // The app's own socket refused it (not sent: no stage saw it).
                Err(error) if error.raw_os_error() == Some(libc::ENOBUFS) => echo.send_errors += 1,
                Err(error) => panic!("send: {error}"),
            }
            next += 1;
        }
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                assert_eq!(from, to, "replies come from the server's address");
                let seq = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if seq >= count || buf[..n] != expected(seq)[..] {
                    echo.corrupted += 1;
                } else if std::mem::replace(&mut seen[seq], true) {
                    echo.duplicates += 1;
                } else {
                    echo.received += 1;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if next == count {
                    break; // everything sent, and silence since
                }
                written_off = echo.sent - echo.received.min(echo.sent);
            }
            Err(error) => panic!("receive: {error}"),
        }
    }
    echo
}

/// Echoes `count` datagrams of `size` bytes through the tunnel and checks that the ones that did
/// not come back are exactly the drops counted at the stages.
pub async fn udp_echo_accounted(device: &Device, size: usize, count: usize) {
    let socket = blocking(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        udp_roundtrip(&socket, b"warm-up", server(UDP_ECHO));
        socket
    })
    .await;
    let port = socket.local_addr().unwrap().port();
    let before = stages(device, port);
    let started = Instant::now();
    let (socket, echo) = blocking(move || {
        let echo = echo(&socket, size, count);
        (socket, echo)
    })
    .await;
    let took = started.elapsed();
    let after = stages(device, port);
    drop(socket);
    let d = |f: fn(&Stages) -> u64| f(&after) - f(&before);
    let counted = d(|s| s.tun_queue_drops)
        + d(|s| s.dropped_udp)
        + d(|s| s.session_drops)
        + d(|s| s.server_in_errors)
        + d(|s| s.device_in_errors);
    println!(
        "UDP echo of {count} x {size} B in {took:?} ({:.0} datagrams/s): sent {}, back {}, \
         send errors {}; stages: tun queue drops {}, to sessions {} (dropped {}), session up {} \
         down {} drops {}, server in {} (errors {}) out {}, this namespace's receive errors {}",
        echo.received as f64 / took.as_secs_f64(),
        echo.sent,
        echo.received,
        echo.send_errors,
        d(|s| s.tun_queue_drops),
        d(|s| s.queued),
        d(|s| s.dropped_udp),
        d(|s| s.session_up),
        d(|s| s.session_down),
        d(|s| s.session_drops),
        d(|s| s.server_in),
        d(|s| s.server_in_errors),
        d(|s| s.server_out),
        d(|s| s.device_in_errors),
    );
    assert_eq!((echo.duplicates, echo.corrupted), (0, 0), "no datagram came back twice or changed");
    assert_eq!(echo.sent + echo.send_errors, count as u64);
    assert_eq!(
        echo.sent,
        d(|s| s.queued) + d(|s| s.dropped_udp) + d(|s| s.tun_queue_drops),
        "every datagram sent reached netswitch or a counted drop"
    );
    assert_eq!(echo.sent - echo.received, counted, "every datagram lost is in a drop counter");
}
