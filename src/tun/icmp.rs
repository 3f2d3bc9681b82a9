//! ICMP echo (ping) through the tunnel, relayed over unprivileged ICMP datagram sockets.
//!
//! An echo request the app sends to a remote host (ICMPv4 type 8 or ICMPv6 type 128, checksum
//! verified) belongs to the flow (app source, app identifier, destination). Each flow has one
//! ping socket ([`Outbound::open_icmp`]: bound to the interface the strategy chooses for that
//! destination, like a UDP session's socket) that sends the request as the app wrote it. The
//! kernel answers with its own identifier (Linux rewrites the echo identifier to the socket's);
//! each reply from the destination is written into the device as an IP/ICMP echo reply from the
//! destination to the app, with the app's identifier and the reply's sequence number and data,
//! checksums computed anew (ICMPv6's over the pseudo-header). There are no made-up replies: a
//! host that does not answer leaves the app without a reply, as on a plain network.
//!
//! Bounds: at most [`CAPACITY`] flows (an echo that would open one more is dropped), each
//! queueing at most [`QUEUE`] requests while its socket opens; a flow closes after
//! [`IDLE_TIMEOUT`] without an echo either way. Every drop is counted: `dropped_icmp_denied`
//! when no ping socket can be had (Linux: the process's group is not in
//! `net.ipv4.ping_group_range`, logged once as a warning; an outbound without ICMP),
//! `dropped_icmp` otherwise (no network, table or queue full, the socket refused the request).
//!
//! Not relayed (counted as unsupported): echoes to the tunnel's own or NAT address (the
//! device's kernel answers its own address without the tunnel; nothing lives behind the NAT
//! address, so no reply is right), to multicast, broadcast, unspecified or loopback addresses;
//! every other ICMP message the app sends (destination unreachable, …).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use etherparse::{Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, Ipv4HeaderSlice, PacketBuilder};
use nix::sys::socket::{recvfrom, SockaddrStorage};
use socket2::Socket;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::counters::bump;
use super::packet::Echo;
use super::Io;
use crate::dial::icmp::is_denied;
use crate::dial::Outbound;
use crate::metadata::{Destination, Metadata};

/// How long a flow lives without an echo request or reply. Linux's conntrack forgets an ICMP
/// flow after 30 s (`nf_conntrack_icmp_timeout`); `ping`'s default interval is 1 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many flows (ping sockets) at once: a sweep over a /25 fits.
pub const CAPACITY: usize = 128;
/// Requests a flow holds while its socket opens.
pub const QUEUE: usize = 16;
/// Hop limit of the replies written to the device.
const TTL: u8 = 64;
/// The largest reply read (an IPv4 header on Apple platforms, the ICMP message).
const MAX_REPLY: usize = 65535;

/// One flow: the app's address and identifier, and the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    app: IpAddr,
    identifier: u16,
    destination: IpAddr,
}

#[derive(Debug)]
struct Flow {
    queue: mpsc::Sender<Vec<u8>>,
    task: AbortHandle,
}

/// The tunnel's echo flows (see the module docs).
pub(crate) struct IcmpTable {
    outbound: Arc<dyn Outbound>,
    /// The tunnel's own and NAT addresses.
    local: Vec<IpAddr>,
    flows: Mutex<HashMap<Key, Flow>>,
    /// Whether the "no ping sockets" warning was logged.
    warned: AtomicBool,
}

impl std::fmt::Debug for IcmpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpTable").field("local", &self.local).field("flows", &self.len()).finish()
    }
}

impl IcmpTable {
    /// A table whose sockets come from `outbound`; echoes to `local` are not relayed.
    pub fn new(outbound: Arc<dyn Outbound>, local: Vec<IpAddr>) -> IcmpTable {
        IcmpTable { outbound, local, flows: Mutex::default(), warned: AtomicBool::new(false) }
    }

    /// How many flows are open.
    pub fn len(&self) -> usize {
        lock(&self.flows).len()
    }

    /// Closes every flow (their sockets, their hold on the device).
    pub fn close_all(&self) {
        for (_, flow) in lock(&self.flows).drain() {
            flow.task.abort();
        }
    }

