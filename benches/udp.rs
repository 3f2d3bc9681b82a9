//! UDP packet rate on loopback: datagrams per second echoed directly vs through netswitch's SOCKS5
//! UDP ASSOCIATE, for 64 and 1,200 byte datagrams, in one run. A window of datagrams is kept in
//! flight; lost datagrams (none expected) are reported. Run: `cargo bench --bench udp`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netswitch::inbound::socks::{SocksServer, SocksSettings};
use netswitch::socks5::{encode_udp_header, parse_udp_header};
use netswitch::{ConnectionManager, Destination, DirectOutbound, RelaySettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const COUNT: u32 = 200_000;
const WINDOW: u32 = 32;

async fn echo_server() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    address
}

/// Echoes COUNT datagrams to `target` (each already framed), WINDOW in flight; returns
/// (datagrams per second, lost).
async fn run(socket: &UdpSocket, target: SocketAddr, datagram: &[u8], unwrap: bool) -> (f64, u32) {
    let mut buf = vec![0u8; 65_536];
    let started = Instant::now();
    let mut lost = 0;
    let mut sent = 0;
    while sent < COUNT {
        let batch = WINDOW.min(COUNT - sent);
        for _ in 0..batch {
            socket.send_to(datagram, target).await.unwrap();
        }
        sent += batch;
        for _ in 0..batch {
            match tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => {
                    if unwrap {
                        assert!(parse_udp_header(&buf[..n]).is_ok());
                    }
                }
                _ => lost += 1,
            }
        }
    }
    (f64::from(COUNT - lost) / started.elapsed().as_secs_f64(), lost)
}

async fn associate(server: SocketAddr, client: SocketAddr) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(server).await.unwrap();
    control.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    control.read_exact(&mut method).await.unwrap();
    let SocketAddr::V4(client) = client else { panic!("IPv4 client") };
    let mut request = vec![5, 3, 0, 1];
    request.extend_from_slice(&client.ip().octets());
    request.extend_from_slice(&client.port().to_be_bytes());
    control.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    control.read_exact(&mut reply).await.unwrap();
    let relay = SocketAddr::from((
        [reply[4], reply[5], reply[6], reply[7]],
        u16::from_be_bytes([reply[8], reply[9]]),
    ));
    (control, relay)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark not run: use `cargo bench --bench udp` (built and started by cargo test only)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let echo = echo_server().await;
        let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
        let mut settings = SocksSettings::default();
        settings.listen = "127.0.0.1:0".parse().unwrap();
        let socks =
            SocksServer::start(settings, manager.clone(), Arc::new(DirectOutbound::default())).await.unwrap();
        println!("UDP echo over loopback, {COUNT} datagrams per cell, {WINDOW} in flight");
        println!(
            "{:>6} | {:>14} | {:>14} | {:>6} | lost (direct/netswitch)",
            "size", "direct dgram/s", "netswitch dg/s", "ratio"
        );
        for size in [64usize, 1200] {
            let payload = vec![0x5A; size];
            let direct_socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (direct, direct_lost) = run(&direct_socket, echo, &payload, false).await;
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let (_control, relay) = associate(socks.local_addr(), client.local_addr().unwrap()).await;
            let mut framed = Vec::new();
            encode_udp_header(&Destination::from(echo), &mut framed).expect("an IP header encodes");
            framed.extend_from_slice(&payload);
            let (relayed, relayed_lost) = run(&client, relay, &framed, true).await;
            println!(
                "{size:>6} | {direct:>14.0} | {relayed:>14.0} | {:>5.2}x | {direct_lost}/{relayed_lost}",
                relayed / direct
            );
        }
    });
}
