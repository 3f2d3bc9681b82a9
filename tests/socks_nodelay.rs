//! Issue 11 finding 1: every client-facing socket has `TCP_NODELAY`, so a destination that answers
//! in two small writes (TLS records, HTTP/2 frames, SSH) does not cost the client a ~40 ms
//! Nagle + delayed-ACK stall per exchange. Checked on both client paths: the socket accepted by
//! the SOCKS server and a socket handed over by the host (`Inbound::plain`).
//!
//! The assertion reads the option back from netswitch's own socket (the test process is the
//! netswitch process); the median round trip of 50 exchanges is printed next to the direct one
//! (`cargo test --test socks_nodelay -- --nocapture`), not asserted.

mod socks_client;

use std::net::SocketAddr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::inbound::socks::SocksSettings;
use netswitch::{ConnectionManager, DirectOutbound, Inbound, Metadata, RelaySettings};
use socks_client::{median, open_tunnel, start_proxy, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const EXCHANGES: usize = 50;
const REQUEST: &[u8; 4] = b"ask?";
const HALF: usize = 100;

/// A server that answers every 4-byte request with two 100-byte writes 1 ms apart.
async fn two_write_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 4];
                while stream.read_exact(&mut request).await.is_ok() {
                    if stream.write_all(&[1u8; HALF]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    if stream.write_all(&[2u8; HALF]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Runs `EXCHANGES` request/answer exchanges and returns the median round trip.
async fn median_round_trip(stream: &mut TcpStream) -> Duration {
    let mut samples = Vec::with_capacity(EXCHANGES);
    let mut answer = [0u8; 2 * HALF];
    for _ in 0..EXCHANGES {
        let started = Instant::now();
        stream.write_all(REQUEST).await.unwrap();
        timeout(WAIT, stream.read_exact(&mut answer)).await.expect("answer timed out").unwrap();
        samples.push(started.elapsed());
        assert!(answer[..HALF].iter().all(|&b| b == 1) && answer[HALF..].iter().all(|&b| b == 2));
    }
    median(&mut samples)
}

/// `TCP_NODELAY` of this process's socket whose local and peer addresses are the given ones.
fn nodelay_of_socket(local: SocketAddr, peer: SocketAddr) -> Option<bool> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: only borrowed for the calls below; a descriptor closed meanwhile by another test
        // makes them fail with EBADF, and a reused one does not match both addresses.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let addresses = (socket.local_addr(), socket.peer_addr());
        if let (Ok(l), Ok(p)) = addresses {
            if l.as_socket() == Some(local) && p.as_socket() == Some(peer) {
                return socket.tcp_nodelay().ok();
            }
        }
    }
    None
}

#[tokio::test]
async fn the_accepted_socks_socket_has_nodelay() {
    let destination = two_write_server().await;
    let mut direct = TcpStream::connect(destination).await.unwrap();
    direct.set_nodelay(true).unwrap();
    let direct_p50 = median_round_trip(&mut direct).await;

    let proxy = start_proxy(SocksSettings::default()).await;
    let mut client = timeout(WAIT, open_tunnel(proxy.addr(), destination)).await.unwrap().unwrap();
    let proxied_p50 = median_round_trip(&mut client).await;
    println!(
        "SOCKS path, {EXCHANGES} exchanges answered in two writes: p50 {:.1} ms through netswitch, \
         {:.1} ms direct",
        proxied_p50.as_secs_f64() * 1e3,
        direct_p50.as_secs_f64() * 1e3
    );
    let server_side = nodelay_of_socket(proxy.addr(), client.local_addr().unwrap());
    assert_eq!(server_side, Some(true), "TCP_NODELAY of netswitch's accepted SOCKS socket");
}

#[tokio::test]
async fn a_socket_handed_over_by_the_host_gets_nodelay() {
    let destination = two_write_server().await;
    let manager = ConnectionManager::new(RelaySettings::default());
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(front.local_addr().unwrap()).await.unwrap();
    client.set_nodelay(true).unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    // A second descriptor of the same socket, to read its options after the hand-over.
    let accepted = accepted.into_std().unwrap();
    let watcher = accepted.try_clone().unwrap();
    assert!(!watcher.nodelay().unwrap(), "an accepted socket starts without TCP_NODELAY");
    let accepted = TcpStream::from_std(accepted).unwrap();
    manager.new_connection(
        Inbound::plain(accepted),
        Metadata::new(destination.into()),
        Arc::new(DirectOutbound::default()),
        |_| {},
    );
    let p50 = median_round_trip(&mut client).await;
    println!(
        "host fd path, {EXCHANGES} exchanges answered in two writes: p50 {:.1} ms through netswitch",
        p50.as_secs_f64() * 1e3
    );
    assert!(watcher.nodelay().unwrap(), "TCP_NODELAY of the socket handed over by the host");
}
