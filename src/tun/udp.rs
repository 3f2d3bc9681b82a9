//! UDP flows parsed straight from the tunnel's packets. Each app source address has one UDP
//! session (endpoint-independent mapping, a full cone: the session's socket carries every
//! destination of that source, so STUN sees one mapped port), in the ingress session table
//! ([`UdpSessionTable`] with per-client keying: capacity, queue, exact idle timeouts, counted
//! drops). Replies go back into the device as IP/UDP packets from the address the reply came from
//! (after the session's address translation) to the app's source.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use etherparse::PacketBuilder;

use super::counters::bump;
use super::decide::UdpDecisions;
use super::packet::Udp;
use super::Io;
use crate::client::{Datagram, PacketSink};
use crate::dial::BoxFuture;
use crate::inbound::udp_sessions::{Dispatched, UdpSessionTable};
use crate::metadata::{Destination, Host, Metadata};

/// Hop limit of reply packets written to the device.
const TTL: u8 = 64;

/// Writes one session's replies into the device, to the app's `client` address.
struct TunSink {
    io: Arc<Io>,
    client: SocketAddr,
}

impl TunSink {
    /// Builds the reply packet in this thread's packet buffer and writes it to the device: no
    /// allocation per reply once the buffer has grown to the largest reply.
    fn send_now(&self, payload: &[u8], source: &Destination) -> io::Result<()> {
        thread_local! {
            static PACKET: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let send = |packet: &mut Vec<u8>| {
            packet.clear();
            write_reply(packet, payload, source, self.client)?;
            if self.io.send(packet) {
                Ok(())
            } else {
                // Counted by `send`; a full device queue loses the reply like a full link.
                Err(io::Error::from_raw_os_error(libc::ENOBUFS))
            }
        };
        PACKET
            .try_with(|packet| match packet.try_borrow_mut() {
                Ok(mut packet) => send(&mut packet),
                Err(_) => send(&mut Vec::new()),
            })
            .unwrap_or_else(|_| send(&mut Vec::new()))
    }
}

impl PacketSink for TunSink {
    fn send_to_client<'a>(
        &'a self,
        payload: &'a [u8],
        source: &'a Destination,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move { self.send_now(payload, source) })
    }

    /// Writing to the device never waits: always `Some`.
    fn try_send_to_client(&self, payload: &[u8], source: &Destination) -> Option<io::Result<()>> {
        Some(self.send_now(payload, source))
    }
}

/// The IP/UDP packet of a reply from `source` to the app's `client`.
pub(crate) fn reply_packet(payload: &[u8], source: &Destination, client: SocketAddr) -> io::Result<Vec<u8>> {
    let mut packet = Vec::new();
    write_reply(&mut packet, payload, source, client)?;
    Ok(packet)
}

/// Appends the IP/UDP packet of a reply from `source` to the app's `client` to `packet`.
fn write_reply(
    packet: &mut Vec<u8>,
    payload: &[u8],
    source: &Destination,
    client: SocketAddr,
) -> io::Result<()> {
    let Host::Ip(ip) = &source.host else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("UDP reply from a name: {source}")));
    };
    let builder = match (ip.to_canonical(), client.ip()) {
        (IpAddr::V4(from), IpAddr::V4(to)) => PacketBuilder::ipv4(from.octets(), to.octets(), TTL),
        (IpAddr::V6(from), IpAddr::V6(to)) => PacketBuilder::ipv6(from.octets(), to.octets(), TTL),
        (from, _) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("UDP reply from {from} to {client}: address families differ"),
            ))
        }
    };
    let builder = builder.udp(source.port, client.port());
    packet.reserve(builder.size(payload.len()));
    // Too large for one IP packet: dropped as a transient error (EMSGSIZE), the session lives on.
    builder.write(packet, payload).map_err(|_| io::Error::from_raw_os_error(libc::EMSGSIZE))
}

/// Hands one app datagram to its source's session (created on its first datagram; with a
/// decision hook, once the hook decided).
pub(crate) fn dispatch(
    udp: &Udp<'_>,
    table: &Arc<UdpSessionTable>,
    io: &Arc<Io>,
    decisions: Option<&Arc<UdpDecisions>>,
) {
    let destination = udp.destination.ip();
    let broadcast = matches!(destination, IpAddr::V4(v4) if v4.is_broadcast());
    if destination.is_multicast() || destination.is_unspecified() || broadcast {
        bump(&io.counters.dropped_unsupported);
        return;
    }
    let client = udp.source;
    let datagram = Datagram { destination: udp.destination.into(), payload: udp.payload.to_vec() };
    if let Some(decisions) = decisions {
        return decisions.dispatch(client, udp.destination, datagram, table, io);
    }
    let dispatched = table.dispatch(
        client,
        datagram,
        |destination| Metadata::new(destination.clone()).with_source(client),
        || sink(io, client),
    );
    count(io, dispatched);
}

/// The sink of a session's replies: IP/UDP packets into the device, to the app's `client`.
pub(crate) fn sink(io: &Arc<Io>, client: SocketAddr) -> Arc<dyn PacketSink> {
    Arc::new(TunSink { io: io.clone(), client })
}

/// Counts a datagram handed to the session table: queued, or dropped.
pub(crate) fn count(io: &Io, dispatched: Dispatched) {
    match dispatched {
        Dispatched::Queued { .. } => bump(&io.counters.udp_datagrams),
        _ => bump(&io.counters.dropped_udp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tun::packet::{parse, Packet};

    #[test]
    fn replies_are_valid_packets_from_the_source() {
        let client: SocketAddr = "172.19.0.1:40000".parse().unwrap();
        let source = Destination::from("10.200.9.1:7002".parse::<SocketAddr>().unwrap());
        let packet = reply_packet(b"pong", &source, client).unwrap();
        let Packet::Udp(udp) = parse(&packet) else { panic!("{:?}", parse(&packet)) };
        assert_eq!(
            (udp.source, udp.destination, udp.payload),
            (source.socket_addr().unwrap(), client, &b"pong"[..])
        );

        let mapped = Destination::from("[::ffff:10.200.9.1]:7002".parse::<SocketAddr>().unwrap());
        assert!(reply_packet(b"x", &mapped, client).is_ok(), "a v4-mapped source is IPv4");
        let v6 = Destination::from("[2001:db8::1]:7002".parse::<SocketAddr>().unwrap());
        assert!(reply_packet(b"x", &v6, client).is_err());
        assert!(reply_packet(b"x", &Destination::domain("a.example", 53), client).is_err());
        let error = reply_packet(&vec![0; 70_000], &source, client).unwrap_err();
        assert!(crate::relay::udp::is_transient(&error), "{error}");
    }
}
