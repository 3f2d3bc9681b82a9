//! The system stack's early dial end to end (root): the outbound dial starts at the app's SYN.
//! A SYN whose handshake never completes (the app's kernel answers the SYN-ACK with a reset, as
//! after a SYN scan) dials the destination at once, is never handed to the manager, and its
//! socket is closed when its NAT entry leaves: the process's descriptors go back to the baseline.
//! (A refused early dial resetting the app's connection is in `main.rs`'s kernel-stack test.)

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use netswitch::tun::nat::{LINGER, PENDING_TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

use super::{blocking, connect, non_pipe_fds, role, run_in_namespace, server, Device, TIMEOUT};

/// The tunnel's address: the source of the app's packets.
const APP: Ipv4Addr = Ipv4Addr::new(172, 19, 0, 1);

/// Sends a lone TCP SYN from `APP:port` to `to` through the routes (into tun0), from a raw socket.
fn send_syn(port: u16, to: SocketAddr) {
    let SocketAddr::V4(to) = to else { panic!("an IPv4 destination") };
    let mut packet = Vec::new();
    PacketBuilder::ipv4(APP.octets(), to.ip().octets(), 64)
        .tcp(port, to.port(), 7, 64240)
        .syn()
        .write(&mut packet, &[])
        .unwrap();
    // The kernel writes the IP header: send the TCP segment (checksummed for APP -> to) alone.
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).unwrap();
    let destination = SocketAddr::new((*to.ip()).into(), 0);
    socket.send_to(&packet[20..], &destination.into()).unwrap();
}

async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn tun_a_syn_never_accepted_dials_and_leaves_no_socket_behind() {
    if role().as_deref() != Some("device") {
        return run_in_namespace("early_dial::tun_a_syn_never_accepted_dials_and_leaves_no_socket_behind");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let device = Device::up().await;
        // Warm up (the first connection through a fresh link, lazily built state), then measure.
        blocking(|| connect(server::PEER).unwrap().read_to_end(&mut Vec::new()).unwrap()).await;
        device.wait_idle().await;
        let fds = non_pipe_fds();
        let connections = device.tun.counters().tcp_connections;

        send_syn(45000, super::server(server::ECHO));
        // The early dial's socket: one more descriptor, and nothing went to the manager.
        until("the early dial's socket", TIMEOUT, || non_pipe_fds() == fds + 1).await;
        assert_eq!(device.tun.nat_entries(), 1, "a pending entry");
        assert_eq!(device.netswitch.manager().len(), 0, "never accepted, never handed over");
        // The entry leaves after PENDING_TIMEOUT (the sweep looks every 500 ms), with its dial.
        until("the entry and its dial to leave", PENDING_TIMEOUT + LINGER, || {
            device.tun.nat_entries() == 0 && non_pipe_fds() == fds
        })
        .await;
        let counters = device.tun.counters();
        assert_eq!(counters.tcp_connections, connections, "{counters:?}");
        println!(
            "a lone SYN: dialed at once, never accepted, gone after {PENDING_TIMEOUT:?}; fds back to {fds}"
        );
        device.tun.stop();
    });
}
