//! The userspace stack against a smoltcp client in memory: the client's packets go through the
//! tunnel's packet parser into [`Userspace::input`], the stack's packets come back through a
//! [`PacketSink`]; the manager dials real servers on loopback.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::*;
use crate::dial::direct::DirectOutbound;
use crate::manager::RelaySettings;
use crate::tun::packet::{self, Packet};
use crate::tun::test_support::eventually;

const MTU: usize = 1500;
pub(super) const APP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);

/// The stack's side of the wire: what it sends waits here for the client.
#[derive(Default)]
pub(super) struct Wire {
    pub(super) packets: Mutex<VecDeque<Vec<u8>>>,
    pub(super) arrived: Notify,
}

impl PacketSink for Wire {
    fn send(&self, packet: &[u8], offload: &crate::tun::device::Offload) -> bool {
        assert_eq!(*offload, crate::tun::device::Offload::NONE, "the wire has no offloads");
        self.packets.lock().unwrap().push_back(packet.to_vec());
        self.arrived.notify_one();
        true
    }
}

/// The client's device: reads the wire, collects what the client sends.
pub(super) struct ClientDevice {
    wire: Arc<Wire>,
    pub(super) sent: Vec<Vec<u8>>,
}

pub(super) struct Rx(Vec<u8>);
pub(super) struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0u8; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl Device for ClientDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.wire.packets.lock().unwrap().pop_front()?;
        Some((Rx(packet), Tx(&mut self.sent)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ip;
        capabilities.max_transmission_unit = MTU;
        capabilities
    }
}

/// An app with one smoltcp TCP socket, connected through the stack under test.
pub(super) struct App {
    pub(super) iface: Interface,
    pub(super) device: ClientDevice,
    pub(super) sockets: SocketSet<'static>,
    handle: SocketHandle,
    stack: Arc<Userspace>,
}

impl App {
    pub(super) fn connect(stack: Arc<Userspace>, wire: Arc<Wire>, to: SocketAddr, port: u16) -> App {
        let mut device = ClientDevice { wire, sent: Vec::new() };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, Instant::now());
        iface.update_ip_addrs(|addresses| addresses.push(IpCidr::new(IpAddress::Ipv4(APP), 24)).unwrap());
        iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(10, 0, 0, 1)).unwrap();
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 256 * 1024]),
            tcp::SocketBuffer::new(vec![0u8; 256 * 1024]),
        );
        let mut sockets = SocketSet::new(Vec::new());
        let handle = sockets.add(socket);
        let remote = (IpAddress::from(to.ip()), to.port());
        sockets.get_mut::<tcp::Socket>(handle).connect(iface.context(), remote, port).unwrap();
        App { iface, device, sockets, handle, stack }
    }

    pub(super) fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.handle)
    }

    /// Moves packets both ways, runs `step` on the socket, and waits for the next packet or
    /// timer, until `step` says done (or 20 s pass: a failure).
    pub(super) async fn run(&mut self, mut step: impl FnMut(&mut tcp::Socket<'static>) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            self.iface.poll(Instant::now(), &mut self.device, &mut self.sockets);
            for mut sent in self.device.sent.drain(..) {
                match packet::parse(&sent) {
                    Packet::Tcp(tcp) => self.stack.input(&mut sent, &tcp),
                    other => panic!("the client sent something else than TCP: {other:?}"),
                }
            }
            if step(self.socket()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out in state {}", self.socket().state());
            let delay = self
                .iface
                .poll_delay(Instant::now(), &self.sockets)
                .map_or(Duration::from_millis(5), Duration::from);
            let _ = tokio::time::timeout(
                delay.min(Duration::from_millis(5)),
                self.device.wire.arrived.notified(),
            )
            .await;
        }
    }
}

