//! What UDP associations cost while idle, after one large datagram each, and after they close:
//! 2,000 SOCKS5 UDP associations on loopback, measured with a counting allocator (live heap
//! bytes) and /proc/self/status (VmRSS). Its own test binary, so both figures are its own (the
//! SOCKS clients run in it too). Linux: reads /proc/self/status.
#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::socks5::encode_udp_header;
use netswitch::{ConnectionManager, Destination, DirectOutbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// Associations held open at once.
const ASSOCIATIONS: usize = 2_000;
/// Live heap bytes one idle association may cost (server and client side together).
const IDLE_HEAP_BOUND: isize = 4 * 1024;
/// RSS the 2,000 idle associations may add, in KiB.
const IDLE_RSS_BOUND_KIB: i64 = 12 * 1024;
/// Live heap bytes one association may cost once a 65,000-byte datagram went through it (its
/// session and outbound socket included).
const BUSY_HEAP_BOUND: isize = 16 * 1024;
/// How close to the baseline the RSS must come back once every association is closed, in KiB.
const CLOSED_RSS_BOUND_KIB: i64 = 4 * 1024;
/// The large datagram's payload.
const LARGE: usize = 65_000;
const WAIT: Duration = Duration::from_secs(20);

/// Counts live heap bytes; forwards everything to the system allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counter is bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(pointer, layout) }
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status")
}

/// UDP ASSOCIATE announcing 0.0.0.0:0 (no authentication); returns the control connection and
/// the relay address.
async fn associate(server: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(server).await.expect("connect to the SOCKS server");
    control.write_all(&[5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut reply = [0u8; 12];
    timeout(WAIT, control.read_exact(&mut reply)).await.expect("reply in time").unwrap();
    assert_eq!(reply[..6], [5, 0, 5, 0, 0, 1], "method 0, then success with an IPv4 relay address");
    let relay = SocketAddr::from((
        [reply[6], reply[7], reply[8], reply[9]],
        u16::from_be_bytes([reply[10], reply[11]]),
    ));
    (control, relay)
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn idle_associations_hold_no_buffer_and_memory_comes_back() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = SocksSettings::default();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        settings.udp.max_associations = ASSOCIATIONS;
        settings.udp.max_sockets = ASSOCIATIONS;
        let server =
            SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
        // Datagrams go to a socket nobody reads: the kernel keeps or drops them, no reply.
        let sink = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut datagram = Vec::new();
        encode_udp_header(&Destination::from(sink.local_addr().unwrap()), &mut datagram).unwrap();
        datagram.resize(datagram.len() + LARGE, 0x5A);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

        // A few associations first, so what exists once per process exists before the baseline.
        for _ in 0..8 {
            let (control, relay) = associate(server.local_addr()).await;
            client.send_to(&datagram, relay).await.unwrap();
            wait_for("the warm-up session", || manager.len() == 1).await;
            drop(control);
            wait_for("the warm-up session to end", || manager.is_empty()).await;
        }
        settle().await;
        let (heap_before, rss_before) = (heap(), rss_kib());

        let mut associations = Vec::with_capacity(ASSOCIATIONS);
        for _ in 0..ASSOCIATIONS {
            associations.push(associate(server.local_addr()).await);
        }
        settle().await;
        let (heap_idle, rss_idle) = (heap(), rss_kib());

        for (_, relay) in &associations {
            client.send_to(&datagram, relay).await.unwrap();
        }
        wait_for("a session per association", || manager.len() == ASSOCIATIONS).await;
        settle().await;
        let (heap_busy, rss_busy) = (heap(), rss_kib());

        drop(associations);
        wait_for("every session to end", || manager.is_empty()).await;
        wait_for("every association to end", || server.udp_limits().associations.in_use() == 0).await;
        let deadline = Instant::now() + WAIT;
        let mut rss_closed = rss_kib();
        while rss_closed > rss_before + CLOSED_RSS_BOUND_KIB && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            rss_closed = rss_kib();
        }
        let heap_closed = heap();

        let per = |bytes: isize| bytes / ASSOCIATIONS as isize;
        eprintln!(
            "{ASSOCIATIONS} idle associations: heap +{} B each, RSS {rss_before} -> {rss_idle} KiB; \
             after one {LARGE}-byte datagram each: heap +{} B each, RSS {rss_busy} KiB; \
             all closed: heap {:+} B, RSS {rss_closed} KiB",
            per(heap_idle - heap_before),
            per(heap_busy - heap_before),
            heap_closed - heap_before,
        );
        assert!(
            per(heap_idle - heap_before) <= IDLE_HEAP_BOUND,
            "an idle association costs {} heap bytes (bound {IDLE_HEAP_BOUND})",
            per(heap_idle - heap_before)
        );
        assert!(
            rss_idle - rss_before <= IDLE_RSS_BOUND_KIB,
            "{ASSOCIATIONS} idle associations added {} KiB of RSS (bound {IDLE_RSS_BOUND_KIB})",
            rss_idle - rss_before
        );
        assert!(
            per(heap_busy - heap_before) <= BUSY_HEAP_BOUND,
            "an association with a session costs {} heap bytes (bound {BUSY_HEAP_BOUND})",
            per(heap_busy - heap_before)
        );
        assert!(
            rss_closed <= rss_before + CLOSED_RSS_BOUND_KIB,
            "RSS stayed at {rss_closed} KiB after every association closed ({rss_before} KiB before)"
        );
    });
}
