//! Reading one IP packet from the tunnel: what it is (a TCP segment or a UDP datagram, its
//! addresses) or why it is dropped. Parsing is etherparse's (IPv4 with options, IPv6 with its
//! extension chain, TCP and UDP headers); nothing here panics on any input.
//!
//! | Input | Result |
//! |---|---|
//! | IPv4 or IPv6 TCP segment | [`Packet::Tcp`] (the kernel verifies its checksum after the NAT) |
//! | IPv4 or IPv6 UDP datagram with a valid checksum (IPv4: or none) | [`Packet::Udp`] |
//! | an IPv4 fragment or an IPv6 packet with a fragment header | [`Drop::Fragment`] (not reassembled) |
//! | a truncated or inconsistent header, a bad version, a bad length | [`Drop::Malformed`] |
//! | an ICMPv4 or ICMPv6 echo request with a valid checksum | [`Packet::Icmp`] ([`super::icmp`]) |
//! | an IPv4 header checksum or UDP or ICMP checksum that does not verify | [`Drop::BadChecksum`] |
//! | any other protocol or ICMP message | [`Drop::Unsupported`] |

use std::net::{IpAddr, SocketAddr};

use etherparse::checksum::Sum16BitWords;
use etherparse::{Icmpv4Slice, Icmpv4Type, Icmpv6Slice, Icmpv6Type, IpNumber, IpSlice, TcpSlice, UdpSlice};

/// Why a packet from the tunnel was dropped (each reason has its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// An IP fragment (fragments are dropped, not reassembled).
    Fragment,
    /// A header is truncated or inconsistent.
    Malformed,
    /// The IPv4 header checksum or the UDP checksum is wrong.
    BadChecksum,
    /// A protocol other than TCP and UDP, or an ICMP message other than an echo request.
    Unsupported,
}

/// The TCP segment of a packet: its addresses and where its header starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp {
    /// The sender's address and port.
    pub source: SocketAddr,
    /// The receiver's address and port.
    pub destination: SocketAddr,
    /// Offset of the TCP header in the packet.
    pub offset: usize,
    /// Length of the whole IP packet (bytes past it in the buffer are not part of it).
    pub len: usize,
    /// SYN set and ACK not: the first segment of a new connection.
    pub opens: bool,
}

/// A UDP datagram of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    /// The sender's address and port.
    pub source: SocketAddr,
    /// The receiver's address and port.
    pub destination: SocketAddr,
    /// The datagram's payload.
    pub payload: &'a [u8],
}

/// What one packet from the tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A TCP segment.
    Tcp(Tcp),
    /// A UDP datagram.
    Udp(Udp<'a>),
    /// An ICMP echo request.
    Icmp(Echo<'a>),
    /// Dropped, and why.
    Dropped(Drop),
}

/// Classifies one IP packet (no link header; see [`super::device::Framing`]).
pub fn parse(packet: &[u8]) -> Packet<'_> {
    let ip = match IpSlice::from_slice(packet) {
        Ok(ip) => ip,
        Err(_) => return Packet::Dropped(Drop::Malformed),
    };
    if ip.is_fragmenting_payload() {
        return Packet::Dropped(Drop::Fragment);
    }
    if let IpSlice::Ipv4(v4) = &ip {
        let header = v4.header().slice();
        if Sum16BitWords::new().add_slice(header).ones_complement() != 0 {
            return Packet::Dropped(Drop::BadChecksum);
        }
    }
    let payload = ip.payload();
    // The transport header's offset: the payload is a sub-slice of `packet`.
    let offset = payload.payload.as_ptr() as usize - packet.as_ptr() as usize;
    let len = offset + payload.payload.len();
    let (source, destination) = (ip.source_addr(), ip.destination_addr());
    match payload.ip_number {
        IpNumber::TCP => match TcpSlice::from_slice(payload.payload) {
            Ok(tcp) => Packet::Tcp(Tcp {
                source: SocketAddr::new(source, tcp.source_port()),
                destination: SocketAddr::new(destination, tcp.destination_port()),
                offset,
                len,
                opens: tcp.syn() && !tcp.ack() && !tcp.rst(),
            }),
            Err(_) => Packet::Dropped(Drop::Malformed),
        },
        IpNumber::UDP => match UdpSlice::from_slice(payload.payload) {
            Ok(udp) if udp.source_port() == 0 || udp.destination_port() == 0 => {
                Packet::Dropped(Drop::Malformed)
            }
            Ok(udp) if !udp_checksum_ok(source, destination, &udp) => Packet::Dropped(Drop::BadChecksum),
            Ok(udp) => Packet::Udp(Udp {
                source: SocketAddr::new(source, udp.source_port()),
                destination: SocketAddr::new(destination, udp.destination_port()),
                payload: udp.payload(),
            }),
            Err(_) => Packet::Dropped(Drop::Malformed),
        },
        IpNumber::ICMP | IpNumber::IPV6_ICMP => {
            parse_icmp(source, destination, payload.ip_number, payload.payload)
        }
        _ => Packet::Dropped(Drop::Unsupported),
    }
}