pub(super) fn stack(wire: &Arc<Wire>) -> (Arc<Userspace>, Arc<ConnectionManager>) {
    let manager = Arc::new(ConnectionManager::new(RelaySettings::default()));
    let sink: Arc<dyn PacketSink> = wire.clone();
    let counters = Arc::<crate::tun::counters::Counters>::default();
    let dns =
        Arc::new(crate::tun::dns_hijack::Hijack::new(crate::tun::DnsHijack::Off, None, counters.clone()));
    let hooks = AcceptHooks { decider: None, dns };
    let stack = Userspace::new(
        sink,
        MTU,
        false,
        manager.clone(),
        Arc::new(DirectOutbound::default()),
        counters,
        hooks,
    );
    (Arc::new(stack), manager)
}

/// The bytes of the test stream: position-dependent so that a lost or reordered piece shows.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn bytes_both_ways_and_a_half_close_each_way() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    const UP: usize = 1024 * 1024;
    // The server reads everything to the app's FIN, then answers with the length and a
    // megabyte, then closes: FIN from the app first, then from the server.
    let served = tokio::spawn(async move {
        let (mut socket, peer) = server.accept().await.unwrap();
        let mut got = Vec::new();
        socket.read_to_end(&mut got).await.unwrap();
        socket.write_all(&(got.len() as u64).to_be_bytes()).await.unwrap();
        socket.write_all(&pattern(UP)).await.unwrap();
        drop(socket);
        (got, peer)
    });
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 40001);
    let up = pattern(UP);
    let (mut sent, mut received) = (0, Vec::new());
    app.run(|socket| {
        if socket.can_send() && sent < up.len() {
            sent += socket.send_slice(&up[sent..]).unwrap();
            if sent == up.len() {
                socket.close();
            }
        }
        while socket.can_recv() {
            socket.recv(|bytes| (bytes.len(), received.extend_from_slice(bytes))).unwrap();
        }
        // The server's FIN after everything: smoltcp reports Finished.
        matches!(socket.recv_slice(&mut [0u8; 1]), Err(tcp::RecvError::Finished))
    })
    .await;
    let (got, peer) = served.await.unwrap();
    assert_eq!(got, up, "the server got the app's bytes, then its FIN");
    assert_eq!(&received[..8], &(UP as u64).to_be_bytes());
    assert!(received[8..] == pattern(UP), "the app got the server's bytes, then its FIN");
    // The manager saw the original destination and the app's source.
    assert_eq!(peer.ip(), Ipv4Addr::LOCALHOST);
    app.run(|socket| matches!(socket.state(), tcp::State::TimeWait | tcp::State::Closed)).await;
    eventually("the flow and the manager's connection left", || {
        stack.connections() == 0 && manager.is_empty()
    })
    .await;
}

/// The server closes first; the app's FIN comes after netswitch's: the stack acknowledges it
/// before the flow leaves, so the app's socket closes (else it stays in LAST-ACK, resending its
/// FIN to a flow that is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_fin_after_the_servers_is_acknowledged() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = server.accept().await.unwrap();
        socket.write_all(b"bye").await.unwrap();
        socket.shutdown().await.unwrap();
        socket.read_to_end(&mut Vec::new()).await.unwrap();
    });
    let wire = Arc::new(Wire::default());
    let (stack, manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 40006);
    let mut received = Vec::new();
    app.run(|socket| {
        while socket.can_recv() {
            socket.recv(|bytes| (bytes.len(), received.extend_from_slice(bytes))).unwrap();
        }
        matches!(socket.recv_slice(&mut [0u8; 1]), Err(tcp::RecvError::Finished))
    })
    .await;
    assert_eq!(received, b"bye");
    // The app's last bytes and its FIN in one segment.
    app.socket().send_slice(&pattern(1000)).unwrap();
    app.socket().close();
    app.run(|socket| socket.state() == tcp::State::Closed).await;
    eventually("the flow and the manager's connection left", || {
        stack.connections() == 0 && manager.is_empty()
    })
    .await;
    assert_eq!(stack.counters.snapshot().dropped_no_flow, 0, "no FIN resent to a flow that left");
}