    /// Hands one echo request to its flow (opened on its first request). Must run inside the
    /// tunnel's runtime.
    pub fn dispatch(self: &Arc<Self>, echo: &Echo<'_>, io: &Arc<Io>) {
        let destination = echo.destination;
        let broadcast = matches!(destination, IpAddr::V4(v4) if v4.is_broadcast());
        if destination.is_multicast()
            || destination.is_unspecified()
            || destination.is_loopback()
            || broadcast
            || self.local.contains(&destination)
        {
            bump(&io.counters.dropped_unsupported);
            return;
        }
        let key = Key { app: echo.source, identifier: echo.identifier, destination };
        let mut flows = lock(&self.flows);
        if let Some(flow) = flows.get(&key) {
            match flow.queue.try_send(echo.message.to_vec()) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => return bump(&io.counters.dropped_icmp),
                // Its task ended (its socket failed): a new flow takes over.
                Err(mpsc::error::TrySendError::Closed(_)) => flows.remove(&key),
            };
        }
        if flows.len() >= CAPACITY {
            bump(&io.counters.dropped_icmp);
            return;
        }
        let (queue, requests) = mpsc::channel(QUEUE);
        // A fresh channel has room for the first request.
        let _ = queue.try_send(echo.message.to_vec());
        let task = tokio::spawn(run(self.clone(), key, requests, io.clone()));
        flows.insert(key, Flow { queue, task: task.abort_handle() });
    }

    /// Removes the flow `key` when no request waits in `requests` (checked under the table's
    /// lock, which every request is queued under): true when it was removed.
    fn remove_if_idle(&self, key: &Key, requests: &mpsc::Receiver<Vec<u8>>) -> bool {
        let mut flows = lock(&self.flows);
        let idle = requests.is_empty();
        if idle {
            flows.remove(key);
        }
        idle
    }
}

/// One flow's life: open the socket, then send the requests and relay the replies until idle.
async fn run(table: Arc<IcmpTable>, key: Key, mut requests: mpsc::Receiver<Vec<u8>>, io: Arc<Io>) {
    let counters = &io.counters;
    let metadata = Metadata::new(Destination::from(SocketAddr::new(key.destination, 0)))
        .with_source(SocketAddr::new(key.app, 0));
    let dialed = match table.outbound.open_icmp(&metadata).await {
        Ok(dialed) => dialed,
        Err(error) => {
            let denied = is_denied(&error);
            lock(&table.flows).remove(&key);
            requests.close();
            let counter = if denied { &counters.dropped_icmp_denied } else { &counters.dropped_icmp };
            while requests.try_recv().is_ok() {
                bump(counter);
            }
            if denied && !table.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "TUN ICMP echo: no ping socket allowed, echo requests are dropped (Linux: add this process's group to net.ipv4.ping_group_range)");
            } else {
                tracing::debug!(%error, "TUN ICMP echo dropped");
            }
            return;
        }
    };
    let socket = dialed.socket;
    tracing::debug!(app = %key.app, destination = %key.destination, via = %dialed.egress, "TUN ICMP echo flow opened");
    let expected = kernel_identifier(socket.get_ref(), key.identifier);
    let mut buffer = vec![0u8; MAX_REPLY];
    let mut idle = Instant::now() + IDLE_TIMEOUT;
    loop {
        tokio::select! {
            request = requests.recv() => {
                // None: the tunnel stopped (its table let go of the flow).
                let Some(message) = request else { return };
                idle = Instant::now() + IDLE_TIMEOUT;
                match socket.get_ref().send(&message) {
                    Ok(_) => bump(&counters.icmp_echoes),
                    Err(error) => {
                        bump(&counters.dropped_icmp);
                        tracing::debug!(destination = %key.destination, %error, "TUN ICMP echo not sent");
                    }
                }
            }
            ready = socket.readable() => {
                let Ok(mut guard) = ready else { return };
                match guard.try_io(|inner| receive(inner.get_ref(), &mut buffer)) {
                    Ok(Ok((len, from))) if from == Some(key.destination) => {
                        if let Some(packet) = reply_packet(&key, expected, &buffer[..len]) {
                            idle = Instant::now() + IDLE_TIMEOUT;
                            if io.send(&packet) {
                                bump(&counters.icmp_replies);
                            }
                        }
                    }
                    Ok(Ok(_)) | Err(_) => {} // from another host; or nothing to read after all
                    // An ICMP error about an earlier request (host unreachable, …): no reply.
                    Ok(Err(error)) => tracing::trace!(destination = %key.destination, %error, "TUN ICMP echo socket"),
                }
            }
            () = tokio::time::sleep_until(idle) => {
                if table.remove_if_idle(&key, &requests) {
                    return;
                }
                idle = Instant::now() + IDLE_TIMEOUT;
            }
        }
    }
}

