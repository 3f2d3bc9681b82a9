//! UDP idle timeouts: recognise the protocol of a session from its first datagram and choose the
//! timeout in force.
//!
//! Priority (DESIGN.md decision 4): the connection's own `udp_timeout` > the protocol, recognised
//! from the first datagram's bytes (DNS, QUIC, STUN, NTP, DTLS) or else guessed from the
//! destination port (53 DNS, 123 NTP, 443 QUIC, 3478 STUN) > the ingress default (5 min).

use std::fmt;
use std::time::Duration;

/// Default idle timeout of a UDP session whose protocol is unknown (the reference's `UDPTimeout`).
pub const DEFAULT_UDP_TIMEOUT: Duration = Duration::from_secs(300);
/// Idle timeout of DNS, NTP and STUN sessions.
pub const SHORT_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle timeout of QUIC and DTLS sessions.
pub const LONG_PROTOCOL_TIMEOUT: Duration = Duration::from_secs(30);

/// A UDP protocol whose sessions get their own idle timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UdpProtocol {
    /// DNS (RFC 1035) queries.
    Dns,
    /// QUIC (RFC 9000) long-header packets.
    Quic,
    /// STUN (RFC 8489).
    Stun,
    /// NTP (RFC 5905) client requests.
    Ntp,
    /// DTLS (RFC 6347 / 9147) records.
    Dtls,
}

impl fmt::Display for UdpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpProtocol::Dns => "dns",
            UdpProtocol::Quic => "quic",
            UdpProtocol::Stun => "stun",
            UdpProtocol::Ntp => "ntp",
            UdpProtocol::Dtls => "dtls",
        })
    }
}

/// Why a timeout was chosen (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutReason {
    /// The connection's own `udp_timeout`.
    PerConnection,
    /// The protocol recognised from the first datagram's bytes.
    Recognised(UdpProtocol),
    /// The protocol guessed from the destination port.
    Port(UdpProtocol),
    /// Nothing better known: the ingress default.
    Default,
}

/// The idle timeouts of UDP sessions. Every value must be > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpTimeouts {
    /// Sessions of no recognised protocol (config `udp_timeout`). Default 5 min.
    pub default: Duration,
    /// DNS, NTP and STUN sessions. Default 10 s.
    pub short: Duration,
    /// QUIC and DTLS sessions. Default 30 s.
    pub long: Duration,
}

impl Default for UdpTimeouts {
    fn default() -> Self {
        UdpTimeouts {
            default: DEFAULT_UDP_TIMEOUT,
            short: SHORT_PROTOCOL_TIMEOUT,
            long: LONG_PROTOCOL_TIMEOUT,
        }
    }
}

impl UdpTimeouts {
    /// The timeout of a protocol.
    pub fn of(&self, protocol: UdpProtocol) -> Duration {
        match protocol {
            UdpProtocol::Dns | UdpProtocol::Ntp | UdpProtocol::Stun => self.short,
            UdpProtocol::Quic | UdpProtocol::Dtls => self.long,
        }
    }

    /// The timeout of a session: `per_connection` when set and non-zero, else the protocol of
    /// `first_datagram`, else the protocol of `port`, else the default. Zero values are never
    /// returned (a zero default becomes 1 ms).
    pub fn choose(
        &self,
        per_connection: Option<Duration>,
        first_datagram: &[u8],
        port: u16,
    ) -> (Duration, TimeoutReason) {
        let (timeout, reason) = if let Some(t) = per_connection.filter(|t| !t.is_zero()) {
            (t, TimeoutReason::PerConnection)
        } else if let Some(p) = recognise(first_datagram) {
            (self.of(p), TimeoutReason::Recognised(p))
        } else if let Some(p) = guess_from_port(port) {
            (self.of(p), TimeoutReason::Port(p))
        } else {
            (self.default, TimeoutReason::Default)
        };
        (timeout.max(Duration::from_millis(1)), reason)
    }
}

/// The protocol usually spoken on a destination port (the reference's `PortProtocols`).
pub fn guess_from_port(port: u16) -> Option<UdpProtocol> {
    match port {
        53 => Some(UdpProtocol::Dns),
        123 => Some(UdpProtocol::Ntp),
        443 => Some(UdpProtocol::Quic),
        3478 => Some(UdpProtocol::Stun),
        _ => None,
    }
}

