//! The device's offloads for the userspace stack (Linux, [`Framing::VirtioNet`]): TCP segments
//! of up to 64 KiB both ways instead of MTU-sized ones, as the system stack gets them.
//!
//! - **In.** The app's kernel hands over TCP super-packets (up to 64 KiB, the checksum partial);
//!   smoltcp takes a segment of any length that fits its window. TCP checksums are not verified
//!   on this path: every packet comes from this host's kernel through memory, and a
//!   super-packet's payload checksum was never computed (the offload's point).
//! - **Out.** smoltcp builds segments up to its MTU ([`MTU`] here) and the MSS the app's SYN
//!   announced. The SYN's MSS option is raised to the largest ([`raise_mss`]) before smoltcp
//!   reads it (the app's own is kept per connection), so smoltcp builds segments of up to 64
//!   KiB; each is written with a virtio-net header that makes it a TSO super-packet of the app's
//!   MSS with a partial checksum ([`prepare`]): the app's kernel takes it in one piece, like a
//!   GRO'd packet, and nothing sums the payload.
//!
//! [`Framing::VirtioNet`]: crate::tun::Framing::VirtioNet

use etherparse::checksum::Sum16BitWords;

use crate::tun::checksum;
use crate::tun::device::Offload;
use crate::tun::packet::Tcp;

/// smoltcp's MTU on an offloading device: the largest IP packet (and read buffer) there is.
pub(crate) const MTU: usize = 65535;

/// The MSS the raised SYN announces: the largest TCP payload of an IPv6 packet of [`MTU`]
/// bytes (smoltcp caps it further by its own MTU).
const RAISED_MSS: u16 = (MTU - 60) as u16;

/// TCP option kinds.
const END: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;

/// The MSS an app's SYN without the option means (RFC 9293: 536 for IPv4, 1220 for IPv6).
fn default_mss(ipv6: bool) -> u16 {
    if ipv6 {
        1220
    } else {
        536
    }
}

/// Raises the MSS option of the app's SYN `packet` (parsed as `tcp`) to the largest, adjusting
/// the TCP checksum; returns the app's own MSS (the RFC default if it sent none, in which case
/// the packet is left alone and smoltcp keeps to that default).
pub(crate) fn raise_mss(packet: &mut [u8], tcp: &Tcp) -> u16 {
    let ipv6 = tcp.source.is_ipv6();
    let Some(at) = mss_option(packet, tcp.offset) else { return default_mss(ipv6) };
    let app = u16::from_be_bytes([packet[at], packet[at + 1]]);
    // The checksum adjusts over whole 16-bit words of the segment: the value's two bytes, or
    // the four around them when the option starts at an odd offset.
    let relative = at - tcp.offset;
    let word = at - relative % 2;
    let end = at + 2 + relative % 2;
    let old = packet[word..end].to_vec();
    packet[at..at + 2].copy_from_slice(&RAISED_MSS.to_be_bytes());
    let sum_at = tcp.offset + 16;
    let adjusted = checksum::adjust(checksum::read(packet, sum_at), &old, &packet[word..end]);
    checksum::write(packet, sum_at, adjusted);
    app.max(1)
}

/// The offset in `packet` of the MSS option's 2-byte value in the TCP header at `offset`.
fn mss_option(packet: &[u8], offset: usize) -> Option<usize> {
    let data_offset = usize::from(*packet.get(offset + 12)? >> 4) * 4;
    let options = packet.get(offset + 20..offset + data_offset)?;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            END => return None,
            NOP => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == MSS && len == 4 {
                    return Some(offset + 20 + i + 2);
                }
                i += len;
            }
        }
    }
    None
}

/// Prepares a TCP `packet` smoltcp built (checksum field left empty) for an offloading device:
/// writes the pseudo-header sum as a partial checksum and returns the virtio-net header, a
/// super-packet of `mss`-byte segments when the payload is longer than that.
pub(crate) fn prepare(packet: &mut [u8], mss: u16) -> Offload {
    let Some((ip_header, ipv6)) = ip_header(packet) else { return Offload::NONE };
    let Some(&data_offset) = packet.get(ip_header + 12) else { return Offload::NONE };
    let tcp_header = usize::from(data_offset >> 4) * 4;
    let segment = packet.len().saturating_sub(ip_header);
    if tcp_header < 20 || segment < tcp_header {
        return Offload::NONE;
    }
    let mut sum = Sum16BitWords::new();
    if ipv6 {
        sum = sum.add_slice(&packet[8..40]);
    } else {
        sum = sum.add_slice(&packet[12..20]);
    }
    sum = sum.add_2bytes([0, 6]).add_4bytes((segment as u32).to_be_bytes());
    let partial = !sum.ones_complement();
    checksum::write(packet, ip_header + 16, partial);
    let payload = segment - tcp_header;
    let gso = (payload > usize::from(mss)).then_some((ipv6, ip_header + tcp_header, mss));
    Offload::partial_tcp(ip_header, gso)
}

