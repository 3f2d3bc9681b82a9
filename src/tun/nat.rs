//! The TCP NAT of the system stack: which app flow (source, original destination) a port of the
//! NAT address stands for, and the in-place rewrite of a packet's addresses and ports.
//!
//! A new flow (a SYN without ACK; also one that reuses the addresses of a flow that is over)
//! gets a free port of the NAT address ([`FIRST_PORT`] and up,
//! round robin, never one in use). Entries are *pending* until the listener accepts their
//! connection, then *open*; the connection's end marks them *closed*. The kernel may still hold
//! the end of the answer for the app then (the relay is done once its last bytes are in the
//! accepted socket's buffer; an app that reads late takes them later): a closed entry stays
//! until the app has acknowledged the kernel's FIN (everything was delivered) or a reset passed,
//! and [`LINGER`] more so the last packets of the close (the final ACK, a retransmitted FIN) are
//! still translated; an app that never takes the rest lets it go after [`DRAIN_TIMEOUT`]. A
//! pending entry that was never accepted goes after [`PENDING_TIMEOUT`], or [`LINGER`] after a
//! reset (a SYN scan from the device takes every port, and resets every flow at once).
//! [`NatTable::sweep`] removes them; nothing else expires.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::checksum;
use super::packet::Tcp;
use crate::tracker::ConnectionId;

/// The first port of the NAT address handed to flows.
pub const FIRST_PORT: u16 = 1024;
/// How long a closed entry still translates the last packets of its connection once everything
/// was delivered (or reset).
pub const LINGER: Duration = Duration::from_secs(2);
/// How long a closed entry waits at most for the app to take what the kernel still holds for it
/// (the kernel gives up on an orphaned connection within about as long).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an entry waits for the listener to accept its connection.
pub const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending(Instant),
    Open,
    Closed(Instant),
}

#[derive(Debug)]
struct Entry {
    source: SocketAddr,
    destination: SocketAddr,
    state: State,
    /// The manager's connection, once accepted.
    connection: Option<ConnectionId>,
    /// The sequence number after the kernel's FIN, once it sent one.
    fin_end: Option<u32>,
    /// When the app acknowledged the kernel's FIN, or a reset passed: nothing more to deliver.
    done: Option<Instant>,
}

/// What the NAT reads of a TCP segment to know when its connection has delivered everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    seq: u32,
    /// The acknowledgment number, when ACK is set.
    ack: Option<u32>,
    fin: bool,
    rst: bool,
    /// Payload bytes.
    len: u32,
}

impl Segment {
    /// The segment of `packet`, parsed as `tcp` (its header is whole: [`super::packet::parse`]).
    pub fn read(packet: &[u8], tcp: &Tcp) -> Segment {
        let header = &packet[tcp.offset..tcp.offset + 20];
        let word =
            |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let flags = header[13];
        let header_len = usize::from(header[12] >> 4) * 4;
        let len = tcp.len.saturating_sub(tcp.offset + header_len);
        Segment {
            seq: word(4),
            ack: (flags & 0x10 != 0).then(|| word(8)),
            fin: flags & 0x01 != 0,
            rst: flags & 0x04 != 0,
            len: u32::try_from(len).unwrap_or(u32::MAX),
        }
    }
}

/// The NAT entries of one address family (see the module docs).
#[derive(Debug, Default)]
pub struct NatTable {
    by_flow: HashMap<(SocketAddr, SocketAddr), u16>,
    by_port: HashMap<u16, Entry>,
    next_port: u16,
}

impl NatTable {
    /// The NAT port of an app's packet from `source` to `destination`; a new one for a packet
    /// that `opens` a flow with none, or only one that is over: closed, or reset, or whose FIN
    /// from the kernel the app acknowledged (the app may then reuse its port at once, before
    /// the relay saw the end). `None`: no flow and not an opening packet, or every port is taken.
    pub fn outbound(
        &mut self,
        source: SocketAddr,
        destination: SocketAddr,
        opens: bool,
        now: Instant,
    ) -> Option<u16> {
        if let Some(&port) = self.by_flow.get(&(source, destination)) {
            let over = self
                .by_port
                .get(&port)
                .is_some_and(|e| matches!(e.state, State::Closed(_)) || e.done.is_some());
            if !(opens && over) {
                return Some(port);
            }
        }
        if !opens {
            return None;
        }
        let port = self.free_port()?;
        self.by_port.insert(
            port,
            Entry {
                source,
                destination,
                state: State::Pending(now),
                connection: None,
                fin_end: None,
                done: None,
            },
        );
        self.by_flow.insert((source, destination), port);
        Some(port)
    }