#[tokio::test]
async fn a_refused_dial_resets_the_apps_connection() {
    let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed); // nothing listens there now: the dial is refused
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 40002);
    let mut established = false;
    app.run(|socket| {
        established |= socket.state() == tcp::State::Established;
        socket.state() == tcp::State::Closed
    })
    .await;
    assert!(established, "the stack completed the handshake before dialing");
    assert!(
        matches!(app.socket().recv_slice(&mut [0u8; 1]), Err(tcp::RecvError::InvalidState)),
        "closed by a reset, not a FIN"
    );
    eventually("the flow left", || stack.connections() == 0).await;
}

#[tokio::test]
async fn a_reset_from_the_server_reaches_the_app_as_a_reset() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = server.accept().await.unwrap();
        let mut hello = [0u8; 5];
        socket.read_exact(&mut hello).await.unwrap();
        socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket); // a reset
    });
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 40003);
    let mut said = false;
    app.run(|socket| {
        if socket.can_send() && !said {
            said = socket.send_slice(b"hello").unwrap() == 5;
        }
        socket.state() == tcp::State::Closed
    })
    .await;
    assert!(matches!(app.socket().recv_slice(&mut [0u8; 1]), Err(tcp::RecvError::InvalidState)));
    eventually("the flow left", || stack.connections() == 0).await;
}

#[tokio::test]
async fn packets_of_no_flow_are_dropped_and_counted() {
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire.clone(), "127.0.0.1:9".parse().unwrap(), 40004);
    // The SYN goes out, then an ACK of nothing: drop the SYN, hand the stack a forged ACK.
    app.iface.poll(Instant::now(), &mut app.device, &mut app.sockets);
    let mut syn = app.device.sent.pop().unwrap();
    let Packet::Tcp(tcp) = packet::parse(&syn) else { panic!("not TCP") };
    // Turn the SYN into a bare ACK: flags byte at offset 13 of the TCP header; the checksum is
    // not checked before the flow lookup.
    syn[tcp.offset + 13] = 0x10;
    let Packet::Tcp(ack) = packet::parse(&syn) else { panic!("not TCP") };
    stack.input(&mut syn, &ack);
    assert_eq!(stack.counters.snapshot().dropped_no_flow, 1);
    assert_eq!(stack.connections(), 0);
    assert!(wire.packets.lock().unwrap().is_empty(), "nothing answered");
}

/// An echo through the stack touches ring pages; idle with both rings empty for
/// [`IDLE_RELEASE`], the connection gives them back; the next echo works and touches them again.
#[tokio::test]
async fn idle_rings_give_their_pages_back() {
    let server = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = server.accept().await.unwrap();
        let (mut reader, mut writer) = socket.split();
        tokio::io::copy(&mut reader, &mut writer).await.unwrap();
    });
    let wire = Arc::new(Wire::default());
    let (stack, _manager) = stack(&wire);
    let mut app = App::connect(stack.clone(), wire, address, 40005);
    let message = pattern(100_000);
    let connection = || stack.lock().values().next().map(|flow| flow.connection.clone()).unwrap();
    echo(&mut app, &message).await;
    let touched = connection().rings_resident();
    assert!(touched > 0, "the echo touched ring pages");
    // Idle: the app's ACKs still have to arrive, then nothing happens.
    let deadline = std::time::Instant::now() + IDLE_RELEASE * 3;
    while connection().rings_resident() > 0 {
        assert!(std::time::Instant::now() < deadline, "ring pages still resident after idling");
        app.run(|_| true).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    echo(&mut app, &message).await;
    assert!(connection().rings_resident() > 0, "the next echo touched pages again");
    println!("an echo of 100000 bytes left {touched} ring pages resident; idle, they went back");
}

/// Sends `message` and reads it back (from an echo server).
pub(super) async fn echo(app: &mut App, message: &[u8]) {
    let (mut sent, mut received) = (0, Vec::new());
    app.run(|socket| {
        if socket.can_send() && sent < message.len() {
            sent += socket.send_slice(&message[sent..]).unwrap();
        }
        while socket.can_recv() {
            socket.recv(|bytes| (bytes.len(), received.extend_from_slice(bytes))).unwrap();
        }
        received.len() == message.len()
    })
    .await;
    assert!(received == message, "echoed bytes differ");
}
