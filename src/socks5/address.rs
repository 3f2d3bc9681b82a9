//! The address every SOCKS5 message carries, `ATYP ADDR PORT` (RFC 1928 §4-§7), read and written
//! in this one place: by requests, replies and UDP headers alike.
//!
//! | ATYP | ADDR |
//! |---|---|
//! | 0x01 | 4 bytes, IPv4 |
//! | 0x03 | one length byte (1-255), then the domain name |
//! | 0x04 | 16 bytes, IPv6 |
//!
//! followed by the port, 2 bytes, big-endian.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{incomplete, length_prefixed, EncodeError, Parsed};
use crate::metadata::{Destination, Host};

const ATYP_IPV4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_IPV6: u8 = 0x04;

/// The shortest valid address: a one-byte domain (`ATYP LEN NAME PORT`).
const SHORTEST: usize = 1 + 1 + 1 + 2;

/// An address that cannot be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// ATYP is not IPv4 (0x01), domain (0x03) or IPv6 (0x04).
    #[error("unknown SOCKS address type {0:#04x}")]
    BadType(u8),
    /// The domain is empty, not UTF-8, or has a control character ([`Host::parse`] refuses it:
    /// never part of a host name, and a domain is logged, so it could forge log lines).
    #[error("empty, non-UTF-8 or control-character domain name in a SOCKS message")]
    BadDomain,
}

/// Parses `ATYP ADDR PORT` at the start of `buf`. A domain that is an IP literal becomes
/// [`Host::Ip`]. The port may be 0 (the caller decides whether that is allowed). Errors come as
/// soon as the offending byte arrives: the type at once, an empty domain at its length byte, a bad
/// name once the whole name is there.
pub fn parse_address(buf: &[u8]) -> Result<Parsed<Destination>, AddressError> {
    let Some(&address_type) = buf.first() else { return Ok(incomplete(SHORTEST)) };
    let (host, port_at) = match address_type {
        ATYP_IPV4 => match buf.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
            Some(octets) => (Host::Ip(IpAddr::V4(Ipv4Addr::from(octets))), 5),
            None => return Ok(incomplete(5 + 2)),
        },
        ATYP_IPV6 => match buf.get(1..17).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
            Some(octets) => (Host::Ip(IpAddr::V6(Ipv6Addr::from(octets))), 17),
            None => return Ok(incomplete(17 + 2)),
        },
        ATYP_DOMAIN => {
            if buf.get(1) == Some(&0) {
                return Err(AddressError::BadDomain);
            }
            let name = match length_prefixed(buf, 1) {
                Ok(name) => name,
                // Before the length byte: at least a one-byte name; after it: the name and port.
                Err(needed) => return Ok(incomplete(needed.max(SHORTEST - 2) + 2)),
            };
            let name = std::str::from_utf8(name).map_err(|_| AddressError::BadDomain)?;
            let host = Host::parse(name).map_err(|_| AddressError::BadDomain)?;
            (host, 2 + name.len())
        }
        other => return Err(AddressError::BadType(other)),
    };
    let Some(port) = buf.get(port_at..port_at + 2) else { return Ok(incomplete(port_at + 2)) };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Ok(Parsed::Complete(Destination { host, port }, port_at + 2))
}

/// Appends `ATYP ADDR PORT` for `destination` to `out`. A domain longer than 255 bytes (which
/// [`Host::parse`] never produces) is refused and nothing is appended.
pub fn write_address(destination: &Destination, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match &destination.host {
        Host::Ip(IpAddr::V4(ip)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        Host::Ip(IpAddr::V6(ip)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
        Host::Domain(name) => {
            let Ok(length) = u8::try_from(name.len()) else {
                return Err(EncodeError::DomainTooLong(name.clone()));
            };
            out.extend_from_slice(&[ATYP_DOMAIN, length]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&destination.port.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::socks5::test_support::{check_prefixes, garbage};

    fn encoded(destination: &Destination) -> Vec<u8> {
        let mut out = Vec::new();
        write_address(destination, &mut out).unwrap();
        out
    }

    #[test]
    fn addresses_round_trip() {
        for destination in [
            "127.0.0.1:80".parse::<Destination>().unwrap(),
            "[::1]:443".parse().unwrap(),
            Destination::domain("example.com", 8080),
            Destination::domain("a", 1),
            Destination::domain("x".repeat(255), 65535),
            Destination { host: Host::Ip("0.0.0.0".parse().unwrap()), port: 0 },
        ] {
            check_prefixes(parse_address, &encoded(&destination), destination);
        }
        assert_eq!(encoded(&"127.0.0.1:4660".parse().unwrap()), [1, 127, 0, 0, 1, 0x12, 0x34]);
        assert_eq!(encoded(&Destination::domain("ab", 80)), [3, 2, b'a', b'b', 0, 80]);
    }

    #[test]
    fn a_domain_that_is_an_ip_literal_becomes_an_ip() {
        let parsed = parse_address(b"\x03\x0810.0.0.1\x00\x35");
        assert_eq!(parsed, Ok(Parsed::Complete("10.0.0.1:53".parse().unwrap(), 12)));
    }

    #[test]
    fn bad_addresses_are_errors_as_soon_as_they_show() {
        assert_eq!(parse_address(&[2]), Err(AddressError::BadType(2)));
        assert_eq!(parse_address(&[0xff]), Err(AddressError::BadType(0xff)));
        assert_eq!(parse_address(&[3, 0]), Err(AddressError::BadDomain));
        assert_eq!(parse_address(&[3, 2, 0xff, 0xfe]), Err(AddressError::BadDomain));
        for name in [&b"a\nb"[..], b"a\rb", b"a\x1bb", b"a\x7fb", b"\xc2\x85"] {
            let mut address = vec![3, name.len() as u8];
            address.extend_from_slice(name);
            assert_eq!(parse_address(&address), Err(AddressError::BadDomain), "{name:?}");
        }
    }

    #[test]
    fn an_overlong_domain_is_refused_and_nothing_written() {
        let mut out = vec![9];
        let error = write_address(&Destination::domain("x".repeat(256), 1), &mut out).unwrap_err();
        assert!(matches!(error, EncodeError::DomainTooLong(_)), "{error}");
        assert_eq!(out, [9]);
    }

    #[test]
    fn garbage_never_panics() {
        garbage(|buf| {
            let _ = parse_address(buf);
        });
    }
}
