//! A UDP flood into the tunnel (root; skipped with a printed reason otherwise): thousands of new
//! app sources and bursts from the admitted ones for a few seconds. The process's resident
//! memory grows by no more than the bound stated on `UdpSettings` for the settings used, and
//! every datagram sent is accounted for: received by the server, or in exactly one stage's drop
//! counter.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use netswitch::tun::flow::INPUT_BATCHES;
use netswitch::tun::Stack;
use netswitch::TransportProtocol;

use crate::flow_host::HOST_BATCH;
use crate::scale::server::SNMP;
use crate::{blocking, connect, role, run_in_namespace, server, Device};

/// UDP on the server: receives and counts every datagram (segmented sends arrive as several).
const COUNTER: u16 = 7011;
/// TCP on the server: answers how many datagrams [`COUNTER`] received (decimal) and closes.
const COUNTED: u16 = 7012;

/// Starts the server's side of this test (threads; returns at once). Bound to every address:
/// the server's own address is added after it started.
pub fn serve() {
    use std::io::Write;
    static RECEIVED: AtomicU64 = AtomicU64::new(0);
    std::thread::spawn(|| {
        let Ok(socket) = std::net::UdpSocket::bind(("0.0.0.0", COUNTER)) else { return };
        // The flood outruns one thread: room for a few thousand datagrams (drops are InErrors).
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
        let mut buf = vec![0u8; 65536];
        while socket.recv_from(&mut buf).is_ok() {
            RECEIVED.fetch_add(1, Ordering::Relaxed);
        }
    });
    std::thread::spawn(|| {
        let Ok(listener) = std::net::TcpListener::bind(("0.0.0.0", COUNTED)) else { return };
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.write_all(RECEIVED.load(Ordering::Relaxed).to_string().as_bytes());
        }
    });
}

/// The tunnel's settings under test.
const MTU: usize = 1500;
const SESSIONS: usize = 64;
/// Packets other than the flood's that tun0's drop counter may also count (see the assertion).
const OTHER_PACKETS: u64 = 8;
const QUEUE_LEN: usize = 32;
const QUEUE_BUDGET: usize = 256;
/// What one session may hold besides its queued datagrams, as the bound on `UdpSettings` states.
const PER_SESSION: u64 = 16 * 1024;
/// The test's own memory besides the tunnel's (the sender thread's stack and buffers, the memory
/// sampler, allocator bookkeeping of a new thread).
const OWN: u64 = 2 << 20;
/// How long the flood lasts, and its new sources.
const FLOOD: Duration = Duration::from_secs(3);
const NEW_SOURCES: u16 = 20_000;
const SIZE: usize = 1200;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A UDP counter of /proc/net/snmp text.
fn udp_field(snmp: &str, name: &str) -> u64 {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else { return 0 };
    let index = names.split_whitespace().position(|n| n == name);
    index.and_then(|i| values.split_whitespace().nth(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// tun0's transmit drops (the kernel's queue towards netswitch was full).
/// (/proc/net/dev is this namespace's; /sys/class/net is the namespace that mounted it.)
fn tun_queue_drops() -> u64 {
    let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
    let line = dev.lines().find(|l| l.trim_start().starts_with("tun0:")).expect("tun0 in /proc/net/dev");
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets errs drop
    line.split(':').nth(1).unwrap().split_whitespace().nth(11).unwrap().parse().unwrap()
}

/// Every stage's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stages {
    tun_queue_drops: u64,
    /// netswitch: datagrams handed to a session, and dropped (no socket budget, queue full).
    queued: u64,
    dropped_udp: u64,
    /// The sessions: datagrams sent to the server, and dropped on the way.
    sent_up: u64,
    session_drops: u64,
    /// This namespace's UDP sends the kernel dropped (netswitch's sockets).
    device_send_drops: u64,
    /// The server: datagrams its counter received, and its namespace's UDP receive errors.
    server_arrived: u64,
    server_errors: u64,
}

async fn stages(device: &Device) -> Stages {
    let counters = device.tun.counters();
    let sessions: Vec<_> = device
        .netswitch
        .manager()
        .list()
        .into_iter()
        .filter(|c| c.protocol == TransportProtocol::Udp)
        .collect();
    let (snmp, received) = blocking(|| {
        let mut snmp = String::new();
        connect(SNMP).unwrap().read_to_string(&mut snmp).unwrap();
        let mut received = String::new();
        connect(COUNTED).unwrap().read_to_string(&mut received).unwrap();
        (snmp, received.trim().parse::<u64>().unwrap())
    })
    .await;
    let device_snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
    Stages {
        tun_queue_drops: tun_queue_drops(),
        queued: counters.udp_datagrams,
        dropped_udp: counters.dropped_udp,
        sent_up: sessions.iter().map(|c| c.packets_up).sum(),
        session_drops: sessions.iter().map(|c| c.drops).sum(),
        device_send_drops: udp_field(&device_snmp, "SndbufErrors"),
        server_arrived: received,
        server_errors: udp_field(&snmp, "InErrors"),
    }
}

/// An IPv4/UDP packet from the app's `port` to the server's [`COUNTER`], checksums right.
fn packet(port: u16, sequence: u32) -> Vec<u8> {
    let builder = PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64).udp(port, COUNTER);
    let mut payload = vec![0x5au8; SIZE];
    payload[..4].copy_from_slice(&sequence.to_be_bytes());
    let mut packet = Vec::with_capacity(builder.size(SIZE));
    builder.write(&mut packet, &payload).unwrap();
    packet
}

/// Floods tun0 through a raw socket for [`FLOOD`]: each round one datagram from each of the
/// first 64 sources (which get the sessions) and one from each of 64 new sources. Returns how many the kernel took.
fn flood() -> u64 {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).unwrap();
    let to: SocketAddr = server(COUNTER);
    let to = to.into();
    let first: Vec<Vec<u8>> = (0..SESSIONS as u16).map(|i| packet(20_000 + i, i.into())).collect();
    let started = Instant::now();
    let (mut sent, mut next) = (0u64, SESSIONS as u16);
    while started.elapsed() < FLOOD {
        for datagram in &first {
            sent += u64::from(raw.send_to(datagram, &to).is_ok());
        }
        for _ in 0..SESSIONS {
            let port = 20_000 + next % NEW_SOURCES;
            next = next.wrapping_add(1).max(SESSIONS as u16);
            sent += u64::from(raw.send_to(&packet(port, u32::from(next)), &to).is_ok());
        }
    }
    sent
}