    /// The app flow (source, original destination) of NAT port `port`, in any state.
    pub fn flow(&self, port: u16) -> Option<(SocketAddr, SocketAddr)> {
        self.by_port.get(&port).map(|entry| (entry.source, entry.destination))
    }

    /// The app flow (source, original destination) of NAT port `port`, in any state, for the
    /// kernel's `segment` to it: notes its FIN or reset (see the module docs).
    pub fn inbound(
        &mut self,
        port: u16,
        segment: &Segment,
        now: Instant,
    ) -> Option<(SocketAddr, SocketAddr)> {
        let entry = self.by_port.get_mut(&port)?;
        if segment.rst {
            entry.done.get_or_insert(now);
        } else if segment.fin {
            entry.fin_end = Some(segment.seq.wrapping_add(segment.len).wrapping_add(1));
        }
        Some((entry.source, entry.destination))
    }

    /// Notes the app's `segment` to NAT port `port`: its acknowledgment of the kernel's FIN, or
    /// its reset (see the module docs).
    pub fn from_app(&mut self, port: u16, segment: &Segment, now: Instant) {
        let Some(entry) = self.by_port.get_mut(&port) else { return };
        let acknowledged = match (entry.fin_end, segment.ack) {
            // (Sequence numbers wrap: "at or after" is a signed distance.)
            (Some(end), Some(ack)) => ack.wrapping_sub(end) as i32 >= 0,
            _ => false,
        };
        if segment.rst || acknowledged {
            entry.done.get_or_insert(now);
        }
    }

    /// Marks the entry of `port` open (its connection was accepted) and returns its flow; `None`
    /// when the port has no pending entry.
    pub fn accept(&mut self, port: u16) -> Option<(SocketAddr, SocketAddr)> {
        let entry = self.by_port.get_mut(&port)?;
        if !matches!(entry.state, State::Pending(_)) {
            return None;
        }
        entry.state = State::Open;
        Some((entry.source, entry.destination))
    }

    /// Records the manager's connection of the (open) entry of `port`.
    pub fn set_connection(&mut self, port: u16, id: ConnectionId) {
        if let Some(entry) = self.by_port.get_mut(&port) {
            if entry.state == State::Open {
                entry.connection = Some(id);
            }
        }
    }

    /// The manager's connections of the open entries.
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.by_port.values().filter(|e| e.state == State::Open).filter_map(|e| e.connection).collect()
    }

    /// Marks the entry of `port` closed at `now` (it leaves [`LINGER`] after everything was
    /// delivered, see the module docs).
    pub fn close(&mut self, port: u16, now: Instant) {
        if let Some(entry) = self.by_port.get_mut(&port) {
            entry.state = State::Closed(now);
        }
    }

    /// Removes closed entries that delivered everything [`LINGER`] ago (or waited
    /// [`DRAIN_TIMEOUT`] for the app) and pending ones older than [`PENDING_TIMEOUT`] or reset
    /// [`LINGER`] ago. Returns
    /// how many entries still wait to leave (closed or pending).
    pub fn sweep(&mut self, now: Instant) -> usize {
        let expired: Vec<u16> = self
            .by_port
            .iter()
            .filter(|(_, entry)| match entry.state {
                State::Closed(at) => match entry.done {
                    Some(done) => now.saturating_duration_since(at.max(done)) >= LINGER,
                    None => now.saturating_duration_since(at) >= DRAIN_TIMEOUT,
                },
                // A flow reset before it was accepted (a scanner's SYN, an app that gave up):
                // only its last packets are left to translate.
                State::Pending(at) => {
                    now.saturating_duration_since(at) >= PENDING_TIMEOUT
                        || entry.done.is_some_and(|done| now.saturating_duration_since(done) >= LINGER)
                }
                State::Open => false,
            })
            .map(|(port, _)| *port)
            .collect();
        for port in expired {
            if let Some(entry) = self.by_port.remove(&port) {
                let flow = (entry.source, entry.destination);
                if self.by_flow.get(&flow) == Some(&port) {
                    self.by_flow.remove(&flow);
                }
            }
        }
        self.by_port.values().filter(|entry| entry.state != State::Open).count()
    }

    /// How many entries the table holds.
    pub fn len(&self) -> usize {
        self.by_port.len()
    }

    /// True when the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.by_port.is_empty()
    }

    fn free_port(&mut self) -> Option<u16> {
        let span = u32::from(u16::MAX - FIRST_PORT) + 1;
        if self.by_port.len() >= span as usize {
            return None; // (not a scan of every port for each SYN of a flood)
        }
        for _ in 0..span {
            let port = self.next_port.max(FIRST_PORT);
            self.next_port = port.checked_add(1).unwrap_or(FIRST_PORT);
            if !self.by_port.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }
}

