//! The userspace stack behind a whole tunnel on a packet flow (the iOS configuration): the app's
//! crafted segments go in through [`PacketFlowInput`], the stack's come back through a
//! [`PacketFlowWriter`]; the manager dials a server on loopback. What the tunnel's life does to
//! the stack's connections: stopping it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etherparse::{PacketBuilder, TcpSlice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::dial::direct::DirectOutbound;
use crate::manager::{ConnectionManager, RelaySettings};
use crate::tun::flow::{PacketFlowInput, PacketFlowWriter};
use crate::tun::test_support::eventually;
use crate::tun::{Stack, Tun, TunSettings};

const APP: [u8; 4] = [172, 19, 0, 1];

/// The host: keeps every packet the tunnel writes.
#[derive(Default)]
struct Host(Mutex<Vec<Vec<u8>>>);

impl PacketFlowWriter for Host {
    fn write_packets(&self, packets: Vec<Vec<u8>>, _: Vec<i32>) {
        self.0.lock().unwrap().extend(packets);
    }
}

/// A segment the tunnel wrote to the app's `port`.
struct Out {
    seq: u32,
    syn: bool,
    rst: bool,
    payload: Vec<u8>,
}

impl Host {
    /// The segments written so far to the app's `port`.
    fn to(&self, port: u16) -> Vec<Out> {
        let packets = self.0.lock().unwrap();
        let segments = packets.iter().filter_map(|packet| TcpSlice::from_slice(&packet[20..]).ok());
        segments
            .filter(|tcp| tcp.destination_port() == port)
            .map(|tcp| Out {
                seq: tcp.sequence_number(),
                syn: tcp.syn(),
                rst: tcp.rst(),
                payload: tcp.payload().to_vec(),
            })
            .collect()
    }
}

/// An app segment from `port` to `to`: a SYN when `ack` is `None`, else an ACK with `payload`.
fn segment(port: u16, to: SocketAddr, seq: u32, ack: Option<u32>, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    let builder = PacketBuilder::ipv4(APP, to.ip().octets(), 64).tcp(port, to.port(), seq, 64240);
    let builder = match ack {
        None => builder.syn(),
        Some(ack) => builder.ack(ack).psh(),
    };
    let mut packet = Vec::new();
    builder.write(&mut packet, payload).unwrap();
    packet
}

/// A userspace tunnel on a packet flow, its input, and its host.
fn tunnel(manager: &Arc<ConnectionManager>) -> (Tun, PacketFlowInput, Arc<Host>) {
    let mut settings = TunSettings::inet4(Ipv4Addr::from(APP), 30);
    settings.stack = Stack::Userspace;
    let host = Arc::new(Host::default());
    let (tun, input) = Tun::start_packet_flow(
        settings,
        manager.clone(),
        Arc::new(DirectOutbound::default()),
        None,
        host.clone(),
    )
    .unwrap();
    (tun, input, host)
}

/// Stopping the tunnel resets every connection of the userspace stack at once, established or
/// still in its handshake: the resets reach the app within the grace period, the stack holds
/// nothing afterwards, and no task of a connection is left waiting for an app that can no longer
/// answer (its packets no longer come in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_resets_every_connection_of_the_stack_at_once() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let (tun, input, host) = tunnel(&manager);
    // One app completes its handshake and says hello; another only sends its SYN.
    input.send(vec![segment(40000, address, 100, None, &[])]).await.unwrap();
    eventually("the SYN-ACK", || host.to(40000).iter().any(|out| out.syn)).await;
    let theirs = host.to(40000)[0].seq.wrapping_add(1);
    input.send(vec![segment(40000, address, 101, Some(theirs), b"hello")]).await.unwrap();
    let (mut socket, _) =
        tokio::time::timeout(Duration::from_secs(5), server.accept()).await.unwrap().unwrap();
    let mut hello = [0u8; 5];
    socket.read_exact(&mut hello).await.unwrap();
    socket.write_all(b"hi").await.unwrap();
    eventually("the server's answer", || host.to(40000).iter().any(|out| out.payload == b"hi")).await;
    input.send(vec![segment(40001, address, 7, None, &[])]).await.unwrap();
    eventually("the second SYN-ACK", || host.to(40001).iter().any(|out| out.syn)).await;
    assert_eq!(tun.nat_entries(), 2);

    tun.stop();
    // A SYN during the grace period (the tunnel still reads) opens nothing.
    input.send(vec![segment(40002, address, 7, None, &[])]).await.unwrap();
    eventually("both apps reset", || {
        host.to(40000).iter().any(|out| out.rst) && host.to(40001).iter().any(|out| out.rst)
    })
    .await;
    eventually("the stack holds nothing", || tun.nat_entries() == 0).await;
    assert!(host.to(40002).is_empty(), "a stopped stack answered a SYN");
    eventually("the manager's connection ended", || manager.is_empty()).await;
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest)).await.unwrap();
}