/// Thousands of new sources and the admitted sources' bursts for a few seconds: the resident
/// memory grows by less than the bound of the settings, and received + counted drops = sent.
#[test]
fn tun_udp_flood_memory_is_bounded_and_every_datagram_counted() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("udp_flood::tun_udp_flood_memory_is_bounded_and_every_datagram_counted");
    }
    flood_is_bounded_and_counted(Stack::System);
}

/// The body of [`tun_udp_flood_memory_is_bounded_and_every_datagram_counted`], TCP (the
/// server's counter queries) ending in `stack`.
pub(crate) fn flood_is_bounded_and_counted(stack: Stack) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up_with(|settings| {
            settings.mtu = MTU;
            settings.udp.session_capacity = SESSIONS;
            settings.udp.max_sockets = SESSIONS;
            settings.udp.queue_len = QUEUE_LEN;
            settings.udp.queue_budget = QUEUE_BUDGET;
            settings.stack = stack;
        })
        .await;
        // The bound stated on `UdpSettings` for these settings: S sessions, (budget + S)
        // datagrams of at most MTU - 28 bytes plus a 64-byte queue slot, S x 16 KiB.
        let sessions = SESSIONS as u64;
        let datagram = (MTU - 28 + 64) as u64;
        // Over the packet flow the link holds packets a device's queue would: the batches waiting
        // in the flow's input (`INPUT_BATCHES`, the module docs' memory bound), one more in the
        // reader's hands, of the test host's batch size, each packet at most the MTU. (On the fd,
        // tun0's queue is the kernel's memory, not this process's.)
        let flow = match device.host {
            Some(_) => ((INPUT_BATCHES + 1) * HOST_BATCH * MTU) as u64,
            None => 0,
        };
        let bound = (QUEUE_BUDGET as u64 + sessions) * datagram + sessions * PER_SESSION + OWN + flow;
        // Warm up: the server answers SNMP queries through the tunnel (TCP), the runtime's
        // threads and the sampler exist before the baseline.
        let before = stages(&device).await;
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let baseline = rss();
        let sent = blocking(flood).await;
        // Everything queued reaches its session's socket (or is dropped and counted) soon: wait
        // until no counter moves for 300 ms.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut after = stages(&device).await;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = stages(&device).await;
            if now == after || Instant::now() > deadline {
                after = now;
                break;
            }
            after = now;
        }
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let peak = peak.load(Ordering::Relaxed);
        let delta = |f: fn(&Stages) -> u64| f(&after) - f(&before);
        let tun_queue_drops = delta(|s| s.tun_queue_drops);
        let dropped_udp = delta(|s| s.dropped_udp);
        let session_drops = delta(|s| s.session_drops);
        let device_send_drops = delta(|s| s.device_send_drops);
        let arrived = delta(|s| s.server_arrived);
        let server_errors = delta(|s| s.server_errors);
        let growth = peak.saturating_sub(baseline);
        println!(
            "{stack:?}: UDP flood for {FLOOD:?}: {sent} datagrams sent; arrived {arrived}, dropped: tun0 queue \
             {tun_queue_drops}, netswitch {dropped_udp} (queued {}), sessions {session_drops}, device \
             sends {device_send_drops}, server {server_errors}; {} sessions; RSS {baseline} -> peak \
             {peak} (+{growth} bytes, bound {bound})",
            delta(|s| s.queued),
            device.tun.udp_sessions(),
        );
        assert!(sent > 10 * SESSIONS as u64, "the flood sent only {sent} datagrams");
        assert!(dropped_udp > 0, "a flood past the budgets drops (and counts) some datagrams");
        assert_eq!(device.tun.udp_sessions(), SESSIONS, "sessions stop at the socket budget");
        // Every datagram sent: lost in tun0's queue, or read by netswitch and queued to a session
        // or dropped and counted.
        let queued = delta(|s| s.queued);
        let sent_up = delta(|s| s.sent_up);
        // (tun0's drop counter also counts the device's few other packets that met the full
        // queue: IPv6 router solicitations and MLD reports of the kernel, a control
        // connection's segment; at most a handful in a flood of tens of thousands.)
        let accounted = tun_queue_drops + queued + dropped_udp;
        assert!(
            (sent..=sent + OTHER_PACKETS).contains(&accounted),
            "read or lost in tun0: {accounted} of {sent} sent: {before:?} -> {after:?}"
        );
        // Every datagram the sessions sent: received by the server, or dropped by a kernel on the
        // way (counted).
        assert_eq!(arrived + device_send_drops + server_errors, sent_up, "{before:?} -> {after:?}");
        // Every queued datagram was sent or dropped by its session (the sessions' `drops` also
        // count their queue overflows, which `dropped_udp` has too: at most that many).
        assert!(
            sent_up <= queued && queued - sent_up <= session_drops,
            "queued {queued}, sent {sent_up}, session drops {session_drops}"
        );
        assert!(growth <= bound, "RSS grew by {growth} bytes, over the bound of {bound}");
        device.tun.stop();
    });
}