/// The IP header's length and whether it is IPv6, for a TCP packet (smoltcp writes IPv6
/// without extension headers and IPv4 without options); `None` for anything else.
fn ip_header(packet: &[u8]) -> Option<(usize, bool)> {
    const TCP: u8 = 6;
    match packet.first()? >> 4 {
        4 if *packet.get(9)? == TCP => Some((usize::from(packet[0] & 0x0f) * 4, false)),
        6 if *packet.get(6)? == TCP => Some((40, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, TcpOptionElement};

    fn syn(options: &[TcpOptionElement]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([172, 19, 0, 1], [10, 200, 9, 1], 64)
            .tcp(40000, 443, 7, 64240)
            .syn()
            .options(options)
            .unwrap();
        let mut packet = Vec::new();
        builder.write(&mut packet, &[]).unwrap();
        packet
    }

    fn parsed(packet: &[u8]) -> Tcp {
        match crate::tun::packet::parse(packet) {
            crate::tun::packet::Packet::Tcp(tcp) => tcp,
            other => panic!("not TCP: {other:?}"),
        }
    }

    fn checksum_ok(packet: &[u8]) -> bool {
        let ip = etherparse::Ipv4HeaderSlice::from_slice(packet).unwrap();
        let tcp = etherparse::TcpSlice::from_slice(&packet[20..]).unwrap();
        let header = tcp.to_header();
        header.calc_checksum_ipv4_raw(ip.source(), ip.destination(), tcp.payload()).unwrap()
            == header.checksum
    }

    #[test]
    fn the_syn_mss_is_raised_and_the_checksum_still_verifies() {
        use TcpOptionElement::*;
        for options in [
            vec![MaximumSegmentSize(8960), SelectiveAcknowledgementPermitted, WindowScale(7)],
            vec![Noop, WindowScale(7), MaximumSegmentSize(1460)],
            vec![
                SelectiveAcknowledgementPermitted,
                Noop,
                Noop,
                MaximumSegmentSize(1400),
                Noop,
                WindowScale(2),
            ],
        ] {
            let expected = options
                .iter()
                .find_map(|o| if let MaximumSegmentSize(m) = o { Some(*m) } else { None })
                .unwrap();
            let mut packet = syn(&options);
            assert!(checksum_ok(&packet));
            let tcp = parsed(&packet);
            assert_eq!(raise_mss(&mut packet, &tcp), expected, "{options:?}");
            let slice = etherparse::TcpSlice::from_slice(&packet[20..]).unwrap();
            let raised = slice.options_iterator().find_map(|o| match o {
                Ok(MaximumSegmentSize(m)) => Some(m),
                _ => None,
            });
            assert_eq!(raised, Some(RAISED_MSS), "{options:?}");
            assert!(checksum_ok(&packet), "checksum after raising, {options:?}");
        }
    }

    #[test]
    fn a_syn_without_mss_keeps_the_default() {
        let mut packet = syn(&[TcpOptionElement::WindowScale(7)]);
        let before = packet.clone();
        let tcp = parsed(&packet);
        assert_eq!(raise_mss(&mut packet, &tcp), 536);
        assert_eq!(packet, before);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any option bytes in a SYN (an app's bytes): no panic; an MSS found is raised with
        /// the checksum still verifying, else the packet is left alone.
        #[test]
        fn any_syn_options_never_panic(
            mut options in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..41),
            mss_at in proptest::option::of(0..37usize),
        ) {
            // Often an MSS option somewhere (random bytes seldom make one).
            if let Some(at) = mss_at.filter(|at| at + 4 <= options.len()) {
                options[at..at + 4].copy_from_slice(&[MSS, 4, 0x05, 0xb4]);
            }
            let mut packet = syn(&[]);
            let words = options.len() / 4;
            packet.splice(40..40, options[..words * 4].iter().copied());
            packet[32] = ((5 + words) as u8) << 4; // data offset
            let total = (packet.len() as u16).to_be_bytes();
            packet[2..4].copy_from_slice(&total);
            let mut ip = etherparse::Ipv4HeaderSlice::from_slice(&packet).unwrap().to_header();
            packet[10..12].copy_from_slice(&ip.calc_header_checksum().to_be_bytes());
            ip.header_checksum = ip.calc_header_checksum();
            let tcp_header = etherparse::TcpSlice::from_slice(&packet[20..]).map(|t| t.to_header());
            let Ok(header) = tcp_header else { return Ok(()) };
            let sum = header.calc_checksum_ipv4(&ip, &[]).unwrap();
            packet[36..38].copy_from_slice(&sum.to_be_bytes());
            let crate::tun::packet::Packet::Tcp(tcp) = crate::tun::packet::parse(&packet) else { return Ok(()) };
            let before = packet.clone();
            raise_mss(&mut packet, &tcp);
            proptest::prop_assert!(checksum_ok(&packet));
            if mss_option(&before, tcp.offset).is_none() {
                proptest::prop_assert_eq!(packet, before);
            }
        }
    }

    #[test]
    fn a_long_segment_becomes_a_super_packet_with_the_pseudo_header_sum() {
        let payload = vec![7u8; 20_000];
        let builder = PacketBuilder::ipv4([10, 200, 9, 1], [172, 19, 0, 1], 64).tcp(443, 40000, 1, 65535);
        let mut packet = Vec::new();
        builder.write(&mut packet, &payload).unwrap();
        let mut expected = Sum16BitWords::new().add_slice(&packet[12..20]);
        expected = expected.add_2bytes([0, 6]).add_4bytes(((20 + payload.len()) as u32).to_be_bytes());
        let offload = prepare(&mut packet, 8960);
        assert_eq!(checksum::read(&packet, 36), !expected.ones_complement());
        assert_eq!(offload, Offload::partial_tcp(20, Some((false, 40, 8960))));
        let short = prepare(&mut packet[..40 + 100], 8960);
        assert_eq!(short, Offload::partial_tcp(20, None));
    }
}
