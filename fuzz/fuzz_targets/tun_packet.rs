//! Fuzzes the TUN packet parser (`netswitch::tun::packet::parse`) and the NAT's TCP rewrite: no
//! packet may panic either; a parsed TCP segment's header lies inside the packet; a parsed UDP
//! payload and a parsed ICMP echo request's message lie inside it; and a TCP packet rewritten to
//! other addresses (as the system stack's NAT does, checksums adjusted incrementally) parses
//! again as TCP between exactly those addresses, its IPv4 header checksum still valid.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use netswitch::tun::nat::rewrite;
use netswitch::tun::packet::{parse, Packet};

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Packet::Tcp(tcp) => {
            assert!(tcp.offset + 20 <= tcp.len && tcp.len <= data.len());
            let (source, destination) = match tcp.source.ip() {
                IpAddr::V4(_) => (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(172, 19, 0, 2)), 40_000),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(172, 19, 0, 1)), 1_234),
                ),
                IpAddr::V6(_) => (
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfdfe, 0, 0, 0, 0, 0, 0, 2)), 40_000),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfdfe, 0, 0, 0, 0, 0, 0, 1)), 1_234),
                ),
            };
            let mut packet = data.to_vec();
            assert!(rewrite(&mut packet, &tcp, source, destination), "same family rewrites");
            match parse(&packet) {
                Packet::Tcp(again) => {
                    assert_eq!((again.source, again.destination), (source, destination));
                    assert_eq!((again.offset, again.len), (tcp.offset, tcp.len));
                }
                other => panic!("a rewritten TCP packet parsed as {other:?}"),
            }
        }
        Packet::Udp(udp) => {
            let start = udp.payload.as_ptr() as usize - data.as_ptr() as usize;
            assert!(start + udp.payload.len() <= data.len());
            assert!(udp.source.port() != 0 && udp.destination.port() != 0);
        }
        Packet::Icmp(echo) => {
            let start = echo.message.as_ptr() as usize - data.as_ptr() as usize;
            assert!(echo.message.len() >= 8 && start + echo.message.len() <= data.len());
            assert_eq!(echo.message[0], if echo.source.is_ipv4() { 8 } else { 128 });
            assert_eq!(echo.source.is_ipv4(), echo.destination.is_ipv4());
        }
        Packet::Dropped(_) => {}
    }
});