/// True when the UDP checksum verifies (an IPv4 datagram may carry none: 0).
fn udp_checksum_ok(source: IpAddr, destination: IpAddr, udp: &UdpSlice<'_>) -> bool {
    let segment = udp.slice();
    let sum = match (source, destination) {
        (IpAddr::V4(_), _) if udp.checksum() == 0 => return true,
        (IpAddr::V4(s), IpAddr::V4(d)) => Sum16BitWords::new().add_4bytes(s.octets()).add_4bytes(d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            Sum16BitWords::new().add_16bytes(s.octets()).add_16bytes(d.octets())
        }
        _ => return false,
    };
    // A UDP length that does not fit 16 bits cannot pass `UdpSlice::from_slice`.
    let length = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    let sum = sum.add_2bytes([0, IpNumber::UDP.0]).add_2bytes(length.to_be_bytes()).add_slice(segment);
    udp.checksum() != 0 && sum.ones_complement() == 0
}

/// An ICMP echo request read from the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo<'a> {
    /// The app's address.
    pub source: IpAddr,
    /// The host it pings.
    pub destination: IpAddr,
    /// The app's echo identifier.
    pub identifier: u16,
    /// The echo sequence number.
    pub sequence: u16,
    /// The whole ICMP message as the app sent it (header and data; checksum verified).
    pub message: &'a [u8],
}