/// Reads one datagram from the echo socket into `buffer`: its length and its sender.
fn receive(socket: &Socket, buffer: &mut [u8]) -> std::io::Result<(usize, Option<IpAddr>)> {
    let (len, from) = recvfrom::<SockaddrStorage>(socket.as_raw_fd(), buffer)?;
    let from = from.and_then(|address| {
        let v4 = address.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip()));
        v4.or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
    });
    Ok((len, from))
}

/// The identifier the destination's replies carry: on Linux and Android the kernel's (the
/// socket's "port"), elsewhere the app's own (sent unchanged).
fn kernel_identifier(socket: &Socket, app: u16) -> u16 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(port) = socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()) {
        return port;
    }
    let _ = socket;
    app
}

/// The packet to write into the device for `datagram`, a message the flow's socket received:
/// an echo reply with identifier `expected` becomes an IP/ICMP echo reply from the destination
/// to the app with the app's identifier. Anything else: `None`.
fn reply_packet(key: &Key, expected: u16, datagram: &[u8]) -> Option<Vec<u8>> {
    let mut packet = Vec::new();
    match (key.destination, key.app) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            // Apple platforms hand an IPv4 ping socket the IP header too (ICMP type 0x4_ is
            // no echo reply, so the two cannot be confused).
            let message = match datagram.first() {
                Some(byte) if byte >> 4 == 4 => {
                    let header = Ipv4HeaderSlice::from_slice(datagram).ok()?;
                    datagram.get(header.slice().len()..)?
                }
                _ => datagram,
            };
            let icmp = Icmpv4Slice::from_slice(message).ok()?;
            let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else { return None };
            if echo.id != expected {
                return None;
            }
            PacketBuilder::ipv4(from.octets(), to.octets(), TTL)
                .icmpv4_echo_reply(key.identifier, echo.seq)
                .write(&mut packet, icmp.payload())
                .ok()?;
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let icmp = Icmpv6Slice::from_slice(datagram).ok()?;
            let Icmpv6Type::EchoReply(echo) = icmp.icmp_type() else { return None };
            if echo.id != expected {
                return None;
            }
            PacketBuilder::ipv6(from.octets(), to.octets(), TTL)
                .icmpv6_echo_reply(key.identifier, echo.seq)
                .write(&mut packet, icmp.payload())
                .ok()?;
        }
        _ => return None,
    }
    Some(packet)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dial::{BoxFuture, DialError, DialedStream};
    use crate::tun::counters::Counters;
    use crate::tun::device::{Framing, TunDevice};
    use crate::tun::packet::{parse as parse_packet, parse_icmp as parse, Drop, Packet};
    use etherparse::checksum::Sum16BitWords;
    use etherparse::{IpNumber, NetSlice, SlicedPacket, TransportSlice};
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixDatagram;

    const APP: [u8; 4] = [172, 19, 0, 1];
    const HOST: [u8; 4] = [10, 200, 9, 1];
    const APP6: [u8; 16] = [0xfd, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const HOST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn request_v4(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv4(APP, HOST, 64).icmpv4_echo_request(id, seq).write(&mut packet, data).unwrap();
        packet
    }

    fn request_v6(id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv6(APP6, HOST6, 64).icmpv6_echo_request(id, seq).write(&mut packet, data).unwrap();
        packet
    }

    /// The ICMP message of an IP packet built by etherparse.
    fn message_of(packet: &[u8]) -> Vec<u8> {
        let sliced = SlicedPacket::from_ip(packet).unwrap();
        match sliced.transport.unwrap() {
            TransportSlice::Icmpv4(icmp) => icmp.slice().to_vec(),
            TransportSlice::Icmpv6(icmp) => icmp.slice().to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn echo_requests_are_parsed_with_their_message() {
        let packet = request_v4(0x1234, 7, b"abcdefgh");
        let Packet::Icmp(echo) = parse_packet(&packet) else { panic!("{:?}", parse_packet(&packet)) };
        assert_eq!((echo.source, echo.destination), (IpAddr::from(APP), IpAddr::from(HOST)));
        assert_eq!((echo.identifier, echo.sequence), (0x1234, 7));
        assert_eq!(echo.message, &message_of(&packet)[..]);
        assert_eq!(&echo.message[8..], b"abcdefgh");

        let packet = request_v6(9, 65535, b"odd");
        let Packet::Icmp(echo) = parse_packet(&packet) else { panic!("{:?}", parse_packet(&packet)) };
        assert_eq!((echo.source, echo.destination), (IpAddr::from(APP6), IpAddr::from(HOST6)));
        assert_eq!((echo.identifier, echo.sequence, &echo.message[8..]), (9, 65535, &b"odd"[..]));
    }

    #[test]
    fn other_icmp_bad_checksums_and_short_messages_are_dropped() {
        // A data byte flipped: the ICMP checksum (v6: with the pseudo-header) fails.
        for mut packet in [request_v4(1, 1, b"data"), request_v6(1, 1, b"data")] {
            let last = packet.len() - 1;
            packet[last] ^= 0x40;
            assert_eq!(parse_packet(&packet), Packet::Dropped(Drop::BadChecksum));
        }
        // The v6 checksum covers the addresses: the same message to another host fails.
        let packet = request_v6(1, 1, b"data");
        let message = message_of(&packet);
        let other: IpAddr = "2001:db8:9::2".parse().unwrap();
        assert_eq!(
            parse(APP6.into(), other, IpNumber::IPV6_ICMP, &message),
            Packet::Dropped(Drop::BadChecksum)
        );
        // ICMPv6 inside IPv4, ICMPv4 inside IPv6: not echo requests.
        let v4 = message_of(&request_v4(1, 1, b""));
        assert_eq!(
            parse(APP.into(), HOST.into(), IpNumber::IPV6_ICMP, &v4),
            Packet::Dropped(Drop::Unsupported)
        );
        assert_eq!(parse(APP6.into(), HOST6.into(), IpNumber::ICMP, &v4), Packet::Dropped(Drop::Unsupported));
        assert_eq!(
            parse(APP.into(), HOST.into(), IpNumber::ICMP, &v4[..7]),
            Packet::Dropped(Drop::Malformed)
        );
        // Echo replies and errors from the app: not relayed.
        let mut packet = Vec::new();
        PacketBuilder::ipv4(APP, HOST, 64).icmpv4_echo_reply(1, 1).write(&mut packet, b"x").unwrap();
        assert_eq!(parse_packet(&packet), Packet::Dropped(Drop::Unsupported));
        let mut packet = Vec::new();
        let unreachable =
            etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port);
        PacketBuilder::ipv4(APP, HOST, 64).icmpv4(unreachable).write(&mut packet, &[0; 28]).unwrap();
        assert_eq!(parse_packet(&packet), Packet::Dropped(Drop::Unsupported));
    }

    /// The ICMP checksum recomputed by hand (RFC 1071; ICMPv6 with the RFC 8200 pseudo-header):
    /// zero when the message's own checksum is right.
    fn residue(packet: &[u8]) -> u16 {
        let message = message_of(packet);
        let mut words: Vec<u8> = Vec::new();
        if packet[0] >> 4 == 6 {
            words.extend_from_slice(&packet[8..40]);
            words.extend_from_slice(&(message.len() as u32).to_be_bytes());
            words.extend_from_slice(&[0, 0, 0, 58]);
        }
        words.extend_from_slice(&message);
        if words.len() % 2 == 1 {
            words.push(0);
        }
        let mut sum: u32 = words.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn replies_carry_the_apps_identifier_and_valid_checksums() {
        let key = Key { app: APP.into(), identifier: 0x1234, destination: HOST.into() };
        // What a Linux ping socket receives: the ICMP message, the kernel's identifier.
        let mut linux = Vec::new();
        Icmpv4Slice::from_slice(&message_of(&{
            let mut packet = Vec::new();
            PacketBuilder::ipv4(HOST, APP, 64)
                .icmpv4_echo_reply(4242, 7)
                .write(&mut packet, b"payload")
                .unwrap();
            packet
        }))
        .unwrap()
        .slice()
        .clone_into(&mut linux);
        let packet = reply_packet(&key, 4242, &linux).expect("a reply");
        let sliced = SlicedPacket::from_ip(&packet).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else { panic!() };
        assert_eq!((ip.header().source(), ip.header().destination()), (HOST, APP));
        assert_eq!(
            Sum16BitWords::new().add_slice(ip.header().slice()).ones_complement(),
            0,
            "IPv4 header checksum"
        );
        let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else { panic!() };
        let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else { panic!("{:?}", icmp.icmp_type()) };
        assert_eq!((echo.id, echo.seq, icmp.payload()), (0x1234, 7, &b"payload"[..]));
        assert_eq!(residue(&packet), 0, "ICMP checksum, computed a second way");
        // Apple: the same message behind its IPv4 header gives the same packet.
        let mut apple = Vec::new();
        PacketBuilder::ipv4(HOST, [10, 200, 1, 2], 57)
            .icmpv4_echo_reply(4242, 7)
            .write(&mut apple, b"payload")
            .unwrap();
        assert_eq!(reply_packet(&key, 4242, &apple).as_ref(), Some(&packet));
        // Another identifier, an echo request, garbage: nothing for the app.
        assert_eq!(reply_packet(&key, 4243, &linux), None);
        assert_eq!(reply_packet(&key, 4242, &message_of(&request_v4(4242, 7, b"x"))), None);
        assert_eq!(reply_packet(&key, 4242, &[0x45, 0, 0]), None);
        assert_eq!(reply_packet(&key, 4242, &[]), None);

        let key6 = Key { app: APP6.into(), identifier: 9, destination: HOST6.into() };
        let mut reply = Vec::new();
        PacketBuilder::ipv6(HOST6, [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 64)
            .icmpv6_echo_reply(31000, 65535)
            .write(&mut reply, b"odd")
            .unwrap();
        let packet = reply_packet(&key6, 31000, &message_of(&reply)).expect("a reply");
        let sliced = SlicedPacket::from_ip(&packet).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &sliced.net else { panic!() };
        assert_eq!((ip.header().source(), ip.header().destination()), (HOST6, APP6));
        let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else { panic!() };
        assert!(icmp.is_checksum_valid(HOST6, APP6), "etherparse verifies the ICMPv6 checksum");
        assert_eq!(residue(&packet), 0, "ICMPv6 checksum with the pseudo-header, computed a second way");
        let Icmpv6Type::EchoReply(echo) = icmp.icmp_type() else { panic!() };
        assert_eq!((echo.id, echo.seq, icmp.payload()), (9, 65535, &b"odd"[..]));
        // A family mix never yields a packet.
        assert_eq!(reply_packet(&key, 31000, &message_of(&reply)), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Any echo request parses with its identifier, sequence and data; the reply to it (with
        /// any kernel identifier) goes back to the app with the app's identifier, the same
        /// sequence and data, and checksums that verify.
        #[test]
        fn any_echo_round_trips(
            v6 in proptest::prelude::any::<bool>(),
            id in proptest::prelude::any::<u16>(),
            kernel in proptest::prelude::any::<u16>(),
            seq in proptest::prelude::any::<u16>(),
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let packet = if v6 { request_v6(id, seq, &data) } else { request_v4(id, seq, &data) };
            let request = echo(&packet);
            proptest::prop_assert_eq!((request.identifier, request.sequence, &request.message[8..]), (id, seq, &data[..]));
            let key = Key { app: request.source, identifier: id, destination: request.destination };
            let mut answer = Vec::new();
            if v6 {
                PacketBuilder::ipv6(HOST6, APP6, 64).icmpv6_echo_reply(kernel, seq).write(&mut answer, &data).unwrap();
            } else {
                PacketBuilder::ipv4(HOST, APP, 64).icmpv4_echo_reply(kernel, seq).write(&mut answer, &data).unwrap();
            }
            let reply = reply_packet(&key, kernel, &message_of(&answer)).unwrap();
            proptest::prop_assert_eq!(residue(&reply), 0);
            let sliced = SlicedPacket::from_ip(&reply).unwrap();
            let (echo_id, echo_seq, payload) = match sliced.transport.unwrap() {
                TransportSlice::Icmpv4(icmp) => match icmp.icmp_type() {
                    Icmpv4Type::EchoReply(e) => (e.id, e.seq, icmp.payload().to_vec()),
                    other => panic!("{other:?}"),
                },
                TransportSlice::Icmpv6(icmp) => match icmp.icmp_type() {
                    Icmpv6Type::EchoReply(e) => (e.id, e.seq, icmp.payload().to_vec()),
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            };
            proptest::prop_assert_eq!((echo_id, echo_seq, payload), (id, seq, data));
        }
    }

    /// An outbound whose ICMP sockets fail with `error`, or never open (`None`).
    struct Sockets(Option<fn() -> DialError>);

    impl Outbound for Sockets {
        fn dial_tcp<'a>(&'a self, _: &'a Metadata) -> BoxFuture<'a, Result<DialedStream, DialError>> {
            unimplemented!("ICMP only")
        }

        fn open_icmp<'a>(
            &'a self,
            _: &'a Metadata,
        ) -> BoxFuture<'a, Result<crate::dial::icmp::DialedIcmp, DialError>> {
            let error = self.0;
            Box::pin(async move {
                match error {
                    Some(error) => Err(error()),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn io() -> (Arc<Io>, UnixDatagram) {
        let (device, app) = UnixDatagram::pair().unwrap();
        let device = TunDevice::new(OwnedFd::from(device), Framing::Raw).unwrap();
        (Arc::new(Io::on_device(device, Arc::new(Counters::default()))), app)
    }

    fn echo(packet: &[u8]) -> Echo<'_> {
        match parse_packet(packet) {
            Packet::Icmp(echo) => echo,
            other => panic!("{other:?}"),
        }
    }

    async fn settle(table: &IcmpTable, flows: usize) {
        for _ in 0..200 {
            if table.len() == flows {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{} flows, expected {flows}", table.len());
    }

    #[tokio::test]
    async fn denied_and_failed_sockets_drop_and_count_each_request() {
        let (io, _app) = io();
        let denied = || DialError::Unsupported { what: "ICMP echo", destination: "10.200.9.1:0".into() };
        let table = Arc::new(IcmpTable::new(Arc::new(Sockets(Some(denied))), vec![APP.into()]));
        table.dispatch(&echo(&request_v4(1, 1, b"")), &io);
        table.dispatch(&echo(&request_v4(1, 2, b"")), &io);
        settle(&table, 0).await;
        let unreachable = || DialError::NoAllowedAddress {
            destination: "10.200.9.1:0".into(),
            strategy: crate::network::DomainStrategy::Ipv6Only,
        };
        let failing = Arc::new(IcmpTable::new(Arc::new(Sockets(Some(unreachable))), vec![]));
        failing.dispatch(&echo(&request_v6(1, 1, b"")), &io);
        settle(&failing, 0).await;
        let counters = io.counters.snapshot();
        assert_eq!((counters.dropped_icmp_denied, counters.dropped_icmp), (2, 1), "{counters:?}");
        assert_eq!((counters.icmp_echoes, counters.icmp_replies, counters.packets_out), (0, 0, 0));
    }

    #[tokio::test]
    async fn flows_and_queues_are_bounded_and_local_addresses_not_relayed() {
        let (io, _app) = io();
        let table = Arc::new(IcmpTable::new(Arc::new(Sockets(None)), vec![[172, 19, 0, 2].into()]));
        for destination in
            [[172, 19, 0, 2], [224, 0, 0, 1], [255, 255, 255, 255], [0, 0, 0, 0], [127, 0, 0, 1]]
        {
            let mut packet = Vec::new();
            PacketBuilder::ipv4(APP, destination, 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut packet, b"")
                .unwrap();
            table.dispatch(&echo(&packet), &io);
        }
        assert_eq!((table.len(), io.counters.snapshot().dropped_unsupported), (0, 5));
        // One flow per (app, identifier, destination): identifiers 0..CAPACITY fill the table.
        for id in 0..CAPACITY as u16 {
            table.dispatch(&echo(&request_v4(id, 1, b"")), &io);
        }
        assert_eq!(table.len(), CAPACITY);
        table.dispatch(&echo(&request_v4(CAPACITY as u16, 1, b"")), &io);
        assert_eq!((table.len(), io.counters.snapshot().dropped_icmp), (CAPACITY, 1));
        // A flow whose socket is still opening holds QUEUE requests (the first among them).
        for seq in 2..=QUEUE as u16 + 1 {
            table.dispatch(&echo(&request_v4(0, seq, b"")), &io);
        }
        assert_eq!(io.counters.snapshot().dropped_icmp, 2);
        table.close_all();
        assert_eq!(table.len(), 0);
    }
}