/// Rewrites the TCP packet `packet` (parsed as `tcp`) to go from `source` to `destination`,
/// updating the IPv4 header checksum and the TCP checksum incrementally. Returns false (packet
/// untouched) when an address is not of the packet's family.
pub fn rewrite(packet: &mut [u8], tcp: &Tcp, source: SocketAddr, destination: SocketAddr) -> bool {
    rewrite_with(packet, tcp, source, destination, false)
}

/// [`rewrite`] of a packet whose TCP checksum is `partial` (an offloaded super-packet, see
/// [`super::device::Offload`]): the field holds the pseudo-header's sum, not inverted, and the
/// kernel adds the header and payload later — so it is adjusted for the addresses only.
pub fn rewrite_with(
    packet: &mut [u8],
    tcp: &Tcp,
    source: SocketAddr,
    destination: SocketAddr,
    partial: bool,
) -> bool {
    let at = tcp.offset;
    let mut old_l4 = [0u8; 4];
    old_l4.copy_from_slice(&packet[at..at + 4]);
    let mut new_l4 = [0u8; 4];
    new_l4[..2].copy_from_slice(&source.port().to_be_bytes());
    new_l4[2..].copy_from_slice(&destination.port().to_be_bytes());
    // A partial sum P is adjusted as the checksum !P would be.
    let mut tcp_sum = match partial {
        true => !checksum::read(packet, at + 16),
        false => checksum::read(packet, at + 16),
    };
    match (source.ip(), destination.ip(), packet[0] >> 4) {
        (IpAddr::V4(s), IpAddr::V4(d), 4) => {
            let mut new = [0u8; 8];
            new[..4].copy_from_slice(&s.octets());
            new[4..].copy_from_slice(&d.octets());
            let old: [u8; 8] = packet[12..20].try_into().unwrap_or_default();
            let ip_sum = checksum::adjust(checksum::read(packet, 10), &old, &new);
            checksum::write(packet, 10, ip_sum);
            tcp_sum = checksum::adjust(tcp_sum, &old, &new);
            packet[12..20].copy_from_slice(&new);
        }
        (IpAddr::V6(s), IpAddr::V6(d), 6) => {
            let mut new = [0u8; 32];
            new[..16].copy_from_slice(&s.octets());
            new[16..].copy_from_slice(&d.octets());
            let old: [u8; 32] = packet[8..40].try_into().unwrap_or([0; 32]);
            tcp_sum = checksum::adjust(tcp_sum, &old, &new);
            packet[8..40].copy_from_slice(&new);
        }
        _ => return false,
    }
    if partial {
        tcp_sum = !tcp_sum;
    } else {
        tcp_sum = checksum::adjust(tcp_sum, &old_l4, &new_l4);
    }
    packet[at..at + 4].copy_from_slice(&new_l4);
    checksum::write(packet, at + 16, tcp_sum);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tun::packet::{parse, Packet};
    use etherparse::{PacketBuilder, TcpSlice};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A segment with these flags (`ack` set: ACK too), sequence number and payload length.
    fn segment(seq: u32, ack: Option<u32>, fin: bool, rst: bool, len: u32) -> Segment {
        Segment { seq, ack, fin, rst, len }
    }

    #[test]
    fn flows_get_ports_and_leave_after_their_linger() {
        let mut table = NatTable::default();
        let now = Instant::now();
        let (app, server) = (addr("172.19.0.1:40000"), addr("10.200.9.1:80"));
        assert_eq!(table.outbound(app, server, false, now), None, "no entry without a SYN");
        let port = table.outbound(app, server, true, now).unwrap();
        assert_eq!(table.outbound(app, server, true, now), Some(port), "a retransmitted SYN");
        assert_eq!(table.outbound(app, server, false, now), Some(port));
        let other = table.outbound(app, addr("10.200.9.1:81"), true, now).unwrap();
        assert_ne!(port, other);
        assert_eq!(table.accept(port), Some((app, server)));
        assert_eq!(table.accept(port), None, "accepted once");
        // The kernel's FIN after 100 bytes, acknowledged by the app: everything was delivered.
        assert_eq!(
            table.inbound(port, &segment(u32::MAX - 50, Some(1), true, false, 100), now),
            Some((app, server))
        );
        table.from_app(port, &segment(1, Some(50), false, false, 0), now);
        table.close(port, now);
        assert_eq!(table.sweep(now + LINGER / 2), 2, "lingering and pending");
        assert_eq!(table.flow(port), Some((app, server)), "still translates while lingering");
        assert_eq!(table.sweep(now + LINGER), 1);
        assert_eq!(table.flow(port), None);
        assert_eq!(table.sweep(now + PENDING_TIMEOUT), 0, "the never accepted one left too");
        assert!(table.is_empty());
    }

    /// A connection that ended while the kernel still held part of the answer for the app: its
    /// entry stays until the app acknowledged the kernel's FIN, or a reset passed, or at most
    /// [`DRAIN_TIMEOUT`].
    #[test]
    fn a_closed_flow_stays_until_the_app_took_everything() {
        let mut table = NatTable::default();
        let now = Instant::now();
        let (app, server) = (addr("172.19.0.1:40000"), addr("10.200.9.1:80"));
        let ports: Vec<u16> = (0..3)
            .map(|i| {
                let port = table.outbound(app, SocketAddr::new(server.ip(), 80 + i), true, now).unwrap();
                table.accept(port);
                table.close(port, now);
                port
            })
            .collect();
        assert_eq!(table.sweep(now + LINGER * 10), 3, "nothing acknowledged yet");
        let later = now + LINGER * 10;
        // The first: the kernel's FIN (seq 1000, 500 bytes), acknowledged only in part, then in full.
        table.inbound(ports[0], &segment(1000, Some(7), true, false, 500), later);
        table.from_app(ports[0], &segment(7, Some(1400), false, false, 0), later);
        assert_eq!(table.sweep(later + LINGER), 3, "the FIN is not acknowledged yet");
        table.from_app(ports[0], &segment(7, Some(1501), false, false, 0), later);
        // The second: the app resets it.
        table.from_app(ports[1], &segment(7, None, false, true, 0), later);
        assert_eq!(table.sweep(later + LINGER / 2), 3, "both linger");
        assert_eq!(table.sweep(later + LINGER), 1);
        assert_eq!((table.flow(ports[0]), table.flow(ports[1])), (None, None));
        // The third: the app never takes the rest.
        assert_eq!(table.sweep(now + DRAIN_TIMEOUT), 0);
        // A pending one the app reset (a scanner's SYN): gone after a linger, not the timeout.
        let scanned = table.outbound(app, server, true, now).unwrap();
        table.from_app(scanned, &segment(2, None, false, true, 0), now);
        let kept = table.outbound(app, addr("10.200.9.1:81"), true, now).unwrap();
        assert_eq!(table.sweep(now + LINGER), 1);
        assert_eq!((table.flow(scanned), table.flow(kept).is_some()), (None, true));
    }

    #[test]
    fn a_new_syn_on_a_closed_flow_gets_a_new_port() {
        let mut table = NatTable::default();
        let now = Instant::now();
        let (app, server) = (addr("[fdfe::1]:40000"), addr("[2001:db8::1]:443"));
        let port = table.outbound(app, server, true, now).unwrap();
        table.accept(port);
        table.close(port, now);
        assert_eq!(table.outbound(app, server, false, now), Some(port), "the close's last ACK");
        let again = table.outbound(app, server, true, now).unwrap();
        assert_ne!(again, port);
        table.sweep(now + LINGER);
        assert_eq!(table.flow(again), Some((app, server)), "the new flow stays");
        assert_eq!(table.outbound(app, server, false, now), Some(again));
        // Reset by the app while still open (the relay has not seen it yet): a SYN is a new flow.
        table.accept(again);
        table.from_app(again, &segment(1, None, false, true, 0), now);
        let third = table.outbound(app, server, true, now).unwrap();
        assert_ne!(third, again);
        assert_eq!(table.outbound(app, server, true, now), Some(third), "a retransmitted SYN");
    }

    /// An offloaded super-packet's partial checksum (the pseudo-header's sum, not inverted):
    /// after the rewrite, completing it over the segment gives the right checksum for the new
    /// addresses and ports.
    #[test]
    fn rewrites_partial_checksums_for_the_addresses_only() {
        /// The folded one's complement sum of big-endian 16-bit words (not inverted).
        fn sum(parts: &[&[u8]]) -> u16 {
            let mut sum: u64 = 0;
            for part in parts {
                for word in part.chunks(2) {
                    sum += u64::from(u16::from_be_bytes([word[0], *word.get(1).unwrap_or(&0)]));
                }
            }
            while sum > 0xffff {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            sum as u16
        }
        let octets = |ip: IpAddr| match ip {
            IpAddr::V4(ip) => ip.octets().to_vec(),
            IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        for (from, to, new_from, new_to) in [
            ("10.200.9.1:80", "172.19.0.1:40000", "172.19.0.1:5555", "172.19.0.2:1024"),
            ("[2001:db8::1]:80", "[fdfe::1]:40000", "[fdfe::1]:5555", "[fdfe::2]:1024"),
        ] {
            let (from, to) = (addr(from), addr(to));
            let builder = match (from.ip(), to.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
                (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
                _ => unreachable!(),
            };
            let mut packet = Vec::new();
            builder.tcp(from.port(), to.port(), 7, 1000).ack(1).write(&mut packet, &[0x5a; 3000]).unwrap();
            let Packet::Tcp(tcp) = parse(&packet) else { panic!() };
            let len = (packet.len() - tcp.offset) as u32;
            // The partial field the kernel writes: the pseudo-header's sum, not inverted.
            let pseudo = |source: SocketAddr, destination: SocketAddr| {
                sum(&[&octets(source.ip()), &octets(destination.ip()), &[0, 6], &len.to_be_bytes()])
            };
            checksum::write(&mut packet, tcp.offset + 16, pseudo(from, to));
            assert!(rewrite_with(&mut packet, &tcp, addr(new_from), addr(new_to), true));
            assert_eq!(
                checksum::read(&packet, tcp.offset + 16),
                pseudo(addr(new_from), addr(new_to)),
                "the partial sum is the new addresses' pseudo-header sum"
            );
            // What the kernel then does: the sum over the segment, the field included, inverted.
            let completed = !sum(&[&packet[tcp.offset..]]);
            let segment = TcpSlice::from_slice(&packet[tcp.offset..]).unwrap();
            let expected = match (addr(new_from).ip(), addr(new_to).ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => segment.calc_checksum_ipv4(s.octets(), d.octets()).unwrap(),
                (IpAddr::V6(s), IpAddr::V6(d)) => segment.calc_checksum_ipv6(s.octets(), d.octets()).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(completed, expected, "{new_from} -> {new_to}");
        }
    }

    #[test]
    fn rewrites_keep_checksums_valid() {
        for (from, to, new_from, new_to) in [
            ("172.19.0.1:40000", "10.200.9.1:80", "172.19.0.2:1024", "172.19.0.1:5555"),
            ("[fdfe::1]:40000", "[2001:db8::1]:80", "[fdfe::2]:1024", "[fdfe::1]:5555"),
        ] {
            let (from, to) = (addr(from), addr(to));
            let builder = match (from.ip(), to.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
                (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
                _ => unreachable!(),
            };
            let mut packet = Vec::new();
            builder.tcp(from.port(), to.port(), 7, 1000).syn().write(&mut packet, b"data!").unwrap();
            let Packet::Tcp(tcp) = parse(&packet) else { panic!() };
            assert!(rewrite(&mut packet, &tcp, addr(new_from), addr(new_to)));
            let Packet::Tcp(after) = parse(&packet) else { panic!("the IPv4 header checksum verifies") };
            assert_eq!((after.source, after.destination), (addr(new_from), addr(new_to)));
            let segment = TcpSlice::from_slice(&packet[after.offset..]).unwrap();
            let expected = match (addr(new_from).ip(), addr(new_to).ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => segment.calc_checksum_ipv4(s.octets(), d.octets()).unwrap(),
                (IpAddr::V6(s), IpAddr::V6(d)) => segment.calc_checksum_ipv6(s.octets(), d.octets()).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(segment.checksum(), expected, "{new_from} -> {new_to}");
        }
    }
}