/// Classifies the ICMP message (see [`super::icmp`]) `message` of protocol `protocol` (ICMP or ICMPv6) from `source`
/// to `destination`: an echo request, else why it is dropped.
pub(crate) fn parse_icmp(
    source: IpAddr,
    destination: IpAddr,
    protocol: IpNumber,
    message: &[u8],
) -> Packet<'_> {
    let header = match (source, destination) {
        (IpAddr::V4(_), IpAddr::V4(_)) if protocol == IpNumber::ICMP => {
            let Ok(icmp) = Icmpv4Slice::from_slice(message) else { return Packet::Dropped(Drop::Malformed) };
            let Icmpv4Type::EchoRequest(header) = icmp.icmp_type() else {
                return Packet::Dropped(Drop::Unsupported);
            };
            if Sum16BitWords::new().add_slice(message).ones_complement() != 0 {
                return Packet::Dropped(Drop::BadChecksum);
            }
            header
        }
        (IpAddr::V6(s), IpAddr::V6(d)) if protocol == IpNumber::IPV6_ICMP => {
            let Ok(icmp) = Icmpv6Slice::from_slice(message) else { return Packet::Dropped(Drop::Malformed) };
            let Icmpv6Type::EchoRequest(header) = icmp.icmp_type() else {
                return Packet::Dropped(Drop::Unsupported);
            };
            if !icmp.is_checksum_valid(s.octets(), d.octets()) {
                return Packet::Dropped(Drop::BadChecksum);
            }
            header
        }
        _ => return Packet::Dropped(Drop::Unsupported),
    };
    Packet::Icmp(Echo { source, destination, identifier: header.id, sequence: header.seq, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let mut packet = Vec::new();
        PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64)
            .udp(40000, 7002)
            .write(&mut packet, payload)
            .unwrap();
        packet
    }

    fn echo(v6: bool) -> Vec<u8> {
        let mut packet = Vec::new();
        let written = match v6 {
            false => PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64)
                .icmpv4_echo_request(0x1234, 1)
                .write(&mut packet, b"ping data"),
            true => PacketBuilder::ipv6([0xfd; 16], [0x20; 16], 64)
                .icmpv6_echo_request(0x1234, 1)
                .write(&mut packet, b"ping data"),
        };
        written.unwrap();
        packet
    }

    fn tcp_v6() -> Vec<u8> {
        let mut packet = Vec::new();
        let (source, destination) = ([0xfd, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], [0x20; 16]);
        PacketBuilder::ipv6(source, destination, 64)
            .tcp(40000, 443, 1, 1000)
            .syn()
            .write(&mut packet, &[])
            .unwrap();
        packet
    }

    #[test]
    fn classifies_udp_and_tcp() {
        let packet = udp_v4(b"hello");
        let Packet::Udp(udp) = parse(&packet) else { panic!("{:?}", parse(&packet)) };
        assert_eq!(udp.source, "172.19.0.1:40000".parse().unwrap());
        assert_eq!(udp.destination, "10.200.9.1:7002".parse().unwrap());
        assert_eq!(udp.payload, b"hello");

        let packet = tcp_v6();
        let Packet::Tcp(tcp) = parse(&packet) else { panic!("{:?}", parse(&packet)) };
        assert_eq!((tcp.offset, tcp.len, tcp.opens), (40, packet.len(), true));
        assert_eq!(tcp.destination.port(), 443);
    }

    #[test]
    fn drops_bad_checksums_truncations_and_fragments() {
        let mut packet = udp_v4(b"hello");
        let last = packet.len() - 1;
        packet[last] ^= 1;
        assert_eq!(parse(&packet), Packet::Dropped(Drop::BadChecksum));
        let mut packet = udp_v4(b"hello");
        packet[8] ^= 1; // the TTL: the IPv4 header checksum no longer verifies
        assert_eq!(parse(&packet), Packet::Dropped(Drop::BadChecksum));
        let packet = udp_v4(b"hello");
        assert_eq!(parse(&packet[..25]), Packet::Dropped(Drop::Malformed));
        assert_eq!(parse(&packet[..10]), Packet::Dropped(Drop::Malformed));
        assert_eq!(parse(&[]), Packet::Dropped(Drop::Malformed));
        // More-fragments set (and the header checksum fixed so only the fragment matters).
        let mut packet = udp_v4(b"hello");
        packet[6] |= 0x20;
        packet[10..12].copy_from_slice(&[0, 0]);
        let sum = Sum16BitWords::new().add_slice(&packet[..20]).ones_complement();
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse(&packet), Packet::Dropped(Drop::Fragment));
        // ICMP other than echo requests is not relayed (see `super::icmp` for those).
        let mut packet = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .icmpv4_echo_reply(1, 1)
            .write(&mut packet, &[])
            .unwrap();
        assert_eq!(parse(&packet), Packet::Dropped(Drop::Unsupported));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: a classification, never a panic; offsets stay inside the packet.
        #[test]
        fn never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Packet::Tcp(tcp) = parse(&bytes) {
                prop_assert!(tcp.offset + 20 <= tcp.len && tcp.len <= bytes.len());
            }
        }

        /// Valid packets with some bytes flipped or cut: a classification, never a panic.
        #[test]
        fn never_panics_on_damaged_packets(
            kind in 0..4u8,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
        ) {
            let mut packet = match kind {
                0 => tcp_v6(),
                1 => udp_v4(b"payload"),
                v6 => echo(v6 == 3),
            };
            for (at, value) in flips {
                let at = at % packet.len();
                packet[at] = value;
            }
            packet.truncate(cut % (packet.len() + 1));
            match parse(&packet) {
                Packet::Tcp(tcp) => prop_assert!(tcp.offset + 20 <= tcp.len && tcp.len <= packet.len()),
                Packet::Udp(udp) => prop_assert!(udp.payload.len() <= packet.len()),
                Packet::Icmp(echo) => {
                    // An echo request whose checksum still verifies, its message inside.
                    prop_assert!(echo.message.len() >= 8 && echo.message.len() <= packet.len());
                    prop_assert_eq!(echo.message[0], if echo.source.is_ipv4() { 8 } else { 128 });
                    prop_assert_eq!(u16::from_be_bytes([echo.message[4], echo.message[5]]), echo.identifier);
                }
                Packet::Dropped(_) => {}
            }
        }
    }
}