/// Recognises the protocol of a client's first datagram from its bytes. Strict enough that random
/// bytes rarely match; never panics on any input.
pub fn recognise(datagram: &[u8]) -> Option<UdpProtocol> {
    if is_stun(datagram) {
        Some(UdpProtocol::Stun)
    } else if is_quic(datagram) {
        Some(UdpProtocol::Quic)
    } else if is_dtls(datagram) {
        Some(UdpProtocol::Dtls)
    } else if is_dns_query(datagram) {
        Some(UdpProtocol::Dns)
    } else if is_ntp_request(datagram) {
        Some(UdpProtocol::Ntp)
    } else {
        None
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// STUN: two zero top bits, a length that is a multiple of 4 and matches, the magic cookie.
fn is_stun(d: &[u8]) -> bool {
    d.len() >= 20
        && d[0] & 0xC0 == 0
        && d[4..8] == [0x21, 0x12, 0xA4, 0x42]
        && u16_at(d, 2).is_some_and(|len| len % 4 == 0 && usize::from(len) == d.len() - 20)
}

/// QUIC long header: form and fixed bits set, a known version (or version negotiation), a
/// connection id length of at most 20 bytes.
fn is_quic(d: &[u8]) -> bool {
    if d.len() < 7 || d[0] & 0xC0 != 0xC0 {
        return false;
    }
    let version = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
    let known = matches!(version, 0 | 0x0000_0001 | 0x6b33_43cf) || version >> 8 == 0x00ff_0000;
    let dcid_len = usize::from(d[5]);
    known && dcid_len <= 20 && d.len() > 6 + dcid_len
}

/// DTLS record: content type 20-25, version 1.0 / 1.2 (1.3 uses 1.2 on the wire), a record
/// length that fits.
fn is_dtls(d: &[u8]) -> bool {
    d.len() >= 13
        && (20..=25).contains(&d[0])
        && d[1] == 0xFE
        && matches!(d[2], 0xFF | 0xFD)
        && u16_at(d, 11).is_some_and(|len| usize::from(len) <= d.len() - 13)
}

/// DNS query: QR = 0, a standard opcode, one question with a well-formed name, no answers.
fn is_dns_query(d: &[u8]) -> bool {
    if d.len() < 17 || d[2] & 0x80 != 0 || !matches!((d[2] >> 3) & 0x0F, 0 | 2 | 4 | 5) {
        return false;
    }
    let counts = (u16_at(d, 4), u16_at(d, 6), u16_at(d, 8), u16_at(d, 10));
    if counts.0 != Some(1) || counts.1 != Some(0) || counts.3.is_none_or(|ar| ar > 2) {
        return false;
    }
    let mut at = 12;
    loop {
        let Some(&len) = d.get(at) else { return false };
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 || at + usize::from(len) > d.len() || at > 12 + 255 {
            return false;
        }
        at += usize::from(len);
    }
    // QTYPE and QCLASS (IN, CH, HS or ANY; the top bit is mDNS's unicast-response flag).
    u16_at(d, at + 2).is_some_and(|class| matches!(class & 0x7FFF, 1 | 3 | 4 | 255))
}

/// NTP request: 48 bytes or more, version 1-4, mode 1 (symmetric active) or 3 (client).
fn is_ntp_request(d: &[u8]) -> bool {
    let version = (d.first().copied().unwrap_or(0) >> 3) & 0x07;
    let mode = d.first().copied().unwrap_or(0) & 0x07;
    d.len() >= 48 && (1..=4).contains(&version) && matches!(mode, 1 | 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS query for `name` type A, as a resolver sends it.
    pub(crate) fn dns_query(id: u16, name: &str) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    fn quic_initial() -> Vec<u8> {
        let mut p = vec![0xC3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        p.resize(1200, 0);
        p
    }

    fn stun_binding() -> Vec<u8> {
        let mut p = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        p.extend_from_slice(&[7; 12]);
        p
    }

    fn ntp_request() -> Vec<u8> {
        let mut p = vec![0x23];
        p.resize(48, 0);
        p
    }

    fn dtls_client_hello() -> Vec<u8> {
        let mut p = vec![22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4];
        p.extend_from_slice(&[1, 0, 0, 0]);
        p
    }

    #[test]
    fn recognises_each_protocol() {
        assert_eq!(recognise(&dns_query(7, "example.com")), Some(UdpProtocol::Dns));
        assert_eq!(recognise(&quic_initial()), Some(UdpProtocol::Quic));
        assert_eq!(recognise(&stun_binding()), Some(UdpProtocol::Stun));
        assert_eq!(recognise(&ntp_request()), Some(UdpProtocol::Ntp));
        assert_eq!(recognise(&dtls_client_hello()), Some(UdpProtocol::Dtls));
        assert_eq!(recognise(b"hello, world"), None);
        assert_eq!(recognise(&[]), None);
        assert_eq!(recognise(&[0u8; 64]), None);
    }

    #[test]
    fn rejects_near_misses() {
        let mut response = dns_query(7, "example.com");
        response[2] |= 0x80;
        assert_eq!(recognise(&response), None, "a DNS response is not a query");
        let mut bad_label = dns_query(7, "example.com");
        bad_label[12] = 64;
        assert_eq!(recognise(&bad_label), None);
        let mut short_quic = quic_initial();
        short_quic[5] = 21;
        assert_eq!(recognise(&short_quic[..20]), None);
        let mut stun = stun_binding();
        stun[4] = 0;
        assert_eq!(recognise(&stun), None);
    }

    #[test]
    fn choice_follows_the_priority() {
        let t = UdpTimeouts::default();
        let custom = Some(Duration::from_secs(3));
        assert_eq!(
            t.choose(custom, &quic_initial(), 443),
            (Duration::from_secs(3), TimeoutReason::PerConnection)
        );
        let dns = t.choose(None, &dns_query(1, "a.b"), 5353);
        assert_eq!(dns, (Duration::from_secs(10), TimeoutReason::Recognised(UdpProtocol::Dns)));
        let quic = t.choose(Some(Duration::ZERO), &quic_initial(), 53);
        assert_eq!(quic, (Duration::from_secs(30), TimeoutReason::Recognised(UdpProtocol::Quic)));
        assert_eq!(
            t.choose(None, b"x", 443),
            (Duration::from_secs(30), TimeoutReason::Port(UdpProtocol::Quic))
        );
        assert_eq!(t.choose(None, b"x", 123).1, TimeoutReason::Port(UdpProtocol::Ntp));
        assert_eq!(t.choose(None, b"x", 3478).1, TimeoutReason::Port(UdpProtocol::Stun));
        assert_eq!(t.choose(None, b"x", 9999), (Duration::from_secs(300), TimeoutReason::Default));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state: u32 = 0x9E37_79B9;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let length = (state % 80) as usize;
            let bytes: Vec<u8> = (0..length).map(|i| (state >> (i % 24)) as u8).collect();
            let _ = recognise(&bytes);
        }
    }
}
