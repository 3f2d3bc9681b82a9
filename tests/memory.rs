//! Memory is given back after a burst: 10,000 TCP connections relayed through the manager on
//! loopback, 1,000 open at once, then closed; the process's RSS must come back to within
//! [`BOUND_KIB`] of where it was before. Its own test binary, so the RSS is its own (the clients
//! and the echo server run in it too, with small fixed buffers). Linux: reads /proc/self/status.
#![cfg(target_os = "linux")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::{ConnectionManager, DirectOutbound, Inbound, Metadata, Outbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Barrier;

/// Connections relayed in all.
const CONNECTIONS: usize = 10_000;
/// Connections open at once (one wave).
const AT_ONCE: usize = 1_000;
/// Bytes each client sends and gets echoed.
const PAYLOAD: usize = 1024;
/// How close to the baseline the RSS must come back once every connection is closed.
const BOUND_KIB: u64 = 2 * 1024;
/// How long the RSS may take to come back (the release runs about a second after a burst).
const SETTLE: Duration = Duration::from_secs(15);

static DATA: [u8; PAYLOAD] = [0x5A; PAYLOAD];

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line in /proc/self/status")
}

/// A loopback listener with a backlog deep enough for a whole wave.
fn listener() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// Echoes every connection, through a small buffer inside the task.
fn echo_server() -> SocketAddr {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// A front listener whose every accepted connection is handed to the manager, to `destination`.
fn front(manager: Arc<ConnectionManager>, destination: SocketAddr) -> SocketAddr {
    let listener = listener();
    let address = listener.local_addr().unwrap();
    let outbound: Arc<dyn Outbound> = Arc::new(DirectOutbound::default());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let metadata = Metadata::new(destination.into());
            manager.new_connection(Inbound::plain(stream), metadata, outbound.clone(), |closed| {
                if let Some(error) = closed.error {
                    panic!("relayed connection {} failed: {error}", closed.id);
                }
            });
        }
    });
    address
}

/// Opens `count` connections through `front`, echoes [`PAYLOAD`] bytes on each, and keeps them
/// all open until every one has; returns the RSS measured at that moment, then closes them.
async fn wave(front: SocketAddr, count: usize) -> u64 {
    let all_open = Arc::new(Barrier::new(count + 1));
    let closing = Arc::new(Barrier::new(count + 1));
    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let (all_open, closing) = (all_open.clone(), closing.clone());
        clients.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(front).await.expect("connect to the front listener");
            stream.write_all(&DATA).await.expect("send the payload");
            let mut echoed = 0;
            let mut buf = [0u8; 1024];
            while echoed < PAYLOAD {
                let n = stream.read(&mut buf).await.expect("read the echo");
                assert!(n > 0, "the relay closed after {echoed} of {PAYLOAD} echoed bytes");
                echoed += n;
            }
            all_open.wait().await;
            closing.wait().await;
        }));
    }
    all_open.wait().await;
    let rss = rss_kib();
    closing.wait().await;
    for client in clients {
        client.await.expect("a client task failed");
    }
    rss
}

async fn until_empty(manager: &ConnectionManager) {
    let deadline = Instant::now() + SETTLE;
    while !manager.is_empty() {
        assert!(Instant::now() < deadline, "{} connections still live", manager.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn rss_comes_back_after_ten_thousand_connections() {
    // Two workers, as the façade's lightweight runtime (the iOS Network Extension).
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let front = front(manager.clone(), echo_server());
        // A small wave first, so what exists once per process (runtime, pools, timers) exists
        // before the baseline.
        wave(front, 64).await;
        until_empty(&manager).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = rss_kib();
        let started = Instant::now();
        let mut peak = 0;
        for _ in 0..CONNECTIONS / AT_ONCE {
            peak = peak.max(wave(front, AT_ONCE).await);
        }
        until_empty(&manager).await;
        let closed = rss_kib();
        let deadline = Instant::now() + SETTLE;
        let mut last = closed;
        while last > baseline + BOUND_KIB && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = rss_kib();
        }
        eprintln!(
            "RSS: baseline {baseline} KiB, peak {peak} KiB with {AT_ONCE} open, {closed} KiB when all \
             {CONNECTIONS} were closed, {last} KiB after settling (bound: baseline + {BOUND_KIB} KiB); \
             relaying took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        assert!(
            peak >= baseline + 2 * BOUND_KIB,
            "the burst did not grow the heap enough (peak {peak} KiB, baseline {baseline} KiB) to test anything"
        );
        assert!(
            last <= baseline + BOUND_KIB,
            "RSS stayed at {last} KiB, more than {BOUND_KIB} KiB above the baseline of {baseline} KiB"
        );
    });
}
